/**
 * The policy store through the CLI, against databases written by the sqlite3 tool
 * from SQL that follows SPEC §4, and databases written by seng inspected with sqlite3.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
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
  dir = mkdtempSync(join(tmpdir(), 'seng-store-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

test('a vanilla database written by the original SQL lists decoded values', () => {
  const db = fromSql('vanilla');
  const subnets = sengJson(['db', 'subnet', 'list', '-d', db]);
  assert.equal(subnets.code, 0);
  assert.deepEqual(subnets.json, [
    { id: 1, subnet: '192.168.28.0/24', gateway: '192.168.28.1' },
    { id: 2, subnet: '172.16.28.0/26', gateway: '172.16.28.1' },
  ]);
  const apps = sengJson(['db', 'app', 'list', '-d', db]);
  assert.deepEqual(apps.json, [
    {
      id: 1,
      name: 'DemoEnclave',
      mrEnclave: H('1'),
      mrSigner: H('a'),
      hostSubnet: '127.0.0.0/26',
      enclaveSubnet: '192.168.28.0/24',
    },
    {
      id: 2,
      name: 'SDK-NGINX',
      mrEnclave: H('2'),
      mrSigner: H('b'),
      hostSubnet: '127.0.0.0/26',
      enclaveSubnet: '172.16.28.0/26',
    },
    {
      id: 3,
      name: 'SDK-NGINX',
      mrEnclave: H('2'),
      mrSigner: H('b'),
      hostSubnet: '10.0.0.0/8',
      enclaveSubnet: '192.168.28.0/24',
    },
  ]);
});

test('a netfilter database written by the original SQL lists apps with category arrays', () => {
  const db = fromSql('netfilter');
  const apps = sengJson(['db', 'app', 'list', '-d', db]);
  assert.deepEqual(apps.json, [
    { id: 1, name: 'DemoEnclave', mrEnclave: H('1'), mrSigner: H('a'), categories: ['Demo'] },
    { id: 2, name: 'SENG-NGINX', mrEnclave: H('2'), mrSigner: H('b'), categories: ['Server', 'Web'] },
  ]);
  const cats = sengJson(['db', 'category', 'list', '-d', db]);
  assert.deepEqual(cats.json, [
    { category: 'Demo', apps: ['DemoEnclave'] },
    { category: 'Server', apps: ['SENG-NGINX'] },
    { category: 'Web', apps: ['SENG-NGINX'] },
  ]);
});

test('db init --demo (vanilla) writes the exact SPEC §4 layout and encoding', () => {
  const db = join(dir, 'demo-vanilla.db');
  assert.equal(seng(['db', 'init', '-d', db, '--schema', 'vanilla', '--demo']).code, 0);
  assert.equal(
    sqlite(db, 'PRAGMA table_info(enclave_subnets)'),
    ['0|id|INTEGER|0||1', '1|subnet|INTEGER|1||0', '2|submask|INTEGER|1||0', '3|gateway|INTEGER|0||0'].join(
      '\n',
    ),
  );
  assert.equal(
    sqlite(db, 'PRAGMA table_info(apps)'),
    [
      '0|id|INTEGER|0||1',
      '1|name|TEXT|1||0',
      '2|mr_enclave|BLOB|1||0',
      '3|mr_signer|BLOB|1||0',
      '4|host_subnet|INTEGER|1||0',
      '5|host_submask|INTEGER|1||0',
      '6|enc_subnet_id|INTEGER|1||0',
    ].join('\n'),
  );
  assert.equal(
    sqlite(db, 'SELECT * FROM enclave_subnets'),
    '1|1878208|16777215|18655424\n2|1839276|3238002687|18616492',
  );
  assert.equal(sqlite(db, 'SELECT printf("0x%08x", subnet) FROM enclave_subnets WHERE id = 1'), '0x001ca8c0');
  assert.equal(
    sqlite(
      db,
      'SELECT name, host_subnet, host_submask, enc_subnet_id, length(mr_enclave), length(mr_signer) FROM apps',
    ),
    'DemoEnclave|16777343|3238002687|1|32|32\nSDK-NGINX|16777343|3238002687|2|32|32',
  );
  // Unique constraints as in SPEC §4.
  assert.match(
    sqlite(db, "SELECT sql FROM sqlite_master WHERE name = 'apps'"),
    /UNIQUE\(mr_enclave, host_subnet, host_submask\)/,
  );
  assert.match(
    sqlite(db, "SELECT sql FROM sqlite_master WHERE name = 'enclave_subnets'"),
    /UNIQUE\(subnet, submask\)/,
  );
});

test('db init --demo (netfilter) writes the SPEC §4 layout and demo rows', () => {
  const db = join(dir, 'demo-nf.db');
  assert.equal(seng(['db', 'init', '-d', db, '--schema', 'netfilter', '--demo']).code, 0);
  assert.equal(
    sqlite(db, 'PRAGMA table_info(apps)'),
    ['0|id|INTEGER|0||1', '1|name|TEXT|1||0', '2|mr_enclave|BLOB|1||0', '3|mr_signer|BLOB|1||0'].join('\n'),
  );
  assert.equal(
    sqlite(db, 'PRAGMA table_info(categories)'),
    ['0|id|INTEGER|0||0', '1|name|TEXT|1||0', '2|apps_id|INTEGER|1||0'].join('\n'),
  );
  assert.equal(
    sqlite(db, 'SELECT a.name, c.name FROM categories c JOIN apps a ON a.id = c.apps_id ORDER BY a.id'),
    'DemoEnclave|Demo\nSENG-NGINX|Server',
  );
});

test('writes through seng round-trip and are encoded as the original server reads them', () => {
  const db = join(dir, 'rw.db');
  assert.equal(seng(['db', 'init', '-d', db, '--schema', 'vanilla']).code, 0);
  assert.equal(seng(['db', 'subnet', 'add', '-d', db, '10.28.0.0/24', '--gateway', '10.28.0.1']).code, 0);
  const add = seng([
    'db',
    'app',
    'add',
    '-d',
    db,
    'web',
    '--mrenclave',
    H('c'),
    '--mrsigner',
    H('d'),
    '--host-subnet',
    '192.168.0.0/16',
    '--enclave-subnet',
    '10.28.0.0/24',
  ]);
  assert.equal(add.code, 0, add.stderr);
  // 10.28.0.0 -> bytes 0a 1c 00 00 -> LE 0x00001c0a = 7178; /24 mask -> 0x00ffffff; gw 10.28.0.1 -> 0x01001c0a
  assert.equal(
    sqlite(db, 'SELECT subnet, submask, gateway FROM enclave_subnets'),
    `7178|16777215|${0x01001c0a}`,
  );
  // 192.168.0.0/16 -> c0 a8 00 00 -> 0x0000a8c0 = 43200; mask ff ff 00 00 -> 0x0000ffff = 65535
  assert.equal(
    sqlite(db, 'SELECT host_subnet, host_submask, hex(mr_enclave) FROM apps'),
    `43200|65535|${H('C')}`,
  );
  const removed = sengJson(['db', 'app', 'remove', '-d', db, 'web']);
  assert.equal(removed.code, 0);
  assert.equal(sqlite(db, 'SELECT count(*) FROM apps'), '0');
});

interface BadCase {
  name: string;
  schema: 'vanilla' | 'netfilter';
  args: (db: string) => string[];
  message: RegExp;
}

const badCases: BadCase[] = [
  {
    name: 'short measurement',
    schema: 'netfilter',
    args: (db) => ['db', 'app', 'add', '-d', db, 'x', '--mrenclave', 'abcd', '--mrsigner', H('a')],
    message: /--mrenclave must be 64 hex digits/,
  },
  {
    name: 'non-hex measurement',
    schema: 'netfilter',
    args: (db) => ['db', 'app', 'add', '-d', db, 'x', '--mrenclave', H('a'), '--mrsigner', H('g')],
    message:
      /--mrsigner must be 64 hex digits \(0-9, a-f\), but character 1 of "g{40}…" \(64 characters\) is "g", not a hex digit/,
  },
  ...(
    [
      ['127.0.0.0/8', /overlaps 127\.0\.0\.0\/8 \(loopback\)/],
      ['127.0.0.0/24', /loopback/],
      ['0.0.0.0/8', /overlaps 0\.0\.0\.0\/8 \("this network"\)/],
      ['0.0.0.0/0', /overlaps 0\.0\.0\.0\/8/],
      ['169.254.0.0/16', /link-local.*routers never forward/],
      ['224.0.0.0/24', /multicast/],
      ['239.1.0.0/16', /multicast/],
      ['240.0.0.0/8', /reserved/],
      ['255.255.255.0/24', /broadcast/],
    ] as const
  ).map(([cidr, message]): BadCase => ({
    name: `enclave subnet ${cidr}`,
    schema: 'vanilla',
    args: (db) => ['db', 'subnet', 'add', '-d', db, cidr],
    message,
  })),
  {
    name: 'one measurement under two names with overlapping host subnets',
    schema: 'vanilla',
    args: (db) => [
      'db',
      'app',
      'add',
      '-d',
      db,
      'impostor',
      '--mrenclave',
      H('2'),
      '--mrsigner',
      H('b'),
      '--host-subnet',
      '10.1.0.0/16',
      '--enclave-subnet',
      '172.16.28.0/26',
    ],
    message:
      /already allowed from host subnet 10\.0\.0\.0\/8 \(app "SDK-NGINX", row 3\), which overlaps 10\.1\.0\.0\/16: admission .* ambiguous/,
  },
  {
    name: 'one measurement with a host subnet containing an existing one',
    schema: 'vanilla',
    args: (db) => [
      'db',
      'app',
      'add',
      '-d',
      db,
      'SDK-NGINX',
      '--mrenclave',
      H('2'),
      '--mrsigner',
      H('b'),
      '--host-subnet',
      '0.0.0.0/0',
      '--enclave-subnet',
      '192.168.28.0/24',
    ],
    message: /overlaps 0\.0\.0\.0\/0: admission .* ambiguous/,
  },
  {
    name: 'remove --host-subnet on a netfilter database',
    schema: 'netfilter',
    args: (db) => ['db', 'app', 'remove', '-d', db, 'DemoEnclave', '--host-subnet', '10.0.0.0/8'],
    message: /--host-subnet selects one row of an app in a vanilla database, but .* is a netfilter database/,
  },
  {
    name: 'app name with a newline',
    schema: 'netfilter',
    args: (db) => ['db', 'app', 'add', '-d', db, 'a\nb', '--mrenclave', H('9'), '--mrsigner', H('9')],
    message: /app name "a\\x0ab" contains control or format characters/,
  },
  {
    name: 'app name with an ANSI escape',
    schema: 'netfilter',
    args: (db) => [
      'db',
      'app',
      'add',
      '-d',
      db,
      '\u001b[31mred',
      '--mrenclave',
      H('9'),
      '--mrsigner',
      H('9'),
    ],
    message: /app name "\\x1b\[31mred" contains control/,
  },
  {
    name: 'app name of 5,000 characters',
    schema: 'netfilter',
    args: (db) => [
      'db',
      'app',
      'add',
      '-d',
      db,
      'n'.repeat(5000),
      '--mrenclave',
      H('9'),
      '--mrsigner',
      H('9'),
    ],
    message: /^(Error: )?app name "n{40}…" \(5000 characters\) is too long/,
  },
  {
    name: 'app name of 256 characters',
    schema: 'netfilter',
    args: (db) => [
      'db',
      'app',
      'add',
      '-d',
      db,
      'n'.repeat(256),
      '--mrenclave',
      H('9'),
      '--mrsigner',
      H('9'),
    ],
    message: /\(256 characters\) is too long/,
  },
  {
    name: 'unknown app with a newline is echoed escaped',
    schema: 'vanilla',
    args: (db) => ['db', 'app', 'remove', '-d', db, 'x\ny'],
    message: /no app named "x\\x0ay"/,
  },
  {
    name: 'bad CIDR',
    schema: 'vanilla',
    args: (db) => ['db', 'subnet', 'add', '-d', db, '10.0.0.0/40'],
    message: /not an IPv4 CIDR/,
  },
  {
    name: 'CIDR with host bits',
    schema: 'vanilla',
    args: (db) => ['db', 'subnet', 'add', '-d', db, '10.0.0.5/24'],
    message: /host bits set/,
  },
  {
    name: 'gateway outside its subnet',
    schema: 'vanilla',
    args: (db) => ['db', 'subnet', 'add', '-d', db, '10.9.0.0/24', '--gateway', '10.8.0.1'],
    message: /gateway 10\.8\.0\.1 is not a host address of 10\.9\.0\.0\/24/,
  },
  {
    name: 'overlapping subnet',
    schema: 'vanilla',
    args: (db) => ['db', 'subnet', 'add', '-d', db, '192.168.0.0/16'],
    message: /overlaps subnet 1/,
  },
  {
    name: 'duplicate subnet',
    schema: 'vanilla',
    args: (db) => ['db', 'subnet', 'add', '-d', db, '192.168.28.0/24'],
    message: /overlaps/,
  },
  {
    name: 'empty category',
    schema: 'netfilter',
    args: (db) => ['db', 'category', 'add', '-d', db, '', '--app', 'DemoEnclave'],
    message: /category "" is invalid/,
  },
  {
    name: 'category too long',
    schema: 'netfilter',
    args: (db) => ['db', 'category', 'add', '-d', db, 'a'.repeat(21), '--app', 'DemoEnclave'],
    message: /1 to 20 characters/,
  },
  {
    name: 'category with bad characters',
    schema: 'netfilter',
    args: (db) => ['db', 'category', 'add', '-d', db, 'a b', '--app', 'DemoEnclave'],
    message: /is invalid/,
  },
  {
    name: 'duplicate category',
    schema: 'netfilter',
    args: (db) => ['db', 'category', 'add', '-d', db, 'Demo', '--app', 'DemoEnclave'],
    message: /already in category "Demo"/,
  },
  {
    name: 'duplicate app',
    schema: 'netfilter',
    args: (db) => ['db', 'app', 'add', '-d', db, 'again', '--mrenclave', H('1'), '--mrsigner', H('a')],
    message: /already exists/,
  },
  {
    name: 'duplicate vanilla app row',
    schema: 'vanilla',
    args: (db) => [
      'db',
      'app',
      'add',
      '-d',
      db,
      'again',
      '--mrenclave',
      H('2'),
      '--mrsigner',
      H('b'),
      '--host-subnet',
      '10.0.0.0/8',
      '--enclave-subnet',
      '192.168.28.0/24',
    ],
    message: /already exists/,
  },
  {
    name: 'unknown app (category)',
    schema: 'netfilter',
    args: (db) => ['db', 'category', 'add', '-d', db, 'Web', '--app', 'nope'],
    message: /no app named "nope"/,
  },
  {
    name: 'unknown app (remove)',
    schema: 'vanilla',
    args: (db) => ['db', 'app', 'remove', '-d', db, 'nope'],
    message: /no app named "nope"/,
  },
  {
    name: 'unknown enclave subnet',
    schema: 'vanilla',
    args: (db) => [
      'db',
      'app',
      'add',
      '-d',
      db,
      'x',
      '--mrenclave',
      H('9'),
      '--mrsigner',
      H('9'),
      '--host-subnet',
      '10.0.0.0/8',
      '--enclave-subnet',
      '10.99.0.0/24',
    ],
    message: /no enclave subnet 10\.99\.0\.0\/24/,
  },
  {
    name: 'vanilla app without subnets',
    schema: 'vanilla',
    args: (db) => ['db', 'app', 'add', '-d', db, 'x', '--mrenclave', H('9'), '--mrsigner', H('9')],
    message: /needs --host-subnet and --enclave-subnet/,
  },
  {
    name: 'subnet still in use',
    schema: 'vanilla',
    args: (db) => ['db', 'subnet', 'remove', '-d', db, '172.16.28.0/26'],
    message: /still used by app\(s\) SDK-NGINX/,
  },
  {
    name: 'category on a vanilla database',
    schema: 'vanilla',
    args: (db) => ['db', 'category', 'add', '-d', db, 'Web', '--app', 'SDK-NGINX'],
    message: /needs a netfilter database/,
  },
];

for (const c of badCases) {
  test(`bad input is refused and changes nothing: ${c.name}`, () => {
    const db = fromSql(c.schema);
    const beforeDump = dump(db);
    const r = seng(c.args(db));
    assert.equal(r.code, 1, `exit code (stderr: ${r.stderr})`);
    assert.match(r.stderr, c.message);
    // One error line and at most one hint line, whatever the input was.
    assert.match(r.stderr, /^Error: [^\n]{1,400}\n(Hint: [^\n]{1,400}\n)?$/);
    assert.equal(dump(db), beforeDump);
    const j = sengJson(c.args(db));
    assert.equal(j.code, 1);
    assert.match((j.json as { error: { message: string } }).error.message, c.message);
    assert.equal(dump(db), beforeDump);
  });
}

test('a missing database is never created', () => {
  const db = join(dir, 'missing.db');
  const r = seng(['db', 'app', 'list', '-d', db]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /does not exist/);
  assert.match(r.stderr, /seng db init/);
  assert.throws(() => readFileSync(db));
});

test('a file that is not SQLite, a corrupt database and a foreign layout are refused clearly', () => {
  const text = join(dir, 'notes.txt');
  writeFileSync(text, 'this is not a database\n'.repeat(100));
  let r = seng(['db', 'app', 'list', '-d', text]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /not a usable SQLite database/);

  const corrupt = join(dir, 'corrupt.db');
  copyFileSync(fromSql('vanilla'), corrupt);
  const bytes = readFileSync(corrupt);
  bytes.fill(0x5a, 100, bytes.length); // keep the header, destroy the pages
  writeFileSync(corrupt, bytes);
  r = seng(['db', 'app', 'list', '-d', corrupt]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /not a usable SQLite database|malformed/);

  const foreign = join(dir, 'foreign.db');
  sqlite(foreign, 'CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT)');
  r = seng(['db', 'app', 'list', '-d', foreign]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /not a SENG database \(tables: users\)/);
});

test('db init refuses to overwrite without --force', () => {
  const db = fromSql('netfilter');
  const beforeDump = dump(db);
  const r = seng(['db', 'init', '-d', db, '--schema', 'vanilla']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /already exists/);
  assert.match(r.stderr, /--force/);
  assert.equal(dump(db), beforeDump);
  assert.equal(seng(['db', 'init', '-d', db, '--schema', 'vanilla', '--force']).code, 0);
  assert.equal(sengJson(['db', 'subnet', 'list', '-d', db]).json instanceof Array, true);
});
