/**
 * The lease history: which enclave (app, measurements, host) held which enclave IP when, in
 * its own SQLite file (default /var/lib/seng/leases.db) — never in the policy database,
 * which stays byte-compatible with the original. It survives restarts and answers
 * `seng leases --ip 192.168.28.7 --at 10:32`.
 *
 * better-sqlite3 is synchronous, so the gateway never writes on its admission or data path:
 * LeaseRecorder queues lease starts and ends in memory and writes them in one transaction on
 * a timer. A failing store is logged and counted, never fatal; the events it could not write
 * are missing from the history (the log still has every one of them).
 */
import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { EnvironmentError, InputError, errorMessage } from '../util/errors.js';
import type { Logger } from '../util/log.js';

export const DEFAULT_LEASE_DB = '/var/lib/seng/leases.db';
export const DEFAULT_LEASE_RETENTION_DAYS = 90;
const DAY_MS = 86_400_000;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS leases (
  session_id TEXT PRIMARY KEY,
  gateway    TEXT NOT NULL,
  enclave_ip TEXT NOT NULL,
  host_ip    TEXT NOT NULL,
  app        TEXT,
  mr_enclave TEXT NOT NULL,
  mr_signer  TEXT NOT NULL,
  start_ms   INTEGER NOT NULL,
  end_ms     INTEGER,
  end_reason TEXT
);
CREATE INDEX IF NOT EXISTS leases_by_ip ON leases (enclave_ip, start_ms);
CREATE INDEX IF NOT EXISTS leases_by_end ON leases (end_ms);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
`;

export interface LeaseStart {
  sessionId: string;
  /** The gateway instance (its listen address), so one store can serve several gateways. */
  gateway: string;
  enclaveIp: string;
  hostIp: string;
  app: string | null;
  mrEnclave: string;
  mrSigner: string;
  startMs: number;
}

export interface Lease extends LeaseStart {
  /** null while the lease is open (the session is current, or its gateway has not restarted yet). */
  endMs: number | null;
  endReason: string | null;
}

export interface LeaseQuery {
  ip?: string;
  /** Leases that were held at this instant (ms since the epoch). */
  atMs?: number;
  app?: string;
  limit?: number;
}

type Row = {
  session_id: string;
  gateway: string;
  enclave_ip: string;
  host_ip: string;
  app: string | null;
  mr_enclave: string;
  mr_signer: string;
  start_ms: number;
  end_ms: number | null;
  end_reason: string | null;
};

export const RESTART_END_REASON = 'gateway stopped without ending the session (end = its last sign of life)';

export class LeaseStore {
  private constructor(private readonly db: Database.Database) {}

  /** Opens the lease store at `path`; the writer creates it, and its directory (mode 0700). */
  static open(path: string, opts: { readonly?: boolean } = {}): LeaseStore {
    const readonly = opts.readonly ?? false;
    if (readonly && !existsSync(path)) {
      throw new InputError(
        `no lease store at ${path}`,
        'the gateway creates it (seng serve --lease-db FILE); pass the same --lease-db here',
      );
    }
    try {
      // Only the store's own directory is created (its parent must exist): a recursive mkdir
      // can loop forever on pseudo file systems such as /proc.
      if (!readonly && !existsSync(dirname(path))) mkdirSync(dirname(path), { mode: 0o700 });
      const db = new Database(path, { readonly, fileMustExist: readonly, timeout: 2000 });
      if (!readonly) {
        db.pragma('journal_mode = WAL');
        db.pragma('synchronous = NORMAL');
        db.exec(SCHEMA);
      }
      return new LeaseStore(db);
    } catch (err) {
      throw new EnvironmentError(
        'ELEASEDB',
        `cannot open the lease store ${path}: ${errorMessage(err)}`,
        'check the path and its permissions (run as the user of seng serve), or pass another --lease-db',
        err,
      );
    }
  }

  close(): void {
    this.db.close();
  }

  /** Writes starts and ends in one transaction. */
  write(starts: readonly LeaseStart[], ends: readonly LeaseEnd[], heartbeat?: HeartBeat): void {
    const insert = this.db.prepare(
      `INSERT OR IGNORE INTO leases (session_id, gateway, enclave_ip, host_ip, app, mr_enclave, mr_signer, start_ms)
       VALUES (@sessionId, @gateway, @enclaveIp, @hostIp, @app, @mrEnclave, @mrSigner, @startMs)`,
    );
    const end = this.db.prepare(
      'UPDATE leases SET end_ms = @endMs, end_reason = @reason WHERE session_id = @sessionId AND end_ms IS NULL',
    );
    const beat = this.db.prepare('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)');
    this.db.transaction(() => {
      for (const s of starts) insert.run(s);
      for (const e of ends) end.run(e);
      if (heartbeat) beat.run(`heartbeat:${heartbeat.gateway}`, String(heartbeat.atMs));
    })();
  }

  /**
   * Closes the leases a previous run of `gateway` left open (it crashed or was killed): their
   * end is its last heartbeat (never before the lease's start). Returns how many.
   */
  closeOrphans(gateway: string): number {
    const row = this.db.prepare('SELECT value FROM meta WHERE key = ?').get(`heartbeat:${gateway}`) as
      { value: string } | undefined;
    const lastSeen = row ? Number(row.value) : 0;
    return this.db
      .prepare(
        `UPDATE leases SET end_ms = MAX(start_ms, ?), end_reason = ?
         WHERE gateway = ? AND end_ms IS NULL`,
      )
      .run(lastSeen, RESTART_END_REASON, gateway).changes;
  }

  /** Deletes leases that ended more than `days` days before `nowMs`; open leases are kept. */
  prune(days: number, nowMs = Date.now()): number {
    return this.db
      .prepare('DELETE FROM leases WHERE end_ms IS NOT NULL AND end_ms < ?')
      .run(nowMs - days * DAY_MS).changes;
  }

  /** Leases matching every given criterion, newest first. */
  query(q: LeaseQuery = {}): Lease[] {
    const where: string[] = [];
    const params: Record<string, string | number> = {};
    if (q.ip !== undefined) {
      where.push('enclave_ip = @ip');
      params.ip = q.ip;
    }
    if (q.app !== undefined) {
      where.push('app = @app');
      params.app = q.app;
    }
    if (q.atMs !== undefined) {
      where.push('start_ms <= @at AND (end_ms IS NULL OR end_ms >= @at)');
      params.at = q.atMs;
    }
    const sql = `SELECT * FROM leases ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
                 ORDER BY start_ms DESC, session_id LIMIT @limit`;
    const rows = this.db.prepare(sql).all({ ...params, limit: q.limit ?? 1000 }) as Row[];
    return rows.map(fromRow);
  }
}

export interface LeaseEnd {
  sessionId: string;
  endMs: number;
  reason: string;
}

interface HeartBeat {
  gateway: string;
  atMs: number;
}

function fromRow(r: Row): Lease {
  return {
    sessionId: r.session_id,
    gateway: r.gateway,
    enclaveIp: r.enclave_ip,
    hostIp: r.host_ip,
    app: r.app,
    mrEnclave: r.mr_enclave,
    mrSigner: r.mr_signer,
    startMs: r.start_ms,
    endMs: r.end_ms,
    endReason: r.end_reason,
  };
}

/** Pending events kept at most while the store fails; older ones are dropped (and counted). */
const MAX_PENDING = 50_000;
/** How often the failure of a failing store is logged at most. */
const ERROR_LOG_INTERVAL_MS = 60_000;

export interface RecorderOptions {
  gateway: string;
  log: Logger;
  flushMs?: number;
  retentionDays?: number;
}

/**
 * The gateway's writer: lease starts/ends are queued (O(1), no I/O) and written on a timer;
 * pruning runs at start and daily. Every failure is logged, never thrown to the gateway.
 */
export class LeaseRecorder {
  private starts: LeaseStart[] = [];
  private ends: LeaseEnd[] = [];
  private readonly timers: NodeJS.Timeout[] = [];
  private lastErrorLog = 0;
  /** Events lost because the queue overflowed while the store failed. */
  lost = 0;
  /** Called once per failed store operation (metrics). */
  onError: (() => void) | undefined;

  constructor(
    private readonly store: LeaseStore,
    private readonly opts: RecorderOptions,
  ) {}

  /** Closes orphans of a previous run, prunes, and starts the flush and daily prune timers. */
  start(): void {
    this.guard('recover', () => {
      const closed = this.store.closeOrphans(this.opts.gateway);
      if (closed > 0)
        this.opts.log.warn(
          { event: 'leases-recovered', closed },
          `${closed} lease(s) of a previous run had no end; closed at its last heartbeat`,
        );
    });
    this.prune();
    const flush = setInterval(() => this.flush(), this.opts.flushMs ?? 1000);
    const prune = setInterval(() => this.prune(), DAY_MS);
    flush.unref();
    prune.unref();
    this.timers.push(flush, prune);
  }

  begin(lease: LeaseStart): void {
    this.starts.push(lease);
    this.bound();
  }

  end(sessionId: string, endMs: number, reason: string): void {
    this.ends.push({ sessionId, endMs, reason });
    this.bound();
  }

  /** Writes what is queued (and the heartbeat); on failure keeps it for the next try. */
  flush(): void {
    const starts = this.starts;
    const ends = this.ends;
    this.starts = [];
    this.ends = [];
    const ok = this.guard('write', () =>
      this.store.write(starts, ends, { gateway: this.opts.gateway, atMs: Date.now() }),
    );
    if (!ok) {
      this.starts = starts.concat(this.starts);
      this.ends = ends.concat(this.ends);
      this.bound();
    }
  }

  /** Final flush; closes the store. */
  stop(): void {
    for (const t of this.timers) clearInterval(t);
    this.flush();
    this.guard('close', () => this.store.close());
  }

  private prune(): void {
    const days = this.opts.retentionDays ?? DEFAULT_LEASE_RETENTION_DAYS;
    this.guard('prune', () => {
      const pruned = this.store.prune(days);
      if (pruned > 0)
        this.opts.log.info(
          { event: 'leases-pruned', pruned, days },
          `pruned ${pruned} lease(s) older than ${days} days`,
        );
    });
  }

  private bound(): void {
    const excess = this.starts.length + this.ends.length - MAX_PENDING;
    if (excess <= 0) return;
    const fromStarts = Math.min(excess, this.starts.length);
    this.starts.splice(0, fromStarts);
    this.ends.splice(0, excess - fromStarts);
    this.lost += excess;
  }

  private guard(what: string, fn: () => void): boolean {
    try {
      fn();
      return true;
    } catch (err) {
      this.onError?.();
      const now = Date.now();
      if (now - this.lastErrorLog >= ERROR_LOG_INTERVAL_MS) {
        this.lastErrorLog = now;
        this.opts.log.error(
          {
            event: 'lease-store-failed',
            op: what,
            err: errorMessage(err),
            pending: this.starts.length + this.ends.length,
            lost: this.lost,
          },
          `lease store ${what} failed (the lease history misses these events; the log has them)`,
        );
      }
      return false;
    }
  }
}
