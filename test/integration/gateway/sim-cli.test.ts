/**
 * `seng sim enclave` against a real `seng serve` with both an RSA and an EC identity (see
 * test/helpers/gateway-lab.ts): the cipher suite follows the pinned certificate's key type
 * (and --cipher overrides it), RA-TLS certificates are accepted in DER and PEM for EPID/RSA
 * and DCAP/ECDSA, and the keepalive keeps a quiet session past the gateway's idle timeout.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { cleanupAll, stop } from '../../helpers/netns.js';
import {
  appCert,
  buildLab,
  serve,
  sim,
  type AppCert,
  type Lab,
  type Served,
} from '../../helpers/gateway-lab.js';
import { seng } from '../../helpers/cli.js';

const APP = 'e5'.repeat(32);
const SIGNER = 'ab'.repeat(32);
const IDLE_SECONDS = 3;

let lab: Lab;
let gw: Served;
let cert: AppCert;

before(async () => {
  lab = await buildLab('gsc');
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
    'app',
    '--mrenclave',
    APP,
    '--mrsigner',
    SIGNER,
    '--host-subnet',
    '10.50.0.0/24',
    '--enclave-subnet',
    '192.168.28.0/24',
  ]);
  cert = appCert(lab, APP);
  gw = await serve(lab, ['-d', db, '--idle-timeout', String(IDLE_SECONDS), '--setup-timeout', '3']);
});

after(async () => {
  await gw?.stop();
  await cleanupAll();
  lab?.cleanup();
});

/** The lab, with the simulators pinning only `gwCert` (the lab pins both identities by default). */
const pinning = (gwCert: string): Lab => ({ ...lab, gwCert });

/** Starts a control-plane-only simulator, asserts it got an IP, and stops it. */
async function connects(c: AppCert, extra: string[], pinned = lab): Promise<void> {
  const s = await sim(pinned, lab.host1, c, { extra });
  try {
    assert.ok(s.ready, `sim enclave ${extra.join(' ')} did not connect:\n${s.stderr()}`);
    assert.match(s.ready.ip, /^192\.168\.28\./);
  } finally {
    await stop(s.child, 5000);
  }
}

test('the pinned certificate picks the suite: EC-only and RSA-only pins both connect', async () => {
  // Before the fix the RSA suite was always offered first, so the gateway presented its RSA
  // certificate and an EC-only pin failed with "certificate verify failed".
  await connects(cert, [], pinning(lab.gwKeys[1]!.cert));
  await connects(cert, [], pinning(lab.gwKeys[0]!.cert));
});

test('--cipher overrides the choice (a suite that contradicts the pin fails the handshake)', async () => {
  await connects(cert, ['--cipher', 'ECDHE-ECDSA-AES128-GCM-SHA256'], pinning(lab.gwKeys[1]!.cert));
  const s = await sim(pinning(lab.gwKeys[1]!.cert), lab.host1, cert, {
    extra: ['--cipher', 'ECDHE-RSA-AES256-GCM-SHA384'],
  });
  assert.equal(s.ready, undefined);
  assert.notEqual(await s.exit, 0);
  assert.match(s.stderr(), /handshake/i);
});

test('RA-TLS certificates in DER and PEM: EPID with RSA-3072 and DCAP with ECDSA P-256', async () => {
  const made: AppCert[] = [];
  for (const [kind, keyType] of [
    ['epid', 'rsa3072'],
    ['dcap', 'p256'],
  ] as const) {
    for (const ext of ['der', 'pem']) {
      const out = join(lab.dir, `cli-${kind}-${keyType}.${ext}`);
      const key = join(lab.dir, `cli-${kind}-${keyType}-${ext}.key`);
      const r = seng([
        'sim',
        'cert',
        '--ca',
        join(lab.dir, 'ca'),
        '--kind',
        kind,
        '--key-type',
        keyType,
        '--mrenclave',
        APP,
        '--mrsigner',
        SIGNER,
        '--out',
        out,
        '--key',
        key,
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`\\(${ext}\\)`));
      made.push({ cert: out, key, mrEnclave: APP, mrSigner: SIGNER });
    }
  }
  for (const c of made) await connects(c, []);
});

test(`the keepalive keeps a quiet session past the gateway's ${IDLE_SECONDS} s idle timeout; without it the session ends`, async () => {
  const kept = await sim(lab, lab.host1, cert, { extra: ['--keepalive', '1'] });
  const dropped = await sim(lab, lab.host1, cert, { extra: ['--keepalive', '0'] });
  try {
    assert.ok(kept.ready, kept.stderr());
    assert.ok(dropped.ready, dropped.stderr());
    // The one without keepalive is ended by the gateway (exit 3: "the gateway ended the session").
    assert.equal(await dropped.exit, 3, dropped.stderr());
    // By then the other one has been quiet (apart from keepalives) for longer than the timeout.
    await sleep(IDLE_SECONDS * 1000);
    assert.equal(kept.child.exitCode, null, `the simulator with keepalive ended:\n${kept.stderr()}`);
    const ended = gw.log.filter((l) => l.includes('"event":"session-end"'));
    assert.ok(
      ended.some((l) => l.includes(`"enclaveIp":"${dropped.ready!.ip}"`)),
      'the quiet session ended',
    );
    assert.ok(
      !ended.some((l) => l.includes(`"enclaveIp":"${kept.ready!.ip}"`)),
      'the session with keepalive did not end',
    );
  } finally {
    await stop(kept.child, 5000);
    await stop(dropped.child, 5000);
  }
});
