import { Args, Flags } from '@oclif/core';
import { SengCommand } from '../../../base.js';
import { appJson, dbFlag, printable, type AppJson } from '../../../store-flags.js';
import { openPolicyStore } from '../../../../store/index.js';
import { parseCidr } from '../../../../util/ipv4.js';

export default class AppRemove extends SengCommand<typeof AppRemove> {
  static override summary =
    'Remove an app (every row with that name, or only one host subnet) and its categories.';
  static override args = { name: Args.string({ description: 'App name.', required: true }) };
  static override flags = {
    db: dbFlag,
    'host-subnet': Flags.string({ summary: 'Vanilla: remove only the row for this host subnet.' }),
  };

  async run(): Promise<AppJson[]> {
    const hostSubnet =
      this.flags['host-subnet'] === undefined
        ? undefined
        : parseCidr(this.flags['host-subnet'], { strict: true });
    const store = await openPolicyStore(this.flags.db);
    try {
      const subnets = await store.listSubnets();
      const removed = (await store.removeApp(this.args.name, hostSubnet ? { hostSubnet } : {})).map((a) =>
        appJson(a, subnets),
      );
      this.log(`removed ${removed.length} row(s) of app ${printable(this.args.name)}`);
      return removed;
    } finally {
      await store.close();
    }
  }
}
