import { Args, Flags } from '@oclif/core';
import { SengCommand } from '../../../base.js';
import { appJson, dbFlag, printable, type AppJson } from '../../../store-flags.js';
import { openPolicyStore } from '../../../../store/index.js';
import { parseMeasurement, validateAppName } from '../../../../store/validate.js';
import { parseCidr } from '../../../../util/ipv4.js';

export default class AppAdd extends SengCommand<typeof AppAdd> {
  static override summary = 'Allow an app (enclave measurement) network access.';
  static override description =
    'Vanilla databases also need the untrusted host subnet the app may connect from and the enclave subnet its enclaves get addresses in; add one row per host subnet.';
  static override examples = [
    '<%= config.bin %> db app add -d policy.db nginx --mrenclave <64 hex> --mrsigner <64 hex> --host-subnet 10.0.0.0/8 --enclave-subnet 192.168.28.0/24',
    '<%= config.bin %> db app add -d nf.db firefox --mrenclave <64 hex> --mrsigner <64 hex>',
  ];
  static override args = { name: Args.string({ description: 'App name.', required: true }) };
  static override flags = {
    db: dbFlag,
    mrenclave: Flags.string({ summary: 'MRENCLAVE, 64 hex digits.', required: true }),
    mrsigner: Flags.string({ summary: 'MRSIGNER, 64 hex digits.', required: true }),
    'host-subnet': Flags.string({ summary: 'Vanilla: untrusted host subnet the app connects from (CIDR).' }),
    'enclave-subnet': Flags.string({ summary: 'Vanilla: enclave subnet (CIDR) of an existing subnet row.' }),
  };

  async run(): Promise<AppJson> {
    const name = validateAppName(this.args.name);
    const mrEnclave = parseMeasurement(this.flags.mrenclave, 'mrenclave');
    const mrSigner = parseMeasurement(this.flags.mrsigner, 'mrsigner');
    const hostSubnet =
      this.flags['host-subnet'] === undefined
        ? undefined
        : parseCidr(this.flags['host-subnet'], { strict: true });
    const enclaveSubnet =
      this.flags['enclave-subnet'] === undefined
        ? undefined
        : parseCidr(this.flags['enclave-subnet'], { strict: true });
    const store = await openPolicyStore(this.flags.db);
    try {
      if (store.schema === 'netfilter' && (hostSubnet || enclaveSubnet)) {
        this.warn('--host-subnet/--enclave-subnet are ignored: a netfilter database has no subnets');
      }
      const app = await store.addApp({
        name,
        mrEnclave,
        mrSigner,
        ...(hostSubnet ? { hostSubnet } : {}),
        ...(enclaveSubnet ? { enclaveSubnet } : {}),
      });
      const out = appJson(app, await store.listSubnets());
      this.log(`added app ${printable(name)} (${out.mrEnclave})`);
      return out;
    } finally {
      await store.close();
    }
  }
}
