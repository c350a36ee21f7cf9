/** The lease history: recorder queue, restarts, queries, retention, `seng leases`. */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  LeaseRecorder,
  LeaseStore,
  RESTART_END_REASON,
  type LeaseStart,
} from '../../../src/audit/lease-store.js';
import { formatLocal, parseAt } from '../../../src/audit/time.js';
import { silentLogger } from '../../../src/util/log.js';
import { sengJson, seng } from '../../helpers/cli.js';

let dir: string;
before(() => (dir = mkdtempSync(join(tmpdir(), 'seng-leases-'))));
after(() => rmSync(dir, { recursive: true, force: true }));

const MIN = 60_000;
const DAY = 86_400_000;
let n = 0;
function lease(ip: string, app: string | null, startMs: number, gateway = '10.0.0.1:12345'): LeaseStart {
  return {
    sessionId: (n++).toString(16).padStart(16, '0'),
    gateway,
    enclaveIp: ip,
    hostIp: '10.50.0.2',
    app,
    mrEnclave: 'a1'.repeat(32),
    mrSigner: 'ab'.repeat(32),
    startMs,
  };
}

function recorder(path: string, gateway = '10.0.0.1:12345', retentionDays = 90) {
  return new LeaseRecorder(LeaseStore.open(path), { gateway, log: silentLogger, retentionDays });
}

test('leases survive a restart; queries by IP, time and app; an open lease is current', () => {
  const path = join(dir, 'restart.db');
  const t0 = Date.now() - 60 * MIN;
  const a = lease('192.168.28.7', 'web', t0);
  const b = lease('192.168.28.7', 'db', t0 + 20 * MIN);
  const c = lease('192.168.28.8', 'web', t0 + 5 * MIN);
  let r = recorder(path);
  r.start();
  r.begin(a);
  r.begin(c);
  r.end(a.sessionId, t0 + 10 * MIN, 'close_notify');
  r.stop(); // graceful stop: flushed
  r = recorder(path); // the next run
  r.start();
  r.begin(b);
  r.flush();

  const store = LeaseStore.open(path, { readonly: true });
  try {
    const at = (ms: number) => store.query({ ip: '192.168.28.7', atMs: ms }).map((l) => l.sessionId);
    assert.deepEqual(at(t0 + 5 * MIN), [a.sessionId], 'the first run held it then');
    assert.deepEqual(at(t0 + 15 * MIN), [], 'nobody between the leases');
    assert.deepEqual(at(t0 + 30 * MIN), [b.sessionId], 'the second run holds it now');
    const ended = store.query({ ip: '192.168.28.7', atMs: t0 + 5 * MIN })[0];
    assert.equal(ended?.endReason, 'close_notify');
    assert.deepEqual(
      store.query({ app: 'web' }).map((l) => l.sessionId),
      [c.sessionId, a.sessionId],
      'newest first',
    );
    // c was open when the first run stopped without ending it: a crash; the restart closed it.
    const orphan = store.query({ ip: '192.168.28.8' })[0];
    assert.equal(orphan?.endReason, RESTART_END_REASON);
    assert.ok(orphan.endMs !== null && orphan.endMs >= c.startMs);
    assert.equal(store.query({ ip: '192.168.28.7', atMs: Date.now() })[0]?.endMs, null, 'b is current');
  } finally {
    store.close();
  }

  const cli = sengJson<{ timezone: string; leases: { sessionId: string; current: boolean; app: string }[] }>([
    'leases',
    '--lease-db',
    path,
    '--ip',
    '192.168.28.7',
    '--at',
    new Date(t0 + 30 * MIN).toISOString(),
  ]);
  assert.equal(cli.code, 0, cli.stderr);
  assert.deepEqual(
    cli.json.leases.map((l) => [l.sessionId, l.current, l.app]),
    [[b.sessionId, true, 'db']],
  );
  assert.ok(cli.json.timezone.length > 0);
  const human = seng(['leases', '--lease-db', path, '--app', 'db']);
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, /^times in .*\(UTC[+-]\d\d:\d\d\)/);
  assert.match(human.stdout, /192\.168\.28\.7 +db .*\(current\)/);
  r.stop();
});

test('a crash leaves a lease open until the restart closes it at the last heartbeat; other gateways untouched', () => {
  const path = join(dir, 'crash.db');
  const mine = lease('192.168.28.9', 'web', Date.now() - 5 * MIN);
  const other = lease('192.168.28.9', 'web', Date.now() - 5 * MIN, '10.0.0.2:12345');
  const r1 = recorder(path);
  r1.start();
  r1.begin(mine);
  r1.flush(); // then the process dies: no stop()
  const r2 = recorder(path, '10.0.0.2:12345');
  r2.start();
  r2.begin(other);
  r2.flush();
  const beforeRestart = LeaseStore.open(path, { readonly: true });
  assert.equal(beforeRestart.query({ atMs: Date.now() }).length, 2, 'both open');
  beforeRestart.close();
  const r3 = recorder(path); // restart of the first gateway
  r3.start();
  const s = LeaseStore.open(path, { readonly: true });
  const byGateway = new Map(s.query().map((l) => [l.gateway, l]));
  s.close();
  assert.equal(byGateway.get('10.0.0.1:12345')?.endReason, RESTART_END_REASON);
  assert.equal(byGateway.get('10.0.0.2:12345')?.endMs, null, "another gateway's lease stays open");
  r2.stop();
  r3.stop();
});

test('retention prunes ended leases older than the limit, never open ones', () => {
  const path = join(dir, 'prune.db');
  const now = Date.now();
  const old = lease('192.168.28.10', 'web', now - 100 * DAY);
  const recent = lease('192.168.28.11', 'web', now - 10 * DAY);
  const openOld = lease('192.168.28.12', 'web', now - 200 * DAY, 'elsewhere:1');
  const store = LeaseStore.open(path);
  store.write(
    [old, recent, openOld],
    [
      { sessionId: old.sessionId, endMs: now - 95 * DAY, reason: 'idle' },
      { sessionId: recent.sessionId, endMs: now - 9 * DAY, reason: 'idle' },
    ],
  );
  store.close();
  const r = recorder(path, '10.0.0.1:12345', 30); // prunes at start
  r.start();
  r.stop();
  const s = LeaseStore.open(path, { readonly: true });
  assert.deepEqual(
    s
      .query()
      .map((l) => l.enclaveIp)
      .sort(),
    ['192.168.28.11', '192.168.28.12'],
  );
  s.close();
  const r2 = recorder(path, '10.0.0.1:12345', 5);
  r2.start();
  r2.stop();
  const s2 = LeaseStore.open(path, { readonly: true });
  assert.deepEqual(
    s2.query().map((l) => l.enclaveIp),
    ['192.168.28.12'],
    'open leases are kept',
  );
  s2.close();
});

test('a failing store is reported, never thrown, and keeps the events for the next try', () => {
  const path = join(dir, 'fail.db');
  const store = LeaseStore.open(path);
  let errors = 0;
  const r = new LeaseRecorder(store, { gateway: 'g', log: silentLogger });
  r.onError = () => errors++;
  store.close(); // every write now fails
  const l = lease('192.168.28.20', null, Date.now());
  r.begin(l);
  assert.doesNotThrow(() => r.flush());
  assert.equal(errors, 1);
  assert.doesNotThrow(() => r.stop());
  assert.ok(errors >= 2);
});

test('seng leases: TIME as ISO 8601 or HH:MM today (local time), bad input is a usage error', () => {
  const now = new Date(2026, 11, 1, 15, 0, 0);
  assert.equal(parseAt('10:32', now), new Date(2026, 11, 1, 10, 32).getTime());
  assert.equal(parseAt('10:32:05', now), new Date(2026, 11, 1, 10, 32, 5).getTime());
  assert.equal(parseAt('2026-11-30T08:00', now), new Date(2026, 10, 30, 8, 0).getTime());
  assert.equal(parseAt('2026-11-30 08:00', now), new Date(2026, 10, 30, 8, 0).getTime());
  assert.equal(parseAt('2026-11-30', now), new Date(2026, 10, 30).getTime(), 'local midnight');
  assert.equal(parseAt('2026-11-30T08:00Z', now), Date.UTC(2026, 10, 30, 8, 0));
  assert.equal(parseAt('2026-11-30T08:00+02:00', now), Date.UTC(2026, 10, 30, 6, 0));
  for (const bad of ['25:00', '10:61', 'yesterday', '2026-13-01T00:00', ''])
    assert.equal(parseAt(bad, now), undefined, bad);
  assert.equal(formatLocal(new Date(2026, 0, 2, 3, 4, 5).getTime()), '2026-01-02 03:04:05');
  const path = join(dir, 'restart.db');
  assert.equal(seng(['leases', '--lease-db', path, '--at', 'noon']).code, 2);
  assert.equal(seng(['leases', '--lease-db', path, '--ip', '1.2.3']).code, 2);
  const missing = seng(['leases', '--lease-db', join(dir, 'nope.db')]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /no lease store at .*\nHint: /);
});
