/**
 * Port shadowing end to end (SPEC §6) in network namespaces: `seng serve -s` in the
 * gateway namespace, `seng blocker` and simulated enclaves on host1 (10.50.0.2, the
 * enclave host), and the service namespace (10.99.0.2) as an outside client that reaches
 * the enclave host's IP through the gateway. See test/helpers/gateway-lab.ts.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { cleanupAll, createNetns, stop, waitFor, waitForLine, type Netns } from '../../helpers/netns.js';
import {
  appCert,
  buildLab,
  serve,
  sim,
  type AppCert,
  type Lab,
  type Served,
  type Sim,
} from '../../helpers/gateway-lab.js';
import { repoRoot, seng, sengBin, sengJson } from '../../helpers/cli.js';
import { encodeControlMessage, frame } from '../../../src/shadow/protocol.js';

const APP = 'd4'.repeat(32);
const HOST_IP = '10.50.0.2';
const CONTROL = '192.168.28.1';
const scripts = join(repoRoot, 'dist', 'test', 'helpers', 'scripts');
const probe = join(repoRoot, 'dist', 'test', 'integration', 'shadow', 'probe.js');
const DENIED = '020000000800';

let lab: Lab;
let gw: Served;
let cert: AppCert;
let blocker: { child: ChildProcess; log: string[] } | undefined;
const apps: Netns[] = [];

const request = (port: number) =>
  frame(encodeControlMessage({ kind: 'request', handle: 600, port, proto: 6 })).toString('hex');

async function startBlocker(): Promise<void> {
  const child = lab.host1.spawn(process.execPath, [
    sengBin,
    'blocker',
    '--log-format',
    'json',
    '--gateway',
    '10.50.0.1',
  ]);
  const log: string[] = [];
  child.stderr?.on('data', (d: Buffer) => log.push(...d.toString().split('\n').filter(Boolean)));
  await waitForLine(child, /"event":"listening"/, 20_000);
  blocker = { child, log };
}

/** Elements of the gateway's shadow map, as "host . port : enclave". */
async function shadowMap(): Promise<string[]> {
  const r = await lab.gw.exec('nft', ['-j', 'list', 'map', 'ip', 'seng_shadow', 'tcp_dnat']);
  const doc = JSON.parse(r.stdout) as {
    nftables: { map?: { elem?: [{ concat: [string, number] }, string][] } }[];
  };
  const map = doc.nftables.find((x) => x.map)?.map;
  return (map?.elem ?? []).map(([k, v]) => `${k.concat[0]} . ${k.concat[1]} : ${v}`);
}

/** Conntrack entries in the gateway namespace whose reply source is `ip` (DNATed flows). */
async function shadowFlows(ip: string): Promise<number> {
  const r = await lab.gw.exec('conntrack', ['-L', '--reply-src', ip], { check: false });
  return r.stdout.split('\n').filter((l) => l.includes(`src=${ip}`)).length;
}

/** Tries to bind a TCP port on host1: 'bound' or the error code. */
async function bindOnHost(port: number): Promise<string> {
  const r = await lab.host1.exec(process.execPath, [
    '-e',
    `require('net').createServer().once('error',(e)=>{console.log(e.code);process.exit(0)}).listen(${port},()=>{console.log('bound');process.exit(0)})`,
  ]);
  return r.stdout.trim();
}

async function roundtrip(ns: Netns, port: number): Promise<void> {
  const r = await ns.exec(
    process.execPath,
    [join(scripts, 'tcp-roundtrip.js'), HOST_IP, String(port), '65536', '10000'],
    {
      timeoutMs: 20_000,
    },
  );
  const out = JSON.parse(r.stdout) as { sent: string; received: string; bytes: number };
  assert.equal(out.bytes, 65536);
  assert.equal(out.received, out.sent, 'echoed content differs');
}

/** A simulated enclave on host1 with its TUN in `app`, shadowing `ports`; waits for every shadow event. */
async function shadowedSim(
  app: Netns,
  ports: number[],
): Promise<{ s: Sim; events: { port: number; granted: boolean; reason?: string }[] }> {
  const s = await sim(lab, lab.host1, cert, {
    app,
    extra: ['--route', '10.50.0.1/32', ...ports.flatMap((p) => ['--shadow', String(p)])],
  });
  assert.ok(s.ready, `sim failed: ${s.stderr()}`);
  const events: { port: number; granted: boolean; reason?: string }[] = [];
  let buf = '';
  s.child.stdout?.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.includes('"event":"shadow"')) events.push(JSON.parse(line) as (typeof events)[number]);
    }
  });
  await waitFor(() => events.length === ports.length, 20_000, { message: `no shadow events: ${s.stderr()}` });
  return { s, events };
}

before(async () => {
  lab = await buildLab('shd');
  const db = join(lab.dir, 'policy.db');
  const run = (args: string[]) => {
    const r = seng(args);
    assert.equal(r.code, 0, r.stderr);
  };
  run(['db', 'init', '-d', db, '--schema', 'vanilla']);
  run(['db', 'subnet', 'add', '-d', db, '192.168.28.0/24', '--gateway', CONTROL]);
  run([
    'db',
    'app',
    'add',
    '-d',
    db,
    'web',
    '--mrenclave',
    APP,
    '--mrsigner',
    'ab'.repeat(32),
    '--host-subnet',
    '10.50.0.0/24',
    '--enclave-subnet',
    '192.168.28.0/24',
  ]);
  cert = appCert(lab, APP);
  for (let i = 0; i < 3; i++) apps.push(await createNetns(`shdapp${i}`));
  // The outside interface: the gateway's veth towards the service namespace (10.99.0.1).
  const addrs = await lab.gw.ip('-o', '-4', 'addr', 'show');
  const outside = /^\d+: ([^\s@]+)\s+inet 10\.99\.0\.1\//m.exec(addrs.stdout)?.[1];
  assert.ok(outside, addrs.stdout);
  await startBlocker();
  // A shadow left by an earlier run: the start must drop it (the first test sees only its own).
  await lab.gw.exec('nft', ['add', 'table', 'ip', 'seng_shadow']);
  await lab.gw.exec('nft', [
    'add',
    'map',
    'ip',
    'seng_shadow',
    'tcp_dnat',
    '{ type ipv4_addr . inet_service : ipv4_addr; }',
  ]);
  await lab.gw.exec('nft', [
    'add',
    'element',
    'ip',
    'seng_shadow',
    'tcp_dnat',
    '{ 10.50.0.2 . 80 : 192.168.28.77 }',
  ]);
  assert.equal((await shadowMap()).length, 1);
  gw = await serve(lab, ['-d', db, '-s', '--shadow-interface', outside, '--setup-timeout', '3']);
  await waitFor(() => gw.log.find((l) => l.includes('"event":"shadow-listening"')), 5000);
  assert.deepEqual(await shadowMap(), [], 'stale shadows must be flushed at start');
});

after(async () => {
  if (process.env.SENG_TEST_DEBUG)
    process.stderr.write(`${gw?.log.join('\n')}\n${blocker?.log.join('\n')}\n`);
  await gw?.stop();
  await cleanupAll();
  lab?.cleanup();
});

test('a granted shadow makes <host IP>:X reach the enclave from outside and from the gateway host; close removes it', async () => {
  const { s, events } = await shadowedSim(apps[0]!, [4711]);
  assert.deepEqual(events, [{ event: 'shadow', port: 4711, granted: true }]);
  assert.deepEqual(await shadowMap(), [`${HOST_IP} . 4711 : ${s.ready!.ip}`]);
  await roundtrip(lab.svc, 4711); // outside client → gateway prerouting DNAT
  await roundtrip(lab.gw, 4711); // the gateway host itself → output DNAT
  // The blocker holds the port on the enclave host.
  assert.equal(await bindOnHost(4711), 'EADDRINUSE');
  const st = sengJson<{ shadows: { port: number; state: string; enclaveIp: string }[] }>([
    'status',
    '--control',
    lab.control,
  ]).json;
  assert.deepEqual(
    st.shadows.map((x) => [x.port, x.state, x.enclaveIp]),
    [[4711, 'active', s.ready!.ip]],
  );
  // The DNATed flows are tracked with the enclave IP as reply source only.
  assert.ok((await shadowFlows(s.ready!.ip)) > 0, 'expected conntrack entries of the shadowed flows');
  // SIGTERM: the simulated runtime closes its listener first (close notify), then the tunnel.
  await stop(s.child, 8000);
  const removed = await waitFor(
    () => gw.log.find((l) => l.includes('"event":"shadow-removed"') && l.includes('"port":4711')),
    5000,
    { message: 'no shadow-removed log' },
  );
  assert.match(removed, /"reason":"close notify"/);
  assert.deepEqual(await shadowMap(), []);
  assert.equal(await shadowFlows(s.ready!.ip), 0, 'conntrack entries of the shadowed flows survived');
  await waitFor(async () => (await bindOnHost(4711)) === 'bound', 5000, { message: 'blocker kept 4711' });
  assert.ok(
    blocker!.log.some((l) => l.includes('"event":"released"') && l.includes('"reply":"NOW_UNLBOCKED"')),
  );
  // The port can be shadowed again.
  const again = await shadowedSim(apps[0]!, [4711]);
  assert.equal(again.events[0]?.granted, true);
  await stop(again.s.child, 8000);
  await waitFor(async () => (await shadowMap()).length === 0, 5000);
});

test('a port in use on the host is DENIED and nothing is installed', async () => {
  const squatter = lab.host1.spawn(process.execPath, [
    '-e',
    "require('net').createServer().listen(4712,()=>console.log('up'))",
  ]);
  await waitForLine(squatter, /up/);
  const { s, events } = await shadowedSim(apps[0]!, [4712]);
  assert.equal(events[0]?.granted, false);
  assert.equal(events[0]?.reason, 'DENIED');
  assert.deepEqual(await shadowMap(), []);
  assert.ok(gw.log.some((l) => l.includes('"event":"shadow-denied"') && l.includes('IN_USE')));
  await stop(s.child, 8000);
  await stop(squatter);
});

test('an enclave disconnect removes its rules before its session (and IP) is released', async () => {
  const { s, events } = await shadowedSim(apps[1]!, [4713]);
  assert.equal(events[0]?.granted, true);
  const ip = s.ready!.ip;
  assert.deepEqual(await shadowMap(), [`${HOST_IP} . 4713 : ${ip}`]);
  const r = seng(['kick', '--control', lab.control, ip]);
  assert.equal(r.code, 0, r.stderr);
  const ended = await waitFor(
    () => gw.log.findIndex((l) => l.includes('"event":"session-end"') && l.includes(`"${ip}"`)) + 1,
    8000,
  );
  const removed = gw.log.findIndex(
    (l) =>
      l.includes('"event":"shadow-removed"') &&
      l.includes('"port":4713') &&
      l.includes('enclave disconnected'),
  );
  assert.ok(removed >= 0, 'no shadow-removed log for the disconnect');
  assert.ok(removed < ended - 1, 'the rules must be gone before the session end releases the IP');
  assert.deepEqual(await shadowMap(), []);
  await waitFor(async () => (await bindOnHost(4713)) === 'bound', 5000, { message: 'blocker kept 4713' });
  await s.exit;
});

test('a non-enclave source is refused without an answer', async () => {
  for (const ns of [lab.svc, lab.gw]) {
    const r = await ns.exec(process.execPath, [probe, CONTROL, '2409', '-', request(4720), '5000']);
    const out = JSON.parse(r.stdout) as { received: string; closedByPeer: boolean };
    assert.deepEqual(out, { received: '', closedByPeer: true });
  }
  assert.ok(gw.log.some((l) => l.includes('"event":"shadow-refused"')));
  assert.deepEqual(await shadowMap(), []);
});

test('garbage, oversize and silent requests from an enclave get DENIED within the deadline', async () => {
  const s = await sim(lab, lab.host1, cert, { app: apps[2] });
  assert.ok(s.ready, s.stderr());
  const ip = s.ready.ip;
  const cases: [string, string][] = [
    ['garbage body', `0b000000${'ff'.repeat(11)}`],
    ['oversize prefix', `81000000${'00'.repeat(8)}`],
    ['empty prefix', '00000000'],
    [
      'port 0',
      frame(encodeControlMessage({ kind: 'request', handle: 1, port: 0, proto: 6 })).toString('hex'),
    ],
    ['nothing at all', ''],
  ];
  for (const [what, payload] of cases) {
    const r = await apps[2]!.exec(process.execPath, [probe, CONTROL, '2409', ip, payload, '8000']);
    const out = JSON.parse(r.stdout) as { received: string; closedByPeer: boolean };
    assert.deepEqual(out, { received: DENIED, closedByPeer: true }, what);
  }
  assert.deepEqual(await shadowMap(), []);
  await stop(s.child, 8000);
});

test('a blocker that never answers: DENIED within the deadline, nothing installed', async () => {
  await stop(blocker!.child, 5000);
  const silent = lab.host1.spawn(process.execPath, [
    '-e',
    "require('net').createServer((s)=>s.on('error',()=>{})).listen(2834,()=>console.log('up'))",
  ]);
  await waitForLine(silent, /up/);
  const { s, events } = await shadowedSim(apps[0]!, [4714]);
  assert.equal(events[0]?.granted, false);
  assert.deepEqual(await shadowMap(), []);
  assert.ok(gw.log.some((l) => l.includes('"event":"shadow-denied"') && l.includes('no TLS handshake')));
  await stop(s.child, 8000);
  await stop(silent);
});

test('shutdown removes every shadow, the table, and the reservations', async () => {
  await stop(blocker!.child, 5000).catch(() => undefined);
  await startBlocker();
  const { s, events } = await shadowedSim(apps[1]!, [4715]);
  assert.equal(events[0]?.granted, true);
  assert.equal(await bindOnHost(4715), 'EADDRINUSE');
  await gw.stop();
  const r = await lab.gw.exec('nft', ['list', 'table', 'ip', 'seng_shadow'], { check: false });
  assert.notEqual(r.code, 0, 'the shadow table survived the shutdown');
  assert.equal(await bindOnHost(4715), 'bound');
  await s.exit;
});
