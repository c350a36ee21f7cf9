/**
 * TunDevice against the real kernel. Every device lives in a fresh network namespace: the
 * test spawns fixtures/tun-agent.js there (`ip netns exec`) and drives it over stdin/stdout.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NodeAgent, cleanupAll, createNetns, linkNames, waitFor, type Netns } from '../../helpers/netns.js';

after(cleanupAll);

const agentScript = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'tun-agent.js');

function startAgent(ns: Netns): Promise<NodeAgent> {
  return NodeAgent.start(ns, agentScript, [], { nodeArgs: ['--expose-gc'] });
}

async function addrOf(ns: Netns, dev: string): Promise<string> {
  return (await ns.exec('ip', ['-4', '-o', 'addr', 'show', 'dev', dev])).stdout;
}

test('ping into a TUN route reaches JS as ICMP echo requests; JS replies and ping succeeds', async () => {
  const ns = await createNetns('tun');
  const agent = await startAgent(ns);
  const opened = await agent.ok('open', { opts: { name: 'tunT0', mtu: 1432, addresses: ['10.70.0.1/24'] } });
  assert.equal(opened.name, 'tunT0');
  assert.equal(opened.mtu, 1432);
  assert.equal(opened.created, true);
  const link = (await ns.exec('ip', ['-o', 'link', 'show', 'tunT0'])).stdout;
  assert.match(link, /mtu 1432/);
  assert.match(link, /[<,]UP[,>]/);
  assert.match(await addrOf(ns, 'tunT0'), /inet 10\.70\.0\.1\/24/);

  await agent.ok('echo');
  // 10.70.0.2 is routed into the TUN by the /24; ping must get our replies back.
  const r = await ns.exec('ping', ['-c', '3', '-i', '0.2', '-W', '2', '-s', '100', '10.70.0.2'], {
    timeoutMs: 15_000,
  });
  assert.match(r.stdout, /3 packets transmitted, 3 received/);
  const icmp = await waitFor(() => {
    const seen = agent.events.filter((e) => e.event === 'icmp');
    return seen.length >= 3 ? seen : undefined;
  }, 5000);
  assert.equal(icmp.length, 3);
  for (const [i, e] of icmp.entries()) {
    assert.equal(e.src, '10.70.0.1');
    assert.equal(e.dst, '10.70.0.2');
    assert.equal(e.seq, i + 1);
    assert.equal(e.len, 20 + 8 + 100);
    assert.equal(e.replied, true);
  }
  const counts = await agent.ok('counts');
  const stats = counts.stats as Record<string, number> & { rxPackets: number };
  assert.equal(stats.txPackets, 3);
  assert.ok(stats.rxPackets >= 3);

  const closed = await agent.ok('close');
  assert.equal(closed.closed, 'tunT0');
  assert.ok(!(await linkNames(ns)).includes('tunT0'), 'a device we created is removed on close');
  await agent.exit();
  await ns.destroy();
});

test('packets queued while JS is busy are delivered in batches', async () => {
  const ns = await createNetns('tun');
  const agent = await startAgent(ns);
  await agent.ok('open', {
    opts: { name: 'tunB0', addresses: ['10.71.0.1/24'], batch: 32, txQueueLen: 1000 },
  });
  await agent.ok('collect');
  await agent.ok('udpburst', { dst: '10.71.0.9', count: 300 });
  const c = await waitFor(
    async () => {
      const r = await agent.ok('counts');
      return (r.received as number) >= 300 ? r : undefined;
    },
    5000,
    { message: 'not all 300 datagrams arrived' },
  );
  const stats = c.stats as Record<string, number> & { rxFullBatches: number };
  assert.equal(c.received, 300);
  assert.equal(stats.rxPackets, 300);
  assert.equal(c.maxBatch, 32, 'a wakeup delivers up to the batch cap');
  assert.ok((c.batches as number) < 300 / 4, `expected batching, got ${c.batches} callbacks for 300 packets`);
  assert.ok(stats.rxFullBatches >= 1);
  assert.equal(stats.rxBytes, 300 * (20 + 8 + 100));
  await agent.exit();
  await waitFor(async () => !(await linkNames(ns)).includes('tunB0'), 5000);
  await ns.destroy();
});

test('write: well-formed packets up to the MTU are written; oversize ones dropped; closed throws', async () => {
  const ns = await createNetns('tun');
  const agent = await startAgent(ns);
  await agent.ok('open', { opts: { name: 'tunW0', mtu: 1432, addresses: ['10.72.0.1/24'] } });
  const udp = { src: '10.72.0.2', dst: '10.72.0.1' };
  const atMtu = await agent.ok('writeUdp', { ...udp, size: 1432 });
  assert.equal(atMtu.written, true);
  assert.equal((atMtu.stats as Record<string, number>).txPackets, 1);
  assert.equal((atMtu.stats as Record<string, number>).txBytes, 1432);
  const big = await agent.ok('writeUdp', { ...udp, size: 1433 });
  assert.equal(big.written, false);
  assert.equal((big.stats as Record<string, number>).txOversize, 1);
  assert.equal((big.stats as Record<string, number>).txPackets, 1);
  await agent.ok('close');
  const closed = await agent.call('writeUdp', { ...udp, size: 100 });
  assert.equal(closed.ok, false);
  assert.equal(closed.code, 'ETUN_CLOSED');
  await agent.exit();
  await ns.destroy();
});

test('write on a link that is down drops the packet (txErrors) instead of throwing', async () => {
  const ns = await createNetns('tun');
  const agent = await startAgent(ns);
  const opened = await agent.ok('open', { opts: { name: 'tunD0', up: false, addresses: ['10.75.0.1/24'] } });
  assert.equal(opened.created, true);
  assert.doesNotMatch((await ns.exec('ip', ['-o', 'link', 'show', 'tunD0'])).stdout, /[<,]UP[,>]/);
  const r = await agent.ok('writeUdp', { src: '10.75.0.2', dst: '10.75.0.1', size: 100 });
  assert.equal(r.written, false);
  assert.equal((r.stats as Record<string, number>).txErrors, 1);
  assert.equal((r.stats as Record<string, number>).txPackets, 0);
  await agent.exit();
  await ns.destroy();
});

test('attach to a pre-created device: works, and close leaves the device but removes our address', async () => {
  const ns = await createNetns('tun');
  await ns.exec('ip', ['tuntap', 'add', 'dev', 'tunP0', 'mode', 'tun']);
  await ns.exec('ip', ['addr', 'add', '10.73.5.1/24', 'dev', 'tunP0']);
  const agent = await startAgent(ns);
  const opened = await agent.ok('open', {
    opts: { name: 'tunP0', create: false, mtu: 1432, addresses: ['10.73.0.1/24', '10.73.5.1/24'] },
  });
  assert.equal(opened.created, false);
  await agent.ok('echo');
  const r = await ns.exec('ping', ['-c', '1', '-W', '2', '10.73.0.2'], { timeoutMs: 10_000 });
  assert.match(r.stdout, /1 received/);
  await agent.ok('close');
  assert.ok((await linkNames(ns)).includes('tunP0'), 'a pre-created device survives close');
  const addrs = await addrOf(ns, 'tunP0');
  assert.doesNotMatch(addrs, /10\.73\.0\.1/, 'the address we added is removed');
  assert.match(addrs, /10\.73\.5\.1\/24/, "the admin's address stays");
  // 'auto' attaches to the existing device too.
  const auto = await agent.ok('open', { opts: { name: 'tunP0', create: 'auto' } });
  assert.equal(auto.created, false);
  await agent.ok('close');
  assert.ok((await linkNames(ns)).includes('tunP0'));
  await agent.exit();
  await ns.destroy();
});

test('typed errors: create over an existing name, attach to a missing device, bad input', async () => {
  const ns = await createNetns('tun');
  await ns.exec('ip', ['tuntap', 'add', 'dev', 'tunE0', 'mode', 'tun']);
  await ns.exec('ip', ['tuntap', 'add', 'dev', 'tapE0', 'mode', 'tap']);
  const agent = await startAgent(ns);
  const exists = await agent.call('open', { opts: { name: 'tunE0' } });
  assert.equal(exists.ok, false);
  assert.equal(exists.code, 'ETUN_EXISTS');
  const missing = await agent.call('open', { opts: { name: 'tunE9', create: false } });
  assert.equal(missing.code, 'ETUN_MISSING');
  const tap = await agent.call('open', { opts: { name: 'tapE0', create: false } });
  assert.equal(tap.code, 'ETUN_TYPE');
  await agent.ok('open', { opts: { name: 'tunE2' } });
  const busy = await agent.call('open', { opts: { name: 'tunE2', create: false } });
  assert.equal(busy.code, 'ETUN_BUSY', 'a single-queue device has one reader');
  assert.equal((await agent.call('open', { opts: { name: 'way-too-long-name0' } })).code, 'EINPUT');
  assert.equal((await agent.call('open', { opts: { name: 'tunE1', mtu: 20 } })).code, 'EINPUT');
  assert.equal(
    (await agent.call('open', { opts: { name: 'tunE1', addresses: ['10.0.0.1'] } })).code,
    'EINPUT',
  );
  // A failed configuration step leaves nothing behind.
  assert.ok(!(await linkNames(ns)).includes('tunE1'));
  await agent.exit();
  await ns.destroy();
});

test('deleting the device under a reader reports ETUN_GONE', async () => {
  const ns = await createNetns('tun');
  const agent = await startAgent(ns);
  await agent.ok('open', { opts: { name: 'tunG0', addresses: ['10.74.0.1/24'] } });
  await agent.ok('collect');
  await ns.exec('ip', ['link', 'del', 'tunG0']);
  const ev = await agent.waitForEvent((e) => e.event === 'error', 5000);
  assert.equal(ev.code, 'ETUN_GONE');
  const w = await agent.call('writeUdp', { src: '10.74.0.2', dst: '10.74.0.1', size: 60 });
  assert.equal(w.code, 'ETUN_GONE');
  await agent.ok('close');
  await agent.exit();
  await ns.destroy();
});

test('open/close 200 times leaves no live handles and no devices', async () => {
  const ns = await createNetns('tun');
  const agent = await startAgent(ns);
  const r = await agent.ok('churn', { n: 200, prefix: 'tunC', read: true }, 60_000);
  assert.deepEqual(r.live, { fds: 0, polls: 0, objects: 0 });
  assert.deepEqual(r.remaining, []);
  assert.deepEqual(
    (await linkNames(ns)).filter((n) => n.startsWith('tunC')),
    [],
  );
  await agent.exit();
  await ns.destroy();
});

test('devices dropped without close() are released by the finalizer', async () => {
  const ns = await createNetns('tun');
  const agent = await startAgent(ns);
  const r = await agent.ok('churn', { n: 20, prefix: 'tunL', leak: true }, 30_000);
  assert.deepEqual(r.live, { fds: 0, polls: 0, objects: 0 });
  assert.deepEqual(r.remaining, []);
  // Read from, then paused: the stopped watcher must not keep the device alive either.
  const paused = await agent.ok('churn', { n: 20, prefix: 'tunQ', leak: true, read: true }, 30_000);
  assert.deepEqual(paused.live, { fds: 0, polls: 0, objects: 0 });
  assert.deepEqual(paused.remaining, []);
  await agent.exit();
  await ns.destroy();
});
