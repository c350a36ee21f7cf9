// Generated DCAP (quote v3) certificates: all pass, then one test per check where only that check fails.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  loadAttestationPolicy,
  parseRaTlsCertificate,
  verifyEvidence,
} from '../../../src/attestation/index.js';
import { createSimCrl } from '../../../src/attestation/sim.js';
import { parseCertificate, toPem } from '../../../src/attestation/x509.js';
import {
  simCa,
  ext,
  failedChecks,
  flip,
  key,
  make,
  otherSimCa,
  rewrap,
  simPolicy,
  statusOf,
  verifyDer,
} from './helpers.js';

// Offsets in a v3 quote: signature data starts at 436.
const ISV_SIG = 436;
const QE_REPORT = 436 + 128;
const QE_SIG = QE_REPORT + 384;
const QE_AUTH = QE_SIG + 64 + 2;

const ALL_DCAP = [
  'certificate-signature',
  'pck-chain',
  'qe-report-signature',
  'qe-report-data',
  'isv-report-signature',
  'tcb-info',
  'tcb-status',
  'qe-identity',
  'pck-revocation',
  'report-data-binding',
  'debug',
];

for (const keyType of ['p256', 'rsa3072'] as const) {
  test(`DCAP ${keyType}: passes every check against the test root`, () => {
    const m = make({ kind: 'dcap' }, keyType);
    const ev = parseRaTlsCertificate(m.der);
    assert.equal(ev.kind, 'dcap');
    if (ev.kind !== 'dcap') return;
    assert.equal(ev.pckChainSource, 'quote');
    assert.equal(ev.header.version, 3);
    const r = verifyEvidence(ev, simPolicy());
    assert.equal(r.ok, true, JSON.stringify(r.checks, null, 1));
    assert.deepEqual(
      r.checks.map((c) => c.name),
      ALL_DCAP,
    );
    assert.ok(r.checks.every((c) => c.status === 'pass'));
  });
}

test('DCAP: explicit criticality FALSE, and no .7/.8 extensions, both pass', () => {
  assert.equal(verifyDer(make({ kind: 'dcap', explicitNonCritical: true }).der, simPolicy()).ok, true);
  assert.equal(verifyDer(make({ kind: 'dcap', pckExtensions: false }).der, simPolicy()).ok, true);
});

test('DCAP: a quote without PCK chain (certification data type 3) uses the .7/.8 extensions', () => {
  const m = make({ kind: 'dcap' });
  const der = rewrap(m, (exts) => {
    const e = ext(exts, 6);
    const certTypeAt = QE_AUTH + 32;
    const ppid = Buffer.alloc(404, 0x5a);
    const head = Buffer.from(e.value.subarray(0, certTypeAt + 6));
    head.writeUInt16LE(3, certTypeAt);
    head.writeUInt32LE(ppid.length, certTypeAt + 2);
    const q = Buffer.concat([head, ppid]);
    q.writeUInt32LE(q.length - 436, 432);
    e.value = q;
  });
  const ev = parseRaTlsCertificate(der);
  assert.equal(ev.kind === 'dcap' && ev.pckChainSource, 'extensions');
  assert.equal(verifyEvidence(ev, simPolicy()).ok, true);
  // Without the extensions there is no PCK certificate at all.
  const bare = rewrap({ ...m, der, exts: parseExts(der) }, (exts) => {
    exts.splice(
      exts.findIndex((x) => x.oid.endsWith('.7')),
      2,
    );
  });
  const r = verifyDer(bare, simPolicy());
  assert.deepEqual(failedChecks(r), ['pck-chain', 'qe-report-signature', 'tcb-info']);
  assert.match(r.checks.find((c) => c.name === 'pck-chain')!.detail, /no PCK certificate/);
});

function parseExts(der: Buffer) {
  const ev = parseRaTlsCertificate(der);
  return ev.certificate.extensions.map((e) => ({
    oid: e.oid,
    critical: e.critical,
    value: Buffer.from(e.value),
  }));
}

test('DCAP: the default (Intel) SGX root rejects test certificates', () => {
  const r = verifyDer(make({ kind: 'dcap' }).der, loadAttestationPolicy({}));
  assert.deepEqual(failedChecks(r), ['pck-chain', 'tcb-info', 'qe-identity']);
});

test('DCAP wrong root: only pck-chain fails (no collateral); with collateral its chains fail too', () => {
  const bare = make({ kind: 'dcap', collateral: false }).der;
  assert.deepEqual(failedChecks(verifyDer(bare, simPolicy({}, otherSimCa()))), ['pck-chain']);
  const full = make({ kind: 'dcap' }).der;
  assert.deepEqual(failedChecks(verifyDer(full, simPolicy({}, otherSimCa()))), [
    'pck-chain',
    'tcb-info',
    'qe-identity',
  ]);
});

test('DCAP without collateral: TCB info and QE identity are "not evaluated", or fail when required', () => {
  const der = make({ kind: 'dcap', collateral: false }).der;
  const r = verifyDer(der, simPolicy());
  assert.equal(r.ok, true);
  for (const n of ['tcb-info', 'tcb-status', 'qe-identity']) {
    const c = r.checks.find((x) => x.name === n)!;
    assert.equal(c.status, 'not-evaluated', n);
    assert.equal(c.ok, false);
    assert.equal(c.required, false);
    assert.match(c.detail, /^not evaluated/);
  }
  const strict = verifyDer(der, simPolicy({ requireCollateral: true }));
  assert.deepEqual(failedChecks(strict), ['tcb-info', 'tcb-status', 'qe-identity']);
});

test('DCAP tampered report byte: only isv-report-signature fails', () => {
  const m = make({ kind: 'dcap' });
  const der = rewrap(m, (exts) => flip(ext(exts, 6).value, 48 + 262));
  assert.deepEqual(failedChecks(verifyDer(der, simPolicy())), ['isv-report-signature']);
});

test('DCAP tampered QE report byte: only qe-report-signature fails', () => {
  const m = make({ kind: 'dcap' });
  const der = rewrap(m, (exts) => flip(ext(exts, 6).value, QE_REPORT + 100));
  assert.deepEqual(failedChecks(verifyDer(der, simPolicy())), ['qe-report-signature']);
});

test('DCAP bad signatures: ISV and QE report signatures fail alone', () => {
  const m = make({ kind: 'dcap' });
  const isv = rewrap(m, (exts) => flip(ext(exts, 6).value, ISV_SIG + 5));
  assert.deepEqual(failedChecks(verifyDer(isv, simPolicy())), ['isv-report-signature']);
  const qe = rewrap(m, (exts) => flip(ext(exts, 6).value, QE_SIG + 5));
  assert.deepEqual(failedChecks(verifyDer(qe, simPolicy())), ['qe-report-signature']);
});

test('DCAP attestation key not bound by the QE: only qe-report-data fails', () => {
  const m = make({ kind: 'dcap' });
  const der = rewrap(m, (exts) => flip(ext(exts, 6).value, QE_AUTH + 3));
  assert.deepEqual(failedChecks(verifyDer(der, simPolicy())), ['qe-report-data']);
});

test('DCAP disallowed TCB status: only tcb-status fails; allowing it admits; Revoked never', () => {
  const der = make({ kind: 'dcap', status: 'OutOfDate' }).der;
  const r = verifyDer(der, simPolicy());
  assert.deepEqual(failedChecks(r), ['tcb-status']);
  assert.match(r.checks.find((c) => c.name === 'tcb-status')!.detail, /OutOfDate/);
  assert.equal(verifyDer(der, simPolicy({ allowStatus: ['OutOfDate'] })).ok, true);
  const revoked = make({ kind: 'dcap', status: 'Revoked' }).der;
  assert.deepEqual(failedChecks(verifyDer(revoked, simPolicy({ allowStatus: ['OutOfDate'] }))), [
    'tcb-status',
  ]);
});

test('DCAP tampered TCB info: only tcb-info fails and the status is not evaluated', () => {
  const m = make({ kind: 'dcap' });
  const der = rewrap(m, (exts) => {
    const e = ext(exts, 9);
    e.value = Buffer.from(
      e.value.toString().replace('"tcbEvaluationDataNumber":16', '"tcbEvaluationDataNumber":17'),
    );
  });
  const r = verifyDer(der, simPolicy());
  assert.deepEqual(failedChecks(r), ['tcb-info']);
  assert.equal(statusOf(r, 'tcb-status'), 'not-evaluated');
  assert.match(r.checks.find((c) => c.name === 'tcb-info')!.detail, /signature does not verify/);
});

test('DCAP tampered QE identity: only qe-identity fails', () => {
  const m = make({ kind: 'dcap' });
  const der = rewrap(m, (exts) => {
    const e = ext(exts, 11);
    e.value = Buffer.from(e.value.toString().replace('"isvprodid":1', '"isvprodid":2'));
  });
  assert.deepEqual(failedChecks(verifyDer(der, simPolicy())), ['qe-identity']);
});

test('DCAP collateral past its nextUpdate fails tcb-info, qe-identity and the CRL check', () => {
  const der = make({ kind: 'dcap' }).der;
  const r = verifyDer(der, simPolicy({ at: new Date(Date.now() + 60 * 86400_000) }));
  assert.deepEqual(failedChecks(r), ['tcb-info', 'qe-identity', 'pck-revocation']);
  assert.match(r.checks.find((c) => c.name === 'tcb-info')!.detail, /expired/);
  assert.match(r.checks.find((c) => c.name === 'pck-revocation')!.detail, /stale/);
});

test('DCAP debug enclave, low SVN, unbound key: only that check fails', () => {
  assert.deepEqual(failedChecks(verifyDer(make({ kind: 'dcap', debug: true }).der, simPolicy())), ['debug']);
  assert.equal(verifyDer(make({ kind: 'dcap', debug: true }).der, simPolicy({ allowDebug: true })).ok, true);
  assert.deepEqual(
    failedChecks(verifyDer(make({ kind: 'dcap', isvSvn: 1 }).der, simPolicy({ minIsvSvn: 2 }))),
    ['isv-svn'],
  );
  const m = make({ kind: 'dcap' });
  assert.deepEqual(
    failedChecks(
      verifyDer(
        rewrap(m, () => {}, key('rsa3072', 1)),
        simPolicy(),
      ),
    ),
    ['report-data-binding'],
  );
});

test('DCAP revoked PCK certificate or PCK CA: only pck-revocation fails', () => {
  const m = make({ kind: 'dcap' });
  const ca = simCa();
  const pckSerial = parseCertificate(ca.pck.der).serialHex;
  const caSerial = parseCertificate(ca.pckCa.der).serialHex;
  const revokedLeaf = rewrap(m, (exts) => {
    ext(exts, 13).value = createSimCrl(ca, 'pck', { revoked: ['0badc0de', pckSerial] });
  });
  const r = verifyDer(revokedLeaf, simPolicy());
  assert.deepEqual(failedChecks(r), ['pck-revocation']);
  assert.match(
    r.checks.find((c) => c.name === 'pck-revocation')!.detail,
    /SGX PCK Certificate.*is revoked by the PCK CRL/,
  );
  const revokedCa = rewrap(m, (exts) => {
    ext(exts, 12).value = createSimCrl(ca, 'root', { revoked: [caSerial] });
  });
  const r2 = verifyDer(revokedCa, simPolicy());
  assert.deepEqual(failedChecks(r2), ['pck-revocation']);
  assert.match(r2.checks.find((c) => c.name === 'pck-revocation')!.detail, /PCK Processor CA.*root CA CRL/);
});

test('DCAP stale or foreign CRLs: only pck-revocation fails', () => {
  const m = make({ kind: 'dcap' });
  const stale = rewrap(m, (exts) => {
    ext(exts, 13).value = createSimCrl(simCa(), 'pck', {
      thisUpdate: new Date(Date.now() - 10 * 86400_000),
      nextUpdate: new Date(Date.now() - 86400_000),
    });
  });
  assert.deepEqual(failedChecks(verifyDer(stale, simPolicy())), ['pck-revocation']);
  const foreign = rewrap(m, (exts) => {
    ext(exts, 12).value = createSimCrl(otherSimCa(), 'root');
  });
  assert.deepEqual(failedChecks(verifyDer(foreign, simPolicy())), ['pck-revocation']);
  const junk = rewrap(m, (exts) => {
    ext(exts, 13).value = Buffer.from('not a CRL');
  });
  assert.deepEqual(failedChecks(verifyDer(junk, simPolicy())), ['pck-revocation']);
});

test('DCAP CRLs in PEM, URL-encoded PEM and hex are accepted; absent CRLs are not evaluated', () => {
  const m = make({ kind: 'dcap' });
  const forms: ((der: Buffer) => Buffer)[] = [
    (d) => Buffer.from(toPem(d, 'X509 CRL')),
    (d) => Buffer.from(encodeURIComponent(toPem(d, 'X509 CRL'))),
    (d) => Buffer.from(d.toString('hex')),
  ];
  for (const form of forms) {
    const der = rewrap(m, (exts) => {
      ext(exts, 12).value = form(ext(exts, 12).value);
      ext(exts, 13).value = form(ext(exts, 13).value);
    });
    const r = verifyDer(der, simPolicy());
    assert.equal(r.ok, true, JSON.stringify(r.checks));
    assert.equal(statusOf(r, 'pck-revocation'), 'pass');
  }
  const none = make({ kind: 'dcap', crls: false }).der;
  assert.equal(statusOf(verifyDer(none, simPolicy()), 'pck-revocation'), 'not-evaluated');
  assert.deepEqual(failedChecks(verifyDer(none, simPolicy({ requireCollateral: true }))), ['pck-revocation']);
});
