/**
 * One PostgreSQL database holds a fleet's POLICY (netfilter layout) and its enclave registry
 * (docs/fleet.md), every part in its own namespace:
 *
 *   host1 ──veth── gw  (seng serve -d URL --nft, 10.50.0.1)  ┐
 *   hostB ──veth── gwB (seng serve -d URL --nft, 10.53.0.1)  ├── one database (Unix socket)
 *                  fw  (seng agent -d URL --nft)             ┘
 *
 * Neither gateway nor the agent is given --registry: the -d database is the registry too.
 * Enclaves of two apps are admitted on both gateways with distinct IPs from one subnet; a
 * category added and one removed with `seng db category … -d URL` reach the nft sets of all
 * three hosts; an app removed with `seng db app remove` has its enclaves ended on both
 * gateways and dropped by the agent. Every wait is bounded; nothing is timed.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ChildProcess } from 'node:child_process';
import { cleanupAll, createNetns, stop, vethPair, waitForLine, type Netns } from '../../helpers/netns.js';
import { appCert, buildLab, serve, sim, type Lab, type Served, type Sim } from '../../helpers/gateway-lab.js';
import { postgresAvailable, startPostgres, type PostgresServer } from '../../helpers/postgres.js';
import { seng, sengBin, sengJson } from '../../helpers/cli.js';
import { NFT_FAMILY } from '../../../src/policy/nft.js';

const skip = postgresAvailable() ? false : 'PostgreSQL is not installed';
const GW_A = '10.50.0.1';
const GW_B = '10.53.0.1';
const WEB = 'c5'.repeat(32);
const API = 'a1'.repeat(32);
const TABLE = `fp${process.pid % 100000}`;

let pg: PostgresServer;
let url: string;
let lab: Lab;
let gwB: Netns;
let hostB: Netns;
let fw: Netns;
let policyFile: string;
const children: ChildProcess[] = [];

function ok(args: string[]): void {
  const r = seng(args);
  assert.equal(r.code, 0, r.stderr);
}

before(async () => {
  if (skip) return;
  pg = await startPostgres();
  url = await pg.createDatabase();
  ok(['db', 'init', '-d', url, '--schema', 'netfilter']);
  ok(['db', 'app', 'add', '-d', url, 'web', '--mrenclave', WEB, '--mrsigner', 'ab'.repeat(32)]);
  ok(['db', 'app', 'add', '-d', url, 'api', '--mrenclave', API, '--mrsigner', 'ab'.repeat(32)]);
  ok(['db', 'category', 'add', '-d', url, 'Web', '--app', 'web']);
  ok(['db', 'category', 'add', '-d', url, 'Db', '--app', 'api']);
  lab = await buildLab('fp');
  gwB = await createNetns('fpgb');
  hostB = await createNetns('fphb');
  fw = await createNetns('fpfw');
  await vethPair(gwB, hostB, { addrA: `${GW_B}/24`, addrB: '10.53.0.2/24' });
  // Rules naming both categories, so every host has the sets cat_Web and cat_Db.
  policyFile = join(lab.dir, 'policy.json');
  const rule = (cat: string, port: number) => ({
    name: `to-${port}`,
    chain: 'forward',
    'src-cat': cat,
    protocol: 'tcp',
    dport: port,
    action: 'accept',
  });
  writeFileSync(
    policyFile,
    JSON.stringify({
      version: 1,
      defaults: { input: 'accept', forward: 'drop', output: 'accept' },
      rules: [rule('Web', 80), rule('Db', 5432)],
    }),
  );
});

after(async () => {
  for (const c of children) await stop(c, 5000).catch(() => {});
  await cleanupAll();
  lab?.cleanup();
  pg?.stop();
});

async function gateway(id: string, ns: Netns, listen: string): Promise<Served> {
  const labFor: Lab = { ...lab, gw: ns, control: join(lab.dir, `${id}.sock`) };
  const served = await serve(
    labFor,
    [
      '-d',
      url,
      '--nft',
      '--policy',
      policyFile,
      '--nft-table',
      TABLE,
      '--gateway-id',
      id,
      '--lease-ttl',
      '5',
      '--lease-db',
      'none',
      '--setup-timeout',
      '3',
    ],
    listen,
  );
  children.push(served.child);
  return served;
}

async function startAgent(): Promise<ChildProcess> {
  await fw.exec(process.execPath, [
    sengBin,
    'rules',
    'apply',
    policyFile,
    '--table',
    TABLE,
    '--direct',
    '--control',
    join(lab.dir, 'none.sock'),
  ]);
  const child = fw.spawn(process.execPath, [sengBin, 'agent', '-d', url, '--nft', '--table', TABLE]);
  children.push(child);
  await waitForLine(child, /"event":"resynced"/, 20_000, { stream: 'stderr' });
  return child;
}

/** Elements of one set of the table in `ns`, sorted; [] while the set does not exist. */
async function setOf(ns: Netns, set: string): Promise<string[]> {
  const r = await ns.exec('nft', ['-j', 'list', 'set', NFT_FAMILY, TABLE, set], { check: false });
  if (r.code !== 0) return [];
  const doc = JSON.parse(r.stdout) as { nftables: { set?: { elem?: unknown[] } }[] };
  return (doc.nftables.find((x) => x.set)?.set?.elem ?? []).map(String).sort(byIp);
}

function byIp(a: string, b: string): number {
  const n = (s: string) => s.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
  return n(a) - n(b);
}

const sorted = (ips: string[]): string => [...ips].sort(byIp).join(' ');

/** Polls until every host's set equals its expected IPs (bounded); fails naming the first that differs. */
async function setsBecome(what: string, set: string, expected: [Netns, string[]][]): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const got = await Promise.all(expected.map(([ns]) => setOf(ns, set)));
    const wrong = expected.findIndex(([, ips], i) => got[i]!.join(' ') !== sorted(ips));
    if (wrong < 0) return;
    if (Date.now() > deadline) {
      const [ns, ips] = expected[wrong]!;
      assert.fail(`${what}: ${set} on ${ns.name} is [${got[wrong]!.join(' ')}], expected [${sorted(ips)}]`);
    }
    await sleep(200);
  }
}

async function enclave(host: Netns, gatewayIp: string, mrEnclave: string): Promise<Sim> {
  const s = await sim(lab, host, appCert(lab, mrEnclave), { gateway: gatewayIp });
  children.push(s.child);
  assert.ok(s.ready, `enclave ${mrEnclave.slice(0, 4)} via ${gatewayIp} got no IP:\n${s.stderr()}`);
  return s;
}

test(
  'policy and registry in one database: two gateways and an agent follow category and app changes',
  { skip, timeout: 150_000 },
  async () => {
    const a = await gateway('gw-a', lab.gw, GW_A);
    const b = await gateway('gw-b', gwB, GW_B);
    await startAgent();

    const webA = (await enclave(lab.host1, GW_A, WEB)).ready!.ip;
    const apiA = (await enclave(lab.host1, GW_A, API)).ready!.ip;
    const webB = (await enclave(hostB, GW_B, WEB)).ready!.ip;
    const apiB = (await enclave(hostB, GW_B, API)).ready!.ip;
    const all = [webA, apiA, webB, apiB];
    assert.equal(new Set(all).size, 4, `distinct IPs: ${all.join(' ')}`);
    for (const ip of all) assert.match(ip, /^192\.168\.28\./);

    // The registry is the -d database: status --fleet reads it with -d as well.
    const fleet = sengJson<{ gateways: { id: string; enclaves: number }[] }>([
      'status',
      '--fleet',
      '-d',
      url,
    ]);
    assert.equal(fleet.code, 0, fleet.stderr);
    assert.deepEqual(
      fleet.json.gateways.map((g) => [g.id, g.enclaves]),
      [
        ['gw-a', 2],
        ['gw-b', 2],
      ],
    );

    await setsBecome('initially', 'cat_Web', [
      [lab.gw, [webA]],
      [gwB, [webB]],
      [fw, [webA, webB]],
    ]);
    await setsBecome('initially', 'cat_Db', [
      [lab.gw, [apiA]],
      [gwB, [apiB]],
      [fw, [apiA, apiB]],
    ]);

    ok(['db', 'category', 'add', '-d', url, 'Web', '--app', 'api']);
    await setsBecome('after category add', 'cat_Web', [
      [lab.gw, [webA, apiA]],
      [gwB, [webB, apiB]],
      [fw, all],
    ]);

    ok(['db', 'category', 'remove', '-d', url, 'Web', '--app', 'web']);
    await setsBecome('after category remove', 'cat_Web', [
      [lab.gw, [apiA]],
      [gwB, [apiB]],
      [fw, [apiA, apiB]],
    ]);

    ok(['db', 'app', 'remove', '-d', url, 'api']);
    for (const [gw, ip] of [
      [a, apiA],
      [b, apiB],
    ] as const) {
      const deadline = Date.now() + 15_000;
      while (!gw.log.some((l) => l.includes('"event":"session-end"') && l.includes(`"enclaveIp":"${ip}"`))) {
        if (Date.now() > deadline) assert.fail(`no session-end of ${ip}:\n${gw.log.slice(-20).join('\n')}`);
        await sleep(200);
      }
      const line = gw.log.find(
        (l) => l.includes('"event":"session-end"') && l.includes(`"enclaveIp":"${ip}"`),
      );
      assert.match(line!, /removed from the allowlist/);
    }
    await setsBecome('after app remove', 'enclaves', [
      [lab.gw, [webA]],
      [gwB, [webB]],
      [fw, [webA, webB]],
    ]);
    await setsBecome('after app remove', 'cat_Web', [
      [lab.gw, []],
      [gwB, []],
      [fw, []],
    ]);
    await a.stop();
    await b.stop();
  },
);

test('status --fleet and leases do not create the registry in a database without one', { skip }, async () => {
  const empty = await pg.createDatabase();
  for (let i = 0; i < 2; i++) {
    const s = seng(['status', '--fleet', '-d', empty]);
    assert.equal(s.code, 1, s.stderr);
    assert.match(s.stderr, /holds no enclave registry/);
    assert.match(s.stderr, /first gateway started/);
    const l = seng(['leases', '--registry', empty]);
    assert.equal(l.code, 1, l.stderr);
    assert.match(l.stderr, /holds no enclave registry/);
  }
  const tables = await pg.sql(
    `SELECT count(*)::int AS n FROM information_schema.tables WHERE table_name LIKE 'seng_%'`,
    [],
    empty,
  );
  assert.equal(tables.rows[0].n, 0, 'no table was created');
});

test('seng agent needs a registry and takes only a PostgreSQL policy store', { skip }, () => {
  const none = seng(['agent', '--nft']);
  assert.equal(none.code, 2, none.stderr);
  assert.match(none.stderr, /give the registry/);
  const file = seng(['agent', '-d', '/tmp/policy.db', '--nft']);
  assert.equal(file.code, 2, file.stderr);
  assert.match(file.stderr, /not a postgres/);
});
