/**
 * Several writers on one database file at once, as when admins' scripts run `seng db`
 * in parallel: every write must wait for the lock instead of failing, and a lock held
 * past the busy timeout must give a typed one-line error.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot, seng, sengBin, sengJson, type CliResult } from '../../helpers/cli.js';

let dir: string;
const sqlite = (db: string, sql: string) => execFileSync('sqlite3', [db, sql], { encoding: 'utf8' }).trim();
const hex = (n: number) => n.toString(16).padStart(64, '0');

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'seng-store-conc-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** Runs the CLI asynchronously, so many instances run at the same time. */
function sengAsync(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  const child = spawn(process.execPath, [sengBin, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr })));
}

// A generous timeout: the machine may be slow, and the test is about waiting, not failing.
// Without BEGIN IMMEDIATE half of these fail at once with "database is locked" whatever the timeout.
const patient = { SENG_DB_BUSY_TIMEOUT_MS: '120000' };

test('30 parallel `db app add` on one vanilla database all succeed and all rows are there', async () => {
  const db = join(dir, 'parallel-vanilla.db');
  assert.equal(seng(['db', 'init', '-d', db, '--schema', 'vanilla', '--demo']).code, 0);
  const n = 30;
  const results = await Promise.all(
    Array.from({ length: n }, (_, i) =>
      sengAsync(
        [
          'db',
          'app',
          'add',
          '-d',
          db,
          `app${i}`,
          '--mrenclave',
          hex(i + 1),
          '--mrsigner',
          hex(i + 1),
          '--host-subnet',
          `10.${i}.0.0/16`,
          '--enclave-subnet',
          '192.168.28.0/24',
        ],
        patient,
      ),
    ),
  );
  for (const r of results) {
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /Internal error|locked/);
  }
  assert.equal(sqlite(db, "SELECT count(*) FROM apps WHERE name LIKE 'app%'"), String(n));
  assert.equal(sqlite(db, 'PRAGMA integrity_check'), 'ok');
});

test('parallel category adds on one netfilter database all succeed', async () => {
  const db = join(dir, 'parallel-nf.db');
  assert.equal(seng(['db', 'init', '-d', db, '--schema', 'netfilter', '--demo']).code, 0);
  const n = 20;
  const results = await Promise.all(
    Array.from({ length: n }, (_, i) =>
      sengAsync(['db', 'category', 'add', '-d', db, `Cat${i}`, '--app', 'DemoEnclave'], patient),
    ),
  );
  for (const r of results) assert.equal(r.code, 0, r.stderr);
  assert.equal(
    sqlite(
      db,
      "SELECT count(*) FROM categories c JOIN apps a ON a.id = c.apps_id WHERE a.name = 'DemoEnclave'",
    ),
    String(n + 1),
  );
});

/** Holds the write lock of a database in another process until `release` is called. */
async function holdWriteLock(db: string): Promise<{ release: () => Promise<void>; child: ChildProcess }> {
  const script = `
    const Database = require('better-sqlite3');
    const db = new Database(process.argv[1]);
    db.exec('BEGIN IMMEDIATE');
    db.prepare("INSERT INTO categories(name, apps_id) VALUES ('Held', 1)").run();
    process.stdout.write('locked\\n');
    process.stdin.on('end', () => { db.exec('ROLLBACK'); db.close(); });
    process.stdin.resume();
  `;
  const child = spawn(process.execPath, ['-e', script, db], {
    cwd: repoRoot,
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  while (!out.includes('locked')) {
    const [code] = await Promise.race([once(child.stdout, 'data'), once(child, 'exit')]);
    if (typeof code === 'number' || code === null) throw new Error(`lock holder exited (${String(code)})`);
  }
  return {
    child,
    release: async () => {
      const exited = once(child, 'exit');
      child.stdin.end();
      await exited;
    },
  };
}

test('a write lock held past the busy timeout gives a typed "busy, retry" error and changes nothing', async () => {
  const db = join(dir, 'busy.db');
  assert.equal(seng(['db', 'init', '-d', db, '--schema', 'netfilter', '--demo']).code, 0);
  const holder = await holdWriteLock(db);
  try {
    const short = { SENG_DB_BUSY_TIMEOUT_MS: '300' };
    const args = ['db', 'category', 'add', '-d', db, 'Web', '--app', 'DemoEnclave'];
    const r = await sengAsync(args, short);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /^Error: database .*busy\.db is busy: another process held its lock for more than 300 ms\nHint: retry/,
    );
    assert.doesNotMatch(r.stderr, /Internal error|backup|corrupt|\n\s+at /);
    const j = await sengAsync([...args, '--json'], short);
    assert.equal(j.code, 1);
    assert.equal((JSON.parse(j.stdout) as { error: { code: string } }).error.code, 'ESTORE_BUSY');
    // Readers are not blocked by a writer that has not started committing.
    assert.equal(sengJson(['db', 'app', 'list', '-d', db], { env: short }).code, 0);
  } finally {
    await holder.release();
  }
  assert.equal(sqlite(db, "SELECT count(*) FROM categories WHERE name IN ('Web', 'Held')"), '0');
  assert.equal(seng(['db', 'category', 'add', '-d', db, 'Web', '--app', 'DemoEnclave']).code, 0);
});

test('a writer waits for a lock released within the busy timeout', async () => {
  const db = join(dir, 'wait.db');
  assert.equal(seng(['db', 'init', '-d', db, '--schema', 'netfilter', '--demo']).code, 0);
  const holder = await holdWriteLock(db);
  const pending = sengAsync(['db', 'category', 'add', '-d', db, 'Web', '--app', 'DemoEnclave'], patient);
  // Released as soon as the writer has started; it must then get the lock and succeed.
  setTimeout(() => void holder.release(), 1000);
  const r = await pending;
  assert.equal(r.code, 0, r.stderr);
  assert.equal(sqlite(db, "SELECT count(*) FROM categories WHERE name = 'Web'"), '1');
});

test('SENG_DB_BUSY_TIMEOUT_MS that is not a number is refused with a hint', () => {
  const db = join(dir, 'env.db');
  assert.equal(seng(['db', 'init', '-d', db, '--schema', 'netfilter']).code, 0);
  const r = seng(['db', 'app', 'list', '-d', db], { env: { SENG_DB_BUSY_TIMEOUT_MS: 'soon' } });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /SENG_DB_BUSY_TIMEOUT_MS must be a number of milliseconds, got "soon"/);
});
