import { Args, Flags } from '@oclif/core';
import { SengCommand } from '../../../base.js';
import { dbFlag, printable } from '../../../store-flags.js';
import { openPolicyStore } from '../../../../store/index.js';
import { validateCategory } from '../../../../store/validate.js';

export default class CategoryAdd extends SengCommand<typeof CategoryAdd> {
  static override summary = 'Put an app into a category (netfilter database).';
  static override description =
    'A running `seng serve -n` picks the change up without a restart and updates the kernel module for active apps.';
  static override examples = ['<%= config.bin %> db category add -d nf.db Browser --app firefox'];
  static override args = {
    category: Args.string({ description: 'Category name: 1-20 of A-Z a-z 0-9 _ . -', required: true }),
  };
  static override flags = { db: dbFlag, app: Flags.string({ summary: 'App name.', required: true }) };

  async run(): Promise<{ app: string; category: string; added: true }> {
    const category = validateCategory(this.args.category);
    const store = await openPolicyStore(this.flags.db);
    try {
      await store.addCategory(this.flags.app, category);
    } finally {
      await store.close();
    }
    this.log(`added ${printable(this.flags.app)} to category ${category}`);
    return { app: this.flags.app, category, added: true };
  }
}
