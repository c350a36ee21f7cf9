import { Args } from '@oclif/core';
import { SengCommand } from '../../../base.js';
import { dbFlag, subnetJson } from '../../../store-flags.js';
import { openPolicyStore } from '../../../../store/index.js';
import { parseCidr } from '../../../../util/ipv4.js';

export default class SubnetRemove extends SengCommand<typeof SubnetRemove> {
  static override summary = 'Remove an enclave subnet that no app uses (vanilla database).';
  static override args = { cidr: Args.string({ description: 'Enclave subnet to remove.', required: true }) };
  static override flags = { db: dbFlag };

  async run(): Promise<ReturnType<typeof subnetJson>> {
    const cidr = parseCidr(this.args.cidr, { strict: true });
    const store = await openPolicyStore(this.flags.db);
    try {
      const out = subnetJson(await store.removeSubnet(cidr));
      this.log(`removed enclave subnet ${out.subnet}`);
      return out;
    } finally {
      await store.close();
    }
  }
}
