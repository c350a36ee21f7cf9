import { Flags } from '@oclif/core';
import { SengCommand } from '../base.js';
import { usageError } from '../usage.js';
import { table, printable } from '../store-flags.js';
import { DEFAULT_LEASE_DB, LeaseStore, type Lease } from '../../audit/lease-store.js';
import { formatLocal, parseAt, timezoneLabel } from '../../audit/time.js';
import { parseIpv4 } from '../../util/ipv4.js';

interface LeaseJson {
  sessionId: string;
  enclaveIp: string;
  hostIp: string;
  app: string | null;
  mrEnclave: string;
  mrSigner: string;
  gateway: string;
  start: string;
  end: string | null;
  endReason: string | null;
  /** No end recorded: the session is (as far as the store knows) still running. */
  current: boolean;
}

interface LeasesResult {
  timezone: string;
  at: string | null;
  leases: LeaseJson[];
}

export default class Leases extends SengCommand<typeof Leases> {
  static override summary = 'Show the lease history: which enclave held which enclave IP, and when.';
  static override description = `Reads the gateway's lease store (seng serve --lease-db). Every admitted session is one lease, from its IP assignment to its end; a lease without an end is current.
TIME is local time (the output names the timezone): ISO 8601 (2026-12-01T10:32, "2026-12-01 10:32", or with Z / +02:00) or HH:MM[:SS] today.`;
  static override examples = [
    '<%= config.bin %> leases --ip 192.168.28.7 --at 10:32',
    '<%= config.bin %> leases --app web --at 2026-12-01T09:00 --json',
    '<%= config.bin %> leases --lease-db /var/lib/seng/leases.db',
  ];
  static override flags = {
    ip: Flags.string({ summary: 'Only leases of this enclave IP.' }),
    at: Flags.string({
      summary: 'Only leases held at TIME (local time; ISO 8601 or HH:MM today).',
      helpValue: 'TIME',
    }),
    app: Flags.string({ summary: 'Only leases of this app (its name in the policy database).' }),
    limit: Flags.integer({
      summary: 'At most this many leases, newest first.',
      default: 1000,
      min: 1,
      max: 1_000_000,
    }),
    'lease-db': Flags.string({
      summary: 'Lease store of the gateway.',
      default: DEFAULT_LEASE_DB,
      env: 'SENG_LEASE_DB',
    }),
  };

  async run(): Promise<LeasesResult> {
    const f = this.flags;
    if (f.ip !== undefined) {
      try {
        parseIpv4(f.ip);
      } catch {
        usageError(`--ip "${f.ip}" is not an IPv4 address`);
      }
    }
    let atMs: number | undefined;
    if (f.at !== undefined) {
      atMs = parseAt(f.at);
      if (atMs === undefined)
        usageError(`--at "${f.at}" is not a time: give ISO 8601 (2026-12-01T10:32) or HH:MM (today)`);
    }
    const store = LeaseStore.open(f['lease-db'], { readonly: true });
    let leases: Lease[];
    try {
      leases = store.query({
        ...(f.ip === undefined ? {} : { ip: f.ip }),
        ...(f.app === undefined ? {} : { app: f.app }),
        ...(atMs === undefined ? {} : { atMs }),
        limit: f.limit,
      });
    } finally {
      store.close();
    }
    const timezone = timezoneLabel(atMs === undefined ? new Date() : new Date(atMs));
    const result: LeasesResult = {
      timezone,
      at: atMs === undefined ? null : new Date(atMs).toISOString(),
      leases: leases.map(toJson),
    };
    if (!this.jsonEnabled()) this.print(result, atMs);
    return result;
  }

  private print(r: LeasesResult, atMs: number | undefined): void {
    this.log(
      `times in ${r.timezone}${atMs === undefined ? '' : `; held at ${formatLocal(atMs)}`}: ${r.leases.length} lease(s)`,
    );
    if (r.leases.length === 0) return;
    this.log(
      table(
        ['ENCLAVE IP', 'APP', 'HOST', 'START', 'END', 'MRENCLAVE', 'SESSION', 'END REASON'],
        r.leases.map((l) => [
          l.enclaveIp,
          printable(l.app ?? '-'),
          l.hostIp,
          formatLocal(Date.parse(l.start)),
          l.end === null ? '(current)' : formatLocal(Date.parse(l.end)),
          `${l.mrEnclave.slice(0, 16)}…`,
          l.sessionId,
          printable(l.endReason ?? ''),
        ]),
      ),
    );
  }
}

function toJson(l: Lease): LeaseJson {
  return {
    sessionId: l.sessionId,
    enclaveIp: l.enclaveIp,
    hostIp: l.hostIp,
    app: l.app,
    mrEnclave: l.mrEnclave,
    mrSigner: l.mrSigner,
    gateway: l.gateway,
    start: new Date(l.startMs).toISOString(),
    end: l.endMs === null ? null : new Date(l.endMs).toISOString(),
    endReason: l.endReason,
    current: l.endMs === null,
  };
}
