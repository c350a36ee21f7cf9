/**
 * TUN offloads, multi-queue and attaching to existing devices, against the real kernel.
 *
 * Offload: two TUN devices with `offload: true`; the agent (in namespace 1) forwards packets
 * between them the way the gateway forwards between its TUN device and the tunnels. tunB is moved
 * into namespace 2, where a TCP sink listens, so a TCP stream from namespace 1 crosses
 *   kernel 1 --TSO super-packets--> tunA --segmented, checked--> JS --coalesced GSO writes-->
 *   tunB --> kernel 2 (the sink), and the ACKs back the same way.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  NodeAgent,
  cleanupAll,
  createNetns,
  run,
  spawnIn,
  waitFor,
  waitForLine,
} from '../../helpers/netns.js';

after(cleanupAll);

const here = dirname(fileURLToPath(import.meta.url));
const agentScript = join(here, 'fixtures', 'offload-agent.js');
const sinkScript = join(here, 'fixtures', 'tcp-sink.js');

interface Seen {
  packets: number;
  maxLen: number;
  exactMtu: number;
  badHeader: number;
  badChecksum: number;
  seqGaps: number;
  seqRepeats: number;
  dataBytes: number;
}

test('offload: TSO super-packets are segmented into valid MTU packets; coalesced GSO writes deliver the stream intact', async () => {
  const ns1 = await createNetns('tofl');
  const ns2 = await createNetns('tofl');
  const agent = await NodeAgent.start(ns1, agentScript);
  const a = await agent.ok('open', {
    opts: { name: 'tunA', mtu: 1432, offload: true, addresses: ['10.77.1.1/24'] },
  });
  assert.equal(a.offload, true);
  await agent.ok('open', { opts: { name: 'tunB', mtu: 1432, offload: true, up: false } });
  // The fd keeps working when the device moves to another namespace.
  await run('ip', ['-n', ns1.name, 'link', 'set', 'tunB', 'netns', ns2.name]);
  await ns2.exec('sysctl', ['-qw', 'net.ipv6.conf.tunB.disable_ipv6=1'], { check: false });
  await ns2.ip('link', 'set', 'tunB', 'mtu', '1432', 'up');
  await ns2.ip('addr', 'add', '10.77.2.1/24', 'dev', 'tunB');
  await ns1.ip('route', 'add', '10.77.2.0/24', 'dev', 'tunA');
  await ns2.ip('route', 'add', '10.77.1.0/24', 'dev', 'tunB');

  const sink = spawnIn(ns2, sinkScript, ['10.77.2.1', '5201']);
  const lines: string[] = [];
  sink.stdout?.on('data', (d: Buffer) =>
    lines.push(
      ...d
        .toString()
        .split('\n')
        .filter((l) => l.includes('sha256')),
    ),
  );
  await waitForLine(sink, /listening/);
  await agent.ok('forward', { a: 'tunA', b: 'tunB' });

  const bulk = await agent.ok('tcpSend', { host: '10.77.2.1', port: 5201, total: 16 * 1024 * 1024 }, 60_000);
  const mixed = await agent.ok(
    'tcpSend',
    { host: '10.77.2.1', port: 5201, total: 1024 * 1024, mixed: true },
    60_000,
  );
  await waitFor(() => lines.length >= 2, 10_000);
  const got = lines.map((l) => JSON.parse(l) as { bytes: number; sha256: string });
  assert.deepEqual(got, [
    { bytes: 16 * 1024 * 1024, sha256: bulk.sha256 },
    { bytes: 1024 * 1024, sha256: mixed.sha256 },
  ]);

  const r = await agent.ok('seen');
  if (process.env.SENG_TEST_VERBOSE) console.log(JSON.stringify(r));
  const ab = r.ab as Seen;
  const ba = r.ba as Seen;
  const stats = r.stats as Record<string, Record<string, number>>;
  assert.equal(ab.badHeader, 0, 'every segment has a valid IPv4 header and checksum');
  assert.equal(ab.badChecksum, 0, 'every segment has a valid TCP checksum');
  assert.equal(ab.seqGaps, 0, 'sequence numbers are continuous');
  assert.ok(ab.maxLen <= 1432, `largest packet ${ab.maxLen} bytes`);
  assert.ok(ab.exactMtu > 0, 'full segments are exactly MTU-sized');
  assert.ok(ab.dataBytes >= 17 * 1024 * 1024);
  assert.equal(ba.badHeader + ba.badChecksum, 0, 'the ACK direction is valid too');
  assert.ok((stats.tunA?.rxGso ?? 0) > 0, 'the kernel handed over TSO super-packets');
  assert.equal(stats.tunA?.rxDropped, 0);
  assert.ok((stats.tunB?.txGso ?? 0) > 0, 'coalesced GSO frames were written');
  assert.equal(stats.tunB?.txErrors, 0, 'the kernel accepted every frame');
  await agent.exit();
});

test('offload: UDP datagrams of one flow written as USO frames reach a socket as the same datagrams', async () => {
  const ns = await createNetns('tuso');
  const agent = await NodeAgent.start(ns, agentScript);
  await agent.ok('open', {
    opts: { name: 'tunU', mtu: 1432, offload: true, addresses: ['10.77.5.1/24'] },
  });
  // Runs of one size with a shorter last one, a size change, tiny datagrams, one at the MTU.
  const sizes = [1000, 1000, 1000, 1000, 1000, 600, 1000, 1000, 1200, 1200, 64, 1, 1, 1404];
  const r = (await agent.ok('udpWriteBatch', {
    name: 'tunU',
    src: '10.77.5.2',
    dst: '10.77.5.1',
    port: 5301,
    sizes,
  })) as { written: number; same: boolean; lengths: number[]; txGso: number; txPackets: number };
  assert.equal(r.written, sizes.length);
  assert.deepEqual(r.lengths, sizes, 'every datagram, once, in order, with its own size');
  assert.equal(r.same, true, 'the same payloads');
  // Frames: 5×1000+600, 2×1000 (then 1200 is longer), 2×1200+64, 1+1, 1404 alone: 4 USO frames.
  assert.equal(r.txGso, 4);
  assert.equal(r.txPackets, sizes.length);
  await agent.exit();
});

test('offload: a local sender’s UDP_SEGMENT runs reach the device as USO super-packets and leave it as their datagrams', async () => {
  const ns = await createNetns('tuso');
  const agent = await NodeAgent.start(ns, agentScript);
  await agent.ok('open', {
    opts: { name: 'tunG', mtu: 1432, offload: true, addresses: ['10.77.6.1/24'] },
  });
  // 40 sends of 20 datagrams of 1,000 bytes, then 10 of 44 datagrams of 1,404 (exactly the MTU).
  for (const [size, perSend, sends] of [
    [1000, 20, 40],
    [1404, 44, 10],
  ] as const) {
    const r = (await agent.ok('udpGsoCapture', {
      name: 'tunG',
      dst: '10.77.6.2',
      port: 5401,
      size,
      perSend,
      sends,
    })) as {
      sentSha256: string;
      packets: number;
      lengths: number[];
      maxLen: number;
      valid: boolean;
      sha256: string;
      rxGso: number;
      rxDropped: number;
      uso: boolean;
    };
    if (process.env.SENG_TEST_VERBOSE) console.log(JSON.stringify(r));
    assert.equal(r.uso, true, 'the kernel (>= 6.2) took TUN_F_USO4');
    assert.ok(r.rxGso > 0, 'the kernel handed over UDP super-packets');
    assert.equal(r.rxDropped, 0);
    assert.equal(r.packets, perSend * sends, 'every datagram, once');
    assert.deepEqual(r.lengths, [size + 28], 'each datagram has its own size');
    assert.ok(r.maxLen <= 1432);
    assert.equal(r.valid, true, 'valid IPv4 headers and UDP checksums');
    assert.equal(r.sha256, r.sentSha256, 'the same bytes in the same order');
  }
  await agent.exit();
});

test('multi-queue: N fds on one device; packets of different flows arrive on several queues', async () => {
  const ns = await createNetns('tmq');
  const agent = await NodeAgent.start(ns, agentScript);
  const opened = await agent.ok('open', {
    opts: { name: 'tunQ', queues: 4, offload: true, addresses: ['10.78.0.1/24'] },
  });
  const fds = opened.fds as number[];
  assert.equal(opened.queues, 4);
  assert.equal(fds.length, 4);
  assert.equal(new Set(fds).size, 4);
  for (const fd of fds) assert.ok(fd >= 0);
  assert.match((await ns.exec('ip', ['-d', 'link', 'show', 'tunQ'])).stdout, /multi_queue/);
  await agent.ok('countQueues', { name: 'tunQ' });
  await agent.ok('udpFlows', { flows: 64, dst: '10.78.0.2' });
  const counts = await waitFor(async () => {
    const c = (await agent.ok('queueCounts', { name: 'tunQ' })).counts as number[];
    return c.reduce((x, y) => x + y, 0) >= 64 ? c : undefined;
  }, 5000);
  assert.ok(counts.filter((n) => n > 0).length >= 2, `flows spread over queues: ${counts.join(',')}`);
  await agent.ok('close', { name: 'tunQ' });
  assert.doesNotMatch((await ns.exec('ip', ['link'])).stdout, /tunQ/);
  await agent.exit();
});

test('attach to an existing device: a TUN device is used; TAP, other links and a queue-mode mismatch are refused with a hint', async () => {
  const ns = await createNetns('tatt');
  await ns.exec('ip', ['tuntap', 'add', 'dev', 'tunP', 'mode', 'tun']);
  await ns.exec('ip', ['tuntap', 'add', 'dev', 'tapP', 'mode', 'tap']);
  await ns.exec('ip', ['tuntap', 'add', 'dev', 'tunM', 'mode', 'tun', 'multi_queue']);
  await ns.ip('link', 'add', 'dumP', 'type', 'veth', 'peer', 'name', 'dumQ');
  const agent = await NodeAgent.start(ns, agentScript);
  const open = async (opts: Record<string, unknown>): Promise<Record<string, unknown>> => {
    const { id: _id, ok: _ok, ...rest } = await agent.ok('openError', { opts });
    return rest;
  };

  assert.deepEqual(await open({ name: 'tunP', create: 'auto', addresses: ['10.79.0.1/24'] }), {
    opened: true,
    created: false,
    queues: 1,
  });
  const tap = await open({ name: 'tapP', create: 'auto' });
  assert.equal(tap.code, 'ETUN_TYPE');
  assert.match(String(tap.message), /TAP/);
  const veth = await open({ name: 'dumP', create: 'auto' });
  assert.equal(veth.code, 'ETUN_TYPE');
  assert.match(String(veth.message), /not a TUN device/);
  assert.match(String(veth.hint), /ip link del dumP/);
  const attachVeth = await open({ name: 'dumP', create: false });
  assert.equal(attachVeth.code, 'ETUN_TYPE');
  const single = await open({ name: 'tunM', create: 'auto' });
  assert.equal(single.code, 'ETUN_TYPE');
  assert.match(String(single.message), /multi-queue/);
  assert.deepEqual(await open({ name: 'tunM', create: 'auto', queues: 2 }), {
    opened: true,
    created: false,
    queues: 2,
  });
  // Creating over an existing name names the flag that exists (issue #17: there is no --attach).
  const exists = await open({ name: 'dumP', create: true });
  assert.equal(exists.code, 'ETUN_EXISTS');
  assert.match(String(exists.hint), /--tun-existing/);
  assert.doesNotMatch(String(exists.hint), /--attach/);
  await agent.exit();
  // Attached devices survive our close.
  assert.match((await ns.exec('ip', ['link'])).stdout, /tunP[\s\S]*tunM/);
});
