/**
 * No head-of-line blocking by the control plane (issue 12): while the gateway's JavaScript
 * thread is busy (the SENG_TEST_HOOKS SIGUSR2 hook busy-waits it for 1 s, as a long attestation
 * or reload would), an established enclave's pings still reach the service behind the gateway and
 * their replies come back: the enclave → device path runs on the DTLS addon's receive thread and
 * device → enclave on its dispatch thread. No timing bound is asserted, only that replies arrived
 * inside the interval the gateway reports as blocked.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { cleanupAll, createNetns, waitFor, type Netns } from '../../helpers/netns.js';
import { appCert, buildLab, serve, sim, SERVICE, type Lab, type Served } from '../../helpers/gateway-lab.js';
import { seng } from '../../helpers/cli.js';

const APP = 'e5'.repeat(32);

let lab: Lab;
let gw: Served | undefined;
let app: Netns;

before(async () => {
  lab = await buildLab('grt');
  const db = join(lab.dir, 'policy.db');
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
    'app-rt',
    '--mrenclave',
    APP,
    '--mrsigner',
    'ab'.repeat(32),
    '--host-subnet',
    '10.50.0.0/15',
    '--enclave-subnet',
    '192.168.28.0/24',
  ]);
  app = await createNetns('grtapp');
  gw = await serve(lab, ['-d', db], undefined, { env: { SENG_TEST_HOOKS: '1' } });
});

after(async () => {
  await gw?.stop();
  await cleanupAll();
  lab?.cleanup();
});

test('forwarding of an established enclave goes on while the JavaScript thread is blocked', async () => {
  const enclave = await sim(lab, lab.host1, appCert(lab, APP), { app });
  assert.ok(enclave.ready, enclave.stderr());
  // The session is established and forwarding.
  await app.exec('ping', ['-c', '1', '-W', '2', SERVICE]);
  // 4 s of pings every 50 ms, reply times printed (-D); the gateway is blocked 1 s in the middle.
  const pings = app.exec('ping', ['-D', '-n', '-i', '0.05', '-c', '80', '-W', '1', SERVICE], {
    timeoutMs: 30_000,
    check: false,
  });
  await new Promise((r) => setTimeout(r, 1000));
  gw!.child.kill('SIGUSR2');
  const blockedLine = await waitFor(
    () => gw!.log.find((l) => l.includes('"event":"test-js-blocked"')),
    15_000,
    { message: 'the gateway reports its blocked interval' },
  );
  const blocked = JSON.parse(blockedLine) as { from: number; to: number };
  const out = (await pings).stdout;
  const replies = [...out.matchAll(/^\[(\d+\.\d+)\] \d+ bytes from/gm)].map((m) => Number(m[1]) * 1000);
  const during = replies.filter((t) => t > blocked.from && t < blocked.to);
  assert.ok(
    during.length > 0,
    `replies while blocked [${blocked.from}, ${blocked.to}]: ${replies.join(' ')}`,
  );
  enclave.child.kill('SIGTERM');
  await enclave.exit;
});
