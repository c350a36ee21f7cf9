import { Flags } from '@oclif/core';
import { SengCommand } from '../../../base.js';
import { SengKmodClient, parseAppHex, validateCategory } from '../../../../../kmod-bridge/index.js';

export default class KmodCategoryRemove extends SengCommand<typeof KmodCategoryRemove> {
  static override summary = 'Remove a category from an app the seng kernel module knows.';
  static override description =
    'Sends APP + CAT + RMV (SPEC §5.1 rule 3). The module only knows apps with at least one registered enclave ' +
    'and rejects the request otherwise.';
  static override examples = ['<%= config.bin %> kmod category remove --app d923…c3b0 --category Browser'];
  static override flags = {
    app: Flags.string({ summary: 'App measurement (MRENCLAVE), 64 hex digits.', required: true }),
    category: Flags.string({
      summary: 'Category name (at most 20 printable ASCII characters).',
      required: true,
    }),
    timeout: Flags.integer({
      summary: 'Milliseconds to wait for each acknowledgement.',
      default: 1000,
      min: 1,
      max: 600_000, // node timers hold at most 2^31-1 ms
    }),
  };

  async run(): Promise<{ app: string; category: string; removed: true }> {
    const mrEnclave = parseAppHex(this.flags.app);
    const category = validateCategory(this.flags.category);
    await SengKmodClient.with({ logger: this.logger, timeoutMs: this.flags.timeout }, (c) =>
      c.removeCategory(mrEnclave, category),
    );
    const app = mrEnclave.toString('hex');
    this.log(`removed category ${category} from app ${app}`);
    return { app, category, removed: true };
  }
}
