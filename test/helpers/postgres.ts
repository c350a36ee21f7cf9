/**
 * A real, throw-away PostgreSQL server for tests (Debian's `postgresql` package, installed by
 * scripts/install-system-deps.sh). PostgreSQL refuses to run as root, so the cluster belongs
 * to the `postgres` system user: `initdb` into a fresh temp directory, `pg_ctl start` with a
 * Unix socket in that directory and no TCP listener. A Unix socket is a file, so gateways and
 * agents running inside network namespaces reach the same server without any routing.
 *
 *   const pg = await startPostgres();           // one server per test file
 *   after(() => pg.stop());
 *   const url = await pg.createDatabase();       // postgres://postgres@/db_1?host=/tmp/…
 *
 * Every server is stopped (`pg_ctl stop -m immediate`, by its own PID file) and its directory
 * removed by stop(), and by a best-effort exit hook if a test process dies first. A test process
 * killed with SIGKILL runs no hook: its directory carries its PID (`seng-pg-<pid>-…`), so the next
 * startPostgres() stops and removes the servers of test processes that no longer exist.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

export interface PostgresServer {
  /** The cluster's directory; the socket lives here too. */
  readonly dir: string;
  /** URL of the `postgres` maintenance database. */
  readonly adminUrl: string;
  /** Creates a new, empty database and returns its URL. */
  createDatabase(name?: string): Promise<string>;
  /** Runs one SQL statement as the superuser against `url` (default: the admin database). */
  sql(text: string, params?: unknown[], url?: string): Promise<pg.QueryResult>;
  /** Stops the server (immediate shutdown) and removes its directory; idempotent. */
  stop(): void;
  /** Stops the server without removing the data (to test lost connections). */
  pause(): void;
  /** Starts a paused server again. */
  resume(): void;
}

/** The newest installed server version's binaries (e.g. /usr/lib/postgresql/15/bin). */
export function postgresBinDir(): string | undefined {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((v) => existsSync(join(root, v, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a));
  return versions.length ? join(root, versions[0]!, 'bin') : undefined;
}

/** True when tests can start a server here (binaries present and a `postgres` user exists). */
export function postgresAvailable(): boolean {
  return postgresBinDir() !== undefined && spawnSync('id', ['-u', 'postgres']).status === 0;
}

const running = new Set<PostgresServer>();
let exitHookInstalled = false;

function asPostgres(bin: string, args: string[], timeoutMs = 60_000): void {
  const r = spawnSync('runuser', ['-u', 'postgres', '--', bin, ...args], {
    encoding: 'utf8',
    timeout: timeoutMs,
  });
  if (r.status !== 0) {
    throw new Error(`${bin} ${args.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr || r.stdout}`);
  }
}

let dbCounter = 0;

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Stops and removes the servers left by test processes that died without their exit hook. */
export function reapStalePostgres(bin = postgresBinDir()): void {
  if (!bin) return;
  for (const name of readdirSync(tmpdir())) {
    const owner = /^seng-pg-(\d+)-/.exec(name);
    if (!owner || processAlive(Number(owner[1]))) continue;
    const data = join(tmpdir(), name, 'data');
    if (existsSync(join(data, 'postmaster.pid'))) {
      spawnSync(
        'runuser',
        ['-u', 'postgres', '--', join(bin, 'pg_ctl'), '-D', data, '-m', 'immediate', '-w', 'stop'],
        {
          timeout: 30_000,
        },
      );
    }
    rmSync(join(tmpdir(), name), { recursive: true, force: true });
  }
}

export async function startPostgres(): Promise<PostgresServer> {
  const bin = postgresBinDir();
  if (!bin) throw new Error('PostgreSQL is not installed (scripts/install-system-deps.sh installs it)');
  reapStalePostgres(bin);
  const dir = mkdtempSync(join(tmpdir(), `seng-pg-${process.pid}-`));
  chmodSync(dir, 0o755);
  spawnSync('chown', ['postgres:postgres', dir]);
  const data = join(dir, 'data');
  asPostgres(join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync']);
  const startArgs = [
    '-D',
    data,
    '-l',
    join(dir, 'server.log'),
    '-w',
    '-t',
    '60',
    '-o',
    // No TCP; socket in our directory; small footprint; fsync off (throw-away data).
    `-c listen_addresses='' -c unix_socket_directories='${dir}' -c fsync=off -c full_page_writes=off ` +
      `-c max_connections=200 -c shared_buffers=16MB`,
    'start',
  ];
  const start = (): void => asPostgres(join(bin, 'pg_ctl'), startArgs);
  start();
  const adminUrl = `postgres://postgres@/postgres?host=${encodeURIComponent(dir)}`;
  let stopped = false;
  const stopServer = (): void => {
    if (!existsSync(join(data, 'postmaster.pid'))) return;
    spawnSync(
      'runuser',
      ['-u', 'postgres', '--', join(bin, 'pg_ctl'), '-D', data, '-m', 'immediate', '-w', 'stop'],
      {
        timeout: 30_000,
      },
    );
  };
  const server: PostgresServer = {
    dir,
    adminUrl,
    async createDatabase(name?: string) {
      const db = name ?? `seng_${process.pid}_${++dbCounter}`;
      if (!/^[a-z_][a-z0-9_]*$/.test(db)) throw new Error(`bad database name ${db}`);
      await server.sql(`CREATE DATABASE ${db}`);
      return `postgres://postgres@/${db}?host=${encodeURIComponent(dir)}`;
    },
    async sql(text, params, url = adminUrl) {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        return await client.query(text, params);
      } finally {
        await client.end();
      }
    },
    stop() {
      if (stopped) return;
      stopped = true;
      running.delete(server);
      stopServer();
      rmSync(dir, { recursive: true, force: true });
    },
    pause() {
      stopServer();
    },
    resume() {
      start();
    },
  };
  running.add(server);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const s of [...running]) s.stop();
    });
  }
  return server;
}

/** The server's log (for assertion messages when a test fails). */
export function postgresLog(server: PostgresServer): string {
  try {
    return readFileSync(join(server.dir, 'server.log'), 'utf8');
  } catch {
    return '';
  }
}
