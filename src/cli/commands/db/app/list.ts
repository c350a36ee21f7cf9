import { SengCommand } from '../../../base.js';
import { appJson, dbFlag, table, type AppJson } from '../../../store-flags.js';
import { openPolicyStore } from '../../../../store/index.js';

export default class AppList extends SengCommand<typeof AppList> {
  static override summary = 'List allowed apps with decoded measurements, subnets and categories.';
  static override flags = { db: dbFlag };

  async run(): Promise<AppJson[]> {
    const store = await openPolicyStore(this.flags.db, { readonly: true });
    try {
      const subnets = await store.listSubnets();
      const rows = (await store.listApps()).map((a) => appJson(a, subnets));
      if (store.schema === 'vanilla') {
        this.log(
          table(
            ['ID', 'NAME', 'MRENCLAVE', 'HOST SUBNET', 'ENCLAVE SUBNET'],
            rows.map((r) => [String(r.id), r.name, r.mrEnclave, r.hostSubnet ?? '', r.enclaveSubnet ?? '?']),
          ),
        );
      } else {
        this.log(
          table(
            ['ID', 'NAME', 'MRENCLAVE', 'CATEGORIES'],
            rows.map((r) => [String(r.id), r.name, r.mrEnclave, (r.categories ?? []).join(',')]),
          ),
        );
      }
      return rows;
    } finally {
      await store.close();
    }
  }
}
