import { Args, Flags } from '@oclif/core';
import { SengCommand } from '../../base.js';
import { purgeConntrack } from '../../../enforce/conntrack.js';
import { formatIpv4, parseIpv4 } from '../../../util/ipv4.js';

export default class ConntrackPurge extends SengCommand<typeof ConntrackPurge> {
  static override summary = 'Delete every conntrack entry whose original source or destination is IP.';
  static override description =
    'Works over ctnetlink in the current network namespace (what the gateway does when a session ends, so a ' +
    'reused enclave IP never inherits connections). Prints "purged N conntrack entries of IP"; with --json, {"ip", "deleted"}.';
  static override examples = [
    '<%= config.bin %> conntrack purge 192.168.28.2',
    '<%= config.bin %> conntrack purge 192.168.28.2 --json',
  ];
  static override args = { ip: Args.string({ description: 'IPv4 address.', required: true }) };
  static override flags = {
    timeout: Flags.integer({
      summary: 'Milliseconds to wait for each kernel reply.',
      default: 5000,
      min: 1,
      max: 600_000, // node timers hold at most 2^31-1 ms
    }),
  };

  async run(): Promise<{ ip: string; deleted: number }> {
    const ip = parseIpv4(this.args.ip);
    const deleted = await purgeConntrack(ip, { timeoutMs: this.flags.timeout });
    this.log(`purged ${deleted} conntrack ${deleted === 1 ? 'entry' : 'entries'} of ${formatIpv4(ip)}`);
    return { ip: formatIpv4(ip), deleted };
  }
}
