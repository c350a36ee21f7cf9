import { Args, Flags } from '@oclif/core';
import { SengCommand } from '../../../base.js';
import { dbFlag, printable } from '../../../store-flags.js';
import { openPolicyStore } from '../../../../store/index.js';
import { validateCategory } from '../../../../store/validate.js';

export default class CategoryRemove extends SengCommand<typeof CategoryRemove> {
  static override summary = 'Take an app out of a category (netfilter database).';
  static override description =
    'A running `seng serve -n` picks the change up without a restart and updates the kernel module for active apps.';
  static override examples = ['<%= config.bin %> db category remove -d nf.db Browser --app firefox'];
  static override args = {
    category: Args.string({ description: 'Category name: 1-20 of A-Z a-z 0-9 _ . -', required: true }),
  };
  static override flags = { db: dbFlag, app: Flags.string({ summary: 'App name.', required: true }) };

  async run(): Promise<{ app: string; category: string; removed: true }> {
    const category = validateCategory(this.args.category);
    const store = await openPolicyStore(this.flags.db);
    try {
      await store.removeCategory(this.flags.app, category);
    } finally {
      await store.close();
    }
    this.log(`removed ${printable(this.flags.app)} from category ${category}`);
    return { app: this.flags.app, category, removed: true };
  }
}
