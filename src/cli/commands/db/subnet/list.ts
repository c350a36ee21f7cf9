import { SengCommand } from '../../../base.js';
import { dbFlag, subnetJson, table } from '../../../store-flags.js';
import { openPolicyStore } from '../../../../store/index.js';
import { StoreWriteError } from '../../../../store/errors.js';

export default class SubnetList extends SengCommand<typeof SubnetList> {
  static override summary = 'List enclave subnets (vanilla database).';
  static override flags = { db: dbFlag };

  async run(): Promise<ReturnType<typeof subnetJson>[]> {
    const store = await openPolicyStore(this.flags.db, { readonly: true });
    try {
      if (store.schema !== 'vanilla') {
        throw new StoreWriteError(
          `${store.target} is a netfilter database; it has one fixed enclave subnet, 192.168.28.0/24`,
          'enclave subnets are configurable only in the vanilla layout',
        );
      }
      const rows = (await store.listSubnets()).map(subnetJson);
      this.log(
        table(
          ['ID', 'SUBNET', 'GATEWAY'],
          rows.map((r) => [String(r.id), r.subnet, r.gateway ?? '-']),
        ),
      );
      return rows;
    } finally {
      await store.close();
    }
  }
}
