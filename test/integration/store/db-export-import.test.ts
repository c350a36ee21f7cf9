/**
 * `seng db export` / `seng db import`: a round trip on both layouts of SPEC §4 restores
 * the database exactly (compared with the sqlite3 tool's .dump), and an import checks
 * everything before it writes anything.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot, seng, sengJson } from '../../helpers/cli.js';

let dir: string;
const fixture = (name: string) => join(repoRoot, 'test', 'fixtures', 'store', name);
const sqlite = (db: string, sql: string) => execFileSync('sqlite3', [db, sql], { encoding: 'utf8' }).trim();
const dump = (db: string) => execFileSync('sqlite3', [db, '.dump'], { encoding: 'utf8' });
const inserts = (db: string) =>
  dump(db)
    .split('\n')
    .filter((l) => l.startsWith('INSERT'))
    .join('\n');
const H = (c: string) => c.repeat(64);

function fromSql(name: string): string {
  const db = join(dir, `${name}-${Math.random().toString(36).slice(2)}.db`);
  execFileSync('sqlite3', [db], { input: readFileSync(fixture(`${name}.sql`)) });
  return db;
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'seng-store-dump-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** Makes a fixture less regular: a gap in ids, a NULL gateway, a NULL category id, rows deleted. */
const irregular: Record<'vanilla' | 'netfilter', string> = {
  vanilla: `
    INSERT INTO enclave_subnets VALUES (7, ${0x00000a0a}, ${0x00ffffff}, NULL);
    INSERT INTO apps VALUES (9, 'late', X'${H('9')}', X'${H('8')}', ${0x0000a8c0}, ${0x0000ffff}, 7);`,
  netfilter: `
    INSERT INTO apps VALUES (5, 'five', X'${H('5')}', X'${H('6')}');
    INSERT INTO categories VALUES (NULL, 'Five', 5);
    DELETE FROM categories WHERE name = 'Server';
    INSERT INTO categories VALUES (42, 'Server', 2);`,
};

for (const layout of ['vanilla', 'netfilter'] as const) {
  test(`export + import --replace restores a ${layout} database exactly (sqlite3 .dump)`, () => {
    const db = fromSql(layout);
    sqlite(db, irregular[layout]);
    const original = dump(db);
    const file = join(dir, `${layout}.json`);
    const exported = seng(['db', 'export', '-d', db, '--out', file]);
    assert.equal(exported.code, 0, exported.stderr);
    const doc = JSON.parse(readFileSync(file, 'utf8')) as { format: string; layout: string; apps: unknown[] };
    assert.equal(doc.format, 'seng-policy-store');
    assert.equal(doc.layout, layout);
    // stdout export is the same document.
    assert.deepEqual(JSON.parse(seng(['db', 'export', '-d', db]).stdout), doc);

    // Change the database, then restore it.
    sqlite(
      db,
      layout === 'vanilla' ? 'DELETE FROM apps WHERE id = 1' : 'DELETE FROM categories WHERE apps_id = 2',
    );
    assert.notEqual(dump(db), original);
    const refused = seng(['db', 'import', '-d', db, file]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /is not empty .*\nHint: pass --replace/);
    const r = sengJson(['db', 'import', '-d', db, file, '--replace']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(dump(db), original);

    // Into a new file: the same rows (the CREATE TABLE text is seng's own).
    const fresh = join(dir, `${layout}-fresh.db`);
    assert.equal(seng(['db', 'import', '-d', fresh, file]).code, 0);
    assert.equal(inserts(fresh), inserts(db));
    // Into an empty database made by db init, reading stdin.
    const init = join(dir, `${layout}-init.db`);
    assert.equal(seng(['db', 'init', '-d', init, '--schema', layout]).code, 0);
    assert.equal(seng(['db', 'import', '-d', init, '-'], { input: readFileSync(file, 'utf8') }).code, 0);
    assert.equal(inserts(init), inserts(db));
  });
}

test('the demo host subnet keeps its stored address (127.0.0.1/26) through export and import', () => {
  const db = fromSql('vanilla');
  const doc = JSON.parse(seng(['db', 'export', '-d', db]).stdout) as { apps: { hostSubnet: string }[] };
  assert.equal(doc.apps[0]?.hostSubnet, '127.0.0.1/26');
});

interface BadImport {
  name: string;
  layout: 'vanilla' | 'netfilter';
  edit: (doc: Record<string, unknown> & { apps: Record<string, unknown>[] }) => void;
  message: RegExp;
}

const badImports: BadImport[] = [
  {
    name: 'wrong format',
    layout: 'netfilter',
    edit: (d) => (d['format'] = 'other'),
    message: /not a seng policy store export/,
  },
  { name: 'future version', layout: 'netfilter', edit: (d) => (d['version'] = 2), message: /version "2"/ },
  {
    name: 'layout of the other kind',
    layout: 'netfilter',
    edit: (d) => (d['layout'] = 'vanilla'),
    message: /unknown field "categories"|enclaveSubnets: must be an array/,
  },
  {
    name: 'non-hex measurement',
    layout: 'netfilter',
    edit: (d) => ((d.apps[1] as Record<string, unknown>)['mrEnclave'] = H('z')),
    message: /apps\[1\]: --mrenclave must be 64 hex digits/,
  },
  {
    name: 'duplicate measurement',
    layout: 'netfilter',
    edit: (d) => ((d.apps[1] as Record<string, unknown>)['mrEnclave'] = H('1')),
    message: /apps\[1\]\.mrEnclave: measurement is listed twice/,
  },
  {
    name: 'control character in a name',
    layout: 'netfilter',
    edit: (d) => ((d.apps[0] as Record<string, unknown>)['name'] = 'a\nb'),
    message: /apps\[0\]\.name: app name "a\\x0ab" contains control/,
  },
  {
    name: 'category of an unknown app',
    layout: 'netfilter',
    edit: (d) => ((d['categories'] as Record<string, unknown>[])[0] = { id: 1, name: 'Demo', appId: 77 }),
    message: /categories\[0\]\.appId: no app with id 77/,
  },
  {
    name: 'invalid category name',
    layout: 'netfilter',
    edit: (d) => ((d['categories'] as Record<string, unknown>[])[0] = { id: 1, name: 'a b', appId: 1 }),
    message: /categories\[0\]\.name: category "a b" is invalid/,
  },
  {
    name: 'loopback enclave subnet',
    layout: 'vanilla',
    edit: (d) =>
      ((d['enclaveSubnets'] as Record<string, unknown>[])[1] = {
        id: 2,
        subnet: '127.0.0.0/24',
        gateway: null,
      }),
    message:
      /enclaveSubnets\[1\]\.subnet: enclave subnet 127\.0\.0\.0\/24 overlaps 127\.0\.0\.0\/8 \(loopback\)/,
  },
  {
    name: 'overlapping enclave subnets',
    layout: 'vanilla',
    edit: (d) =>
      ((d['enclaveSubnets'] as Record<string, unknown>[])[1] = {
        id: 2,
        subnet: '192.168.0.0/16',
        gateway: null,
      }),
    message: /overlaps enclave subnet 1/,
  },
  {
    name: 'app in a missing enclave subnet',
    layout: 'vanilla',
    edit: (d) => ((d.apps[0] as Record<string, unknown>)['enclaveSubnetId'] = 5),
    message: /apps\[0\]\.enclaveSubnetId: no enclave subnet with id 5/,
  },
  {
    name: 'ambiguous admission',
    layout: 'vanilla',
    edit: (d) => ((d.apps[2] as Record<string, unknown>)['hostSubnet'] = '127.0.0.0/8'),
    message: /apps\[2\]\.hostSubnet: 127\.0\.0\.0\/8 overlaps 127\.0\.0\.0\/26 of app id 2 .*ambiguous/,
  },
  {
    name: 'unknown field',
    layout: 'vanilla',
    edit: (d) => ((d.apps[0] as Record<string, unknown>)['admin'] = true),
    message: /apps\[0\]: unknown field "admin"/,
  },
  {
    name: 'duplicate id',
    layout: 'vanilla',
    edit: (d) => ((d.apps[1] as Record<string, unknown>)['id'] = 1),
    message: /apps\[1\]\.id: id 1 is used twice/,
  },
];

/**
 * `db export` of a database made from the fixture of a layout, exported once per layout: every
 * database fromSql() makes of it is the same, so the cases below only edit a fresh copy.
 */
const fixtureExports = new Map<string, string>();
function fixtureExport(layout: string, db: string): string {
  let text = fixtureExports.get(layout);
  if (text === undefined) {
    const r = seng(['db', 'export', '-d', db]);
    assert.equal(r.code, 0, r.stderr);
    text = r.stdout;
    fixtureExports.set(layout, text);
  }
  return text;
}

for (const c of badImports) {
  test(`db import checks everything first and changes nothing: ${c.name}`, () => {
    const db = fromSql(c.layout);
    const doc = JSON.parse(fixtureExport(c.layout, db)) as BadImport['edit'] extends (d: infer D) => void
      ? D
      : never;
    c.edit(doc);
    const file = join(dir, `bad-${Math.random().toString(36).slice(2)}.json`);
    writeFileSync(file, JSON.stringify(doc));
    const before = dump(db);
    const r = seng(['db', 'import', '-d', db, file, '--replace']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, c.message);
    assert.match(r.stderr, /^Error: [^\n]+\nHint: [^\n]+\n$/);
    assert.equal(dump(db), before);
    const json = sengJson(['db', 'import', '-d', db, file, '--replace']);
    assert.equal((json.json as { error: { code: string } }).error.code, 'EINPUT');
  });
}

test('a failed import into a missing database leaves no file behind', () => {
  const file = join(dir, 'broken.json');
  writeFileSync(
    file,
    JSON.stringify({ format: 'seng-policy-store', version: 1, layout: 'netfilter', apps: [{}] }),
  );
  const fresh = join(dir, 'never.db');
  const r = seng(['db', 'import', '-d', fresh, file]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /apps\[0\]\.id: must be an integer/);
  assert.equal(existsSync(fresh), false);
});

test('importing into a database of the other layout is refused', () => {
  const nf = fromSql('netfilter');
  const file = join(dir, 'nf.json');
  assert.equal(seng(['db', 'export', '-d', nf, '--out', file]).code, 0);
  const vanilla = fromSql('vanilla');
  const before = dump(vanilla);
  const r = seng(['db', 'import', '-d', vanilla, file, '--replace']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /holds a netfilter store, but .* is a vanilla database/);
  assert.equal(dump(vanilla), before);
});
