/**
 * Every `seng db …` failure the file system can cause ends in a one-line typed error
 * with a hint (and a specific code with --json), never a stack trace or EINTERNAL.
 * Permission cases run the CLI as nobody (uid 65534): root bypasses file permissions.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { seng, sengBin, type CliResult } from '../../helpers/cli.js';

let dir: string;
const dump = (db: string) => execFileSync('sqlite3', [db, '.dump'], { encoding: 'utf8' });
const H = (c: string) => c.repeat(64);

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'seng-store-err-'));
  chmodSync(dir, 0o755);
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** Runs seng as uid/gid 65534 with no supplementary groups. */
function sengAsNobody(args: string[]): CliResult {
  const r = spawnSync(
    'setpriv',
    ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, sengBin, ...args],
    { encoding: 'utf8', env: { ...process.env, HOME: dir }, timeout: 60_000 },
  );
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Checks the text and --json forms of one failure. */
function expectTyped(
  run: (args: string[]) => CliResult,
  args: string[],
  code: string,
  message: RegExp,
  hint: RegExp,
): void {
  const r = run(args);
  assert.equal(r.code, 1, `exit code (stderr: ${r.stderr})`);
  assert.match(r.stderr, message);
  assert.match(r.stderr, /\nHint: /);
  assert.match(r.stderr, hint);
  assert.doesNotMatch(r.stderr, /Internal error|\n\s+at |SqliteError/);
  assert.equal(r.stderr.trimEnd().split('\n').length, 2, `one error line and one hint line:\n${r.stderr}`);
  const j = run([...args, '--json']);
  assert.equal(j.code, 1);
  const err = (JSON.parse(j.stdout) as { error: { code: string; message: string; hint?: string } }).error;
  assert.equal(err.code, code);
  assert.match(err.message, message);
  assert.match(err.hint ?? '', hint);
}

function initDb(path: string, schema: 'vanilla' | 'netfilter'): string {
  const r = seng(['db', 'init', '-d', path, '--schema', schema, '--demo']);
  assert.equal(r.code, 0, r.stderr);
  return path;
}

test('db init with a missing directory (the quickstart path on a fresh host) says to create it', () => {
  const path = join(dir, 'etc', 'seng', 'policy.db');
  expectTyped(
    seng,
    ['db', 'init', '-d', path, '--schema', 'vanilla'],
    'ESTORE_PATH',
    /directory .*etc\/seng does not exist/,
    /mkdir -p .*etc\/seng/,
  );
  assert.equal(existsSync(join(dir, 'etc')), false);
});

test('db init --force on a directory is refused and the directory stays', () => {
  const path = join(dir, 'a-directory');
  mkdirSync(path);
  writeFileSync(join(path, 'keep'), 'x');
  expectTyped(
    seng,
    ['db', 'init', '-d', path, '--schema', 'vanilla', '--force'],
    'ESTORE_PATH',
    /a-directory is a directory, not a database file/,
    /pass a file path/,
  );
  assert.deepEqual(readdirSync(path), ['keep']);
});

test('-d naming a directory or a path under a file is refused for every command', () => {
  const notDir = join(dir, 'plain-file');
  writeFileSync(notDir, 'x');
  for (const args of [
    ['db', 'app', 'list', '-d', dir],
    ['db', 'subnet', 'add', '-d', dir, '10.1.0.0/24'],
    ['db', 'export', '-d', dir],
  ]) {
    expectTyped(seng, args, 'ESTORE_PATH', /is a directory, not a database file/, /pass a file path/);
  }
  expectTyped(
    seng,
    ['db', 'app', 'list', '-d', join(notDir, 'x.db')],
    'ESTORE_PATH',
    /plain-file is not a directory/,
    /inside a directory/,
  );
});

test('db init --force replaces a database atomically and leaves no temporary file', () => {
  const sub = join(dir, 'force');
  mkdirSync(sub);
  const path = initDb(join(sub, 'p.db'), 'netfilter');
  assert.equal(seng(['db', 'init', '-d', path, '--schema', 'vanilla', '--force']).code, 0);
  assert.deepEqual(readdirSync(sub), ['p.db']);
  assert.match(dump(path), /CREATE TABLE enclave_subnets/);
});

test('writes to a read-only database file are refused with a permission error', () => {
  const sub = join(dir, 'ro-file');
  mkdirSync(sub);
  chmodSync(sub, 0o777);
  const path = initDb(join(sub, 'p.db'), 'netfilter');
  chmodSync(path, 0o644); // owned by root: nobody may read, not write
  const before = dump(path);
  const writes = [
    ['db', 'app', 'add', '-d', path, 'x', '--mrenclave', H('c'), '--mrsigner', H('c')],
    ['db', 'app', 'remove', '-d', path, 'DemoEnclave'],
    ['db', 'app', 'set', '-d', path, 'DemoEnclave', '--rename', 'Other'],
    ['db', 'category', 'add', '-d', path, 'Web', '--app', 'DemoEnclave'],
    ['db', 'category', 'remove', '-d', path, 'Demo', '--app', 'DemoEnclave'],
  ];
  for (const args of writes) {
    expectTyped(sengAsNobody, args, 'ESTORE_PERMISSION', /the file is read-only for this user/, /ls -l/);
  }
  // Reading still works.
  assert.equal(sengAsNobody(['db', 'app', 'list', '-d', path]).code, 0);
  assert.equal(dump(path), before);
});

test('writes to a database in a read-only directory explain the journal file', () => {
  const sub = join(dir, 'ro-dir');
  mkdirSync(sub);
  const path = initDb(join(sub, 'p.db'), 'vanilla');
  chmodSync(path, 0o666);
  chmodSync(sub, 0o755); // owned by root: nobody may not create the journal
  const before = dump(path);
  for (const args of [
    ['db', 'subnet', 'add', '-d', path, '10.1.0.0/24'],
    ['db', 'app', 'remove', '-d', path, 'DemoEnclave'],
    [
      'db',
      'app',
      'add',
      '-d',
      path,
      'x',
      '--mrenclave',
      H('c'),
      '--mrsigner',
      H('c'),
      '--host-subnet',
      '10.0.0.0/8',
      '--enclave-subnet',
      '192.168.28.0/24',
    ],
  ]) {
    expectTyped(
      sengAsNobody,
      args,
      'ESTORE_PERMISSION',
      /its directory .*ro-dir is not writable/,
      /journal file/,
    );
  }
  expectTyped(
    sengAsNobody,
    ['db', 'init', '-d', join(sub, 'new.db'), '--schema', 'vanilla'],
    'ESTORE_PERMISSION',
    /directory .*ro-dir is not writable/,
    /ls -ld/,
  );
  assert.equal(dump(path), before);
});

test('a database the user may not read is refused as a permission problem, not as corrupt', () => {
  const path = initDb(join(dir, 'secret.db'), 'netfilter');
  chmodSync(path, 0o600);
  expectTyped(
    sengAsNobody,
    ['db', 'app', 'list', '-d', path],
    'ESTORE_PERMISSION',
    /cannot read .*secret\.db: permission denied/,
    /ls -l/,
  );
  // Behind a directory nobody may search: a permission problem, not "does not exist".
  const closed = join(dir, 'closed');
  mkdirSync(closed, { mode: 0o700 });
  const hidden = initDb(join(closed, 'p.db'), 'netfilter');
  expectTyped(
    sengAsNobody,
    ['db', 'app', 'list', '-d', hidden],
    'ESTORE_PERMISSION',
    /cannot look up .*closed\/p\.db: permission denied/,
    /not searchable/,
  );
  expectTyped(
    sengAsNobody,
    ['db', 'init', '-d', join(closed, 'sub', 'x.db'), '--schema', 'vanilla'],
    'ESTORE_PERMISSION',
    /cannot look up .*closed\/sub: permission denied/,
    /not searchable/,
  );
});

test('db export --out and db import report file problems as typed errors', () => {
  const path = initDb(join(dir, 'io.db'), 'netfilter');
  expectTyped(
    seng,
    ['db', 'export', '-d', path, '--out', join(dir, 'missing', 'x.json')],
    'ESTORE_PATH',
    /missing does not exist/,
    /mkdir -p/,
  );
  expectTyped(seng, ['db', 'export', '-d', path, '--out', dir], 'ESTORE_PATH', /is a directory/, /file path/);
  const sub = join(dir, 'ro-out');
  mkdirSync(sub);
  chmodSync(sub, 0o755);
  chmodSync(path, 0o644);
  expectTyped(
    sengAsNobody,
    ['db', 'export', '-d', path, '--out', join(sub, 'x.json')],
    'ESTORE_PERMISSION',
    /permission denied/,
    /ls -ld/,
  );
  expectTyped(
    seng,
    ['db', 'import', '-d', path, join(dir, 'nope.json')],
    'ESTORE_PATH',
    /nope\.json does not exist/,
    /seng db export/,
  );
  const bad = join(dir, 'bad.json');
  writeFileSync(bad, '{"format": ');
  expectTyped(
    seng,
    ['db', 'import', '-d', path, bad],
    'EINPUT',
    /bad\.json is not valid JSON/,
    /seng db export/,
  );
});
