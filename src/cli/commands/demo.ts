import { Flags } from '@oclif/core';
import { SengCommand } from '../base.js';
import { runDemo, type ProbeResult } from '../../demo/demo.js';
import { SengError } from '../../util/errors.js';

export default class Demo extends SengCommand<typeof Demo> {
  static override summary =
    'Run a complete SENG gateway in throwaway network namespaces and watch per-app enforcement live.';
  static override description = `Builds a gateway, two untrusted hosts and a service in network namespaces, starts seng serve --nft with the demo database and a demo category policy, connects simulated enclaves of two apps (DemoEnclave on both hosts, SENG-NGINX on one), and shows every few seconds which app's traffic is allowed or dropped and by which rule. Ctrl-C stops it and removes everything. Needs root; no SGX hardware or kernel module.

Without --rounds the demo runs until Ctrl-C (SIGINT) or SIGTERM, which is its normal end: it removes everything, prints "stopped" on stderr and exits 0. Exit 1 means a failure (or a probe that disagreed with the policy).`;
  static override examples = ['sudo <%= config.bin %> demo', 'sudo <%= config.bin %> demo --rounds 3 --json'];
  static override enableJsonFlag = false;
  static override flags = {
    rounds: Flags.integer({
      summary: 'Stop after this many probe rounds (default: run until Ctrl-C).',
      min: 1,
    }),
    interval: Flags.integer({ summary: 'Seconds between probe rounds.', default: 2, min: 1, max: 3600 }),
    json: Flags.boolean({ summary: 'Print one JSON line per round.' }),
  };

  async run(): Promise<void> {
    const { rounds, stopped }: { rounds: ProbeResult[][]; stopped: boolean } = await runDemo({
      ...(this.flags.rounds === undefined ? {} : { rounds: this.flags.rounds }),
      json: this.flags.json,
      intervalMs: this.flags.interval * 1000,
      logger: this.logger,
      print: (text) => process.stdout.write(`${text}\n`),
    });
    if (stopped) {
      process.stderr.write('stopped\n');
      process.exitCode = 0;
    }
    const disagreements = rounds.flat().filter((r) => !r.agrees);
    if (disagreements.length > 0) {
      throw new SengError(
        'EDEMO_MISMATCH',
        `${disagreements.length} probe(s) did not match the policy's verdict`,
        {
          hint: 'this is a bug in seng: please report it with the output above',
        },
      );
    }
  }
}
