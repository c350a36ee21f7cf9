/**
 * The local control socket of a running `seng serve`: a Unix stream socket (mode 0600,
 * so only root — the user running the gateway — can query or kick sessions) carrying
 * one JSON request line and one JSON response line per connection.
 *
 *   {"cmd":"status"}              → {"ok":true,"result":{...}}
 *   {"cmd":"kick","ip":"a.b.c.d"} → {"ok":true,"result":{"kicked":true}}
 *   {"cmd":"reload"}              → {"ok":true,"result":{...}}   (as SIGHUP)
 *   {"cmd":"policy","path":"/abs/file.yaml"} → apply a policy through the running nft backend
 */
import { chmodSync, existsSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import { dirname } from 'node:path';
import { EnvironmentError, SengError } from '../util/errors.js';

export const DEFAULT_CONTROL_PATH = '/run/seng/seng.sock';
const MAX_REQUEST = 4096;

export type ControlRequest =
  { cmd: 'status' } | { cmd: 'kick'; ip: string } | { cmd: 'reload' } | { cmd: 'policy'; path: string };
export type ControlHandler = (req: ControlRequest) => Promise<unknown>;

export class ControlServer {
  private constructor(
    readonly path: string,
    private readonly server: Server,
  ) {}

  static async listen(path: string, handler: ControlHandler): Promise<ControlServer> {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    if (existsSync(path)) {
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
      unlinkSync(path); // stale socket of a crashed run
    }
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
    const req = JSON.parse(line) as ControlRequest;
    if (!req || typeof req !== 'object' || !['status', 'kick', 'reload', 'policy'].includes(req.cmd)) {
      return { ok: false, error: { code: 'EINPUT', message: 'unknown command' } };
    }
    return { ok: true, result: await handler(req) };
  } catch (err) {
    if (err instanceof SengError) return { ok: false, error: err.toJSON() };
    return { ok: false, error: { code: 'EINTERNAL', message: (err as Error).message } };
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
  const reply = await new Promise<string>((resolve, reject) => {
    const c = createConnection(path);
    let data = '';
    c.setEncoding('utf8');
    c.setTimeout(timeoutMs, () => {
      c.destroy();
      reject(
        new EnvironmentError('ECONTROL', `the gateway did not answer on ${path} within ${timeoutMs} ms`),
      );
    });
    c.on('connect', () => c.write(`${JSON.stringify(req)}\n`));
    c.on('data', (d: string) => (data += d));
    c.on('end', () => resolve(data));
    c.on('error', (err: NodeJS.ErrnoException) =>
      reject(
        new EnvironmentError(
          'ECONTROL',
          err.code === 'ENOENT' || err.code === 'ECONNREFUSED'
            ? `no running gateway at ${path}`
            : `cannot reach the gateway at ${path}: ${err.message}`,
          err.code === 'EACCES'
            ? 'run as root (the control socket is mode 0600)'
            : 'start it with seng serve, or pass its --control path',
          err,
        ),
      ),
    );
  });
  const parsed = JSON.parse(reply) as {
    ok: boolean;
    result?: unknown;
    error?: { code: string; message: string; hint?: string };
  };
  if (!parsed.ok) {
    throw new SengError(
      parsed.error?.code ?? 'ECONTROL',
      parsed.error?.message ?? 'request failed',
      parsed.error?.hint ? { hint: parsed.error.hint } : {},
    );
  }
  return parsed.result;
}
