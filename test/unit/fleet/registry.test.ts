/** The enclave registry against a real PostgreSQL server (test/helpers/postgres.ts). */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { postgresAvailable, startPostgres, type PostgresServer } from '../../helpers/postgres.js';
import { Registry, GATEWAY_LOST, type LeaseClaim } from '../../../src/fleet/registry.js';
import { GatewayLeases } from '../../../src/fleet/gateway-leases.js';
import { FleetAgent } from '../../../src/fleet/agent.js';
import { IpPool } from '../../../src/gateway/ip-pool.js';
import { formatIpv4, parseCidr, parseIpv4 } from '../../../src/util/ipv4.js';
import { silentLogger } from '../../../src/util/log.js';
import type { EnclaveRegistration, Enforcer } from '../../../src/enforce/types.js';

const skip = postgresAvailable() ? false : 'PostgreSQL is not installed';
let server: PostgresServer;

before(async () => {
  if (!skip) server = await startPostgres();
});
after(() => server?.stop());

const MR = 'aa'.repeat(32);
const SIGNER = 'bb'.repeat(32);

function lease(ip: string, sessionId: string, gatewayId: string, app = 'web'): LeaseClaim {
  return {
    ip: parseIpv4(ip),
    subnet: '192.168.28.0/24',
    sessionId,
    gatewayId,
    app,
    mrEnclave: MR,
    mrSigner: SIGNER,
    hostIp: '10.0.0.7',
    categories: ['web'],
  };
}

function pool(cidr = '192.168.28.0/26'): IpPool {
  const c = parseCidr(cidr);
  return new IpPool(c, (c.network + 1) >>> 0);
}

test('schema creation is idempotent when many registries open at once', { skip }, async () => {
  const url = await server.createDatabase();
  const registries = await Promise.all(Array.from({ length: 6 }, () => Registry.open(url)));
  try {
    const tables = await server.sql(
      "SELECT count(*)::int AS n FROM pg_tables WHERE tablename IN ('seng_gateways', 'seng_leases', 'seng_lease_history')",
      [],
      url,
    );
    assert.equal(tables.rows[0].n, 3);
  } finally {
    await Promise.all(registries.map((r) => r.close()));
  }
});

test('two registries racing for the same IPs never both win one', { skip }, async () => {
  const url = await server.createDatabase();
  const [a, b] = await Promise.all([Registry.open(url), Registry.open(url)]);
  try {
    await a.registerGateway({ id: 'gw-a', address: 'a', leaseTtlMs: 60_000 });
    await b.registerGateway({ id: 'gw-b', address: 'b', leaseTtlMs: 60_000 });
    const ips = Array.from({ length: 60 }, (_, i) => `192.168.28.${i + 2}`);
    const results = await Promise.all(
      ips.flatMap((ip, i) => [
        a.claim(lease(ip, `a${i}`, 'gw-a')).then((won) => ({ ip, who: 'a', won })),
        b.claim(lease(ip, `b${i}`, 'gw-b')).then((won) => ({ ip, who: 'b', won })),
      ]),
    );
    for (const ip of ips) {
      const winners = results.filter((r) => r.ip === ip && r.won);
      assert.equal(winners.length, 1, `exactly one winner for ${ip}`);
    }
    const live = await a.liveLeases();
    assert.equal(live.length, ips.length);
    assert.deepEqual(
      live.map((l) => formatIpv4(l.ip)),
      [...ips].sort((x, y) => parseIpv4(x) - parseIpv4(y)),
    );
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
});

test('two gateways sharing one subnet hand out distinct IPs until it is full', { skip }, async () => {
  const url = await server.createDatabase();
  const gws = ['gw-a', 'gw-b'].map(
    (id) => new GatewayLeases({ url, gatewayId: id, address: id, leaseTtlMs: 30_000, log: silentLogger }),
  );
  await Promise.all(gws.map((g) => g.start()));
  try {
    const pools = [pool(), pool()];
    const req = (s: string) => ({
      sessionId: s,
      app: 'web',
      mrEnclave: MR,
      mrSigner: SIGNER,
      hostIp: '10.0.0.7',
      categories: [],
    });
    // A /26 has 62 hosts, one of them the gateway's: 61 leases, asked for by both at once.
    const claims = await Promise.all(
      Array.from({ length: 70 }, (_, i) => gws[i % 2]!.claim(pools[i % 2]!, req(`s${i}`))),
    );
    const won = claims.flatMap((c) => (c.ok ? [c.ip] : []));
    assert.equal(won.length, 61);
    assert.equal(new Set(won).size, 61, 'no IP handed out twice');
    const refused = claims.filter((c) => !c.ok);
    assert.ok(
      refused.every((c) => !c.ok && c.check === 'subnet-full'),
      JSON.stringify(refused),
    );
    // A release on one gateway makes its IP available to the other.
    const freed = won[0]!;
    const owner = claims.findIndex((c) => c.ok && c.ip === freed);
    gws[owner % 2]!.release(pools[owner % 2]!, freed, `s${owner}`, 'test');
    await gws[owner % 2]!.flushReleases();
    const other = (owner + 1) % 2;
    const again = await gws[other]!.claim(pools[other]!, req('late'));
    assert.deepEqual(again, { ok: true, ip: freed });
  } finally {
    await Promise.all(gws.map((g) => g.stop()));
  }
  const registry = await Registry.open(url);
  try {
    assert.equal((await registry.liveLeases()).length, 0, 'graceful stops leave no live lease');
    assert.equal((await registry.gateways()).length, 0);
  } finally {
    await registry.close();
  }
});

test('leases of a gateway whose heartbeat stopped are reclaimed after its TTL', { skip }, async () => {
  const url = await server.createDatabase();
  const registry = await Registry.open(url);
  try {
    await registry.registerGateway({ id: 'dead', address: 'x', leaseTtlMs: 300 });
    await registry.registerGateway({ id: 'alive', address: 'y', leaseTtlMs: 60_000 });
    assert.ok(await registry.claim(lease('192.168.28.5', 's-dead', 'dead')));
    assert.ok(await registry.claim(lease('192.168.28.6', 's-alive', 'alive')));
    assert.deepEqual(await registry.reclaimExpired(), [], 'nothing expired yet');
    await sleep(500);
    const reclaimed = await registry.reclaimExpired();
    assert.deepEqual(
      reclaimed.map((l) => l.sessionId),
      ['s-dead'],
    );
    const live = await registry.liveLeases();
    assert.deepEqual(
      live.map((l) => l.sessionId),
      ['s-alive'],
    );
    const [past] = await registry.query({ ip: parseIpv4('192.168.28.5') });
    assert.equal(past?.endReason, GATEWAY_LOST);
    const gws = await registry.gateways();
    assert.deepEqual(
      gws.map((g) => [g.id, g.lost]),
      [
        ['alive', false],
        ['dead', true],
      ],
    );
    // The alive gateway restarts under the same id: its previous run's leases end.
    assert.equal(await registry.registerGateway({ id: 'alive', address: 'y', leaseTtlMs: 60_000 }), 1);
    const [restarted] = await registry.query({ ip: parseIpv4('192.168.28.6') });
    assert.equal(restarted?.endReason, 'gateway-restarted');
    assert.deepEqual(await registry.liveLeases(), []);
  } finally {
    await registry.close();
  }
});

test('a gateway that was cut off longer than its TTL claims its leases again', { skip }, async () => {
  const url = await server.createDatabase();
  const gw = new GatewayLeases({ url, gatewayId: 'gw', address: 'gw', leaseTtlMs: 600, log: silentLogger });
  const registry = await Registry.open(url);
  const lost: number[] = [];
  gw.onLeaseLost = (ip) => lost.push(ip);
  await gw.start();
  try {
    const p = pool();
    const req = (s: string) => ({
      sessionId: s,
      app: null,
      mrEnclave: MR,
      mrSigner: SIGNER,
      hostIp: '10.0.0.7',
      categories: [],
    });
    const a = await gw.claim(p, req('keep'));
    const b = await gw.claim(p, req('taken'));
    assert.ok(a.ok && b.ok);
    // Someone reclaims both behind the gateway's back, and another gateway takes one IP. In one
    // transaction: the gateway's next heartbeat waits for its row until all of that is done.
    await registry.registerGateway({ id: 'other', address: 'o', leaseTtlMs: 60_000 });
    const client = await registry.pool.connect();
    try {
      await client.query('BEGIN');
      await client.query(
        "UPDATE seng_gateways SET heartbeat_at = clock_timestamp() - interval '1 hour' WHERE id = 'gw'",
      );
      assert.equal((await registry.reclaimExpired(client)).length, 2);
      const thief = await client.query(
        `INSERT INTO seng_leases (ip, subnet, session_id, gateway_id, mr_enclave, mr_signer, host_ip)
         VALUES ($1, '192.168.28.0/26', 'thief', 'other', $2, $3, '10.0.0.8')`,
        [b.ip, MR, SIGNER],
      );
      assert.equal(thief.rowCount, 1);
      await client.query('COMMIT');
    } finally {
      client.release();
    }
    const deadline = Date.now() + 5_000;
    while (lost.length === 0 && Date.now() < deadline) await sleep(50);
    assert.deepEqual(lost, [b.ip], 'the session whose IP went elsewhere is reported');
    const live = await registry.liveLeases();
    assert.deepEqual(live.map((l) => l.sessionId).sort(), ['keep', 'thief']);
    const history = await registry.query({ ip: a.ip });
    assert.deepEqual(
      history.map((l) => l.endedAt),
      [null],
      'the reclaim of a lease that lived on is taken back',
    );
  } finally {
    await gw.stop();
    await registry.close();
  }
});

test(
  'while the registry is unreachable claims are refused with a clear reason, then resume',
  { skip },
  async () => {
    const local = await startPostgres();
    const url = await local.createDatabase();
    const gw = new GatewayLeases({ url, gatewayId: 'gw', address: 'gw', leaseTtlMs: 900, log: silentLogger });
    await gw.start();
    const req = (s: string) => ({
      sessionId: s,
      app: null,
      mrEnclave: MR,
      mrSigner: SIGNER,
      hostIp: '10.0.0.7',
      categories: [],
    });
    const p = pool();
    try {
      const first = await gw.claim(p, req('before'));
      assert.ok(first.ok);
      local.pause();
      const during = await gw.claim(p, req('during'));
      assert.equal(during.ok, false);
      assert.ok(!during.ok && during.check === 'registry', JSON.stringify(during));
      assert.match(!during.ok ? during.reason : '', /registry is unreachable.*unique enclave IP/);
      // The session that ended meanwhile keeps its IP out of the pool until the registry confirms.
      gw.release(p, first.ip, 'before', 'end');
      await gw.flushReleases();
      assert.equal(p.inUse, 1, 'the IP is not reused before the registry let go of it');
      local.resume();
      const deadline = Date.now() + 15_000;
      let after = await gw.claim(p, req('after'));
      while (!after.ok && Date.now() < deadline) {
        await sleep(100);
        after = await gw.claim(p, req('after'));
      }
      assert.ok(after.ok, 'claims resume once the registry answers again');
      const registry = await Registry.open(url);
      try {
        await gw.flushReleases();
        const live = await registry.liveLeases();
        assert.deepEqual(
          live.map((l) => l.sessionId),
          ['after'],
          'the release queued while it was down was written',
        );
      } finally {
        await registry.close();
      }
    } finally {
      await gw.stop();
      local.stop();
    }
  },
);

test('history answers who held an IP at a given time', { skip }, async () => {
  const url = await server.createDatabase();
  const registry = await Registry.open(url);
  try {
    await registry.registerGateway({ id: 'gw', address: 'x', leaseTtlMs: 60_000 });
    const ip = '192.168.28.9';
    assert.ok(await registry.claim(lease(ip, 'first', 'gw', 'web')));
    await sleep(30);
    const duringFirst = Date.now();
    await sleep(30);
    assert.equal(
      await registry.release([{ ip: parseIpv4(ip), sessionId: 'first', reason: 'close_notify' }]),
      1,
    );
    assert.ok(await registry.claim(lease(ip, 'second', 'gw', 'db')));
    await sleep(30);
    const duringSecond = Date.now();
    const atFirst = await registry.query({ ip: parseIpv4(ip), atMs: duringFirst });
    assert.deepEqual(
      atFirst.map((l) => [l.sessionId, l.endReason]),
      [['first', 'close_notify']],
    );
    const atSecond = await registry.query({ ip: parseIpv4(ip), atMs: duringSecond });
    assert.deepEqual(
      atSecond.map((l) => [l.sessionId, l.endedAt]),
      [['second', null]],
    );
    assert.deepEqual(
      (await registry.query({ app: 'web' })).map((l) => l.sessionId),
      ['first'],
    );
    assert.deepEqual(
      (await registry.query({ ip: parseIpv4(ip) })).map((l) => l.sessionId),
      ['second', 'first'],
    );
    // A stale release (another session's id) changes nothing.
    assert.equal(await registry.release([{ ip: parseIpv4(ip), sessionId: 'first', reason: 'late' }]), 0);
  } finally {
    await registry.close();
  }
});

/** An enforcer that keeps what it was told in a map (the agent's view of "the sets"). */
class MapEnforcer implements Enforcer {
  readonly name = 'map';
  readonly regs = new Map<string, string[]>();
  readonly starts: number[] = [];
  /** The live leases read before the start come with it (Enforcer.start's `initial`). */
  async start(opts: { initial?: EnclaveRegistration[] } = {}) {
    this.starts.push(opts.initial?.length ?? 0);
    for (const r of opts.initial ?? []) this.regs.set(formatIpv4(r.enclaveIp), r.categories);
  }
  async join(r: EnclaveRegistration) {
    this.regs.set(formatIpv4(r.enclaveIp), r.categories);
  }
  async leave(r: EnclaveRegistration) {
    this.regs.delete(formatIpv4(r.enclaveIp));
  }
  async updateCategories(_mr: Buffer, categories: string[], active: EnclaveRegistration[]) {
    for (const a of active) this.regs.set(formatIpv4(a.enclaveIp), categories);
  }
  async stop() {
    this.regs.clear();
  }
}

async function until(what: string, check: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

test(
  'the agent follows leases, policy categories and resyncs after a lost connection',
  { skip },
  async () => {
    const url = await server.createDatabase();
    const registry = await Registry.open(url);
    await registry.registerGateway({ id: 'gw', address: 'x', leaseTtlMs: 60_000 });
    assert.ok(await registry.claim(lease('192.168.28.2', 's2', 'gw')));
    const enforcer = new MapEnforcer();
    const agent = new FleetAgent({ url, enforcer, log: silentLogger, reclaimEveryMs: 200 });
    await agent.start();
    try {
      await until('initial resync', () => enforcer.regs.has('192.168.28.2'));
      assert.ok(await registry.claim(lease('192.168.28.3', 's3', 'gw')));
      await until('join by notification', () => enforcer.regs.has('192.168.28.3'));
      await registry.release([{ ip: parseIpv4('192.168.28.2'), sessionId: 's2', reason: 'end' }]);
      await until('leave by notification', () => !enforcer.regs.has('192.168.28.2'));

      // A netfilter policy in the same database overrides the lease's categories.
      await server.sql(
        `CREATE TABLE apps(id integer PRIMARY KEY, name text NOT NULL, mr_enclave bytea NOT NULL UNIQUE, mr_signer bytea NOT NULL);
       CREATE TABLE categories(id integer, name text NOT NULL, apps_id integer NOT NULL REFERENCES apps);
       INSERT INTO apps VALUES (1, 'web', decode('${MR}', 'hex'), decode('${SIGNER}', 'hex'));
       INSERT INTO categories VALUES (1, 'dmz', 1), (2, 'internet', 1);
       NOTIFY seng_policy, 'categories';`,
        [],
        url,
      );
      await until(
        'categories from the policy',
        () => enforcer.regs.get('192.168.28.3')?.join() === 'dmz,internet',
      );

      // Connection lost: changes made meanwhile are picked up by the resync on reconnection.
      server.pause();
      server.resume();
      const meanwhile = await Registry.open(url);
      await meanwhile.release([{ ip: parseIpv4('192.168.28.3'), sessionId: 's3', reason: 'end' }]);
      assert.ok(await meanwhile.claim(lease('192.168.28.4', 's4', 'gw')));
      await meanwhile.close();
      await until(
        'resync after reconnection',
        () => enforcer.regs.has('192.168.28.4') && !enforcer.regs.has('192.168.28.3'),
        15_000,
      );
      assert.deepEqual(agent.appliedIps(), ['192.168.28.4']);

      // Lost gateways' leases are reclaimed by the agent too.
      await server.sql(
        "UPDATE seng_gateways SET heartbeat_at = clock_timestamp() - interval '1 hour'",
        [],
        url,
      );
      await until('reclaim by the agent', () => enforcer.regs.size === 0);
    } finally {
      await agent.stop();
      await registry.close().catch(() => {});
    }
  },
);

/** A MapEnforcer with joinMany/leaveMany that records the size of every call. */
class BatchEnforcer extends MapEnforcer {
  readonly calls: string[] = [];
  override async join(r: EnclaveRegistration) {
    this.calls.push('join');
    await super.join(r);
  }
  override async leave(r: EnclaveRegistration) {
    this.calls.push('leave');
    await super.leave(r);
  }
  async joinMany(regs: EnclaveRegistration[]) {
    this.calls.push(`joinMany ${regs.length}`);
    for (const r of regs) await super.join(r);
  }
  async leaveMany(regs: EnclaveRegistration[]) {
    this.calls.push(`leaveMany ${regs.length}`);
    for (const r of regs) await super.leave(r);
  }
}

test('the agent hands a burst to joinMany/leaveMany in batches of --batch', { skip }, async () => {
  const url = await server.createDatabase();
  const registry = await Registry.open(url);
  await registry.registerGateway({ id: 'gw', address: 'x', leaseTtlMs: 60_000 });
  assert.ok(await registry.claim(lease('192.168.28.2', 'before', 'gw')));
  const enforcer = new BatchEnforcer();
  const agent = new FleetAgent({ url, enforcer, log: silentLogger, batchSize: 10 });
  await agent.start();
  try {
    assert.deepEqual(enforcer.starts, [1], 'the lease that was live before the start came with it');
    assert.ok(enforcer.regs.has('192.168.28.2'));
    await agent.settled();
    assert.equal(enforcer.calls.join(', '), '', 'the first resync finds nothing to do');
    // 25 leases in one transaction: their notifications arrive together.
    await server.sql(
      `INSERT INTO seng_leases (ip, subnet, session_id, gateway_id, app, mr_enclave, mr_signer, host_ip)
       SELECT $1::bigint + g, '192.168.28.0/24', 'b' || g, 'gw', 'web', $2, $3, '10.0.0.7'
         FROM generate_series(1, 25) AS g`,
      [parseIpv4('192.168.28.9'), MR, SIGNER],
      url,
    );
    await until('the burst', () => enforcer.regs.size === 26);
    await agent.settled();
    assert.deepEqual(enforcer.calls, ['joinMany 10', 'joinMany 10', 'joinMany 5']);
    enforcer.calls.length = 0;
    await registry.unregisterGateway('gw');
    await until('every leave', () => enforcer.regs.size === 0);
    await agent.settled();
    assert.ok(
      enforcer.calls.every((c) => c.startsWith('leaveMany ')),
      `leaves go through leaveMany: ${enforcer.calls.join(', ')}`,
    );
  } finally {
    await agent.stop();
    await registry.close();
  }
});

test(
  'with a policy store in another database the agent takes the categories from there',
  { skip },
  async () => {
    const url = await server.createDatabase();
    const policyUrl = await server.createDatabase();
    await server.sql(
      `CREATE TABLE apps(id integer PRIMARY KEY, name text NOT NULL, mr_enclave bytea NOT NULL UNIQUE, mr_signer bytea NOT NULL);
     CREATE TABLE categories(id integer, name text NOT NULL, apps_id integer NOT NULL REFERENCES apps);
     INSERT INTO apps VALUES (1, 'web', decode('${MR}', 'hex'), decode('${SIGNER}', 'hex'));
     INSERT INTO categories VALUES (1, 'dmz', 1);`,
      [],
      policyUrl,
    );
    const registry = await Registry.open(url);
    await registry.registerGateway({ id: 'gw', address: 'x', leaseTtlMs: 60_000 });
    assert.ok(await registry.claim(lease('192.168.28.2', 's2', 'gw')));
    const enforcer = new MapEnforcer();
    const agent = new FleetAgent({ url, policyUrl, enforcer, log: silentLogger });
    await agent.start();
    try {
      await until(
        'categories of the policy store',
        () => enforcer.regs.get('192.168.28.2')?.join() === 'dmz',
      );
      await server.sql(
        `INSERT INTO categories VALUES (2, 'internet', 1); NOTIFY seng_policy, 'categories';`,
        [],
        policyUrl,
      );
      await until(
        'a change in the policy store',
        () => enforcer.regs.get('192.168.28.2')?.join() === 'dmz,internet',
      );
    } finally {
      await agent.stop();
      await registry.close();
    }
  },
);
