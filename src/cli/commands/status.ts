import { Flags } from '@oclif/core';
import { setTimeout as sleep } from 'node:timers/promises';
import { SengCommand } from '../base.js';
import { controlRequest, DEFAULT_CONTROL_PATH, unexpectedReply } from '../../gateway/control.js';
import {
  renderFleet,
  renderStatus,
  withWatchDefault,
  type FleetStatus,
  type StatusResult,
} from '../status-view.js';
import { usageError } from '../usage.js';
import { Registry } from '../../fleet/registry.js';
import { PgConnectionError, isConnectionError, isPostgresUrl, redactUrl } from '../../pg/index.js';
import { formatIpv4 } from '../../util/ipv4.js';

type AnyStatus = StatusResult | FleetStatus;

function render(s: AnyStatus): string[] {
  return 'sessions' in s ? renderStatus(s) : renderFleet(s);
}

export default class Status extends SengCommand<typeof Status> {
  static override summary =
    'Show the sessions of a running gateway: enclave IP, app, measurements, client, traffic, drops, last seen.';
  static override description = `With --watch [SECONDS] (default 2) the status is redrawn every SECONDS on a terminal, or printed once per interval otherwise; with --json, one JSON line per interval. Stop with Ctrl-C.
With --fleet (and --registry URL, or -d URL of the gateways' PostgreSQL policy store) the fleet's enclave registry is shown instead of one gateway: every gateway with its heartbeat age and enclave count, and with --json every live lease.
LAST SEEN is when the gateway last noticed a packet from the enclave: it compares the enclave's packet counter at each status call or metrics scrape, so its resolution is the interval between those.`;
  static override examples = [
    '<%= config.bin %> status',
    '<%= config.bin %> status --watch',
    '<%= config.bin %> status --watch 5 --json',
    '<%= config.bin %> status --fleet --registry postgres://seng@db.example/seng',
  ];
  static override flags = {
    control: Flags.string({ summary: 'Control socket of the gateway.', default: DEFAULT_CONTROL_PATH }),
    watch: Flags.integer({
      summary: 'Redraw every SECONDS (default 2) until Ctrl-C; with --json one JSON line per interval.',
      helpValue: '[SECONDS]',
      min: 1,
      max: 3600,
    }),
    fleet: Flags.boolean({
      summary: "Show the fleet's gateways and leases from the enclave registry (needs --registry or -d).",
    }),
    registry: Flags.string({
      summary: 'The enclave registry (postgres://… URL) for --fleet.',
      env: 'SENG_REGISTRY',
      helpValue: 'URL',
    }),
    db: Flags.string({
      char: 'd',
      summary:
        'For --fleet: the PostgreSQL policy store of seng serve -d URL, which holds the registry (same as --registry).',
      helpValue: 'URL',
    }),
  };

  public override async init(): Promise<void> {
    this.argv = withWatchDefault(this.argv);
    await super.init();
  }

  async run(): Promise<AnyStatus> {
    const registry = this.flags.registry ?? this.flags.db;
    if (this.flags.fleet && registry === undefined)
      usageError('--fleet needs --registry URL (or SENG_REGISTRY) or -d postgres://…');
    if (registry !== undefined && !isPostgresUrl(registry))
      usageError(`--registry "${redactUrl(registry)}" is not a postgres:// or postgresql:// URL`);
    if (this.flags.watch !== undefined) return this.watch(this.flags.watch);
    const s = await this.fetch();
    if (!this.jsonEnabled()) for (const line of render(s)) this.log(line);
    return s;
  }

  private fetch(): Promise<AnyStatus> {
    return this.flags.fleet
      ? this.fetchFleet((this.flags.registry ?? this.flags.db) as string)
      : this.fetchGateway();
  }

  private async fetchFleet(url: string): Promise<FleetStatus> {
    const registry = await Registry.open(url, { applicationName: 'seng-status', readOnly: true }).catch(
      (err: unknown) => {
        throw isConnectionError(err) ? new PgConnectionError(url, err) : err;
      },
    );
    try {
      const [gateways, leases] = await Promise.all([registry.gateways(), registry.liveLeases()]);
      return {
        registry: redactUrl(url),
        gateways: gateways.map((g) => ({
          id: g.id,
          address: g.address,
          pid: g.pid,
          state: g.lost ? 'lost' : 'live',
          heartbeatAgeSeconds: Math.round(g.heartbeatAgeMs / 100) / 10,
          leaseTtlSeconds: g.leaseTtlMs / 1000,
          startedAt: g.startedAt.toISOString(),
          enclaves: g.leases,
        })),
        leases: leases.map((l) => ({
          enclaveIp: formatIpv4(l.ip),
          subnet: l.subnet,
          gateway: l.gatewayId,
          app: l.app,
          mrEnclave: l.mrEnclave,
          mrSigner: l.mrSigner,
          hostIp: l.hostIp,
          categories: l.categories,
          sessionId: l.sessionId,
          since: l.startedAt.toISOString(),
        })),
      };
    } finally {
      await registry.close();
    }
  }

  private async fetchGateway(): Promise<StatusResult> {
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
          ...render(s),
        ];
        process.stdout.write(`\x1b[H${frame.map((l) => `${l}\x1b[K`).join('\n')}\n\x1b[J`);
      } else {
        process.stdout.write(`${[`# ${new Date().toISOString()}`, ...render(s)].join('\n')}\n\n`);
      }
      await sleep(seconds * 1000);
    }
  }
}
