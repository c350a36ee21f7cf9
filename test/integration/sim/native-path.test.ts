/**
 * `seng sim enclave` on its native data path (src/sim/enclave.ts): both client sessions handed
 * off to the native record layer, the TUN device read by a dispatch thread with a default route
 * and the gateway's records written to the device inside the addon. Through a real gateway in
 * namespaces (test/helpers/gateway-lab.ts): TCP and UDP both ways with mixed sizes including
 * exactly-MTU (1432-byte) packets, close_notify in both directions after the handoff, and the JS
 * fallback (SENG_NATIVE_FORWARD=0).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { cleanupAll, createNetns, stop, waitFor, waitForLine, type Netns } from '../../helpers/netns.js';
import {
  appCert,
  buildLab,
  serve,
  sim,
  SERVICE,
  type AppCert,
  type Lab,
  type Served,
} from '../../helpers/gateway-lab.js';
import { repoRoot, seng, sengJson } from '../../helpers/cli.js';

const APP = 'd4'.repeat(32);
const scripts = join(repoRoot, 'dist', 'test', 'helpers', 'scripts');
/** UDP payload sizes: tiny to exactly MTU (1404 + 8 + 20 = 1432 bytes of IPv4), repeated. */
const UDP_SIZES = [4, 63, 200, 576, 1000, 1371, 1403, 1404, 1404, 1404];

let lab: Lab;
let gw: Served;
let cert: AppCert;
let app: Netns;

interface StatusJson {
  sessions: { enclaveIp: string; state: string; packetsIn: number; packetsOut: number }[];
}
const status = () => sengJson<StatusJson>(['status', '--control', lab.control]).json;

before(async () => {
  lab = await buildLab('gsn');
  const db = join(lab.dir, 'policy.db');
  const run = (args: string[]) => {
    const r = seng(args);
    assert.equal(r.code, 0, r.stderr);
  };
  run(['db', 'init', '-d', db, '--schema', 'vanilla']);
  run(['db', 'subnet', 'add', '-d', db, '192.168.29.0/24', '--gateway', '192.168.29.1']);
  run([
    'db',
    'app',
    'add',
    '-d',
    db,
    'app-n',
    '--mrenclave',
    APP,
    '--mrsigner',
    'ab'.repeat(32),
    '--host-subnet',
    '10.50.0.0/15',
    '--enclave-subnet',
    '192.168.29.0/24',
  ]);
  cert = appCert(lab, APP, { kind: 'dcap', keyType: 'p256' });
  app = await createNetns('gsnapp');
  gw = await serve(lab, ['-d', db, '--idle-timeout', '20', '--setup-timeout', '3']);
  const tcpEcho = lab.svc.spawn(process.execPath, [join(scripts, 'echo-server.js'), '7000']);
  const udpEcho = lab.svc.spawn(process.execPath, [join(scripts, 'udp-sizes.js'), 'serve', '7100']);
  await waitForLine(tcpEcho, /listening/);
  await waitForLine(udpEcho, /listening/);
});

after(async () => {
  if (process.env.SENG_TEST_DEBUG) process.stderr.write(`${gw?.log.join('\n')}\n`);
  await gw?.stop();
  await cleanupAll();
  lab?.cleanup();
});

async function tcpRoundtrip(ns: Netns, host: string, port: number, bytes: number): Promise<void> {
  const r = await ns.exec(
    process.execPath,
    [join(scripts, 'tcp-roundtrip.js'), host, String(port), String(bytes)],
    {
      timeoutMs: 60_000,
    },
  );
  const out = JSON.parse(r.stdout) as { sent: string; received: string; bytes: number };
  assert.equal(out.bytes, bytes);
  assert.equal(out.received, out.sent, 'echoed content differs');
}

async function udpRoundtrip(ns: Netns, host: string, port: number): Promise<void> {
  const sizes: string[] = [];
  for (let i = 0; i < 30; i++) sizes.push(...UDP_SIZES.map(String));
  const r = await ns.exec(
    process.execPath,
    [join(scripts, 'udp-sizes.js'), 'send', host, String(port), ...sizes],
    {
      timeoutMs: 30_000,
    },
  );
  const out = JSON.parse(r.stdout) as { sent: number; echoed: number; corrupt: number; lost: number[] };
  assert.equal(out.corrupt, 0, 'an echoed datagram differs');
  assert.deepEqual(out.lost, [], 'datagrams lost after three tries');
  assert.equal(out.echoed, sizes.length);
}

/** Traffic both ways, started from the enclave's side and from the service's side. */
async function trafficBothWays(enclaveIp: string): Promise<void> {
  await tcpRoundtrip(app, SERVICE, 7000, 2 << 20);
  await udpRoundtrip(app, SERVICE, 7100);
  const tcpEcho = app.spawn(process.execPath, [join(scripts, 'echo-server.js'), '7001']);
  const udpEcho = app.spawn(process.execPath, [join(scripts, 'udp-sizes.js'), 'serve', '7101']);
  try {
    await waitForLine(tcpEcho, /listening/);
    await waitForLine(udpEcho, /listening/);
    // From the gateway's namespace: its kernel's TSO super-packets are cut by the gateway, the
    // enclave's own by the simulator's dispatch thread.
    await tcpRoundtrip(lab.gw, enclaveIp, 7001, 2 << 20);
    await udpRoundtrip(lab.gw, enclaveIp, 7101);
  } finally {
    await stop(tcpEcho);
    await stop(udpEcho);
  }
}

test('the native simulator carries TCP and UDP both ways, mixed sizes up to exactly the MTU', async () => {
  const s = await sim(lab, lab.host1, cert, { app });
  assert.ok(s.ready, `sim failed: ${s.stderr()}`);
  assert.equal(s.ready.forwarding, 'native');
  await trafficBothWays(s.ready.ip);
  const me = status().sessions.find((x) => x.enclaveIp === s.ready?.ip);
  assert.ok((me?.packetsIn ?? 0) > 1000 && (me?.packetsOut ?? 0) > 1000, JSON.stringify(me));
  await stop(s.child);
  await waitFor(() => status().sessions.length === 0, 5000);
  // The gateway's records were opened and written to the device by the send session's receive thread.
  const stats = nativeStats(s.stderr());
  assert.ok(stats, `no native-stats line in: ${s.stderr()}`);
  assert.ok(stats.fromGatewayByThread > 1000, JSON.stringify(stats));
  assert.ok(stats.fromGatewayByThread <= stats.fromGateway, JSON.stringify(stats));
});

/** The counters the simulator logs when its native forwarding ends. */
function nativeStats(stderr: string): { fromGateway: number; fromGatewayByThread: number } | undefined {
  const line = stderr.split('\n').find((l) => l.includes('"event":"native-stats"'));
  return line ? (JSON.parse(line) as { fromGateway: number; fromGatewayByThread: number }) : undefined;
}

test('close_notify from the simulator ends the gateway session after the handoff', async () => {
  const s = await sim(lab, lab.host1, cert, { app });
  assert.ok(s.ready, `sim failed: ${s.stderr()}`);
  assert.equal(s.ready.forwarding, 'native');
  await app.exec('ping', ['-c', '2', '-i', '0.2', '-W', '2', '192.168.29.1']);
  s.child.kill('SIGTERM');
  assert.equal(await s.exit, 0);
  // Well before the idle timeout (20 s): the gateway read the simulator's close_notify.
  const line = await waitFor(
    () => gw.log.find((l) => l.includes('"event":"session-end"') && l.includes(`"${s.ready!.ip}"`)),
    5000,
  );
  assert.match(line, /close_notify/);
  assert.equal(status().sessions.length, 0);
});

test("the gateway's close_notify (kick) ends the simulator after the handoff", async () => {
  const s = await sim(lab, lab.host1, cert, { app });
  assert.ok(s.ready, `sim failed: ${s.stderr()}`);
  assert.equal(s.ready.forwarding, 'native');
  await app.exec('ping', ['-c', '2', '-i', '0.2', '-W', '2', '192.168.29.1']);
  assert.equal(sengJson<{ kicked: boolean }>(['kick', s.ready.ip, '--control', lab.control]).code, 0);
  assert.equal(await s.exit, 3, 'the simulator sees the session end');
  assert.match(s.stderr(), /tunnel closed: close_notify/);
});

test('SENG_NATIVE_FORWARD=0 keeps the simulator on its JavaScript path, traffic intact', async () => {
  const s = await sim(lab, lab.host1, cert, { app, env: { SENG_NATIVE_FORWARD: '0' } });
  assert.ok(s.ready, `sim failed: ${s.stderr()}`);
  assert.equal(s.ready.forwarding, 'js');
  await tcpRoundtrip(app, SERVICE, 7000, 1 << 20);
  await udpRoundtrip(app, SERVICE, 7100);
  await stop(s.child);
  await waitFor(() => status().sessions.length === 0, 5000);
});
