/**
 * A fleet on one real PostgreSQL server (docs/fleet.md), every part in its own namespace:
 *
 *   host1 ──veth── gw (gateway A, 10.50.0.1)          ┐
 *   hostB ──veth── gwB (gateway B, 10.52.0.1)         ├── one registry (Unix socket of PG)
 *                  fw (seng agent --nft, no gateway)  ┘
 *
 * Both gateways lease from one enclave subnet (no policy database: 192.168.28.0/24); the
 * registry keeps their IPs distinct. The agent's nftables `enclaves` set follows the union of
 * the live leases; a gateway killed with SIGKILL has its leases reclaimed after its TTL; an
 * agent killed and restarted after an enclave ended meanwhile resynchronises.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ChildProcess } from 'node:child_process';
import { cleanupAll, createNetns, stop, vethPair, waitForLine, type Netns } from '../../helpers/netns.js';
import { appCert, buildLab, serve, sim, type Lab, type Served, type Sim } from '../../helpers/gateway-lab.js';
import {
  postgresAvailable,
  postgresLog,
  startPostgres,
  type PostgresServer,
} from '../../helpers/postgres.js';
import { seng, sengBin, sengJson } from '../../helpers/cli.js';
import { NFT_FAMILY } from '../../../src/policy/nft.js';

const skip = postgresAvailable() ? false : 'PostgreSQL is not installed';
const GW_B = '10.52.0.1';
const TTL_SECONDS = 3;
const TABLE = `fleet${process.pid % 100000}`;

let pg: PostgresServer;
let url: string;
let lab: Lab;
let gwB: Netns;
let hostB: Netns;
let fw: Netns;
const children: ChildProcess[] = [];

before(async () => {
  if (skip) return;
  pg = await startPostgres();
  url = await pg.createDatabase();
  lab = await buildLab('flt');
  gwB = await createNetns('fltgb');
  hostB = await createNetns('flthb');
  fw = await createNetns('fltfw');
  await vethPair(gwB, hostB, { addrA: `${GW_B}/24`, addrB: '10.52.0.2/24' });
});

after(async () => {
  for (const c of children) await stop(c, 5000).catch(() => {});
  await cleanupAll();
  lab?.cleanup();
  pg?.stop();
});

function gateway(id: string, ns: Netns, listen: string): Promise<Served> {
  const labFor: Lab = { ...lab, gw: ns, control: join(lab.dir, `${id}.sock`) };
  return serve(
    labFor,
    [
      '--registry',
      url,
      '--gateway-id',
      id,
      '--lease-ttl',
      String(TTL_SECONDS),
      '--lease-db',
      'none',
      '--setup-timeout',
      '3',
    ],
    listen,
  );
}

interface Agent {
  child: ChildProcess;
  log: () => string;
}

async function startAgent(): Promise<Agent> {
  const child = fw.spawn(process.execPath, [
    sengBin,
    'agent',
    '--registry',
    url,
    '--nft',
    '--table',
    TABLE,
    '--reclaim-every',
    '1',
    '--log-format',
    'json',
  ]);
  children.push(child);
  let log = '';
  child.stderr?.on('data', (d: Buffer) => (log += d.toString()));
  await waitForLine(child, /"event":"resynced"/, 20_000, { stream: 'stderr' });
  return { child, log: () => log };
}

/** The agent host's `enclaves` set, sorted. */
async function agentSet(): Promise<string[]> {
  const r = await fw.exec('nft', ['-j', 'list', 'set', NFT_FAMILY, TABLE, 'enclaves'], { check: false });
  if (r.code !== 0) return [];
  const doc = JSON.parse(r.stdout) as { nftables: { set?: { elem?: unknown[] } }[] };
  const elems = doc.nftables.find((x) => x.set)?.set?.elem ?? [];
  return elems.map(String).sort(byIp);
}

function byIp(a: string, b: string): number {
  const n = (s: string) => s.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
  return n(a) - n(b);
}

interface FleetJson {
  gateways: { id: string; state: string; enclaves: number }[];
  leases: { enclaveIp: string; gateway: string }[];
}

function fleet(): FleetJson {
  const r = sengJson<FleetJson>(['status', '--fleet', '--registry', url]);
  assert.equal(r.code, 0, r.stderr);
  return r.json;
}

async function until<T>(
  what: string,
  get: () => Promise<T> | T,
  ok: (v: T) => boolean,
  ms = 20_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  let last: T = await get();
  while (!ok(last)) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}; last: ${JSON.stringify(last)}`);
    await sleep(200);
    last = await get();
  }
  return last;
}

async function enclave(host: Netns, gatewayIp: string, n: number): Promise<Sim> {
  const s = await sim(lab, host, appCert(lab, n.toString(16).padStart(2, '0').repeat(32)), {
    gateway: gatewayIp,
  });
  children.push(s.child);
  assert.ok(s.ready, `enclave ${n} via ${gatewayIp} got no IP:\n${s.stderr()}`);
  return s;
}

test(
  'two gateways, one subnet, one agent: distinct IPs, reclaim after a gateway dies, agent resync',
  { skip, timeout: 180_000 },
  async () => {
    const a = await gateway('gw-a', lab.gw, '10.50.0.1');
    children.push(a.child);
    const b = await gateway('gw-b', gwB, GW_B);
    children.push(b.child);
    let agent = await startAgent();

    const onA = [await enclave(lab.host1, '10.50.0.1', 1), await enclave(lab.host1, '10.50.0.1', 2)];
    const onB = [await enclave(hostB, GW_B, 3), await enclave(hostB, GW_B, 4)];
    const ipsA = onA.map((s) => s.ready!.ip);
    const ipsB = onB.map((s) => s.ready!.ip);
    const all = [...ipsA, ...ipsB].sort(byIp);
    assert.equal(new Set(all).size, 4, `every enclave has its own IP: ${all.join(' ')}`);
    for (const ip of all) assert.match(ip, /^192\.168\.28\./);

    const status = fleet();
    assert.deepEqual(
      status.gateways.map((g) => [g.id, g.state, g.enclaves]),
      [
        ['gw-a', 'live', 2],
        ['gw-b', 'live', 2],
      ],
    );
    assert.deepEqual(status.leases.map((l) => l.enclaveIp).sort(byIp), all);
    await until('the agent set to equal the live leases', agentSet, (s) => s.join() === all.join());

    const leases = sengJson<{ leases: { enclaveIp: string; gateway: string; current: boolean }[] }>([
      'leases',
      '--registry',
      url,
      '--ip',
      ipsB[0]!,
    ]);
    assert.equal(leases.code, 0, leases.stderr);
    assert.deepEqual(
      leases.json.leases.map((l) => [l.enclaveIp, l.gateway, l.current]),
      [[ipsB[0], 'gw-b', true]],
    );

    // Gateway B dies without a word: after its TTL its leases are reclaimed and the agent drops them.
    b.child.kill('SIGKILL');
    await until(
      'gateway B leases reclaimed on the agent',
      agentSet,
      (s) => s.join() === [...ipsA].sort(byIp).join(),
      30_000,
    );
    const reclaimed = sengJson<{ leases: { endReason: string | null }[] }>([
      'leases',
      '--registry',
      url,
      '--ip',
      ipsB[0]!,
    ]);
    assert.deepEqual(
      reclaimed.json.leases.map((l) => l.endReason),
      ['gateway-lost'],
    );
    assert.deepEqual(
      fleet().gateways.map((g) => [g.id, g.state]),
      [
        ['gw-a', 'live'],
        ['gw-b', 'lost'],
      ],
    );
    for (const s of onB) await stop(s.child, 3000);

    // The agent dies; meanwhile an enclave ends; the restarted agent removes its stale element.
    agent.child.kill('SIGKILL');
    await until(
      'the agent to exit',
      () => agent.child.exitCode !== null || agent.child.signalCode !== null,
      (x) => x,
    );
    assert.deepEqual(await agentSet(), [...ipsA].sort(byIp), 'a killed agent leaves its elements behind');
    await stop(onA[0]!.child, 5000);
    await until(
      'the ended enclave to leave the registry',
      () => fleet().leases.map((l) => l.enclaveIp),
      (ips) => ips.join() === ipsA[1],
    );
    agent = await startAgent();
    await until('the restarted agent to resynchronise', agentSet, (s) => s.join() === ipsA[1]);

    // Graceful stops: gateway A removes its leases and itself; the agent empties its set.
    await a.stop();
    const after = fleet();
    assert.deepEqual(after.leases, [], 'a gateway that stops gracefully leaves no lease behind');
    await until('the agent to drop gateway A’s last enclave', agentSet, (s) => s.length === 0);
    await stop(agent.child, 8000);
    assert.match(agent.log(), /"event":"stopped"/, postgresLog(pg).slice(-2000));
  },
);

test(
  'registry down: established enclaves keep forwarding, new ones are refused, then admitted again',
  { skip, timeout: 120_000 },
  async () => {
    const gw = await gateway('gw-c', lab.gw, '10.50.0.1');
    children.push(gw.child);
    const app = await createNetns('fltap');
    const up = await sim(lab, lab.host1, appCert(lab, 'c1'.repeat(32)), { app });
    children.push(up.child);
    assert.ok(up.ready, up.stderr());
    pg.pause();
    try {
      await app.exec('ping', ['-c', '2', '-i', '0.2', '-W', '2', '192.168.28.1']);
      const refused = await sim(lab, lab.host1, appCert(lab, 'c2'.repeat(32)));
      children.push(refused.child);
      assert.equal(refused.ready, undefined, 'no IP without the registry');
      await stop(refused.child, 3000);
      await until(
        'the rejection in the gateway log',
        () => gw.log.some((l) => /"event":"rejected"/.test(l) && /"check":"registry"/.test(l)),
        (x) => x,
      );
    } finally {
      pg.resume();
    }
    const later = await until(
      'admissions after the registry is back',
      async () => {
        const s = await sim(lab, lab.host1, appCert(lab, 'c3'.repeat(32)));
        children.push(s.child);
        if (!s.ready) await stop(s.child, 3000);
        return s.ready;
      },
      (r) => r !== undefined,
      30_000,
    );
    assert.notEqual(later!.ip, up.ready.ip);
    await gw.stop();
  },
);

test('the CLI refuses a registry that is not a PostgreSQL URL', { skip }, () => {
  const r = seng(['agent', '--registry', '/tmp/x.db', '--nft']);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /not a postgres/);
  const s = seng(['status', '--fleet']);
  assert.equal(s.code, 2);
  assert.match(s.stderr, /--fleet needs --registry/);
});
