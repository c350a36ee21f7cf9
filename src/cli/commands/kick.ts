import { Args, Flags } from '@oclif/core';
import { SengCommand } from '../base.js';
import { controlRequest, DEFAULT_CONTROL_PATH } from '../../gateway/control.js';
import { SengError } from '../../util/errors.js';
import { formatIpv4, parseIpv4 } from '../../util/ipv4.js';

export default class Kick extends SengCommand<typeof Kick> {
  static override summary =
    "End an enclave's session (both tunnels); its IP and firewall state are released.";
  static override args = { ip: Args.string({ description: 'Enclave IP.', required: true }) };
  static override flags = {
    control: Flags.string({ summary: 'Control socket of the gateway.', default: DEFAULT_CONTROL_PATH }),
  };

  async run(): Promise<{ ip: string; kicked: boolean }> {
    const ip = formatIpv4(parseIpv4(this.args.ip));
    const r = (await controlRequest(this.flags.control, { cmd: 'kick', ip })) as { kicked: boolean };
    if (!r.kicked)
      throw new SengError('ENOSESSION', `no session with enclave IP ${ip}`, {
        hint: 'list sessions with: seng status',
      });
    this.log(`kicked ${ip}`);
    return { ip, kicked: true };
  }
}
