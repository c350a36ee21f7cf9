import { Flags } from '@oclif/core';
import { setTimeout as sleep } from 'node:timers/promises';
import { SengCommand } from '../base.js';
import { controlRequest, DEFAULT_CONTROL_PATH, unexpectedReply } from '../../gateway/control.js';
import { renderStatus, withWatchDefault, type StatusResult } from '../status-view.js';

export default class Status extends SengCommand<typeof Status> {
  static override summary =
    'Show the sessions of a running gateway: enclave IP, app, measurements, client, traffic, drops, last seen.';
  static override description = `With --watch [SECONDS] (default 2) the status is redrawn every SECONDS on a terminal, or printed once per interval otherwise; with --json, one JSON line per interval. Stop with Ctrl-C.
LAST SEEN is when the gateway last noticed a packet from the enclave: it compares the enclave's packet counter at each status call or metrics scrape, so its resolution is the interval between those.`;
  static override examples = [
    '<%= config.bin %> status',
    '<%= config.bin %> status --watch',
    '<%= config.bin %> status --watch 5 --json',
  ];
  static override flags = {
    control: Flags.string({ summary: 'Control socket of the gateway.', default: DEFAULT_CONTROL_PATH }),
    watch: Flags.integer({
      summary: 'Redraw every SECONDS (default 2) until Ctrl-C; with --json one JSON line per interval.',
      helpValue: '[SECONDS]',
      min: 1,
      max: 3600,
    }),
  };

  public override async init(): Promise<void> {
    this.argv = withWatchDefault(this.argv);
    await super.init();
  }

  async run(): Promise<StatusResult> {
    if (this.flags.watch !== undefined) return this.watch(this.flags.watch);
    const s = await this.fetch();
    if (!this.jsonEnabled()) for (const line of renderStatus(s)) this.log(line);
    return s;
  }

  private async fetch(): Promise<StatusResult> {
    const control = this.flags.control;
    const s = (await controlRequest(control, { cmd: 'status' })) as StatusResult | null;
    if (!s || typeof s !== 'object' || !Array.isArray(s.sessions) || !Array.isArray(s.subnets)) {
      throw unexpectedReply(control, 'a status (sessions, subnets)');
    }
    return s;
  }

  /** Runs until Ctrl-C (exit 0) or until the gateway cannot be reached (its error, exit 1). */
  private async watch(seconds: number): Promise<never> {
    const json = this.jsonEnabled();
    const tty = !json && process.stdout.isTTY === true;
    const stop = () => {
      if (tty) process.stdout.write('\x1b[?25h');
      process.exit(0);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    if (tty) process.stdout.write('\x1b[?25l\x1b[2J');
    try {
      return await this.loop(seconds, json, tty);
    } finally {
      if (tty) process.stdout.write('\x1b[?25h');
    }
  }

  private async loop(seconds: number, json: boolean, tty: boolean): Promise<never> {
    for (;;) {
      const s = await this.fetch();
      if (json) {
        process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), ...s })}\n`);
      } else if (tty) {
        // Home, each line cleared to its end, then everything below: redrawn in place, no flicker.
        const frame = [
          `every ${seconds}s, ${new Date().toLocaleTimeString()} (Ctrl-C to stop)`,
          ...renderStatus(s),
        ];
        process.stdout.write(`\x1b[H${frame.map((l) => `${l}\x1b[K`).join('\n')}\n\x1b[J`);
      } else {
        process.stdout.write(`${[`# ${new Date().toISOString()}`, ...renderStatus(s)].join('\n')}\n\n`);
      }
      await sleep(seconds * 1000);
    }
  }
}
