/**
 * The enclave index (SPEC §4): decides whether an attested app may have network
 * access and from which enclave subnet it gets its IP, per (mr_enclave, client host).
 *
 * - vanilla database: allowed if some row has the app's mr_enclave; the subnet is that
 *   of the first such row (by id) whose host subnet contains the client's IP.
 * - netfilter database: one subnet 192.168.28.0/24; every attested enclave is admitted
 *   (the firewall authorizes); categories come from the database.
 * - no database: one subnet 192.168.28.0/24, every attested enclave admitted.
 * Optionally (requireSigner) the row's mr_signer must equal the enclave's, which the
 * original never checked. The index is held in memory and reloaded when the database
 * changes, so admissions cost no SQL. The source is a SQLite store (read synchronously on
 * reload) or the in-memory copy of a PostgreSQL policy, which the gateway refreshes
 * asynchronously before it reloads the index (src/gateway/policy-follow.ts).
 */
import type { AppRecord, PolicySource } from '../store/index.js';
import { cidrContains, formatCidr, formatIpv4, parseCidr, parseIpv4, type Ipv4 } from '../util/ipv4.js';
import { IpPool } from './ip-pool.js';

export const DEFAULT_SUBNET = '192.168.28.0/24';
export const DEFAULT_GATEWAY = '192.168.28.1';

export type Admission =
  | { ok: true; pool: IpPool; appName: string | undefined; categories: string[] }
  | { ok: false; check: 'allowlist' | 'host-subnet' | 'mr-signer' | 'subnet-missing'; reason: string };

export interface EnclaveIndexOptions {
  requireSigner?: boolean;
}

export class EnclaveIndex {
  readonly mode: 'vanilla' | 'netfilter' | 'open';
  private readonly store: PolicySource | undefined;
  private readonly requireSigner: boolean;
  private readonly pools = new Map<number, IpPool>();
  private appsByMeasurement = new Map<string, AppRecord[]>();
  private lastVersion = -1;
  /** Incremented whenever the index was rebuilt from the database (admissions may differ). */
  generation = 0;

  constructor(store: PolicySource | undefined, opts: EnclaveIndexOptions = {}) {
    this.store = store;
    this.mode = store === undefined ? 'open' : store.schema;
    this.requireSigner = opts.requireSigner ?? false;
    if (this.mode !== 'vanilla')
      this.pools.set(0, new IpPool(parseCidr(DEFAULT_SUBNET), parseIpv4(DEFAULT_GATEWAY)));
    this.reload();
  }

  /** All enclave subnets (their gateways go on the TUN interface). */
  subnets(): IpPool[] {
    return [...this.pools.values()];
  }

  /**
   * Re-reads the database if it changed since the last call. Returns the apps whose
   * category list changed (netfilter mode), so enforcement can follow without a restart.
   */
  reload(force = false): { mrEnclave: Buffer; categories: string[] }[] {
    if (!this.store) return [];
    const version = this.store.dataVersion();
    if (!force && version === this.lastVersion) return [];
    const firstLoad = this.lastVersion === -1;
    this.lastVersion = version;
    this.generation++;
    const previous = this.appsByMeasurement;
    const next = new Map<string, AppRecord[]>();
    for (const app of this.store.listApps()) {
      const key = app.mrEnclave.toString('hex');
      next.set(key, [...(next.get(key) ?? []), app]);
    }
    for (const s of this.store.listSubnets()) {
      if (!this.pools.has(s.id))
        this.pools.set(s.id, new IpPool(s.cidr, s.gateway ?? (s.cidr.network + 1) >>> 0));
    }
    this.appsByMeasurement = next;
    const changed: { mrEnclave: Buffer; categories: string[] }[] = [];
    for (const key of new Set([...previous.keys(), ...next.keys()])) {
      const before = (previous.get(key)?.[0]?.categories ?? []).join('\n');
      const after = next.get(key)?.[0]?.categories ?? [];
      if (!firstLoad && before !== after.join('\n'))
        changed.push({ mrEnclave: Buffer.from(key, 'hex'), categories: after });
    }
    return changed;
  }

  /** Known app name and categories for a measurement (for logs and status). */
  describe(mrEnclave: Buffer): { appName: string | undefined; categories: string[] } {
    const row = this.appsByMeasurement.get(mrEnclave.toString('hex'))?.[0];
    return { appName: row?.name, categories: row?.categories ?? [] };
  }

  admit(mrEnclave: Buffer, mrSigner: Buffer, clientIp: Ipv4): Admission {
    const rows = this.appsByMeasurement.get(mrEnclave.toString('hex')) ?? [];
    if (this.mode !== 'vanilla') {
      const row = rows[0];
      if (row && this.requireSigner && !row.mrSigner.equals(mrSigner)) return signerMismatch(row, mrSigner);
      return {
        ok: true,
        pool: this.pools.get(0) as IpPool,
        appName: row?.name,
        categories: row?.categories ?? [],
      };
    }
    if (rows.length === 0) {
      return {
        ok: false,
        check: 'allowlist',
        reason: `app ${mrEnclave.toString('hex')} is not in the allowlist`,
      };
    }
    const row = rows.find((r) => r.hostSubnet !== undefined && cidrContains(r.hostSubnet, clientIp));
    if (!row) {
      return {
        ok: false,
        check: 'host-subnet',
        reason: `app ${rows[0]?.name} may not connect from host ${formatIpv4(clientIp)} (allowed: ${rows
          .map((r) => (r.hostSubnet ? formatCidr(r.hostSubnet) : '?'))
          .join(', ')})`,
      };
    }
    if (this.requireSigner && !row.mrSigner.equals(mrSigner)) return signerMismatch(row, mrSigner);
    const pool = this.pools.get(row.enclaveSubnetId ?? -1);
    if (!pool) {
      return {
        ok: false,
        check: 'subnet-missing',
        reason: `enclave subnet ${row.enclaveSubnetId} of app ${row.name} does not exist`,
      };
    }
    return { ok: true, pool, appName: row.name, categories: row.categories };
  }
}

function signerMismatch(row: AppRecord, mrSigner: Buffer): Admission {
  return {
    ok: false,
    check: 'mr-signer',
    reason: `app ${row.name}: MRSIGNER ${mrSigner.toString('hex')} differs from the database's ${row.mrSigner.toString('hex')}`,
  };
}
