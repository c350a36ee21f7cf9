/** `seng db app show` and `seng db app set` against databases written by the sqlite3 tool (SPEC §4). */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot, seng, sengJson } from '../../helpers/cli.js';

let dir: string;
const fixture = (name: string) => join(repoRoot, 'test', 'fixtures', 'store', name);
const sqlite = (db: string, sql: string) => execFileSync('sqlite3', [db, sql], { encoding: 'utf8' }).trim();
const dump = (db: string) => execFileSync('sqlite3', [db, '.dump'], { encoding: 'utf8' });
const H = (c: string) => c.repeat(64);

function fromSql(name: string): string {
  const db = join(dir, `${name}-${Math.random().toString(36).slice(2)}.db`);
  execFileSync('sqlite3', [db], { input: readFileSync(fixture(`${name}.sql`)) });
  return db;
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'seng-store-set-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

test('db app show prints every row of a vanilla app with its enclave subnet and gateway', () => {
  const db = fromSql('vanilla');
  const r = sengJson(['db', 'app', 'show', '-d', db, 'SDK-NGINX']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.json, [
    {
      id: 2,
      name: 'SDK-NGINX',
      mrEnclave: H('2'),
      mrSigner: H('b'),
      hostSubnet: '127.0.0.0/26',
      enclaveSubnet: '172.16.28.0/26',
      enclaveGateway: '172.16.28.1',
    },
    {
      id: 3,
      name: 'SDK-NGINX',
      mrEnclave: H('2'),
      mrSigner: H('b'),
      hostSubnet: '10.0.0.0/8',
      enclaveSubnet: '192.168.28.0/24',
      enclaveGateway: '192.168.28.1',
    },
  ]);
  const text = seng(['db', 'app', 'show', '-d', db, 'SDK-NGINX']);
  assert.equal(text.code, 0);
  assert.match(
    text.stdout,
    /^id: +2\nname: +SDK-NGINX\nmrenclave: +2{64}\nmrsigner: +b{64}\nhost subnet: +127\.0\.0\.0\/26\n/,
  );
  assert.match(text.stdout, /enclave gateway: +192\.168\.28\.1/);
});

test('db app show on a netfilter app lists its categories; an unknown app is an error', () => {
  const db = fromSql('netfilter');
  const r = sengJson(['db', 'app', 'show', '-d', db, 'SENG-NGINX']);
  assert.deepEqual(r.json, [
    { id: 2, name: 'SENG-NGINX', mrEnclave: H('2'), mrSigner: H('b'), categories: ['Server', 'Web'] },
  ]);
  assert.match(seng(['db', 'app', 'show', '-d', db, 'SENG-NGINX']).stdout, /categories: +Server, Web/);
  const missing = seng(['db', 'app', 'show', '-d', db, 'nope']);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /no app named "nope"\nHint: list apps with: seng db app list/);
});

test('db app set renames and changes MRSIGNER of every row in one transaction', () => {
  const db = fromSql('vanilla');
  const r = sengJson(['db', 'app', 'set', '-d', db, 'SDK-NGINX', '--rename', 'nginx', '--mrsigner', H('E')]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((r.json as unknown[]).length, 2);
  assert.equal(
    sqlite(db, 'SELECT id, name, hex(mr_signer) FROM apps ORDER BY id'),
    `1|DemoEnclave|${H('A')}\n2|nginx|${H('E')}\n3|nginx|${H('E')}`,
  );
});

test('db app set changes the host and enclave subnet of one row, picked by --for-host-subnet', () => {
  const db = fromSql('vanilla');
  // Two rows: without a selector the change is ambiguous.
  const ambiguous = seng(['db', 'app', 'set', '-d', db, 'SDK-NGINX', '--host-subnet', '10.2.0.0/16']);
  assert.equal(ambiguous.code, 1);
  assert.match(ambiguous.stderr, /has 2 rows \(host subnets 127\.0\.0\.0\/26, 10\.0\.0\.0\/8\)/);
  assert.match(ambiguous.stderr, /--for-host-subnet/);
  const r = seng([
    'db',
    'app',
    'set',
    '-d',
    db,
    'SDK-NGINX',
    '--for-host-subnet',
    '10.0.0.0/8',
    '--host-subnet',
    '10.2.0.0/16',
    '--enclave-subnet',
    '172.16.28.0/26',
  ]);
  assert.equal(r.code, 0, r.stderr);
  // 10.2.0.0 -> bytes 0a 02 00 00 -> 0x0000020a = 522; /16 -> 65535; subnet 2
  assert.equal(
    sqlite(db, 'SELECT host_subnet, host_submask, enc_subnet_id FROM apps WHERE id = 3'),
    '522|65535|2',
  );
  assert.equal(sqlite(db, 'SELECT host_subnet, enc_subnet_id FROM apps WHERE id = 2'), '16777343|2');
});

interface BadSet {
  name: string;
  schema: 'vanilla' | 'netfilter';
  args: string[];
  message: RegExp;
}

const badSets: BadSet[] = [
  { name: 'nothing to change', schema: 'netfilter', args: ['DemoEnclave'], message: /nothing to change/ },
  {
    name: 'unknown app',
    schema: 'netfilter',
    args: ['nope', '--rename', 'x'],
    message: /no app named "nope"/,
  },
  {
    name: 'rename onto an existing app',
    schema: 'netfilter',
    args: ['DemoEnclave', '--rename', 'SENG-NGINX'],
    message: /an app named "SENG-NGINX" already exists/,
  },
  {
    name: 'invalid new name',
    schema: 'netfilter',
    args: ['DemoEnclave', '--rename', 'a\tb'],
    message: /app name "a\\x09b" contains control/,
  },
  {
    name: 'non-hex MRSIGNER',
    schema: 'netfilter',
    args: ['DemoEnclave', '--mrsigner', H('x')],
    message: /--mrsigner must be 64 hex digits/,
  },
  {
    name: 'subnets on a netfilter database',
    schema: 'netfilter',
    args: ['DemoEnclave', '--host-subnet', '10.0.0.0/8'],
    message: /needs a vanilla database/,
  },
  {
    name: 'unknown enclave subnet',
    schema: 'vanilla',
    args: ['DemoEnclave', '--enclave-subnet', '10.99.0.0/24'],
    message: /no enclave subnet 10\.99\.0\.0\/24/,
  },
  {
    name: 'no row for --for-host-subnet',
    schema: 'vanilla',
    args: ['SDK-NGINX', '--for-host-subnet', '10.9.0.0/16', '--host-subnet', '10.2.0.0/16'],
    message: /has no row for host subnet 10\.9\.0\.0\/16/,
  },
  {
    name: 'host subnet that makes admission ambiguous',
    schema: 'vanilla',
    args: ['SDK-NGINX', '--for-host-subnet', '127.0.0.0/26', '--host-subnet', '10.5.0.0/16'],
    message: /overlaps 10\.5\.0\.0\/16: admission .* ambiguous/,
  },
  {
    name: 'host subnet of another row of the same measurement',
    schema: 'vanilla',
    args: ['SDK-NGINX', '--for-host-subnet', '127.0.0.0/26', '--host-subnet', '10.0.0.0/8'],
    message: /already exists/,
  },
];

for (const c of badSets) {
  test(`db app set refuses and changes nothing: ${c.name}`, () => {
    const db = fromSql(c.schema);
    const before = dump(db);
    const r = seng(['db', 'app', 'set', '-d', db, ...c.args]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, c.message);
    assert.match(r.stderr, /^Error: [^\n]+\nHint: [^\n]+\n$/);
    assert.equal(dump(db), before);
  });
}

test('names stored with control characters (by other tools) are shown escaped, never raw', () => {
  const db = fromSql('netfilter');
  sqlite(db, "UPDATE apps SET name = 'evil' || char(10) || char(27) || '[2Jname' WHERE id = 1");
  const list = seng(['db', 'app', 'list', '-d', db]);
  assert.equal(list.code, 0, list.stderr);
  assert.equal(list.stdout.includes(String.fromCharCode(27)), false);
  assert.match(list.stdout, /evil\\x0a\\x1b\[2Jname/);
  assert.equal(list.stdout.trimEnd().split('\n').length, 3);
  // JSON carries the exact stored value.
  const json = sengJson(['db', 'app', 'list', '-d', db]);
  assert.equal((json.json as { name: string }[])[0]?.name, 'evil\n\u001b[2Jname');
});
