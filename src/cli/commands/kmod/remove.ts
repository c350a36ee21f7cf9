import { Flags } from '@oclif/core';
import { SengCommand } from '../../base.js';
import { SengKmodClient } from '../../../../kmod-bridge/index.js';
import { purgeConntrack } from '../../../enforce/conntrack.js';
import { formatIpv4, parseIpv4 } from '../../../util/ipv4.js';

export default class KmodRemove extends SengCommand<typeof KmodRemove> {
  static override summary = 'Unregister an enclave IP from the seng kernel module.';
  static override description =
    'Sends ENC + RMV (SPEC §5.1 rule 2); the app and its categories go away with its last enclave. ' +
    'With --purge-conntrack, also deletes the conntrack entries of the IP afterwards, as a session end does.';
  static override examples = [
    '<%= config.bin %> kmod remove --enclave 192.168.28.2',
    '<%= config.bin %> kmod remove --enclave 192.168.28.2 --purge-conntrack --json',
  ];
  static override flags = {
    enclave: Flags.string({ summary: 'Enclave IP.', required: true }),
    'purge-conntrack': Flags.boolean({ summary: 'Then delete conntrack entries from or to the IP.' }),
    timeout: Flags.integer({
      summary: 'Milliseconds to wait for each acknowledgement.',
      default: 1000,
      min: 1,
      max: 600_000, // node timers hold at most 2^31-1 ms
    }),
  };

  async run(): Promise<{ enclave: string; removed: true; conntrackDeleted?: number }> {
    const enclaveIp = parseIpv4(this.flags.enclave);
    await SengKmodClient.with({ logger: this.logger, timeoutMs: this.flags.timeout }, (c) =>
      c.unregister(enclaveIp),
    );
    const enclave = formatIpv4(enclaveIp);
    if (this.flags['purge-conntrack']) {
      const deleted = await purgeConntrack(enclaveIp, { timeoutMs: this.flags.timeout * 5 });
      this.log(`unregistered ${enclave}; deleted ${deleted} conntrack entr${deleted === 1 ? 'y' : 'ies'}`);
      return { enclave, removed: true, conntrackDeleted: deleted };
    }
    this.log(`unregistered ${enclave}`);
    return { enclave, removed: true };
  }
}
