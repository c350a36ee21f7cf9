import { Flags } from '@oclif/core';
import { SengCommand } from '../../base.js';
import { SengKmodClient, type KmodStatus } from '../../../../kmod-bridge/index.js';

export default class KmodStatusCommand extends SengCommand<typeof KmodStatusCommand> {
  static override summary =
    'Show whether the seng kernel module is loaded (generic netlink family seng_family).';
  static override description =
    'Asks the generic netlink controller for the family seng_family. Exits 0 whether or not it is present ' +
    '(check "present" in --json output); exits 1 only if the query itself fails.';
  static override examples = ['<%= config.bin %> kmod status', '<%= config.bin %> kmod status --json'];
  static override flags = {
    timeout: Flags.integer({
      summary: 'Milliseconds to wait for the kernel.',
      default: 1000,
      min: 1,
      max: 600_000, // node timers hold at most 2^31-1 ms
    }),
  };

  async run(): Promise<KmodStatus> {
    const s = await SengKmodClient.with({ logger: this.logger, timeoutMs: this.flags.timeout }, (c) =>
      c.status(),
    );
    if (s.present) {
      const group = s.multicastGroup
        ? `, multicast group ${s.multicastGroup.name} (${s.multicastGroup.id})`
        : '';
      this.log(`${s.family}: present (id ${s.id}, version ${s.version}${group})`);
    } else {
      this.log(`${s.family}: absent — ${s.message ?? 'not registered'}`);
    }
    return s;
  }
}
