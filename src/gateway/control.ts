/**
 * The local control socket of a running `seng serve`: a Unix stream socket (mode 0600,
 * so only root — the user running the gateway — can query or kick sessions) carrying
 * one JSON request line and one JSON response line per connection.
 *
 *   {"cmd":"status"}              → {"ok":true,"result":{...}}
 *   {"cmd":"kick","ip":"a.b.c.d"} → {"ok":true,"result":{"kicked":true,"ended":[...]}}
 *     (or "app":"NAME", "host":"a.b.c.d", "all":true instead of "ip")
 *   {"cmd":"reload"}              → {"ok":true,"result":{...}}   (as SIGHUP)
 *   {"cmd":"policy","path":"/abs/file.yaml"} → apply a policy through the running nft backend
 *     (with "confirmSeconds":N the backend puts the previous policy back after N s unless…)
 *   {"cmd":"confirm"} / {"cmd":"confirm","rollback":true} → …it is confirmed, or declined at once
 *
 * What each request does is in control-dispatch.ts.
 */
import { chmodSync, existsSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import { dirname } from 'node:path';
import { EnvironmentError, InputError, SengError } from '../util/errors.js';

export const DEFAULT_CONTROL_PATH = '/run/seng/seng.sock';
/** The runtime directory seng creates itself; any other socket directory must exist. */
const DEFAULT_CONTROL_DIR = dirname(DEFAULT_CONTROL_PATH);
const MAX_REQUEST = 4096;

export interface KickRequest {
  cmd: 'kick';
  ip?: string;
  app?: string;
  host?: string;
  all?: boolean;
}
export interface PolicyRequest {
  cmd: 'policy';
  path: string;
  /** Roll back unless confirmed (a `confirm` request) within this many seconds. */
  confirmSeconds?: number;
}
export interface ConfirmRequest {
  cmd: 'confirm';
  /** Decline: put the previous policy back now. */
  rollback?: boolean;
}
export type ControlRequest =
  { cmd: 'status' } | KickRequest | { cmd: 'reload' } | PolicyRequest | ConfirmRequest;
export type ControlHandler = (req: ControlRequest) => Promise<unknown>;

const HINT_CONTROL = 'is the gateway running (seng serve)? pass its --control path';

/**
 * Makes sure the control socket can be created at `path` before the gateway creates anything:
 * only the default runtime directory (/run/seng) is created; a user-given directory must
 * exist; the path must not be another file or the socket of a running gateway.
 */
export async function prepareControlPath(path: string): Promise<void> {
  const dir = dirname(path);
  if (!existsSync(dir)) {
    if (dir !== DEFAULT_CONTROL_DIR) {
      throw new InputError(
        `the directory of the control socket ${path} does not exist`,
        `create ${dir} first (mode 0700), or pass another --control path`,
      );
    }
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }
  if (!existsSync(path)) return;
  if (!lstatSync(path).isSocket()) {
    throw new EnvironmentError(
      'ECONTROL',
      `${path} exists and is not a socket`,
      'remove it or pass another --control path',
    );
  }
  if (await isAlive(path)) {
    throw new EnvironmentError(
      'ECONTROL',
      `another seng serve is already running with control socket ${path}`,
      'stop it first, or pass another --control path',
    );
  }
}

export class ControlServer {
  private constructor(
    readonly path: string,
    private readonly server: Server,
  ) {}

  static async listen(path: string, handler: ControlHandler): Promise<ControlServer> {
    await prepareControlPath(path);
    if (existsSync(path)) unlinkSync(path); // stale socket of a crashed run
    const server = createServer((conn) => {
      let buf = '';
      conn.setEncoding('utf8');
      conn.setTimeout(5000, () => conn.destroy());
      conn.on('error', () => conn.destroy());
      conn.on('data', (chunk: string) => {
        buf += chunk;
        if (buf.length > MAX_REQUEST) {
          conn.end(
            `${JSON.stringify({ ok: false, error: { code: 'EINPUT', message: 'request too large' } })}\n`,
          );
          return;
        }
        const nl = buf.indexOf('\n');
        if (nl < 0) return;
        const line = buf.slice(0, nl);
        conn.removeAllListeners('data');
        void respond(line, handler).then((reply) => conn.end(`${JSON.stringify(reply)}\n`));
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      const oldMask = process.umask(0o177);
      server.listen(path, () => {
        process.umask(oldMask);
        server.off('error', reject);
        resolve();
      });
    });
    chmodSync(path, 0o600);
    return new ControlServer(path, server);
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    try {
      unlinkSync(this.path);
    } catch {
      // already gone
    }
  }
}

async function respond(line: string, handler: ControlHandler): Promise<unknown> {
  try {
    const req = parseRequest(line);
    if (!req) return { ok: false, error: { code: 'EINPUT', message: 'unknown command' } };
    return { ok: true, result: await handler(req) };
  } catch (err) {
    if (err instanceof SengError) return { ok: false, error: err.toJSON() };
    return { ok: false, error: { code: 'EINTERNAL', message: (err as Error).message } };
  }
}

/** The request on `line`, or undefined if it is not one this server understands. */
function parseRequest(line: string): ControlRequest | undefined {
  let req: unknown;
  try {
    req = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (!req || typeof req !== 'object') return undefined;
  const r = req as Record<string, unknown>;
  const optionalString = (k: string) => r[k] === undefined || typeof r[k] === 'string';
  switch (r.cmd) {
    case 'status':
    case 'reload':
      return { cmd: r.cmd };
    case 'policy': {
      if (typeof r.path !== 'string') return undefined;
      if (r.confirmSeconds === undefined) return { cmd: 'policy', path: r.path };
      const s = r.confirmSeconds;
      if (typeof s !== 'number' || !Number.isInteger(s) || s < 1 || s > 86_400) return undefined;
      return { cmd: 'policy', path: r.path, confirmSeconds: s };
    }
    case 'confirm':
      if (r.rollback !== undefined && typeof r.rollback !== 'boolean') return undefined;
      return r.rollback ? { cmd: 'confirm', rollback: true } : { cmd: 'confirm' };
    case 'kick':
      if (!optionalString('ip') || !optionalString('app') || !optionalString('host')) return undefined;
      if (r.all !== undefined && typeof r.all !== 'boolean') return undefined;
      return r as unknown as KickRequest;
    default:
      return undefined;
  }
}

export function isAlive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = createConnection(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

/** Sends one request to a running gateway and returns its result (throws its error). */
export async function controlRequest(
  path: string,
  req: ControlRequest,
  timeoutMs = 10_000,
): Promise<unknown> {
  if (existsSync(path) && !lstatSync(path).isSocket()) {
    throw new EnvironmentError('ECONTROL', `${path} is not a socket`, HINT_CONTROL);
  }
  const reply = await exchange(path, req, timeoutMs);
  const parsed = parseReply(reply);
  if (!parsed) {
    throw new EnvironmentError(
      'ECONTROL',
      reply.trim() === ''
        ? `${path} closed the connection without an answer`
        : `${path} did not answer like a seng gateway (${reply.length > 60 ? `${reply.slice(0, 60)}…` : reply.trim()})`,
      HINT_CONTROL,
    );
  }
  if (!parsed.ok) {
    const e = parsed.error;
    throw new SengError(
      typeof e?.code === 'string' ? e.code : 'ECONTROL',
      typeof e?.message === 'string' ? e.message : 'request failed',
      typeof e?.hint === 'string' ? { hint: e.hint } : {},
    );
  }
  return parsed.result;
}

/** Thrown by the CLI when a gateway's result lacks what the command needs (another program on the socket). */
export function unexpectedReply(path: string, what: string): EnvironmentError {
  return new EnvironmentError(
    'ECONTROL',
    `${path} answered without ${what}: not a seng gateway of this version?`,
    HINT_CONTROL,
  );
}

type Reply = { ok: boolean; result?: unknown; error?: { code?: unknown; message?: unknown; hint?: unknown } };

function parseReply(text: string): Reply | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!value || typeof value !== 'object' || typeof (value as Reply).ok !== 'boolean') return undefined;
  return value as Reply;
}

function exchange(path: string, req: ControlRequest, timeoutMs: number): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const c = createConnection(path);
    let data = '';
    c.setEncoding('utf8');
    c.setTimeout(timeoutMs, () => {
      c.destroy();
      reject(
        new EnvironmentError(
          'ECONTROL',
          `the gateway did not answer on ${path} within ${timeoutMs} ms`,
          HINT_CONTROL,
        ),
      );
    });
    c.on('connect', () => c.write(`${JSON.stringify(req)}\n`));
    c.on('data', (d: string) => {
      data += d;
      // One line is the whole answer; a peer that keeps talking is not a seng gateway.
      if (data.length > 16 * 1024 * 1024) c.destroy();
    });
    c.on('end', () => resolve(data));
    c.on('close', () => resolve(data));
    c.on('error', (err: NodeJS.ErrnoException) =>
      reject(
        new EnvironmentError(
          'ECONTROL',
          err.code === 'ENOENT' || err.code === 'ECONNREFUSED'
            ? `no running gateway at ${path}`
            : `cannot reach the gateway at ${path}: ${err.message}`,
          err.code === 'EACCES' ? 'run as root (the control socket is mode 0600)' : HINT_CONTROL,
          err,
        ),
      ),
    );
  });
}
