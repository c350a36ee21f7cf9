/**
 * Observability of a running gateway, in namespaces with a simulated enclave: Prometheus
 * metrics scraped from `seng serve --metrics`, the audit events, `seng status` counters and
 * --watch, and the lease history across a gateway restart (`seng leases`).
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
  GW_HOST1,
  type AppCert,
  type Lab,
  type Served,
} from '../../helpers/gateway-lab.js';
import { seng, sengJson, sengSpawn } from '../../helpers/cli.js';

const APP_A = 'a1'.repeat(32);
const APP_X = 'cc'.repeat(32); // not in the allowlist
const METRICS = `${GW_HOST1}:9464`;

let lab: Lab;
let gw: Served | undefined;
let certA: AppCert;
let certX: AppCert;
let app: Netns;
let db: string;
let leaseDb: string;

const serveArgs = () => ['-d', db, '--metrics', METRICS, '--lease-db', leaseDb, '--idle-timeout', '30'];

before(async () => {
  lab = await buildLab('gwm');
  db = join(lab.dir, 'policy.db');
  leaseDb = join(lab.dir, 'state', 'leases.db');
  const run = (args: string[]) => {
    const r = seng(args);
    assert.equal(r.code, 0, r.stderr);
  };
  run(['db', 'init', '-d', db, '--schema', 'vanilla']);
  run(['db', 'subnet', 'add', '-d', db, '192.168.28.0/24', '--gateway', '192.168.28.1']);
  run([
    'db',
    'app',
    'add',
    '-d',
    db,
    'app-a',
    '--mrenclave',
    APP_A,
    '--mrsigner',
    'ab'.repeat(32),
    '--host-subnet',
    '10.50.0.0/15',
    '--enclave-subnet',
    '192.168.28.0/24',
  ]);
  certA = appCert(lab, APP_A, { kind: 'dcap' });
  certX = appCert(lab, APP_X);
  app = await createNetns('gwmapp');
  gw = await serve(lab, serveArgs());
});

after(async () => {
  if (process.env.SENG_TEST_DEBUG) process.stderr.write(`${gw?.log.join('\n')}\n`);
  await gw?.stop();
  await cleanupAll();
  lab?.cleanup();
});

/** GET /metrics from inside the gateway's namespace. */
async function scrape(): Promise<string> {
  const r = await lab.gw.exec(process.execPath, [
    '-e',
    `fetch('http://${METRICS}/metrics').then(async (r) => { if (!r.ok) process.exit(1); process.stdout.write(await r.text()); })`,
  ]);
  return r.stdout;
}

function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

interface SessionJson {
  enclaveIp: string;
  sessionId: string;
  lastSeen: string;
  ageSeconds: number;
  packetsIn: number;
  bytesOut: number;
  spoofedDropped: number;
}
interface LeaseJson {
  sessionId: string;
  enclaveIp: string;
  app: string | null;
  hostIp: string;
  mrEnclave: string;
  end: string | null;
  endReason: string | null;
  current: boolean;
}
const leases = (args: string[]) =>
  sengJson<{ timezone: string; leases: LeaseJson[] }>(['leases', '--lease-db', leaseDb, ...args]);

test('metrics, status counters, audit events and the lease history of one session, across a restart', async () => {
  const x = await sim(lab, lab.host1, certX);
  assert.equal(x.ready, undefined, 'an app outside the allowlist is rejected');
  const s = await sim(lab, lab.host1, certA, { app });
  assert.ok(s.ready, `sim failed: ${s.stderr()}`);
  const ip = s.ready.ip;
  await app.exec('ping', ['-c', '3', '-i', '0.2', '-W', '2', '192.168.28.1']);

  const text = await scrape();
  for (const name of [
    'seng_sessions_active',
    'seng_admissions_total',
    'seng_session_setup_seconds',
    'seng_packets_total',
    'seng_bytes_total',
    'seng_packets_dropped_total',
    'seng_enforcement_seconds',
    'seng_enforcement_failures_total',
    'seng_pool_addresses_in_use',
    'seng_pool_addresses',
    'seng_dtls_handshakes_in_progress',
    'seng_dtls_handshakes_limit',
    'seng_sessions_ended_total',
  ])
    assert.match(text, new RegExp(`^# TYPE ${name} `, 'm'), name);
  assert.equal(sample(text, 'seng_sessions_active{app="app-a"}'), 1);
  assert.equal(sample(text, 'seng_admissions_total{result="admitted",reason="ok"}'), 1);
  assert.ok((sample(text, 'seng_admissions_total{result="rejected",reason="allowlist"}') ?? 0) >= 1);
  assert.ok((sample(text, 'seng_packets_total{direction="from_enclave"}') ?? 0) > 0);
  assert.ok((sample(text, 'seng_packets_total{direction="to_enclave"}') ?? 0) > 0);
  assert.ok((sample(text, 'seng_bytes_total{direction="to_enclave"}') ?? 0) > 0);
  assert.equal(sample(text, 'seng_pool_addresses_in_use{subnet="192.168.28.0/24"}'), 1);
  assert.equal(sample(text, 'seng_dtls_handshakes_limit{channel="receive"}'), 256);
  const labels = [...text.matchAll(/\{([^}]*)\}/g)].map((m) => m[1]).join('\n');
  assert.ok(!labels.includes(ip), 'no enclave IP in any label');
  assert.ok(!labels.includes('10.50.0.2'), 'no host IP in any label');

  // seng status: per-enclave counters, session id, age and last seen.
  const st = sengJson<{ sessions: SessionJson[] }>(['status', '--control', lab.control]).json;
  const me = st.sessions.find((e) => e.enclaveIp === ip);
  assert.ok(me && /^[0-9a-f]{16}$/.test(me.sessionId));
  assert.ok(me.packetsIn > 0 && me.bytesOut > 0 && me.ageSeconds >= 0);
  assert.ok(Date.parse(me.lastSeen) > 0);

  // --watch --json: one JSON line per interval.
  const watch = sengSpawn(['status', '--control', lab.control, '--watch', '1', '--json']);
  const first = await waitForLine(watch, /^\{/, 10_000);
  const second = await waitForLine(watch, /^\{/, 10_000);
  await stop(watch);
  for (const line of [first.line, second.line]) {
    const frame = JSON.parse(line) as { time: string; sessions: SessionJson[] };
    assert.ok(frame.sessions.some((e) => e.sessionId === me.sessionId));
  }

  // Audit events: one each, with the identity.
  const admitted = gw!.log.find((l) => l.includes('"event":"admitted"') && l.includes(me.sessionId));
  assert.ok(admitted, 'admission event with the session id');
  const a = JSON.parse(admitted) as Record<string, unknown>;
  assert.deepEqual(
    [a.enclaveIp, a.hostIp, a.app, a.mrEnclave, a.mrSigner],
    [ip, '10.50.0.2', 'app-a', APP_A, 'ab'.repeat(32)],
  );
  const rejected = gw!.log.find((l) => l.includes('"event":"rejected"') && l.includes('"check":"allowlist"'));
  assert.ok(rejected && rejected.includes(APP_X) && /"sessionId":"[0-9a-f]{16}"/.test(rejected));

  // The lease is current while the session runs (within the flush interval).
  const current = await waitFor(
    () => leases(['--ip', ip, '--at', new Date().toISOString()]).json.leases[0],
    5000,
  );
  assert.deepEqual(
    [current.sessionId, current.current, current.app, current.hostIp, current.mrEnclave],
    [me.sessionId, true, 'app-a', '10.50.0.2', APP_A],
  );

  await stop(s.child);
  await waitFor(
    () => gw!.log.some((l) => l.includes('"event":"session-end"') && l.includes(me.sessionId)),
    5000,
  );
  const after = await scrape();
  assert.equal(sample(after, 'seng_sessions_active{app="app-a"}'), undefined);
  assert.ok((sample(after, 'seng_packets_total{direction="from_enclave"}') ?? 0) >= me.packetsIn);

  // Restart the gateway: the history is still there and the new run adds to it.
  await gw!.stop();
  gw = await serve(lab, serveArgs());
  const s2 = await sim(lab, lab.host1, certA, { app });
  assert.ok(s2.ready, `sim failed: ${s2.stderr()}`);
  const all = await waitFor(() => {
    const l = leases(['--app', 'app-a']).json.leases;
    return l.length === 2 ? l : undefined;
  }, 5000);
  const old = all.find((l) => l.sessionId === me.sessionId);
  assert.ok(old && old.current === false && old.end !== null && old.endReason !== null);
  assert.ok(all.some((l) => l.sessionId !== me.sessionId && l.current));
  const human = seng(['leases', '--lease-db', leaseDb, '--ip', ip]);
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, /^times in /);
  await stop(s2.child);
});

test('a lease store that cannot be opened is logged, not fatal', async () => {
  await gw?.stop();
  gw = await serve(lab, ['-d', db, '--lease-db', '/proc/seng-no-such-dir/leases.db']);
  assert.ok(gw.log.some((l) => l.includes('"event":"lease-store-failed"') && l.includes('"op":"open"')));
  const s = await sim(lab, lab.host1, certA, { app });
  assert.ok(s.ready, `sim failed: ${s.stderr()}`);
  await stop(s.child);
});
