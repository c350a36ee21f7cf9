/**
 * Batched claims and releases of the enclave registry (docs/fleet.md "What a claim costs"),
 * against a real PostgreSQL server (test/helpers/postgres.ts).
 */
import { after, before, mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { postgresAvailable, startPostgres, type PostgresServer } from '../../helpers/postgres.js';
import { Registry, type LeaseClaim, type ReleaseItem } from '../../../src/fleet/registry.js';
import { GatewayLeases } from '../../../src/fleet/gateway-leases.js';
import { IpPool } from '../../../src/gateway/ip-pool.js';
import { formatIpv4, parseCidr, parseIpv4, type Ipv4 } from '../../../src/util/ipv4.js';
import { silentLogger } from '../../../src/util/log.js';
import type { LeaseClaimResult, LeaseRequest } from '../../../src/gateway/context.js';

const skip = postgresAvailable() ? false : 'PostgreSQL is not installed';
let server: PostgresServer;

before(async () => {
  if (!skip) server = await startPostgres();
});
after(() => server?.stop());

const MR = 'aa'.repeat(32);
const SIGNER = 'bb'.repeat(32);

function lease(
  ip: string,
  sessionId: string,
  gatewayId: string,
  extra: Partial<LeaseClaim> = {},
): LeaseClaim {
  return {
    ip: parseIpv4(ip),
    subnet: '192.168.28.0/24',
    sessionId,
    gatewayId,
    app: 'web',
    mrEnclave: MR,
    mrSigner: SIGNER,
    hostIp: '10.0.0.7',
    categories: ['web'],
    ...extra,
  };
}

function pool(cidr = '192.168.28.0/26'): IpPool {
  const c = parseCidr(cidr);
  return new IpPool(c, (c.network + 1) >>> 0);
}

function req(sessionId: string): LeaseRequest {
  return { sessionId, app: 'web', mrEnclave: MR, mrSigner: SIGNER, hostIp: '10.0.0.7', categories: ['web'] };
}

interface Write {
  claims: Ipv4[];
  releases: Ipv4[];
}

/** Records every write of a gateway (the IPs claimed and released) while `fn` runs. */
async function spyWrites<T>(
  fn: (writes: readonly Write[]) => Promise<T>,
): Promise<{ result: T; writes: Write[] }> {
  const original = Registry.prototype.claimAndRelease;
  const writes: Write[] = [];
  Registry.prototype.claimAndRelease = function (
    this: Registry,
    leases: readonly LeaseClaim[],
    releases: readonly ReleaseItem[],
  ) {
    writes.push({ claims: leases.map((l) => l.ip), releases: releases.map((r) => r.ip) });
    return original.call(this, leases, releases);
  };
  try {
    return { result: await fn(writes), writes };
  } finally {
    Registry.prototype.claimAndRelease = original;
  }
}

/** Gateway "gw-a" with a 30 s lease TTL, started on the registry at `url`. */
async function startedGateway(url: string): Promise<GatewayLeases> {
  const gw = new GatewayLeases({
    url,
    gatewayId: 'gw-a',
    address: 'a',
    leaseTtlMs: 30_000,
    log: silentLogger,
  });
  await gw.start();
  return gw;
}

test(
  'claimMany writes the free leases of a batch and answers with the IPs held elsewhere',
  { skip },
  async () => {
    const url = await server.createDatabase();
    const registry = await Registry.open(url);
    try {
      await registry.registerGateway({ id: 'gw-a', address: 'a', leaseTtlMs: 60_000 });
      await registry.registerGateway({ id: 'gw-b', address: 'b', leaseTtlMs: 60_000 });
      assert.equal(await registry.claim(lease('192.168.28.3', 'b1', 'gw-b')), true);
      assert.equal(await registry.claim(lease('192.168.28.5', 'b2', 'gw-b')), true);
      const lost = await registry.claimMany([
        lease('192.168.28.5', 'a1', 'gw-a'),
        lease('192.168.28.2', 'a2', 'gw-a', { app: null, categories: [] }),
        lease('192.168.28.3', 'a3', 'gw-a'),
        lease('192.168.28.4', 'a4', 'gw-a', { categories: ['db', 'with "quotes", and commas'] }),
      ]);
      assert.deepEqual([...lost].map(formatIpv4).sort(), ['192.168.28.3', '192.168.28.5']);
      const live = await registry.liveLeases();
      assert.deepEqual(
        live.map((l) => [formatIpv4(l.ip), l.sessionId, l.gatewayId, l.app, l.categories]),
        [
          ['192.168.28.2', 'a2', 'gw-a', null, []],
          ['192.168.28.3', 'b1', 'gw-b', 'web', ['web']],
          ['192.168.28.4', 'a4', 'gw-a', 'web', ['db', 'with "quotes", and commas']],
          ['192.168.28.5', 'b2', 'gw-b', 'web', ['web']],
        ],
      );
      assert.equal((await registry.claimMany([])).size, 0);
    } finally {
      await registry.close();
    }
  },
);

test(
  'overlapping batches of two gateways in opposite orders never deadlock nor both win',
  { skip },
  async () => {
    const url = await server.createDatabase();
    const [a, b] = await Promise.all([Registry.open(url), Registry.open(url)]);
    try {
      await a.registerGateway({ id: 'gw-a', address: 'a', leaseTtlMs: 60_000 });
      await b.registerGateway({ id: 'gw-b', address: 'b', leaseTtlMs: 60_000 });
      // Batches large enough for the two statements to run at the same time.
      for (let round = 0; round < 4; round++) {
        const ips = Array.from({ length: 2000 }, (_, i) => formatIpv4(parseIpv4(`10.${round}.0.0`) + i + 1));
        const [lostA, lostB] = await Promise.all([
          a.claimMany(ips.map((ip, i) => lease(ip, `a${round}-${i}`, 'gw-a'))),
          b.claimMany([...ips].reverse().map((ip, i) => lease(ip, `b${round}-${i}`, 'gw-b'))),
        ]);
        for (const ip of ips.map(parseIpv4))
          assert.equal(lostA.has(ip) !== lostB.has(ip), true, `exactly one winner for ${formatIpv4(ip)}`);
      }
      assert.equal((await a.liveLeases()).length, 8000);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  },
);

test(
  'claims arriving together go in one statement; the ones held elsewhere are retried',
  { skip },
  async () => {
    const url = await server.createDatabase();
    const other = await Registry.open(url);
    const gw = await startedGateway(url);
    try {
      // The two IPs the pool would propose first are held by another gateway.
      const probe = pool();
      const taken = [probe.allocate()!, probe.allocate()!];
      await other.registerGateway({ id: 'gw-b', address: 'b', leaseTtlMs: 60_000 });
      for (const [i, ip] of taken.entries())
        assert.equal(await other.claim(lease(formatIpv4(ip), `b${i}`, 'gw-b')), true);
      const p = pool();
      const { result, writes } = await spyWrites(() =>
        Promise.all(Array.from({ length: 5 }, (_, i) => gw.claim(p, req(`s${i}`)))),
      );
      const ips = result.map((r) => (r.ok ? r.ip : assert.fail(JSON.stringify(r))));
      assert.equal(new Set(ips).size, 5, 'five distinct IPs');
      assert.ok(
        ips.every((ip) => !taken.includes(ip)),
        'none of the IPs held elsewhere',
      );
      assert.deepEqual(
        writes.map((w) => [w.claims.length, w.releases.length]),
        [
          [5, 0],
          [2, 0],
        ],
        'one statement for the five claims, one for the two retries',
      );
      const live = await other.liveLeases();
      assert.deepEqual(
        live.filter((l) => l.gatewayId === 'gw-a').map((l) => [l.ip, l.sessionId]),
        result.map((r, i) => [r.ok ? r.ip : 0, `s${i}`]).sort((x, y) => (x[0] as number) - (y[0] as number)),
      );
    } finally {
      await gw.stop();
      await other.close();
    }
  },
);

test('session ends and claims gathered meanwhile go to the registry in one statement', { skip }, async () => {
  const url = await server.createDatabase();
  const gw = await startedGateway(url);
  const registry = await Registry.open(url);
  try {
    const p = pool();
    const first = await gw.claim(p, req('first'));
    assert.ok(first.ok);
    const { result, writes } = await spyWrites(async () => {
      gw.release(p, first.ip, 'first', 'ended');
      assert.equal(p.inUse, 1, 'the IP stays taken until the registry let go of it');
      return Promise.all(['s1', 's2', 's3'].map((s) => gw.claim(p, req(s))));
    });
    const ips = result.map((r) => (r.ok ? r.ip : assert.fail(JSON.stringify(r))));
    assert.ok(!ips.includes(first.ip));
    assert.deepEqual(writes, [{ claims: ips, releases: [first.ip] }]);
    assert.equal(p.inUse, 3, 'the released IP is back in the pool');
    const live = await registry.liveLeases();
    assert.deepEqual(
      live.map((l) => [l.ip, l.sessionId]),
      ips.map((ip, i) => [ip, `s${i + 1}`]).sort((x, y) => (x[0] as number) - (y[0] as number)),
    );
    assert.deepEqual(
      (await registry.query({ ip: first.ip })).map((l) => [l.sessionId, l.endReason]),
      [['first', 'ended']],
    );
  } finally {
    await gw.stop();
    await registry.close();
  }
});

test(
  'a claim does not wait for the gather time of a session end queued just before it',
  { skip },
  async () => {
    const url = await server.createDatabase();
    const gw = await startedGateway(url);
    try {
      const p = pool();
      const first = await gw.claim(p, req('first'));
      assert.ok(first.ok);
      await new Promise((resolve) => setTimeout(resolve, 25)); // past the claim interval
      const { result, writes } = await spyWrites(async (seen) => {
        // Mocked timers: only what is due without waiting runs on tick(0).
        mock.timers.enable({ apis: ['setTimeout'] });
        let claimed: Promise<LeaseClaimResult>;
        try {
          gw.release(p, first.ip, 'first', 'ended');
          claimed = gw.claim(p, req('second'));
          mock.timers.tick(0);
          assert.equal(seen.length, 1, 'the claim was written at once, with the session end');
        } finally {
          mock.timers.reset();
        }
        return claimed;
      });
      assert.ok(result.ok);
      assert.deepEqual(writes, [{ claims: [result.ip], releases: [first.ip] }]);
    } finally {
      await gw.stop();
    }
  },
);

test('a stopping gateway refuses the claims still waiting for their statement', { skip }, async () => {
  const url = await server.createDatabase();
  const gw = await startedGateway(url);
  const p = pool();
  const pending = gw.claim(p, req('late'));
  await gw.stop();
  const result = await pending;
  assert.equal(result.ok, false);
  assert.ok(!result.ok && result.check === 'registry', JSON.stringify(result));
  assert.equal(p.inUse, 0, 'the refused claim gave its candidate back to the pool');
  const registry = await Registry.open(url);
  try {
    assert.equal((await registry.liveLeases()).length, 0);
  } finally {
    await registry.close();
  }
});

test('release ends only the leases of the named sessions and counts them', { skip }, async () => {
  const url = await server.createDatabase();
  const registry = await Registry.open(url);
  try {
    await registry.registerGateway({ id: 'gw-a', address: 'a', leaseTtlMs: 60_000 });
    await registry.claimMany([lease('192.168.28.2', 's2', 'gw-a'), lease('192.168.28.3', 's3', 'gw-a')]);
    const ended = await registry.release([
      { ip: parseIpv4('192.168.28.2'), sessionId: 's2', reason: 'end' },
      { ip: parseIpv4('192.168.28.3'), sessionId: 'someone-else', reason: 'end' },
      { ip: parseIpv4('192.168.28.9'), sessionId: 's9', reason: 'end' },
    ]);
    assert.equal(ended, 1);
    assert.deepEqual(
      (await registry.liveLeases()).map((l) => l.sessionId),
      ['s3'],
    );
    const history = await registry.query({ ip: parseIpv4('192.168.28.2') });
    assert.deepEqual(
      history.map((l) => [l.sessionId, l.endReason]),
      [['s2', 'end']],
    );
    assert.equal(await registry.release([]), 0);
  } finally {
    await registry.close();
  }
});
