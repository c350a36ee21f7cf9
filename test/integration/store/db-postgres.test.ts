/**
 * Every `seng db` command (and `rules render -d`) against a real PostgreSQL server, as an
 * admin runs them: the same output and typed errors as with a SQLite file, `db copy` in every
 * direction with an identical export after a round trip, and parallel writers losing nothing.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { seng, sengBin, sengJson, type CliResult } from '../../helpers/cli.js';
import { startPostgres, type PostgresServer } from '../../helpers/postgres.js';
import { DEMO_MEASUREMENTS } from '../../../src/store/index.js';

let server: PostgresServer;
let dir: string;
before(async () => {
  server = await startPostgres();
  dir = mkdtempSync(join(tmpdir(), 'seng-db-pg-'));
});
after(() => {
  server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const hex = (n: number) => n.toString(16).padStart(64, '0');

/** A failure the operator can act on: exit 1, one "Error:" line and a hint, no stack trace. */
function assertTypedFailure(r: CliResult, message: RegExp, hint?: RegExp): void {
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /^Error: /);
  assert.match(r.stderr, message);
  if (hint) assert.match(r.stderr, new RegExp(`Hint: .*${hint.source}`));
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
}

test('vanilla: init, subnets and apps through SENG_DB=postgres://…, with the same checks as SQLite', async () => {
  const url = await server.createDatabase();
  const env = { SENG_DB: url };
  assert.equal(seng(['db', 'init', '--schema', 'vanilla', '--demo', '-d', url]).code, 0);
  const subnet = sengJson<{ id: number; subnet: string }>(['db', 'subnet', 'add', '10.28.0.0/24'], { env });
  assert.equal(subnet.code, 0, subnet.stderr);
  assert.deepEqual(subnet.json, { id: 3, subnet: '10.28.0.0/24', gateway: '10.28.0.1' });
  const add = (name: string, n: number, host: string) =>
    seng(
      [
        'db',
        'app',
        'add',
        name,
        '--mrenclave',
        hex(n),
        '--mrsigner',
        hex(n),
        '--host-subnet',
        host,
        '--enclave-subnet',
        '10.28.0.0/24',
      ],
      { env },
    );
  assert.equal(add('web', 1, '10.0.0.0/8').code, 0);
  assertTypedFailure(add('web', 1, '10.0.0.0/8'), /already exists/, /seng db app list/);
  assertTypedFailure(add('web', 1, '10.1.0.0/16'), /ambiguous/);
  assert.equal(seng(['db', 'app', 'set', 'web', '--rename', 'www'], { env }).code, 0);
  const show = sengJson<{ name: string; hostSubnet: string; enclaveGateway: string }[]>(
    ['db', 'app', 'show', 'www'],
    { env },
  );
  assert.deepEqual(
    show.json.map((a) => [a.name, a.hostSubnet, a.enclaveGateway]),
    [['www', '10.0.0.0/8', '10.28.0.1']],
  );
  assertTypedFailure(seng(['db', 'app', 'show', 'nope'], { env }), /no app named "nope"/);
  assertTypedFailure(seng(['db', 'subnet', 'remove', '10.28.0.0/24'], { env }), /still used by app\(s\) www/);
  assert.equal(seng(['db', 'app', 'remove', 'www'], { env }).code, 0);
  assertTypedFailure(seng(['db', 'app', 'remove', 'www'], { env }), /no app named "www"/);
  assert.equal(seng(['db', 'subnet', 'remove', '10.28.0.0/24'], { env }).code, 0);
  const list = sengJson<{ name: string }[]>(['db', 'app', 'list'], { env });
  assert.deepEqual(
    list.json.map((a) => a.name),
    ['DemoEnclave', 'SDK-NGINX'],
  );
  const subnets = sengJson<{ subnet: string }[]>(['db', 'subnet', 'list'], { env });
  assert.equal(subnets.json.length, 2);
  assertTypedFailure(seng(['db', 'category', 'list'], { env }), /vanilla database/);
});

test('netfilter: categories, init --force, and rules render -d resolving app names in PostgreSQL', async () => {
  const url = await server.createDatabase();
  assert.equal(seng(['db', 'init', '-d', url, '--schema', 'netfilter', '--demo']).code, 0);
  assertTypedFailure(
    seng(['db', 'init', '-d', url, '--schema', 'netfilter']),
    /already holds SENG policy tables/,
    /--force/,
  );
  assert.equal(seng(['db', 'category', 'add', '-d', url, 'Web', '--app', 'SENG-NGINX']).code, 0);
  assertTypedFailure(
    seng(['db', 'category', 'add', '-d', url, 'Web', '--app', 'SENG-NGINX']),
    /already in category/,
  );
  const cats = sengJson<{ category: string; apps: string[] }[]>(['db', 'category', 'list', '-d', url]);
  assert.deepEqual(cats.json, [
    { category: 'Demo', apps: ['DemoEnclave'] },
    { category: 'Server', apps: ['SENG-NGINX'] },
    { category: 'Web', apps: ['SENG-NGINX'] },
  ]);
  assert.equal(seng(['db', 'category', 'remove', '-d', url, 'Web', '--app', 'SENG-NGINX']).code, 0);
  const policy = join(dir, 'policy.yaml');
  writeFileSync(
    policy,
    'version: 1\ntable: seng\nrules:\n  - name: demo\n    chain: forward\n    src-app: DemoEnclave\n    action: accept\n',
  );
  const render = sengJson<{ output: string }>(['rules', 'render', policy, '-d', url, '--format', 'nft']);
  assert.equal(render.code, 0, render.stderr);
  assert.match(render.json.output, new RegExp(DEMO_MEASUREMENTS.DemoEnclave.mrEnclave.slice(0, 16)));
  assert.equal(seng(['db', 'init', '-d', url, '--schema', 'vanilla', '--force']).code, 0);
  assert.equal(sengJson<unknown[]>(['db', 'app', 'list', '-d', url]).json.length, 0);
});

test('a bad URL, an unreachable server and a missing database are typed errors with hints', () => {
  assertTypedFailure(
    seng(['db', 'app', 'list', '-d', 'postgres://u@host:port/db']),
    /not a valid PostgreSQL URL/,
    /postgres:\/\//,
  );
  assertTypedFailure(
    seng(['db', 'app', 'list', '-d', `postgres://postgres@/x?host=${join(dir, 'no-server')}`]),
    /cannot reach PostgreSQL/,
    /server runs/,
  );
  assertTypedFailure(
    seng(['db', 'app', 'list', '-d', server.adminUrl.replace('/postgres?', '/missing_db?')]),
    /does not exist/,
    /createdb/,
  );
  const json = sengJson<{ error: { code: string } }>([
    'db',
    'app',
    'list',
    '-d',
    `postgres://postgres@/x?host=${join(dir, 'no-server')}`,
  ]);
  assert.equal(json.code, 1);
  assert.equal(json.json.error.code, 'EPG_CONNECT');
});

test('db copy SQLite → PostgreSQL → SQLite gives an identical export; PG → PG; non-empty targets need --force', async () => {
  const file = join(dir, 'source.db');
  assert.equal(seng(['db', 'init', '-d', file, '--schema', 'vanilla', '--demo']).code, 0);
  assert.equal(seng(['db', 'subnet', 'add', '-d', file, '10.28.0.0/24']).code, 0);
  assert.equal(
    seng([
      'db',
      'app',
      'add',
      '-d',
      file,
      'web',
      '--mrenclave',
      hex(1),
      '--mrsigner',
      hex(2),
      '--host-subnet',
      '10.0.0.0/8',
      '--enclave-subnet',
      '10.28.0.0/24',
    ]).code,
    0,
  );
  assert.equal(seng(['db', 'app', 'remove', '-d', file, 'SDK-NGINX']).code, 0); // a gap in the ids
  const original = seng(['db', 'export', '-d', file]).stdout;

  const url = await server.createDatabase();
  const toPg = sengJson<Record<string, unknown>>(['db', 'copy', file, url]);
  assert.equal(toPg.code, 0, toPg.stderr);
  assert.deepEqual(toPg.json, {
    from: file,
    to: url,
    layout: 'vanilla',
    created: true,
    replaced: false,
    subnets: 3,
    apps: 2,
    categories: 0,
  });
  assert.equal(seng(['db', 'export', '-d', url]).stdout, original);

  const back = join(dir, 'back.db');
  assert.equal(seng(['db', 'copy', url, back]).code, 0);
  assert.equal(seng(['db', 'export', '-d', back]).stdout, original);

  const url2 = await server.createDatabase();
  assert.equal(seng(['db', 'copy', url, url2]).code, 0);
  assert.equal(seng(['db', 'export', '-d', url2]).stdout, original);
  // New rows continue after the copied ids.
  const added = sengJson<{ id: number }>(['db', 'subnet', 'add', '-d', url2, '10.40.0.0/24']);
  assert.equal(added.json.id, 4);

  assertTypedFailure(seng(['db', 'copy', file, url]), /is not empty/, /--force/);
  const nf = join(dir, 'nf.db');
  assert.equal(seng(['db', 'init', '-d', nf, '--schema', 'netfilter', '--demo']).code, 0);
  assertTypedFailure(
    seng(['db', 'copy', nf, url]),
    /vanilla database, but the source is a netfilter/,
    /--force/,
  );
  const forced = sengJson<{ replaced: boolean; layout: string }>(['db', 'copy', nf, url, '--force']);
  assert.deepEqual([forced.code, forced.json.replaced, forced.json.layout], [0, true, 'netfilter']);
  assert.equal(seng(['db', 'export', '-d', url]).stdout, seng(['db', 'export', '-d', nf]).stdout);
  // PostgreSQL (netfilter) over an existing SQLite file of the other layout, with --force.
  assert.equal(seng(['db', 'copy', url, back, '--force']).code, 0);
  assert.equal(seng(['db', 'export', '-d', back]).stdout, seng(['db', 'export', '-d', nf]).stdout);
  assertTypedFailure(seng(['db', 'copy', url, url]), /both source and target/);
});

test('db export / import with PostgreSQL: import creates the tables, --replace replaces the rows', async () => {
  const url = await server.createDatabase();
  const file = join(dir, 'nf-export.json');
  const nf = join(dir, 'nf2.db');
  assert.equal(seng(['db', 'init', '-d', nf, '--schema', 'netfilter', '--demo']).code, 0);
  assert.equal(seng(['db', 'export', '-d', nf, '--out', file]).code, 0);
  const imported = sengJson<{ created: boolean; apps: number }>(['db', 'import', '-d', url, file]);
  assert.deepEqual([imported.code, imported.json.created, imported.json.apps], [0, true, 2]);
  assertTypedFailure(seng(['db', 'import', '-d', url, file]), /is not empty/, /--replace/);
  assert.equal(seng(['db', 'import', '-d', url, file, '--replace']).code, 0);
  assert.equal(seng(['db', 'export', '-d', url]).stdout, readFileSync(file, 'utf8'));
});

function sengAsync(args: string[]): Promise<CliResult> {
  const child = spawn(process.execPath, [sengBin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr })));
}

test('20 parallel `db app add` processes on one PostgreSQL database all succeed and all rows are there', async () => {
  const url = await server.createDatabase();
  assert.equal(seng(['db', 'init', '-d', url, '--schema', 'netfilter']).code, 0);
  const n = 20;
  const results = await Promise.all(
    Array.from({ length: n }, (_, i) =>
      sengAsync([
        'db',
        'app',
        'add',
        '-d',
        url,
        `app${i}`,
        '--mrenclave',
        hex(i + 1),
        '--mrsigner',
        hex(i + 1),
      ]),
    ),
  );
  assert.deepEqual(
    results.filter((r) => r.code !== 0).map((r) => r.stderr),
    [],
  );
  const apps = sengJson<{ id: number; name: string }[]>(['db', 'app', 'list', '-d', url]).json;
  assert.equal(apps.length, n);
  assert.deepEqual(
    apps.map((a) => a.id),
    Array.from({ length: n }, (_, i) => i + 1),
  );
  assert.deepEqual(new Set(apps.map((a) => a.name)), new Set(Array.from({ length: n }, (_, i) => `app${i}`)));
});
