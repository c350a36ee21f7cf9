import { Args, Flags } from '@oclif/core';
import { SengCommand } from '../../../base.js';
import { appJson, dbFlag, printable, type AppJson } from '../../../store-flags.js';
import { openPolicyStore } from '../../../../store/index.js';
import { parseMeasurement, validateAppName } from '../../../../store/validate.js';
import { InputError } from '../../../../util/errors.js';
import { parseCidr } from '../../../../util/ipv4.js';

export default class AppSet extends SengCommand<typeof AppSet> {
  static override summary = 'Change an app: its name, MRSIGNER, host or enclave subnet, in one transaction.';
  static override description =
    'The same checks as `db app add` apply. --rename and --mrsigner change every row of the app; in a vanilla database --host-subnet and --enclave-subnet change its only row, or the row picked with --for-host-subnet when it has several. Either everything changes or nothing does.';
  static override examples = [
    '<%= config.bin %> db app set -d nf.db firefox --rename firefox-esr',
    '<%= config.bin %> db app set -d policy.db nginx --for-host-subnet 10.0.0.0/8 --host-subnet 10.1.0.0/16 --enclave-subnet 192.168.28.0/24',
  ];
  static override args = { name: Args.string({ description: 'Name of the app to change.', required: true }) };
  static override flags = {
    db: dbFlag,
    rename: Flags.string({ summary: 'New name (1-255 printable characters).' }),
    mrsigner: Flags.string({ summary: 'New MRSIGNER, 64 hex digits.' }),
    'host-subnet': Flags.string({ summary: 'Vanilla: new untrusted host subnet (CIDR).' }),
    'enclave-subnet': Flags.string({
      summary: 'Vanilla: new enclave subnet (CIDR) of an existing subnet row.',
    }),
    'for-host-subnet': Flags.string({
      summary: 'Vanilla: the row to change, by its current host subnet, when the app has several.',
    }),
  };

  async run(): Promise<AppJson[]> {
    const f = this.flags;
    if ([f.rename, f.mrsigner, f['host-subnet'], f['enclave-subnet']].every((v) => v === undefined)) {
      throw new InputError(
        'nothing to change',
        'pass at least one of --rename, --mrsigner, --host-subnet, --enclave-subnet',
      );
    }
    const cidr = (text: string | undefined) =>
      text === undefined ? undefined : parseCidr(text, { strict: true });
    const rename = f.rename === undefined ? undefined : validateAppName(f.rename);
    const mrSigner = f.mrsigner === undefined ? undefined : parseMeasurement(f.mrsigner, 'mrsigner');
    const hostSubnet = cidr(f['host-subnet']);
    const enclaveSubnet = cidr(f['enclave-subnet']);
    const row = cidr(f['for-host-subnet']);
    const store = await openPolicyStore(f.db);
    try {
      const rows = await store.updateApp(this.args.name, {
        ...(rename === undefined ? {} : { rename }),
        ...(mrSigner ? { mrSigner } : {}),
        ...(hostSubnet ? { hostSubnet } : {}),
        ...(enclaveSubnet ? { enclaveSubnet } : {}),
        ...(row ? { row } : {}),
      });
      const subnets = await store.listSubnets();
      this.log(`changed app ${printable(rename ?? this.args.name)} (${rows.length} row(s))`);
      return rows.map((a) => appJson(a, subnets));
    } finally {
      await store.close();
    }
  }
}
