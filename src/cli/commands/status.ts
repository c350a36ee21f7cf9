import { Flags } from '@oclif/core';
import { SengCommand } from '../base.js';
import { controlRequest, DEFAULT_CONTROL_PATH, unexpectedReply } from '../../gateway/control.js';
import type { EnclaveStatus } from '../../gateway/gateway.js';
import { table } from '../store-flags.js';
import type { ShadowStatus } from '../../shadow/service.js';

interface StatusResult {
  listen: string;
  tun: string;
  enforcement: string;
  database: string | null;
  subnets: { subnet: string; gateway: string; inUse: number; free: number }[];
  stats: Record<string, number>;
  sessions: EnclaveStatus[];
  /** Present when the gateway runs the ShadowServer (-s). */
  shadows?: ShadowStatus[];
}

export default class Status extends SengCommand<typeof Status> {
  static override summary =
    'Show the sessions of a running gateway: enclave IP, app, measurements, client, traffic.';
  static override flags = {
    control: Flags.string({ summary: 'Control socket of the gateway.', default: DEFAULT_CONTROL_PATH }),
  };

  async run(): Promise<StatusResult> {
    const control = this.flags.control;
    const s = (await controlRequest(control, { cmd: 'status' })) as StatusResult | null;
    if (!s || typeof s !== 'object' || !Array.isArray(s.sessions) || !Array.isArray(s.subnets)) {
      throw unexpectedReply(control, 'a status (sessions, subnets)');
    }
    this.log(
      `gateway ${s.listen}  tun ${s.tun}  enforcement ${s.enforcement}  database ${s.database ?? '-'}`,
    );
    this.log(
      `subnets: ${s.subnets.map((x) => `${x.subnet} (${x.inUse} in use, ${x.free} free)`).join(', ')}`,
    );
    this.log('');
    this.log(
      table(
        ['ENCLAVE IP', 'STATE', 'APP', 'MRENCLAVE', 'CLIENT', 'SINCE', 'PKTS IN/OUT', 'BYTES IN/OUT'],
        s.sessions.map((x) => [
          x.enclaveIp,
          x.state,
          x.app ?? '-',
          `${String(x.mrEnclave).slice(0, 16)}…`,
          x.client,
          x.since,
          `${x.packetsIn}/${x.packetsOut}`,
          `${x.bytesIn}/${x.bytesOut}`,
        ]),
      ),
    );
    if (s.shadows) {
      this.log('');
      this.log(
        table(
          ['SHADOWED', 'ENCLAVE', 'STATE', 'APP', 'SINCE'],
          s.shadows.map((x) => [
            `${x.hostIp}:${x.port}/${x.proto}`,
            x.enclaveIp,
            x.state,
            x.app ?? '-',
            x.since,
          ]),
        ),
      );
    }
    return s;
  }
}
