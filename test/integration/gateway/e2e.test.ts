/**
 * The gateway end to end, in network namespaces with the real kernel: seng serve with a
 * vanilla database, tunFA, DTLS, simulated enclaves whose TUN devices carry ping and TCP
 * through the gateway to a service behind it. See test/helpers/gateway-lab.ts for the topology.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { cleanupAll, createNetns, stop, waitFor, waitForLine, type Netns } from '../../helpers/netns.js';
import {
  appCert,
  buildLab,
  serve,
  sim,
  GW_HOST1,
  SERVICE,
  type AppCert,
  type Lab,
  type Served,
} from '../../helpers/gateway-lab.js';
import { repoRoot, seng, sengJson } from '../../helpers/cli.js';

const APP_A = 'a1'.repeat(32); // allowed from 10.50.0.0/15 (both hosts)
const APP_B = 'b2'.repeat(32); // allowed only from host1's 10.50.0.0/24
const APP_X = 'cc'.repeat(32); // not in the allowlist
const scripts = join(repoRoot, 'dist', 'test', 'helpers', 'scripts');

let lab: Lab;
let gw: Served;
let certA: AppCert;
let certA2: AppCert;
let certB: AppCert;
let certX: AppCert;
const apps: Netns[] = [];

interface StatusJson {
  subnets: { subnet: string; inUse: number; free: number }[];
  sessions: { enclaveIp: string; state: string; app: string | null; packetsIn: number; packetsOut: number }[];
}
const status = () => sengJson<StatusJson>(['status', '--control', lab.control]).json;

before(async () => {
  lab = await buildLab('gwe');
  const db = join(lab.dir, 'policy.db');
  const run = (args: string[]) => {
    const r = seng(args);
    assert.equal(r.code, 0, r.stderr);
  };
  run(['db', 'init', '-d', db, '--schema', 'vanilla']);
  run(['db', 'subnet', 'add', '-d', db, '192.168.28.0/24', '--gateway', '192.168.28.1']);
  run(['db', 'subnet', 'add', '-d', db, '172.16.28.0/26', '--gateway', '172.16.28.1']);
  const add = (name: string, mr: string, host: string, enc: string) =>
    run([
      'db',
      'app',
      'add',
      '-d',
      db,
      name,
      '--mrenclave',
      mr,
      '--mrsigner',
      'ab'.repeat(32),
      '--host-subnet',
      host,
      '--enclave-subnet',
      enc,
    ]);
  add('app-a', APP_A, '10.50.0.0/15', '192.168.28.0/24');
  add('app-b', APP_B, '10.50.0.0/24', '172.16.28.0/26');
  certA = appCert(lab, APP_A, { kind: 'epid', keyType: 'rsa3072' });
  certA2 = appCert(lab, APP_A, { kind: 'dcap', keyType: 'p256' });
  certB = appCert(lab, APP_B, { kind: 'dcap', keyType: 'p256' });
  certX = appCert(lab, APP_X);
  for (let i = 0; i < 3; i++) apps.push(await createNetns(`gwapp${i}`));
  // The gateway listens on host1's side; host2 reaches it through the gateway namespace's routing.
  await lab.host2.ip('route', 'add', `${GW_HOST1}/32`, 'via', '10.51.0.1');
  // A setup deadline short enough for the half-open tests below, long enough that a client
  // stalled for a moment on a busy machine (the 200 cycles) still completes its setup.
  gw = await serve(lab, ['-d', db, '--idle-timeout', '10', '--setup-timeout', '5']);
  const echo = lab.svc.spawn(process.execPath, [join(scripts, 'echo-server.js'), '7000']);
  await waitForLine(echo, /listening/);
});

after(async () => {
  if (process.env.SENG_TEST_DEBUG) process.stderr.write(`${gw?.log.join('\n')}\n`);
  await gw?.stop();
  await cleanupAll();
  lab?.cleanup();
});

async function tcpRoundtrip(ns: Netns, bytes: number): Promise<void> {
  const r = await ns.exec(
    process.execPath,
    [join(scripts, 'tcp-roundtrip.js'), SERVICE, '7000', String(bytes)],
    { timeoutMs: 30_000 },
  );
  const out = JSON.parse(r.stdout) as { sent: string; received: string; bytes: number };
  assert.equal(out.bytes, bytes);
  assert.equal(out.received, out.sent, 'echoed content differs');
}

test('an enclave pings the gateway and moves TCP data both ways, content checked', async () => {
  const s = await sim(lab, lab.host1, certA, { app: apps[0] });
  assert.ok(s.ready, `sim failed: ${s.stderr()}`);
  assert.match(s.ready.ip, /^192\.168\.28\.\d+$/);
  assert.equal(s.ready.gateway, '192.168.28.1');
  await apps[0]!.exec('ping', ['-c', '3', '-i', '0.2', '-W', '2', '192.168.28.1']);
  await tcpRoundtrip(apps[0]!, 1 << 20);
  const st = status();
  const me = st.sessions.find((x) => x.enclaveIp === s.ready?.ip);
  assert.equal(me?.app, 'app-a');
  assert.ok((me?.packetsIn ?? 0) > 100 && (me?.packetsOut ?? 0) > 100);
  assert.ok(gw.log.some((l) => l.includes('"event":"admitted"') && l.includes(s.ready!.ip)));
  await stop(s.child);
  await waitFor(() => status().sessions.length === 0, 5000);
  assert.ok(
    gw.log.some(
      (l) => l.includes('"event":"session-end"') && l.includes(s.ready!.ip) && l.includes('"packetsIn"'),
    ),
  );
});

test('with TUN offload, TCP bulk both ways is intact; TSO frames are split and GSO frames written', async () => {
  // seng serve opens tunFA with offload (IFF_VNET_HDR, TSO) when the native path is on.
  const s = await sim(lab, lab.host1, certA, { app: apps[0] });
  assert.ok(s.ready, `sim failed: ${s.stderr()}`);
  const echo = apps[0]!.spawn(process.execPath, [join(scripts, 'echo-server.js'), '7001']);
  try {
    await waitForLine(echo, /listening/);
    // From the gateway's own namespace: the kernel hands tunFA TCP super-packets (TSO) to the
    // enclave; the enclave's echo comes back as MSS-sized segments that the gateway coalesces.
    const r = await lab.gw.exec(
      process.execPath,
      [join(scripts, 'tcp-roundtrip.js'), s.ready.ip, '7001', String(4 << 20)],
      { timeoutMs: 60_000 },
    );
    const out = JSON.parse(r.stdout) as { sent: string; received: string; bytes: number };
    assert.equal(out.bytes, 4 << 20);
    assert.equal(out.received, out.sent, 'echoed content differs');
    // Forwarded traffic (enclave → service behind the gateway and back) on the same device.
    await tcpRoundtrip(apps[0]!, 2 << 20);
    const off = sengJson<{ stats: { offload?: Record<string, number> } }>([
      'status',
      '--control',
      lab.control,
    ]).json.stats.offload;
    assert.ok(off, 'the gateway reports offload counters');
    assert.ok((off.tsoFramesRead ?? 0) > 0, `no TSO super-packet read: ${JSON.stringify(off)}`);
    assert.ok((off.tsoSegments ?? 0) > (off.tsoFramesRead ?? 0), JSON.stringify(off));
    assert.ok((off.gsoFramesWritten ?? 0) > 0, `no GSO frame written: ${JSON.stringify(off)}`);
    assert.ok((off.packetsWritten ?? 0) > (off.framesWritten ?? 0), JSON.stringify(off));
  } finally {
    await stop(echo);
    await stop(s.child);
  }
  await waitFor(() => status().sessions.length === 0, 5000);
});

test('two enclaves on one host and one on another are served at the same time', async () => {
  const a = await sim(lab, lab.host1, certA, { app: apps[0] });
  const b = await sim(lab, lab.host1, certB, { app: apps[1] });
  const c = await sim(lab, lab.host2, certA2, { app: apps[2], gateway: GW_HOST1 });
  for (const s of [a, b, c]) assert.ok(s.ready, `sim failed: ${s.stderr()}`);
  assert.match(b.ready!.ip, /^172\.16\.28\.\d+$/, 'app-b gets its own enclave subnet');
  assert.notEqual(a.ready!.ip, c.ready!.ip);
  await Promise.all([0, 1, 2].map((i) => tcpRoundtrip(apps[i]!, 256 * 1024)));
  await apps[1]!.exec('ping', ['-c', '2', '-i', '0.2', '-W', '2', '172.16.28.1']);
  assert.equal(status().sessions.filter((x) => x.state === 'active').length, 3);
  await Promise.all([a, b, c].map((s) => stop(s.child)));
  await waitFor(() => status().sessions.length === 0, 5000);
});

test('an app outside the allowlist, and an app from a host outside its host subnet, get no IP', async () => {
  const x = await sim(lab, lab.host1, certX);
  assert.equal(x.ready, undefined);
  assert.notEqual(await x.exit, 0);
  await waitFor(() => gw.log.find((l) => l.includes('"check":"allowlist"')), 5000);
  const b = await sim(lab, lab.host2, certB, { gateway: GW_HOST1 });
  assert.equal(b.ready, undefined);
  assert.notEqual(await b.exit, 0);
  const line = await waitFor(() => gw.log.find((l) => l.includes('"check":"host-subnet"')), 5000);
  assert.match(line, /may not connect from host 10\.51\.0\.2/);
  assert.equal(status().sessions.length, 0);
});

test('spoofed sources are dropped and logged', async () => {
  const s = await sim(lab, lab.host1, certA, { app: apps[0], extra: ['--spoof-source', '192.168.28.250'] });
  assert.ok(s.ready, s.stderr());
  const r = await apps[0]!.exec('ping', ['-c', '2', '-i', '0.2', '-W', '1', '192.168.28.1'], {
    check: false,
  });
  assert.notEqual(r.code, 0, 'spoofed pings must not be answered');
  const line = await waitFor(() => gw.log.find((l) => l.includes('"event":"spoofed"')), 5000);
  assert.match(line, /"source":"192\.168\.28\.250"/);
  const me = status().sessions.find((x) => x.enclaveIp === s.ready?.ip);
  assert.equal(me?.packetsIn, 0);
  await stop(s.child);
  await waitFor(() => status().sessions.length === 0, 5000);
});

test('the second session is refused from another client IP or with another quote', async () => {
  const other = await sim(lab, lab.host1, certA, { extra: ['--second-local-address', '10.50.0.3'] });
  assert.equal(other.ready, undefined);
  await waitFor(() => gw.log.find((l) => l.includes('came from another IP')), 5000);
  const swapped = await sim(lab, lab.host1, certA, {
    extra: ['--second-cert', certA2.cert, '--second-key', certA2.key],
  });
  assert.equal(swapped.ready, undefined);
  await waitFor(
    () => gw.log.find((l) => l.includes('no receive tunnel awaits a send tunnel with this quote')),
    5000,
  );
  // Both half-open enclaves are reclaimed by the setup deadline.
  await waitFor(() => status().sessions.length === 0, 12_000);
  assert.equal(status().subnets[0]?.inUse, 0);
});

test('a client that never acknowledges its IP is dropped after the bounded resends', async () => {
  const s = await sim(lab, lab.host1, certA, { extra: ['--skip-ack'] });
  assert.equal(s.ready, undefined);
  await waitFor(() => gw.log.find((l) => l.includes('no IpAssignACK after')), 15_000);
  await waitFor(() => status().sessions.length === 0, 5000);
});

test('200 connect/disconnect cycles leave no session, IP, socket or TUN behind', async () => {
  const pid = gw.child.pid as number; // `ip netns exec` execs node in place
  // What each descriptor is (socket:[inode], anon_inode:[eventfd], a path), for the message.
  const fdTargets = () =>
    readdirSync(`/proc/${pid}/fd`).map((fd) => {
      try {
        return `${fd}→${readlinkSync(`/proc/${pid}/fd/${fd}`)}`;
      } catch {
        return `${fd}→(closed while listed)`;
      }
    });
  const fdsBefore = fdTargets();
  const links = async () => (await lab.gw.ip('-o', 'link')).stdout.split('\n').filter(Boolean).length;
  const linksBefore = await links();
  const logFrom = gw.log.length;
  const cycles = Number(process.env.SENG_TEST_CYCLES ?? 200);
  const r = await lab.host1.exec(
    process.execPath,
    [
      join(scripts, 'connect-cycles.js'),
      GW_HOST1,
      '12345',
      certA.cert,
      certA.key,
      lab.gwCert,
      String(cycles),
    ],
    { timeoutMs: 240_000 + cycles * 1000 },
  );
  const out = JSON.parse(r.stdout) as { ok: number; failed: number; ips: string[] };
  // On a failed cycle, the client's errors and what the gateway said of setups meanwhile.
  const gatewaySaid = gw.log
    .slice(logFrom)
    .filter((l) => /"level":[456]0/.test(l)) // warnings and errors: rejections, failed setups
    .slice(-20)
    .join('\n');
  assert.equal(out.failed, 0, `${r.stderr}\ngateway:\n${gatewaySaid}`);
  assert.equal(out.ok, cycles);
  assert.ok(out.ips.length > 100, 'next-fit hands out fresh addresses');
  await waitFor(() => status().sessions.length === 0, 10_000);
  const st = status();
  assert.equal(st.subnets[0]?.inUse, 0);
  assert.equal(st.subnets[0]?.free, 253);
  // A leak stays; a descriptor that is only on its way out (the server side of the `seng status`
  // connection just made) is given a moment to close.
  await waitFor(() => fdTargets().length <= fdsBefore.length + 2, 5000).catch(() => {
    const now = fdTargets();
    assert.fail(
      `fd count grew from ${fdsBefore.length} to ${now.length}: new ${now.filter((f) => !fdsBefore.includes(f)).join(', ')}`,
    );
  });
  assert.equal(await links(), linksBefore);
});

test('a simulator killed with SIGKILL is reclaimed after the idle timeout', async () => {
  const s = await sim(lab, lab.host1, certA, { app: apps[0] });
  assert.ok(s.ready, s.stderr());
  await apps[0]!.exec('ping', ['-c', '1', '-W', '2', '192.168.28.1']);
  s.child.kill('SIGKILL');
  const ip = `"enclaveIp":"${s.ready.ip}"`;
  const line = await waitFor(
    () => gw.log.find((l) => l.includes('"event":"session-end"') && l.includes(ip)),
    20_000,
  );
  assert.match(line, /"reason":"receive tunnel closed: idle"/);
  assert.equal(status().sessions.length, 0);
});

test('garbage on both ports changes nothing', async () => {
  const before = status();
  const r = await lab.host1.exec(
    process.execPath,
    [join(scripts, 'udp-garbage.js'), GW_HOST1, '12345,12346', '2000', '7'],
    {
      timeoutMs: 60_000,
    },
  );
  assert.equal((JSON.parse(r.stdout) as { sent: number }).sent, 2000);
  assert.deepEqual(status().sessions, before.sessions);
  assert.equal(gw.child.exitCode, null, 'gateway still running');
  const s = await sim(lab, lab.host1, certA, { app: apps[0] });
  assert.ok(s.ready, s.stderr());
  await apps[0]!.exec('ping', ['-c', '1', '-W', '2', '192.168.28.1']);
  await stop(s.child);
});

test('seng kick ends a session; graceful shutdown releases everything and removes tunFA', async () => {
  const s = await sim(lab, lab.host1, certA, { app: apps[0] });
  assert.ok(s.ready, s.stderr());
  const k = sengJson<{ kicked: boolean }>(['kick', s.ready.ip, '--control', lab.control]);
  assert.equal(k.code, 0);
  assert.equal(await s.exit, 3, 'the simulator sees the session end');
  assert.equal(seng(['kick', s.ready.ip, '--control', lab.control]).code, 1);
  const s2 = await sim(lab, lab.host1, certA, { app: apps[0] });
  assert.ok(s2.ready);
  await gw.stop();
  assert.equal(gw.child.exitCode, 0);
  assert.ok(gw.log.some((l) => l.includes('"reason":"server-shutdown"')));
  assert.equal(await s2.exit, 3);
  const linkList = (await lab.gw.ip('-o', 'link')).stdout;
  assert.doesNotMatch(linkList, /tunFA/);
  assert.equal(seng(['status', '--control', lab.control]).code, 1);
});
