/**
 * The enclave registry's statements (schema in schema.ts): claim, release, heartbeat,
 * reclaim, and the read side of `seng leases` / `seng status --fleet`. Stateless apart from
 * its pool; the gateway's client (gateway-leases.ts) and the agent (agent.ts) add timers and
 * retries on top. Every statement is parameterised.
 */
import type pg from 'pg';
import { inTransaction, openPool, redactUrl } from '../pg/index.js';
import { EnvironmentError } from '../util/errors.js';
import type { Ipv4 } from '../util/ipv4.js';
import { ensureRegistrySchema, registrySchemaPresent } from './schema.js';

/** What a gateway writes when it claims an enclave IP. */
export interface LeaseClaim {
  ip: Ipv4;
  /** The enclave subnet (CIDR) the IP belongs to. */
  subnet: string;
  sessionId: string;
  gatewayId: string;
  app: string | null;
  /** Hex. */
  mrEnclave: string;
  mrSigner: string;
  /** The untrusted host's address (dotted quad). */
  hostIp: string;
  categories: string[];
}

export interface RegistryLease extends LeaseClaim {
  startedAt: Date;
  /** null for a live lease. */
  endedAt: Date | null;
  endReason: string | null;
}

export interface GatewayRecord {
  id: string;
  address: string;
  pid: number;
  leaseTtlMs: number;
  startedAt: Date;
  heartbeatAt: Date;
  /** Milliseconds since its last heartbeat, by the database's clock. */
  heartbeatAgeMs: number;
  /** Its heartbeat is older than its TTL: its leases are (or are about to be) reclaimed. */
  lost: boolean;
  leases: number;
}

export interface LeaseQuery {
  ip?: Ipv4;
  app?: string;
  /** Leases held at this instant (ms since the epoch). */
  atMs?: number;
  limit?: number;
}

export interface ReleaseItem {
  ip: Ipv4;
  sessionId: string;
  reason: string;
}

/** End reason of leases reclaimed from a gateway whose heartbeat stopped. */
export const GATEWAY_LOST = 'gateway-lost';
/** End reason of leases a gateway left behind when it restarts under the same id. */
export const GATEWAY_RESTARTED = 'gateway-restarted';
/** End reason of leases still held when a gateway stops gracefully. */
export const GATEWAY_STOPPED = 'gateway-stopped';

type LeaseRow = {
  ip: string;
  subnet: string;
  session_id: string;
  gateway_id: string;
  app: string | null;
  mr_enclave: string;
  mr_signer: string;
  host_ip: string;
  categories: string[];
  started_at: Date;
  ended_at: Date | null;
  end_reason: string | null;
};

const LEASE_COLUMNS =
  'ip, subnet, session_id, gateway_id, app, mr_enclave, mr_signer, host_ip, categories, started_at';

/**
 * Moves the live leases chosen by `where` (a constant SQL fragment over `l` and the USING
 * list) into the history with `reason` (an SQL expression, also constant); answers with
 * `answer` over `gone` (default: the moved leases).
 */
function moveSql(using: string, where: string, reason: string, answer = 'SELECT * FROM gone'): string {
  return `WITH gone AS (
      DELETE FROM seng_leases l ${using} WHERE ${where}
      RETURNING l.*, ${reason} AS end_reason
    ), kept AS (
      INSERT INTO seng_lease_history (${LEASE_COLUMNS}, ended_at, end_reason)
      SELECT ${LEASE_COLUMNS}, clock_timestamp(), end_reason FROM gone
      ON CONFLICT (session_id) DO NOTHING
    )
    ${answer}`;
}

/** Releases answer with a count only: decoding the moved rows would cost the gateway CPU. */
const RELEASE_SQL = moveSql(
  'USING unnest($1::bigint[], $2::text[], $3::text[]) AS r(ip, session_id, reason)',
  'l.ip = r.ip AND l.session_id = r.session_id',
  'r.reason',
  'SELECT count(*)::int AS n FROM gone',
);

/**
 * Claims a batch of leases, given as one JSON array (one parameter instead of nine arrays:
 * cheaper to encode, and `categories` stays an array per row). Inserted in IP order, so two
 * gateways claiming overlapping batches wait for each other in the same order and cannot
 * deadlock. Answers with the IPs it could NOT claim (usually none: no rows to decode).
 */
const CLAIM_CTES = `input AS MATERIALIZED (
    SELECT * FROM json_to_recordset($1::json) AS r(ip bigint, subnet text, session_id text,
      gateway_id text, app text, mr_enclave text, mr_signer text, host_ip text, categories text[])
  ), won AS (
    INSERT INTO seng_leases (ip, subnet, session_id, gateway_id, app, mr_enclave, mr_signer, host_ip, categories)
    SELECT ip, subnet, session_id, gateway_id, app, mr_enclave, mr_signer, host_ip, coalesce(categories, '{}')
      FROM input ORDER BY ip
    ON CONFLICT DO NOTHING RETURNING ip
  )`;
const LOST_SQL = 'SELECT i.ip FROM input i WHERE NOT EXISTS (SELECT 1 FROM won w WHERE w.ip = i.ip)';
const CLAIM_SQL = `WITH ${CLAIM_CTES} ${LOST_SQL}`;
/**
 * Releases (the arrays of RELEASE_SQL, here $2–$4) and claims ($1) in one statement, so a
 * busy gateway makes one round trip for both. The released and the claimed IPs never overlap
 * (a released IP returns to the gateway's pool only after its release was written).
 */
const CLAIM_AND_RELEASE_SQL = `WITH gone AS (
    DELETE FROM seng_leases l USING unnest($2::bigint[], $3::text[], $4::text[]) AS r(ip, session_id, reason)
     WHERE l.ip = r.ip AND l.session_id = r.session_id
    RETURNING l.*, r.reason AS end_reason
  ), kept AS (
    INSERT INTO seng_lease_history (${LEASE_COLUMNS}, ended_at, end_reason)
    SELECT ${LEASE_COLUMNS}, clock_timestamp(), end_reason FROM gone
    ON CONFLICT (session_id) DO NOTHING
  ), ${CLAIM_CTES} ${LOST_SQL}`;
const END_GATEWAY_SQL = moveSql('', 'l.gateway_id = $1', '$2::text');
/** Leases of gateways whose heartbeat is older than that gateway's TTL (by the gateway index). */
const RECLAIM_SQL = moveSql(
  '',
  `l.gateway_id IN (SELECT g.id FROM seng_gateways g
       WHERE g.heartbeat_at < clock_timestamp() - g.lease_ttl_ms * interval '1 millisecond')`,
  `'${GATEWAY_LOST}'`,
);

/** Rows of gateways lost for a day that hold no lease any more are forgotten. */
const FORGET_GATEWAYS_SQL = `DELETE FROM seng_gateways g
  WHERE g.heartbeat_at < clock_timestamp() - interval '1 day'
    AND NOT EXISTS (SELECT 1 FROM seng_leases l WHERE l.gateway_id = g.id)`;

export class Registry {
  private constructor(readonly pool: pg.Pool) {}

  /**
   * Opens a pool and creates the tables if needed (throws on connection errors: wrap in
   * withRetry). With `readOnly` nothing is created (`seng leases`, `seng status --fleet` may
   * run as users that cannot): missing tables are an EREGISTRY_MISSING error with a hint.
   */
  static async open(
    url: string,
    opts: { applicationName?: string; onIdleError?: (err: Error) => void; readOnly?: boolean } = {},
  ): Promise<Registry> {
    const pool = openPool(url, {
      applicationName: opts.applicationName ?? 'seng-registry',
      ...(opts.onIdleError ? { onIdleError: opts.onIdleError } : {}),
    });
    try {
      if (!opts.readOnly) await ensureRegistrySchema(pool);
      else if (!(await registrySchemaPresent(pool))) throw registryMissing(url);
    } catch (err) {
      await pool.end().catch(() => {});
      throw err;
    }
    return new Registry(pool);
  }

  async close(): Promise<void> {
    await this.pool.end().catch(() => {});
  }

  // ------------------------------------------------------------------ gateways

  /**
   * Upserts the gateway's row with a fresh heartbeat; returns how many live leases the
   * registry holds for it (a gateway compares that with its own count to notice reclaims).
   */
  async heartbeat(gateway: { id: string; address: string; leaseTtlMs: number }): Promise<number> {
    const r = await this.pool.query<{ leases: string }>(
      `WITH beat AS (
         INSERT INTO seng_gateways (id, address, pid, lease_ttl_ms)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = clock_timestamp(),
           address = EXCLUDED.address, pid = EXCLUDED.pid, lease_ttl_ms = EXCLUDED.lease_ttl_ms
       )
       SELECT count(*) AS leases FROM seng_leases WHERE gateway_id = $1`,
      [gateway.id, gateway.address, process.pid, gateway.leaseTtlMs],
    );
    return Number(r.rows[0]?.leases ?? 0);
  }

  /** A (re)starting gateway: fresh row (new started_at), the previous run's leases moved to history. */
  async registerGateway(gateway: { id: string; address: string; leaseTtlMs: number }): Promise<number> {
    return inTransaction(this.pool, async (client) => {
      const ended = await client.query(END_GATEWAY_SQL, [gateway.id, GATEWAY_RESTARTED]);
      await client.query(
        `INSERT INTO seng_gateways (id, address, pid, lease_ttl_ms) VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO UPDATE SET address = EXCLUDED.address, pid = EXCLUDED.pid,
           lease_ttl_ms = EXCLUDED.lease_ttl_ms, started_at = clock_timestamp(), heartbeat_at = clock_timestamp()`,
        [gateway.id, gateway.address, process.pid, gateway.leaseTtlMs],
      );
      return ended.rowCount ?? 0;
    });
  }

  /** Graceful stop: every lease the gateway still holds goes to history, then its row. */
  async unregisterGateway(id: string, reason = GATEWAY_STOPPED): Promise<number> {
    return inTransaction(this.pool, async (client) => {
      // Row lock first: a claim still in flight for this gateway waits, then fails its
      // foreign key instead of leaving a lease behind the removed row.
      await client.query('SELECT 1 FROM seng_gateways WHERE id = $1 FOR UPDATE', [id]);
      const ended = await client.query(END_GATEWAY_SQL, [id, reason]);
      await client.query('DELETE FROM seng_gateways WHERE id = $1', [id]);
      return ended.rowCount ?? 0;
    });
  }

  async gateways(): Promise<GatewayRecord[]> {
    const r = await this.pool.query<{
      id: string;
      address: string;
      pid: number;
      lease_ttl_ms: number;
      started_at: Date;
      heartbeat_at: Date;
      age_ms: number;
      leases: string;
    }>(
      `SELECT g.id, g.address, g.pid, g.lease_ttl_ms, g.started_at, g.heartbeat_at,
              (extract(epoch FROM clock_timestamp() - g.heartbeat_at) * 1000)::float8 AS age_ms,
              (SELECT count(*) FROM seng_leases l WHERE l.gateway_id = g.id) AS leases
         FROM seng_gateways g ORDER BY g.id`,
    );
    return r.rows.map((g) => ({
      id: g.id,
      address: g.address,
      pid: g.pid,
      leaseTtlMs: g.lease_ttl_ms,
      startedAt: g.started_at,
      heartbeatAt: g.heartbeat_at,
      heartbeatAgeMs: Math.max(0, Math.round(g.age_ms)),
      lost: g.age_ms > g.lease_ttl_ms,
      leases: Number(g.leases),
    }));
  }

  // ------------------------------------------------------------------ leases

  /** Claims `lease.ip`; false when another session holds it (the database decides). */
  async claim(lease: LeaseClaim): Promise<boolean> {
    return !(await this.claimMany([lease])).has(lease.ip);
  }

  /**
   * Claims every lease of the batch that is free, in one statement; returns the IPs another
   * session holds (those leases were not written). The IPs of one batch must be distinct.
   */
  async claimMany(leases: readonly LeaseClaim[]): Promise<Set<Ipv4>> {
    return this.claimAndRelease(leases, []);
  }

  /**
   * claimMany and release in one statement (one transaction): the gateway's write of what
   * its admissions and session ends gathered. Returns the IPs it could not claim.
   */
  async claimAndRelease(leases: readonly LeaseClaim[], releases: readonly ReleaseItem[]): Promise<Set<Ipv4>> {
    if (leases.length === 0) {
      await this.release(releases);
      return new Set();
    }
    const claims = JSON.stringify(leases.map(claimRow));
    // Named: prepared once per connection, as they run for every admission.
    const r = await this.pool.query<{ ip: string }>(
      releases.length === 0
        ? { name: 'seng-claim-many', text: CLAIM_SQL, values: [claims] }
        : {
            name: 'seng-claim-release',
            text: CLAIM_AND_RELEASE_SQL,
            values: [
              claims,
              releases.map((i) => i.ip),
              releases.map((i) => i.sessionId),
              releases.map((i) => i.reason),
            ],
          },
    );
    return new Set(r.rows.map((x) => Number(x.ip)));
  }

  /**
   * Claims again a lease this gateway held but lost to a reclaim (it was cut off longer than
   * its TTL): keeps the original start and removes the history entry the reclaim wrote.
   * False when the IP went to someone else meanwhile.
   */
  async reassert(lease: LeaseClaim, startedAt: Date): Promise<boolean> {
    const r = await this.pool.query(
      `WITH claimed AS (
         INSERT INTO seng_leases (ip, subnet, session_id, gateway_id, app, mr_enclave, mr_signer, host_ip, categories, started_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT DO NOTHING RETURNING session_id
       ), unended AS (
         DELETE FROM seng_lease_history h USING claimed c
          WHERE h.session_id = c.session_id AND h.end_reason = '${GATEWAY_LOST}'
       )
       SELECT session_id FROM claimed`,
      [...claimParams(lease), startedAt],
    );
    return (r.rowCount ?? 0) > 0;
  }

  /** Whether the registry holds exactly this session's lease on this IP. */
  async holds(ip: Ipv4, sessionId: string): Promise<boolean> {
    const r = await this.pool.query('SELECT 1 FROM seng_leases WHERE ip = $1 AND session_id = $2', [
      ip,
      sessionId,
    ]);
    return (r.rowCount ?? 0) > 0;
  }

  /** Ends these leases (moved to history); a lease already gone or held by another session is skipped. */
  async release(items: readonly ReleaseItem[]): Promise<number> {
    if (items.length === 0) return 0;
    const r = await this.pool.query<{ n: number }>({
      name: 'seng-release-count',
      text: RELEASE_SQL,
      values: [items.map((i) => i.ip), items.map((i) => i.sessionId), items.map((i) => i.reason)],
    });
    return r.rows[0]?.n ?? 0;
  }

  /**
   * Moves the leases of lost gateways (heartbeat older than their TTL) to history; returns
   * them. `db`: a client inside a caller's transaction (tests), else the pool.
   */
  async reclaimExpired(db: pg.Pool | pg.ClientBase = this.pool): Promise<RegistryLease[]> {
    const r = await db.query<LeaseRow>(RECLAIM_SQL);
    await db.query(FORGET_GATEWAYS_SQL);
    return r.rows.map(fromRow);
  }

  /** Live leases in [first, last] (host-order numbers), e.g. one subnet. */
  async takenBetween(first: Ipv4, last: Ipv4): Promise<{ ip: Ipv4; sessionId: string }[]> {
    const r = await this.pool.query<{ ip: string; session_id: string }>(
      'SELECT ip, session_id FROM seng_leases WHERE ip BETWEEN $1 AND $2',
      [first, last],
    );
    return r.rows.map((x) => ({ ip: Number(x.ip), sessionId: x.session_id }));
  }

  async liveLeases(): Promise<RegistryLease[]> {
    const r = await this.pool.query<LeaseRow>(
      `SELECT ${LEASE_COLUMNS}, NULL::timestamptz AS ended_at, NULL::text AS end_reason FROM seng_leases ORDER BY ip`,
    );
    return r.rows.map(fromRow);
  }

  async liveLease(ip: Ipv4): Promise<RegistryLease | undefined> {
    const r = await this.pool.query<LeaseRow>(
      `SELECT ${LEASE_COLUMNS}, NULL::timestamptz AS ended_at, NULL::text AS end_reason FROM seng_leases WHERE ip = $1`,
      [ip],
    );
    const row = r.rows[0];
    return row ? fromRow(row) : undefined;
  }

  /** Live and ended leases matching every criterion, newest first. */
  async query(q: LeaseQuery = {}): Promise<RegistryLease[]> {
    const at = q.atMs === undefined ? null : new Date(q.atMs);
    const r = await this.pool.query<LeaseRow>(
      `SELECT * FROM (
         SELECT ${LEASE_COLUMNS}, NULL::timestamptz AS ended_at, NULL::text AS end_reason FROM seng_leases
          WHERE ($1::bigint IS NULL OR ip = $1) AND ($2::text IS NULL OR app = $2)
            AND ($3::timestamptz IS NULL OR started_at <= $3)
         UNION ALL
         SELECT ${LEASE_COLUMNS}, ended_at, end_reason FROM seng_lease_history
          WHERE ($1::bigint IS NULL OR ip = $1) AND ($2::text IS NULL OR app = $2)
            AND ($3::timestamptz IS NULL OR (started_at <= $3 AND ended_at >= $3))
       ) AS leases
       ORDER BY started_at DESC, session_id LIMIT $4`,
      [q.ip ?? null, q.app ?? null, at, q.limit ?? 1000],
    );
    return r.rows.map(fromRow);
  }
}

function registryMissing(url: string): EnvironmentError {
  return new EnvironmentError(
    'EREGISTRY_MISSING',
    `${redactUrl(url)} holds no enclave registry (no seng_leases table)`,
    'the registry is created by the first gateway started with --registry URL or -d postgres://… (or seng agent); check the URL and database name',
  );
}

function claimParams(l: LeaseClaim): unknown[] {
  return [l.ip, l.subnet, l.sessionId, l.gatewayId, l.app, l.mrEnclave, l.mrSigner, l.hostIp, l.categories];
}

/** A claim as a row of CLAIM_SQL's JSON input. */
function claimRow(l: LeaseClaim): Record<string, unknown> {
  return {
    ip: l.ip,
    subnet: l.subnet,
    session_id: l.sessionId,
    gateway_id: l.gatewayId,
    app: l.app,
    mr_enclave: l.mrEnclave,
    mr_signer: l.mrSigner,
    host_ip: l.hostIp,
    categories: l.categories,
  };
}

function fromRow(r: LeaseRow): RegistryLease {
  return {
    ip: Number(r.ip),
    subnet: r.subnet,
    sessionId: r.session_id,
    gatewayId: r.gateway_id,
    app: r.app,
    mrEnclave: r.mr_enclave,
    mrSigner: r.mr_signer,
    hostIp: r.host_ip,
    categories: r.categories ?? [],
    startedAt: r.started_at,
    endedAt: r.ended_at,
    endReason: r.end_reason,
  };
}
