/**
 * The PostgreSQL policy store against a real server: it must behave exactly like the SQLite
 * store (same results, same typed errors and hints) for the same sequence of operations, keep
 * concurrent writers from losing rows, and ignore tables that are not policy tables.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPostgres, type PostgresServer } from '../../helpers/postgres.js';
import {
  PgPolicyMirror,
  PgStore,
  SqlitePolicyStore,
  Store,
  createPolicyStore,
  openPolicyStore,
  type PolicyStore,
  type SchemaKind,
} from '../../../src/store/index.js';
import { PgConnectionError } from '../../../src/pg/index.js';
import { SengError } from '../../../src/util/errors.js';
import { parseCidr, parseIpv4 } from '../../../src/util/ipv4.js';
import { validateDump } from '../../../src/store/dump.js';

let server: PostgresServer;
let dir: string;
before(async () => {
  server = await startPostgres();
  dir = mkdtempSync(join(tmpdir(), 'seng-pg-store-'));
});
after(() => {
  server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const m = (n: number) => Buffer.from(n.toString(16).padStart(64, '0'), 'hex');
const cidr = (text: string) => parseCidr(text, { strict: true });

/** Runs `fn` and records its result, or its typed error with the store's name taken out. */
async function record(log: unknown[], target: string, fn: () => Promise<unknown>): Promise<void> {
  const clean = (text: string | undefined) => text?.split(target).join('TARGET');
  try {
    log.push({ ok: await fn() });
  } catch (err) {
    assert.ok(err instanceof SengError, `untyped error: ${String(err)}`);
    log.push({ code: err.code, message: clean(err.message), hint: clean(err.hint) });
  }
}

/** One script of reads, writes and mistakes, for either layout. */
async function script(store: PolicyStore): Promise<unknown[]> {
  const log: unknown[] = [];
  const r = (fn: () => Promise<unknown>) => record(log, store.target, fn);
  if (store.schema === 'vanilla') {
    await r(() => store.addSubnet(cidr('10.28.0.0/24'), parseIpv4('10.28.0.1')));
    await r(() => store.addSubnet(cidr('10.28.0.128/25'), parseIpv4('10.28.0.129'))); // overlaps
    await r(() => store.addSubnet(cidr('10.29.0.0/24'), parseIpv4('10.29.0.1')));
    const add = (name: string, n: number, host: string, enc: string) =>
      r(() =>
        store.addApp({
          name,
          mrEnclave: m(n),
          mrSigner: m(100 + n),
          hostSubnet: cidr(host),
          enclaveSubnet: cidr(enc),
        }),
      );
    await add('web', 1, '10.0.0.0/8', '10.28.0.0/24');
    await add('web', 1, '10.0.0.0/8', '10.28.0.0/24'); // duplicate
    await add('web', 1, '10.1.0.0/16', '10.28.0.0/24'); // ambiguous
    await add('web', 1, '172.16.0.0/12', '10.29.0.0/24');
    await add('db', 2, '10.0.0.0/8', '10.99.0.0/24'); // unknown enclave subnet
    await add('db', 2, '10.0.0.0/8', '10.29.0.0/24');
    await r(() => store.addApp({ name: 'x', mrEnclave: m(3), mrSigner: m(3) })); // subnets missing
    await r(() => store.updateApp('web', { hostSubnet: cidr('10.0.0.0/9') })); // two rows
    await r(() =>
      store.updateApp('web', {
        row: cidr('10.0.0.0/8'),
        hostSubnet: cidr('10.0.0.0/9'),
        enclaveSubnet: cidr('10.29.0.0/24'),
      }),
    );
    await r(() => store.updateApp('web', { rename: 'db' })); // taken
    await r(() => store.updateApp('web', { rename: 'www', mrSigner: m(7) }));
    await r(() => store.updateApp('nope', { rename: 'x' }));
    await r(() => store.removeSubnet(cidr('10.29.0.0/24'))); // in use
    await r(() => store.removeSubnet(cidr('10.30.0.0/24'))); // unknown
    await r(() => store.removeApp('www', { hostSubnet: cidr('172.16.0.0/12') }));
    await r(() => store.removeApp('nope'));
    await r(() => store.addCategory('db', 'Web')); // wrong layout
  } else {
    await r(() => store.addApp({ name: 'firefox', mrEnclave: m(1), mrSigner: m(2) }));
    await r(() => store.addApp({ name: 'other', mrEnclave: m(1), mrSigner: m(2) })); // duplicate
    await r(() => store.addApp({ name: 'nginx', mrEnclave: m(3), mrSigner: m(2) }));
    await r(() => store.addCategory('firefox', 'Browser'));
    await r(() => store.addCategory('firefox', 'Browser')); // again
    await r(() => store.addCategory('firefox', 'Alpha'));
    await r(() => store.addCategory('ghost', 'Browser'));
    await r(() => store.removeCategory('nginx', 'Browser')); // not in it
    await r(() => store.removeCategory('firefox', 'Alpha'));
    await r(() => store.updateApp('nginx', { rename: 'firefox' }));
    await r(() => store.updateApp('nginx', { hostSubnet: cidr('10.0.0.0/8') })); // wrong layout
    await r(() => store.removeApp('nginx', { hostSubnet: cidr('10.0.0.0/8') })); // wrong layout
    await r(() => store.removeApp('nginx'));
    await r(() => store.addSubnet(cidr('10.28.0.0/24'), parseIpv4('10.28.0.1'))); // wrong layout
  }
  await r(() => store.listApps());
  await r(() => store.listSubnets());
  await r(() => store.appsByName('db'));
  await r(() => store.exportDump());
  return log;
}

for (const schema of ['vanilla', 'netfilter'] as SchemaKind[]) {
  test(`PostgreSQL and SQLite give the same results and errors (${schema})`, async () => {
    const sqlite = new SqlitePolicyStore(Store.create(join(dir, `${schema}.db`), schema, { demo: true }));
    const url = await server.createDatabase();
    const pg = await createPolicyStore(url, schema, { demo: true });
    try {
      assert.equal(pg.kind, 'postgres');
      assert.equal(pg.schema, schema);
      const expected = await script(sqlite);
      const actual = await script(pg);
      assert.deepEqual(actual, expected);
      // A fresh open detects the layout from information_schema.
      const again = await openPolicyStore(url);
      assert.equal(again.schema, schema);
      await again.close();
    } finally {
      await sqlite.close();
      await pg.close();
    }
  });
}

test('import keeps ids, and new rows get ids past them; a non-empty store needs replace', async () => {
  const url = await server.createDatabase();
  const sqlite = Store.create(join(dir, 'ids.db'), 'netfilter', { demo: true });
  const dump = validateDump(sqlite.exportDump());
  sqlite.close();
  const store = await createPolicyStore(url, 'netfilter', { rows: dump });
  try {
    const added = await store.addApp({ name: 'third', mrEnclave: m(9), mrSigner: m(9) });
    assert.equal(added.id, 3);
    await assert.rejects(
      store.importDump(dump),
      (err: SengError) => err.code === 'ESTORE_WRITE' && /not empty \(5 rows\)/.test(err.message),
    );
    assert.deepEqual(await store.importDump(dump, { replace: true }), { subnets: 0, apps: 2, categories: 2 });
    assert.deepEqual(
      (await store.listApps()).map((a) => [a.id, a.name, a.categories]),
      [
        [1, 'DemoEnclave', ['Demo']],
        [2, 'SENG-NGINX', ['Server']],
      ],
    );
  } finally {
    await store.close();
  }
});

test('20 concurrent writers on their own connections lose nothing', async () => {
  const url = await server.createDatabase();
  await (await createPolicyStore(url, 'vanilla', { demo: true })).close();
  const stores = await Promise.all(Array.from({ length: 20 }, () => PgStore.open(url)));
  try {
    const results = await Promise.allSettled(
      stores.map((s, i) =>
        s.addApp({
          name: `app${i}`,
          mrEnclave: m(1000 + i),
          mrSigner: m(1),
          hostSubnet: cidr(`10.${i}.0.0/16`),
          enclaveSubnet: cidr('192.168.28.0/24'),
        }),
      ),
    );
    assert.deepEqual(
      results.filter((r) => r.status === 'rejected'),
      [],
    );
    // Two writers racing for overlapping host subnets of one measurement: exactly one wins.
    const race = await Promise.allSettled(
      stores.slice(0, 2).map((s, i) =>
        s.addApp({
          name: `race${i}`,
          mrEnclave: m(5000),
          mrSigner: m(1),
          hostSubnet: cidr(i === 0 ? '11.0.0.0/8' : '11.1.0.0/16'),
          enclaveSubnet: cidr('192.168.28.0/24'),
        }),
      ),
    );
    assert.equal(race.filter((r) => r.status === 'fulfilled').length, 1);
    const apps = await stores[0]!.listApps();
    assert.equal(apps.length, 2 + 20 + 1);
    assert.equal(new Set(apps.map((a) => a.id)).size, apps.length);
  } finally {
    await Promise.all(stores.map((s) => s.close()));
  }
});

test('tables of others (the fleet registry) are ignored; a database without policy tables is refused with a hint', async () => {
  const url = await server.createDatabase();
  await server.sql(
    'CREATE TABLE seng_gateways(id text PRIMARY KEY); CREATE TABLE seng_leases(ip bigint)',
    [],
    url,
  );
  await assert.rejects(
    openPolicyStore(url),
    (err: SengError) => err.code === 'ESTORE_OPEN' && /seng db init/.test(err.hint ?? ''),
  );
  await (await createPolicyStore(url, 'netfilter')).close();
  const store = await openPolicyStore(url);
  assert.equal(store.schema, 'netfilter');
  assert.equal((await store.exportDump()).apps.length, 0);
  await store.close();
  // init refuses existing policy tables without force, and replaces only them with it.
  await assert.rejects(
    createPolicyStore(url, 'vanilla'),
    (err: SengError) => err.code === 'EINPUT' && /--force/.test(err.hint ?? ''),
  );
  await (await createPolicyStore(url, 'vanilla', { force: true })).close();
  assert.equal((await openPolicyStore(url).then(async (s) => [s.schema, await s.close()]))[0], 'vanilla');
  assert.equal((await server.sql('SELECT count(*) AS n FROM seng_gateways', [], url)).rows[0].n, '0');
});

test('an unreachable server or a missing database gives a typed error with a hint', async () => {
  await assert.rejects(
    openPolicyStore(`postgres://postgres@/nope?host=${dir}/no-such-dir`),
    (err: unknown) => {
      assert.ok(err instanceof PgConnectionError);
      assert.match(err.hint ?? '', /server runs/);
      return true;
    },
  );
  const missing = server.adminUrl.replace(/\/postgres\?/, '/no_such_db?');
  await assert.rejects(
    openPolicyStore(missing),
    (err: SengError) => err.code === 'ESTORE_OPEN' && /createdb/.test(err.hint ?? ''),
  );
  await assert.rejects(
    openPolicyStore('postgres://u@host:port/db'),
    (err: SengError) => err.code === 'EINPUT',
  );
});

test('the mirror reloads only when the policy version changed, and never loses a change', async () => {
  const url = await server.createDatabase();
  const writer = await createPolicyStore(url, 'netfilter', { demo: true });
  const store = await PgStore.open(url);
  try {
    const mirror = await PgPolicyMirror.load(store);
    assert.deepEqual(
      mirror.listApps().map((a) => a.name),
      ['DemoEnclave', 'SENG-NGINX'],
    );
    assert.equal(await mirror.refresh(), false);
    await writer.addCategory('DemoEnclave', 'Extra');
    await writer.removeApp('SENG-NGINX');
    // Two refreshes at once: both see the end state.
    const [a, b] = await Promise.all([mirror.refresh(), mirror.refresh()]);
    assert.ok(a && b);
    assert.deepEqual(
      mirror.listApps().map((x) => [x.name, x.categories]),
      [['DemoEnclave', ['Demo', 'Extra']]],
    );
    assert.equal(mirror.dataVersion(), await store.policyVersion());
  } finally {
    await writer.close();
    await store.close();
  }
});
