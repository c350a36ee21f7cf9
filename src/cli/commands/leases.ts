import { Flags } from '@oclif/core';
import { SengCommand } from '../base.js';
import { usageError } from '../usage.js';
import { table, printable } from '../store-flags.js';
import { DEFAULT_LEASE_DB, LeaseStore, type Lease } from '../../audit/lease-store.js';
import { formatLocal, parseAt, timezoneLabel } from '../../audit/time.js';
import { formatIpv4, parseIpv4 } from '../../util/ipv4.js';
import { Registry, type RegistryLease } from '../../fleet/registry.js';
import { PgConnectionError, isConnectionError, isPostgresUrl, redactUrl } from '../../pg/index.js';

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

interface LeasesSource {
  /** The lease store file, or the registry URL (password redacted). */
  source: string;
}

interface LeasesResult extends LeasesSource {
  timezone: string;
  at: string | null;
  leases: LeaseJson[];
}

export default class Leases extends SengCommand<typeof Leases> {
  static override summary = 'Show the lease history: which enclave held which enclave IP, and when.';
  static override description = `Reads the gateway's lease store (seng serve --lease-db), or with --registry the fleet's enclave registry (seng serve --registry: live leases and history of every gateway, with the gateway that held them). Every admitted session is one lease, from its IP assignment to its end; a lease without an end is current.
TIME is local time (the output names the timezone): ISO 8601 (2026-12-01T10:32, "2026-12-01 10:32", or with Z / +02:00) or HH:MM[:SS] today.`;
  static override examples = [
    '<%= config.bin %> leases --ip 192.168.28.7 --at 10:32',
    '<%= config.bin %> leases --app web --at 2026-12-01T09:00 --json',
    '<%= config.bin %> leases --lease-db /var/lib/seng/leases.db',
    '<%= config.bin %> leases --registry postgres://seng@db.example/seng --ip 192.168.28.7 --at 10:32',
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
    registry: Flags.string({
      summary: "The fleet's enclave registry (postgres://… URL) instead of a gateway's lease store.",
      env: 'SENG_REGISTRY',
      helpValue: 'URL',
    }),
    db: Flags.string({
      char: 'd',
      summary:
        'A PostgreSQL policy store holding the registry (postgres://…; the gateways of seng serve -d URL use it as their registry).',
      helpValue: 'URL',
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
    const query = {
      ...(f.ip === undefined ? {} : { ip: f.ip }),
      ...(f.app === undefined ? {} : { app: f.app }),
      ...(atMs === undefined ? {} : { atMs }),
      limit: f.limit,
    };
    const registryUrl = f.registry ?? f.db;
    if (f.db !== undefined && !isPostgresUrl(f.db))
      usageError('-d/--db takes a postgres:// URL here (the lease store file is --lease-db)');
    if (registryUrl !== undefined && !isPostgresUrl(registryUrl))
      usageError(`--registry "${redactUrl(registryUrl)}" is not a postgres:// or postgresql:// URL`);
    const { leases, source } =
      registryUrl === undefined
        ? { leases: queryStore(f['lease-db'], query).map(toJson), source: f['lease-db'] }
        : {
            leases: (await queryRegistry(registryUrl, query)).map(registryJson),
            source: redactUrl(registryUrl),
          };
    const timezone = timezoneLabel(atMs === undefined ? new Date() : new Date(atMs));
    const result: LeasesResult = {
      source,
      timezone,
      at: atMs === undefined ? null : new Date(atMs).toISOString(),
      leases,
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
        ['ENCLAVE IP', 'APP', 'HOST', 'GATEWAY', 'START', 'END', 'MRENCLAVE', 'SESSION', 'END REASON'],
        r.leases.map((l) => [
          l.enclaveIp,
          printable(l.app ?? '-'),
          l.hostIp,
          printable(l.gateway),
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

type Query = { ip?: string; app?: string; atMs?: number; limit: number };

function queryStore(path: string, q: Query): Lease[] {
  const store = LeaseStore.open(path, { readonly: true });
  try {
    return store.query(q);
  } finally {
    store.close();
  }
}

async function queryRegistry(url: string, q: Query): Promise<RegistryLease[]> {
  const registry = await Registry.open(url, { applicationName: 'seng-leases', readOnly: true }).catch(
    (err: unknown) => {
      throw isConnectionError(err) ? new PgConnectionError(url, err) : err;
    },
  );
  try {
    const { ip, ...rest } = q;
    return await registry.query({ ...rest, ...(ip === undefined ? {} : { ip: parseIpv4(ip) }) });
  } finally {
    await registry.close();
  }
}

function registryJson(l: RegistryLease): LeaseJson {
  return {
    sessionId: l.sessionId,
    enclaveIp: formatIpv4(l.ip),
    hostIp: l.hostIp,
    app: l.app,
    mrEnclave: l.mrEnclave,
    mrSigner: l.mrSigner,
    gateway: l.gatewayId,
    start: l.startedAt.toISOString(),
    end: l.endedAt === null ? null : l.endedAt.toISOString(),
    endReason: l.endReason,
    current: l.endedAt === null,
  };
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
