// Generated EPID/IAS certificates: all pass, then one test per check where only that check fails.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AttestationPolicyError,
  loadAttestationPolicy,
  parseRaTlsCertificate,
  quoteFingerprint,
} from '../../../src/attestation/index.js';
import { buildCertificate } from '../../../src/attestation/sim.js';
import { parseCertificate } from '../../../src/attestation/x509.js';
import {
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

for (const keyType of ['p256', 'rsa3072'] as const) {
  for (const encoding of ['raw', 'base64'] as const) {
    test(`EPID ${keyType} ${encoding}: passes every check against the test root`, () => {
      const m = make({ kind: 'epid', encoding }, keyType);
      const ev = parseRaTlsCertificate(m.der);
      assert.equal(ev.kind, 'epid');
      if (ev.kind !== 'epid') return;
      assert.deepEqual(ev.ias.encoding, {
        report: encoding,
        caCert: encoding,
        signingCert: encoding,
        signature: encoding,
      });
      const r = verifyDer(m.der, simPolicy());
      assert.equal(r.ok, true, JSON.stringify(r.checks, null, 1));
      assert.deepEqual(
        r.checks.map((c) => c.name),
        [
          'certificate-signature',
          'ias-chain',
          'ias-signature',
          'quote-status',
          'quote-body-match',
          'report-data-binding',
          'debug',
        ],
      );
      assert.ok(r.checks.every((c) => c.ok && c.status === 'pass'));
      assert.equal(r.identity.mrEnclave, 'a1'.repeat(32));
      assert.equal(r.identity.quoteFingerprint, quoteFingerprint(ev));
    });
  }
}

test('EPID: extensions with an explicit criticality FALSE parse and pass', () => {
  const m = make({ kind: 'epid', explicitNonCritical: true });
  assert.equal(verifyDer(m.der, simPolicy()).ok, true);
});

test('EPID: the default (Intel) IAS root rejects test certificates, with only ias-chain failing', () => {
  const r = verifyDer(make({ kind: 'epid' }).der, loadAttestationPolicy({}));
  assert.deepEqual(failedChecks(r), ['ias-chain']);
  assert.match(r.checks[1]!.detail, /not a configured trust anchor/);
});

test('EPID wrong root: only ias-chain fails', () => {
  const r = verifyDer(make({ kind: 'epid' }).der, simPolicy({}, otherSimCa()));
  assert.deepEqual(failedChecks(r), ['ias-chain']);
});

test('EPID chain validity is checked at the report timestamp, or at --at', () => {
  const m = make({ kind: 'epid', reportTimestamp: new Date(Date.now() - 86400_000) });
  assert.equal(verifyDer(m.der, simPolicy()).ok, true);
  const r = verifyDer(m.der, simPolicy({ at: '2080-01-01T00:00:00Z' }));
  assert.deepEqual(failedChecks(r), ['ias-chain']);
  assert.match(r.checks.find((c) => c.name === 'ias-chain')!.detail, /expired/);
});

test('EPID tampered report byte: only ias-signature fails', () => {
  const m = make({ kind: 'epid' });
  const der = rewrap(m, (exts) => {
    const e = ext(exts, 2);
    // Change one digit of the report id: still valid JSON, same identity, different bytes.
    const text = e.value.toString('utf8');
    const i = text.indexOf('"id":"') + 6;
    e.value = Buffer.from(text.slice(0, i) + (text[i] === '9' ? '8' : '9') + text.slice(i + 1));
  });
  const r = verifyDer(der, simPolicy());
  assert.deepEqual(failedChecks(r), ['ias-signature']);
});

test('EPID bad signature: only ias-signature fails (raw and base64 forms)', () => {
  for (const encoding of ['raw', 'base64'] as const) {
    const m = make({ kind: 'epid', encoding });
    const der = rewrap(m, (exts) => {
      const e = ext(exts, 5);
      if (encoding === 'raw') flip(e.value, 10);
      else {
        const sig = Buffer.from(e.value.toString(), 'base64');
        flip(sig, 10);
        e.value = Buffer.from(sig.toString('base64'));
      }
    });
    assert.deepEqual(failedChecks(verifyDer(der, simPolicy())), ['ias-signature'], encoding);
  }
});

test('EPID disallowed status: only quote-status fails; allowing it admits', () => {
  const der = make({ kind: 'epid', status: 'GROUP_OUT_OF_DATE' }).der;
  const r = verifyDer(der, simPolicy());
  assert.deepEqual(failedChecks(r), ['quote-status']);
  assert.match(r.checks.find((c) => c.name === 'quote-status')!.detail, /GROUP_OUT_OF_DATE.*INTEL-SA-00334/);
  assert.equal(verifyDer(der, simPolicy({ allowStatus: ['GROUP_OUT_OF_DATE'] })).ok, true);
  const sw = make({ kind: 'epid', status: 'SW_HARDENING_NEEDED' }).der;
  assert.deepEqual(failedChecks(verifyDer(sw, simPolicy({ allowStatus: ['GROUP_OUT_OF_DATE'] }))), [
    'quote-status',
  ]);
});

test('EPID revoked/invalid statuses can never be allowed', () => {
  const der = make({ kind: 'epid', status: 'KEY_REVOKED' }).der;
  assert.deepEqual(failedChecks(verifyDer(der, simPolicy())), ['quote-status']);
  assert.throws(() => simPolicy({ allowStatus: ['KEY_REVOKED'] }), AttestationPolicyError);
  assert.throws(() => simPolicy({ allowStatus: ['NOT_A_STATUS'] }), AttestationPolicyError);
});

test('EPID stale report: only report-age fails when a maximum is configured', () => {
  const der = make({ kind: 'epid', reportTimestamp: new Date(Date.now() - 2 * 86400_000) }).der;
  assert.equal(verifyDer(der, simPolicy()).ok, true);
  const r = verifyDer(der, simPolicy({ maxReportAgeSec: 86400 }));
  assert.deepEqual(failedChecks(r), ['report-age']);
  assert.equal(verifyDer(der, simPolicy({ maxReportAgeSec: 3 * 86400 })).ok, true);
});

test('EPID report from the future: only report-age fails', () => {
  const der = make({ kind: 'epid', reportTimestamp: new Date(Date.now() + 86400_000) }).der;
  assert.deepEqual(failedChecks(verifyDer(der, simPolicy())), ['report-age']);
});

test('EPID debug enclave: only debug fails unless allowed', () => {
  const der = make({ kind: 'epid', debug: true }).der;
  assert.deepEqual(failedChecks(verifyDer(der, simPolicy())), ['debug']);
  assert.equal(verifyDer(der, simPolicy({ allowDebug: true })).ok, true);
});

test('EPID low SVN, product id and signer policies: only the configured check fails', () => {
  const der = make({ kind: 'epid', isvSvn: 3, isvProdId: 7 }).der;
  assert.deepEqual(failedChecks(verifyDer(der, simPolicy({ minIsvSvn: 4 }))), ['isv-svn']);
  assert.equal(verifyDer(der, simPolicy({ minIsvSvn: 3 })).ok, true);
  assert.deepEqual(failedChecks(verifyDer(der, simPolicy({ allowedProdIds: [1, 2] }))), ['isv-prod-id']);
  assert.equal(verifyDer(der, simPolicy({ allowedProdIds: [7] })).ok, true);
  assert.deepEqual(failedChecks(verifyDer(der, simPolicy({ allowedSigners: ['cc'.repeat(32)] }))), [
    'mr-signer',
  ]);
  assert.equal(verifyDer(der, simPolicy({ allowedSigners: ['B2'.repeat(32)] })).ok, true);
});

test('EPID key not bound: only report-data-binding fails', () => {
  const m = make({ kind: 'epid' });
  const der = rewrap(m, () => {}, key('p256', 1));
  assert.deepEqual(failedChecks(verifyDer(der, simPolicy())), ['report-data-binding']);
});

test('EPID quote mismatch: a quote in .6 that differs from the IAS quote body fails only quote-body-match', () => {
  const m = make({ kind: 'epid', includeQuote: true });
  assert.equal(verifyDer(m.der, simPolicy()).ok, true);
  const der = rewrap(m, (exts) => {
    flip(ext(exts, 6).value, 48 + 64, 0xff); // first MRENCLAVE byte of the separate quote
  });
  const r = verifyDer(der, simPolicy());
  assert.deepEqual(failedChecks(r), ['quote-body-match']);
  assert.match(r.checks.find((c) => c.name === 'quote-body-match')!.detail, /byte 112/);
});

test('EPID certificate not signed by its own key: only certificate-signature fails', () => {
  const m = make({ kind: 'epid' });
  const orig = parseCertificate(m.der);
  const forged = buildCertificate({
    issuer: orig.issuerRaw,
    subject: orig.subjectRaw,
    notBefore: orig.notBefore,
    notAfter: orig.notAfter,
    spki: orig.spki,
    extensions: m.exts,
    signingKey: key('p256', 2),
  });
  const r = verifyDer(forged, simPolicy());
  assert.deepEqual(failedChecks(r), ['certificate-signature']);
  assert.equal(statusOf(r, 'report-data-binding'), 'pass');
});

test('EPID quote fingerprints differ between certificates and are stable for one', () => {
  const a = make({ kind: 'epid' }).der;
  const b = make({ kind: 'epid' }).der;
  assert.equal(quoteFingerprint(parseRaTlsCertificate(a)), quoteFingerprint(parseRaTlsCertificate(a)));
  assert.notEqual(quoteFingerprint(parseRaTlsCertificate(a)), quoteFingerprint(parseRaTlsCertificate(b)));
  assert.match(quoteFingerprint(parseRaTlsCertificate(a)), /^[0-9a-f]{64}$/);
});
