/**
 * PostgreSQL connections for the fleet (docs/fleet.md), on node-postgres (`pg`): URL
 * recognition, pools whose idle-client errors never crash the process, typed errors, and
 * retry with exponential backoff for the errors that mean "the server went away" (not for
 * SQL errors, which retrying cannot fix). Every statement elsewhere is parameterised
 * ($1, $2 …); nothing here or in its users builds SQL from values.
 */
import pg from 'pg';
import { SengError, errorMessage } from '../util/errors.js';

/** True for `postgres://…` / `postgresql://…` (what `-d` and SENG_DB accept besides a file path). */
export function isPostgresUrl(text: string): boolean {
  return /^postgres(ql)?:\/\//i.test(text);
}

/** The URL with any password replaced by `***`, for logs and error messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url.replace(/\/\/([^:/@]*):[^@]*@/, '//$1:***@');
  }
}

/** The server could not be reached (or went away) — retrying later may help. */
export class PgConnectionError extends SengError {
  constructor(url: string, cause: unknown) {
    super('EPG_CONNECT', `cannot reach PostgreSQL at ${redactUrl(url)}: ${errorMessage(cause)}`, {
      hint: 'check that the server runs and the URL (host, port or ?host=/socket/dir, user, database) is right',
      cause,
    });
  }
}

/** SQLSTATE classes / Node error codes that mean a lost or refused connection. */
const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOENT', // Unix socket file gone: server stopped
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now (starting up / shutting down)
]);

/** True when `err` means the connection is gone or could not be made (worth a retry). */
export function isConnectionError(err: unknown): boolean {
  if (err instanceof PgConnectionError) return true;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && (CONNECTION_CODES.has(code) || code.startsWith('08'))) return true;
  const message = errorMessage(err);
  return /Connection terminated|connection timeout|Client has encountered a connection error|not queryable/i.test(
    message,
  );
}

export interface BackoffOptions {
  /** First delay (ms); doubles each attempt. */
  initialMs?: number;
  /** Largest delay (ms). */
  maxMs?: number;
  /** Give up after this many attempts (default: 6 ≈ 6 s in total). */
  attempts?: number;
  /** Told of every failed attempt before its delay (for logging / metrics). */
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
}

/** Delay before retry `attempt` (1-based): exponential with ±20 % jitter, capped. */
export function backoffDelay(attempt: number, initialMs = 100, maxMs = 5_000): number {
  const base = Math.min(maxMs, initialMs * 2 ** (attempt - 1));
  return Math.round(base * (0.8 + Math.random() * 0.4));
}

/** Runs `fn`, retrying with backoff while it fails with a connection error; SQL errors are thrown at once. */
export async function withRetry<T>(fn: () => Promise<T>, opts: BackoffOptions = {}): Promise<T> {
  const attempts = opts.attempts ?? 6;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!isConnectionError(err) || attempt >= attempts) throw err;
      const delay = backoffDelay(attempt, opts.initialMs, opts.maxMs);
      opts.onRetry?.(err, attempt, delay);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

export interface PoolOptions {
  /** Shown in pg_stat_activity (e.g. `seng-gateway`). */
  applicationName?: string;
  max?: number;
  /** Told of errors of idle clients (a server restart); the pool replaces them by itself. */
  onIdleError?: (err: Error) => void;
}

/** A pool for `url`; errors of idle clients are reported, never thrown into the event loop. */
export function openPool(url: string, opts: PoolOptions = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: opts.max ?? 4,
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
    application_name: opts.applicationName ?? 'seng',
  });
  pool.on('error', (err) => opts.onIdleError?.(err));
  return pool;
}

/**
 * Runs `fn` inside one transaction on one client of `pool` (ROLLBACK on any error). `begin` may
 * choose the isolation (e.g. `BEGIN ISOLATION LEVEL SERIALIZABLE`). A client whose connection
 * failed is destroyed rather than returned to the pool.
 */
export async function inTransaction<T>(
  pool: pg.Pool,
  fn: (client: pg.PoolClient) => Promise<T>,
  begin = 'BEGIN',
): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query(begin);
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    if (isConnectionError(err)) broken = err as Error;
    else await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    client.release(broken);
  }
}
