import { Args, Flags } from '@oclif/core';
import { SengCommand } from '../../../base.js';
import { dbFlag, subnetJson } from '../../../store-flags.js';
import { openPolicyStore } from '../../../../store/index.js';
import { parseSubnetWithGateway } from '../../../../store/validate.js';

export default class SubnetAdd extends SengCommand<typeof SubnetAdd> {
  static override summary = 'Add an enclave subnet (vanilla database).';
  static override examples = [
    '<%= config.bin %> db subnet add -d policy.db 10.28.0.0/24 --gateway 10.28.0.1',
  ];
  static override args = {
    cidr: Args.string({ description: 'Enclave subnet, e.g. 192.168.28.0/24.', required: true }),
  };
  static override flags = {
    db: dbFlag,
    gateway: Flags.string({
      summary: 'Gateway address inside the subnet (default: its first host address).',
    }),
  };

  async run(): Promise<ReturnType<typeof subnetJson>> {
    const { cidr, gateway } = parseSubnetWithGateway(this.args.cidr, this.flags.gateway);
    const store = await openPolicyStore(this.flags.db);
    try {
      const out = subnetJson(await store.addSubnet(cidr, gateway));
      this.log(`added enclave subnet ${out.subnet} (id ${out.id}, gateway ${out.gateway})`);
      return out;
    } finally {
      await store.close();
    }
  }
}
