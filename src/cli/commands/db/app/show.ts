import { Args } from '@oclif/core';
import { SengCommand } from '../../../base.js';
import { appJson, dbFlag, printable, type AppJson } from '../../../store-flags.js';
import { openPolicyStore, StoreWriteError } from '../../../../store/index.js';
import { quoteInput } from '../../../../store/validate.js';
import { formatIpv4 } from '../../../../util/ipv4.js';

export interface AppShowJson extends AppJson {
  /** Vanilla: gateway of the app's enclave subnet. */
  enclaveGateway?: string | null;
}

export default class AppShow extends SengCommand<typeof AppShow> {
  static override summary = 'Show every field of an app (all its rows in a vanilla database).';
  static override examples = ['<%= config.bin %> db app show -d policy.db nginx --json'];
  static override args = { name: Args.string({ description: 'App name.', required: true }) };
  static override flags = { db: dbFlag };

  async run(): Promise<AppShowJson[]> {
    const store = await openPolicyStore(this.flags.db, { readonly: true });
    try {
      const subnets = await store.listSubnets();
      const rows = await store.appsByName(this.args.name);
      if (rows.length === 0) {
        throw new StoreWriteError(
          `no app named ${quoteInput(this.args.name)}`,
          `list apps with: seng db app list -d ${store.target}`,
        );
      }
      const out = rows.map((a) => {
        const json: AppShowJson = appJson(a, subnets);
        if (a.enclaveSubnetId !== undefined) {
          const s = subnets.find((x) => x.id === a.enclaveSubnetId);
          json.enclaveGateway = s ? gatewayText(s.gateway) : null;
        }
        return json;
      });
      this.log(out.map(describe).join('\n\n'));
      return out;
    } finally {
      await store.close();
    }
  }
}

function gatewayText(gateway: number | null): string | null {
  return gateway === null ? null : formatIpv4(gateway);
}

function describe(a: AppShowJson): string {
  const lines: [string, string][] = [
    ['id', String(a.id)],
    ['name', printable(a.name)],
    ['mrenclave', a.mrEnclave],
    ['mrsigner', a.mrSigner],
  ];
  if (a.hostSubnet !== undefined) {
    lines.push(['host subnet', a.hostSubnet]);
    lines.push(['enclave subnet', a.enclaveSubnet ?? '? (missing row)']);
    lines.push(['enclave gateway', a.enclaveGateway ?? '-']);
  } else {
    lines.push(['categories', (a.categories ?? []).map(printable).join(', ') || '-']);
  }
  return lines.map(([k, v]) => `${`${k}:`.padEnd(17)}${v}`).join('\n');
}
