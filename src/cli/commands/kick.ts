import { Args, Flags } from '@oclif/core';
import { SengCommand } from '../base.js';
import {
  controlRequest,
  DEFAULT_CONTROL_PATH,
  unexpectedReply,
  type KickRequest,
} from '../../gateway/control.js';
import type { EnclaveStatus } from '../../gateway/gateway.js';
import { SengError } from '../../util/errors.js';
import { formatIpv4, parseIpv4 } from '../../util/ipv4.js';

interface KickResult {
  kicked: boolean;
  ended: Pick<EnclaveStatus, 'enclaveIp' | 'app' | 'client'>[];
}

export default class Kick extends SengCommand<typeof Kick> {
  static override summary =
    'End enclave sessions (both tunnels) by enclave IP, app, client host or all; their IPs and firewall state are released.';
  static override examples = [
    '<%= config.bin %> kick 192.168.28.2',
    '<%= config.bin %> kick --app nginx',
    '<%= config.bin %> kick --host 10.0.0.7 --json',
    '<%= config.bin %> kick --all',
  ];
  static override args = { ip: Args.string({ description: 'Enclave IP of the session to end.' }) };
  static override flags = {
    app: Flags.string({ summary: 'End every session of this app (its name in the database).' }),
    host: Flags.string({ summary: 'End every session from this client host IP.' }),
    all: Flags.boolean({ summary: 'End every session.' }),
    control: Flags.string({ summary: 'Control socket of the gateway.', default: DEFAULT_CONTROL_PATH }),
  };

  async run(): Promise<KickResult> {
    const req = this.request();
    const control = this.flags.control;
    const r = (await controlRequest(control, req)) as Partial<KickResult> | null;
    if (!r || typeof r.kicked !== 'boolean') throw unexpectedReply(control, 'a kick result');
    // Gateways before kick selectors answered { kicked } only.
    const ended = Array.isArray(r.ended)
      ? r.ended.map((e) => ({ enclaveIp: e.enclaveIp, app: e.app, client: e.client }))
      : r.kicked && req.ip
        ? [{ enclaveIp: req.ip, app: null, client: '' }]
        : [];
    if (ended.length === 0) {
      throw new SengError('ENOSESSION', `no session ${describe(req)}`, {
        hint: 'list sessions with: seng status',
      });
    }
    for (const e of ended)
      this.log(`kicked ${e.enclaveIp}${e.app ? ` (${e.app})` : ''}${e.client ? ` from ${e.client}` : ''}`);
    return { kicked: true, ended };
  }

  /** Exactly one selector: the IP argument, --app, --host or --all. */
  private request(): KickRequest {
    const { app, host, all } = this.flags;
    const ip = this.args.ip;
    const given = [ip, app, host, all ? true : undefined].filter((x) => x !== undefined);
    if (given.length !== 1) {
      throw new SengError('EUSAGE', 'give exactly one of: an enclave IP, --app NAME, --host IP, --all', {
        hint: 'e.g. seng kick 192.168.28.2, or seng kick --app nginx',
        exitCode: 2,
      });
    }
    if (ip !== undefined) return { cmd: 'kick', ip: formatIpv4(parseIpv4(ip)) };
    if (host !== undefined) return { cmd: 'kick', host: formatIpv4(parseIpv4(host)) };
    if (app !== undefined) return { cmd: 'kick', app };
    return { cmd: 'kick', all: true };
  }
}

function describe(req: KickRequest): string {
  if (req.ip) return `with enclave IP ${req.ip}`;
  if (req.host) return `from client host ${req.host}`;
  if (req.app) return `of app ${req.app}`;
  return 'to end';
}
