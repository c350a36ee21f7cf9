import { Flags } from '@oclif/core';
import { SengCommand } from '../../base.js';
import { SengKmodClient } from '../../../../kmod-bridge/index.js';

export default class KmodFlush extends SengCommand<typeof KmodFlush> {
  static override summary = 'Drop every enclave, app and category the seng kernel module holds.';
  static override description =
    'Sends the FLUSH request (SPEC §5.1 rule 4). A running `seng serve -n` would then disagree with the module: ' +
    'use this for recovery after a crash, not under a live gateway.';
  static override examples = ['<%= config.bin %> kmod flush'];
  static override flags = {
    timeout: Flags.integer({
      summary: 'Milliseconds to wait for each acknowledgement.',
      default: 1000,
      min: 1,
      max: 600_000, // node timers hold at most 2^31-1 ms
    }),
  };

  async run(): Promise<{ flushed: true }> {
    await SengKmodClient.with({ logger: this.logger, timeoutMs: this.flags.timeout }, (c) => c.flush());
    this.log('seng kernel module flushed');
    return { flushed: true };
  }
}
