import { Flags } from '@oclif/core';
import { SengCommand } from '../../../base.js';
import { dbFlag, table } from '../../../store-flags.js';
import { openPolicyStore } from '../../../../store/index.js';
import { StoreWriteError } from '../../../../store/errors.js';

export default class CategoryList extends SengCommand<typeof CategoryList> {
  static override summary = 'List categories with their apps (netfilter database).';
  static override flags = { db: dbFlag, app: Flags.string({ summary: 'Only the categories of this app.' }) };

  async run(): Promise<{ category: string; apps: string[] }[]> {
    const store = await openPolicyStore(this.flags.db, { readonly: true });
    try {
      if (store.schema !== 'netfilter') {
        throw new StoreWriteError(
          `${store.target} is a vanilla database; categories exist only in the netfilter layout`,
        );
      }
      const byCategory = new Map<string, string[]>();
      const apps = (await store.listApps()).filter(
        (a) => this.flags.app === undefined || a.name === this.flags.app,
      );
      if (this.flags.app !== undefined && apps.length === 0) {
        throw new StoreWriteError(`no app named "${this.flags.app}"`, 'list apps with: seng db app list');
      }
      for (const app of apps)
        for (const c of app.categories) byCategory.set(c, [...(byCategory.get(c) ?? []), app.name]);
      const rows = [...byCategory.entries()]
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([category, names]) => ({ category, apps: names }));
      this.log(
        table(
          ['CATEGORY', 'APPS'],
          rows.map((r) => [r.category, r.apps.join(', ')]),
        ),
      );
      return rows;
    } finally {
      await store.close();
    }
  }
}
