/**
 * The conntrack purge is off the leave path, but the IP stays quarantined until it ran:
 * the gateway's teardown releases an enclave IP only after the backend's `purged(ip)`
 * resolved, and never when it failed. Fakes for the gateway context and the enforcer.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Teardown } from '../../../src/gateway/teardown.js';
import type { GatewayContext } from '../../../src/gateway/context.js';
import type { Enclave } from '../../../src/gateway/enclave.js';
import type { Enforcer } from '../../../src/enforce/types.js';
import { NftEnforcer, type ElementWriter, type NftRunner } from '../../../src/enforce/nft.js';
import type { SetElementChange } from '../../../src/enforce/nft-netlink.js';
import { parseIpv4 } from '../../../src/util/ipv4.js';

function deferred(): { promise: Promise<void>; resolve: () => void; reject: (e: Error) => void } {
  let resolve!: () => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<void>((a, b) => ((resolve = a), (reject = b)));
  return { promise, resolve, reject };
}

function harness(enforcer: Partial<Enforcer>): {
  teardown: Teardown;
  enclave: Enclave;
  released: number[];
  events: string[];
  stats: { quarantined: number; ended: number };
  errors: string[];
} {
  const released: number[] = [];
  const events: string[] = [];
  const errors: string[] = [];
  const stats = { quarantined: 0, ended: 0 };
  const log = {
    info: () => undefined,
    error: (o: { event?: string }) => errors.push(o.event ?? 'error'),
  };
  const ctx = {
    table: { setAwaiting: () => undefined, unroute: () => undefined, all: new Set() },
    stats,
    log,
    endedTraffic: { packetsIn: 0, bytesIn: 0, packetsOut: 0, bytesOut: 0, oversize: 0 },
    opts: { enforcer },
  } as unknown as GatewayContext;
  const ip = parseIpv4('192.168.28.7');
  const enclave = {
    ip,
    state: 'active',
    joined: true,
    sessionId: 's1',
    clientAddress: '10.0.0.1',
    clientPort: 1,
    clientIp: parseIpv4('10.0.0.1'),
    since: new Date(),
    categories: [],
    identity: { mrEnclave: Buffer.alloc(32, 1), mrSigner: Buffer.alloc(32, 2) },
    counters: { packetsIn: 0, bytesIn: 0, packetsOut: 0, bytesOut: 0, oversize: 0 },
    recv: { close: () => undefined },
    pool: { release: (x: number) => (released.push(x), events.push('release')) },
  } as unknown as Enclave;
  return { teardown: new Teardown(ctx, () => undefined), enclave, released, events, stats, errors };
}

test('the IP is released only after its conntrack purge has run', async () => {
  const purge = deferred();
  const h = harness({
    leave: async () => void h.events.push('leave'),
    purged: async () => {
      h.events.push('await-purge');
      await purge.promise;
      h.events.push('purged');
    },
  });
  const ended = h.teardown.end(h.enclave, 'test');
  for (let i = 0; i < 20; i += 1) await new Promise((r) => setImmediate(r));
  assert.deepEqual(h.events, ['leave', 'await-purge'], 'leave done, IP still quarantined');
  assert.deepEqual(h.released, []);
  purge.resolve();
  await ended;
  assert.deepEqual(h.events, ['leave', 'await-purge', 'purged', 'release']);
  assert.equal(h.stats.quarantined, 0);
});

test('a failed purge keeps the IP quarantined and is logged', async () => {
  const h = harness({
    leave: async () => undefined,
    purged: () => Promise.reject(new Error('netlink timeout')),
  });
  await h.teardown.end(h.enclave, 'test');
  assert.deepEqual(h.released, []);
  assert.equal(h.stats.quarantined, 1);
  assert.ok(h.errors.includes('conntrack-purge-failed'));
});

test('a backend without purged (leave purges itself) releases right after leave', async () => {
  const h = harness({ leave: async () => void h.events.push('leave') });
  await h.teardown.end(h.enclave, 'test');
  assert.deepEqual(h.events, ['leave', 'release']);
});

class FakeWriter implements ElementWriter {
  batches: SetElementChange[][] = [];
  async apply(changes: SetElementChange[]): Promise<void> {
    this.batches.push(changes);
  }
  close(): void {}
}
const fakeNft: NftRunner = { run: async () => undefined, listTable: async () => null };

test('NftEnforcer: leave resolves after the element removal; the purge starts after it and purged() follows it', async () => {
  const order: string[] = [];
  const purge = deferred();
  const writer = new FakeWriter();
  const e = new NftEnforcer({
    nft: fakeNft,
    elements: {
      apply: async (c) => {
        order.push(`batch:${c.some((x) => x.remove.length) ? 'remove' : 'add'}`);
        await writer.apply(c);
      },
      close: () => undefined,
    },
    purge: async () => {
      order.push('purge-start');
      await purge.promise;
      order.push('purge-done');
      return 1;
    },
  });
  await e.start();
  const reg = {
    enclaveIp: parseIpv4('192.168.28.9'),
    mrEnclave: Buffer.alloc(32, 3),
    mrSigner: Buffer.alloc(32),
    hostIp: parseIpv4('10.0.0.2'),
    categories: [],
  };
  await e.join(reg);
  await e.leave(reg);
  assert.deepEqual(order, ['batch:add', 'batch:remove', 'purge-start']);
  let done = false;
  const waiting = e.purged(reg.enclaveIp).then(() => (done = true));
  await new Promise((r) => setImmediate(r));
  assert.equal(done, false, 'the purge has not run yet');
  purge.resolve();
  await waiting;
  assert.deepEqual(order, ['batch:add', 'batch:remove', 'purge-start', 'purge-done']);
  await e.stop();
});

test('NftEnforcer: a failed purge keeps rejecting purged() for that IP', async () => {
  const e = new NftEnforcer({
    nft: fakeNft,
    elements: new FakeWriter(),
    purge: () => Promise.reject(new Error('ENOBUFS')),
  });
  await e.start();
  const reg = {
    enclaveIp: parseIpv4('192.168.28.10'),
    mrEnclave: Buffer.alloc(32, 3),
    mrSigner: Buffer.alloc(32),
    hostIp: parseIpv4('10.0.0.2'),
    categories: [],
  };
  await e.joinMany([reg]);
  await e.leaveMany([reg]);
  await assert.rejects(e.purged(reg.enclaveIp), /purging its conntrack entries failed/);
  await assert.rejects(e.purged(reg.enclaveIp), /stays quarantined|failed/);
  await e.stop();
});

test('NftEnforcer: joinMany and leaveMany of 5,000 enclaves are one batch each', async () => {
  const writer = new FakeWriter();
  const e = new NftEnforcer({ nft: fakeNft, elements: writer, purge: async () => 0 });
  await e.start();
  const regs = Array.from({ length: 5000 }, (_, i) => ({
    enclaveIp: parseIpv4('10.64.0.0') + i,
    mrEnclave: Buffer.alloc(32, i % 7),
    mrSigner: Buffer.alloc(32),
    hostIp: parseIpv4('10.0.0.2'),
    categories: [],
  }));
  await e.joinMany(regs);
  assert.equal(writer.batches.length, 1);
  assert.equal(writer.batches[0]?.find((c) => c.set === 'enclaves')?.add.length, 5000);
  await e.leaveMany(regs);
  assert.equal(writer.batches.length, 2);
  assert.equal(writer.batches[1]?.find((c) => c.set === 'enclaves')?.remove.length, 5000);
  await e.stop();
});
