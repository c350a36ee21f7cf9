// The real sgx-ra-tls DCAP sample certificate (see test/fixtures/attestation/README.md).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  describeEvidence,
  loadAttestationPolicy,
  parseRaTlsCertificate,
  quoteFingerprint,
  verifyEvidence,
} from '../../../src/attestation/index.js';
import { failedChecks, fixture, statusOf } from './helpers.js';

const AT = '2019-03-20T00:00:00Z';
const der = readFileSync(fixture('ecdsa-ratls.der'));
const MRENCLAVE = 'ba955817182da60e188849038328f8088156eb7dbcd4f966428089be6d3fd411';
const MRSIGNER = 'd412a4f07ef83892a5915fb2ab584be31e186e5a4f95ab5f6950fd4eb8694d7b';

test('sample: parse yields the DCAP quote and its identity', () => {
  const ev = parseRaTlsCertificate(der);
  assert.equal(ev.kind, 'dcap');
  assert.equal(ev.mrEnclave.toString('hex'), MRENCLAVE);
  assert.equal(ev.mrSigner.toString('hex'), MRSIGNER);
  assert.equal(ev.debug, true);
  assert.equal(ev.reportData.toString('hex'), '00'.repeat(64));
  assert.equal(ev.quote.length, 1456);
  assert.equal(ev.quote.readUInt32LE(432), 1020);
  assert.equal(ev.isvProdId, 0);
  assert.equal(ev.isvSvn, 0);
  if (ev.kind !== 'dcap') throw new Error('unreachable');
  assert.equal(ev.signatureData.certDataType, 3);
  assert.equal(ev.pckChainSource, 'extensions');
  assert.equal(ev.pckChain.length, 3);
  const s = describeEvidence(ev);
  assert.equal(s.pck?.fmspc, '00706a100000');
  assert.deepEqual(s.collateral, {
    tcbInfo: true,
    tcbSigningChain: 2,
    qeIdentity: false,
    rootCaCrl: false,
    pckCrl: false,
  });
});

test('sample: PEM and DER give the same evidence', () => {
  const a = parseRaTlsCertificate(der);
  const b = parseRaTlsCertificate(readFileSync(fixture('ecdsa-ratls.pem'), 'utf8'));
  assert.equal(quoteFingerprint(a), quoteFingerprint(b));
  assert.deepEqual(describeEvidence(a), describeEvidence(b));
});

test('sample: against the Intel SGX root its chain passes and exactly debug and key binding fail', () => {
  const policy = loadAttestationPolicy({ sgxRootPath: fixture('intel-sgx-root-ca.pem'), at: AT });
  const r = verifyEvidence(parseRaTlsCertificate(der), policy);
  assert.equal(r.ok, false);
  assert.equal(statusOf(r, 'pck-chain'), 'pass');
  for (const name of [
    'certificate-signature',
    'qe-report-signature',
    'qe-report-data',
    'isv-report-signature',
    'tcb-info',
    'tcb-status',
  ]) {
    assert.equal(statusOf(r, name), 'pass', name);
  }
  assert.equal(statusOf(r, 'qe-identity'), 'not-evaluated');
  assert.equal(statusOf(r, 'pck-revocation'), 'not-evaluated');
  assert.deepEqual(failedChecks(r).sort(), ['debug', 'report-data-binding']);
  assert.deepEqual(r.failed.sort(), ['debug', 'report-data-binding']);
  assert.match(r.checks.find((c) => c.name === 'tcb-status')!.detail, /UpToDate/);
  // The built-in default SGX root is the same certificate.
  const byDefault = verifyEvidence(parseRaTlsCertificate(der), loadAttestationPolicy({ at: AT }));
  assert.deepEqual(failedChecks(byDefault).sort(), ['debug', 'report-data-binding']);
  // Allowing debug leaves only the missing key binding.
  const dbg = verifyEvidence(parseRaTlsCertificate(der), loadAttestationPolicy({ at: AT, allowDebug: true }));
  assert.deepEqual(failedChecks(dbg), ['report-data-binding']);
});

test('sample: trustedRootCaCert.pem is a different key, so the chains do not reach it', () => {
  const policy = loadAttestationPolicy({ sgxRootPath: fixture('trustedRootCaCert.pem'), at: AT });
  const r = verifyEvidence(parseRaTlsCertificate(der), policy);
  assert.deepEqual(failedChecks(r).sort(), ['debug', 'pck-chain', 'report-data-binding', 'tcb-info']);
  assert.match(r.checks.find((c) => c.name === 'pck-chain')!.detail, /not signed by trust anchor/);
});

test('sample: verified now, the expired PCK certificate and stale TCB info are reported', () => {
  const r = verifyEvidence(parseRaTlsCertificate(der), loadAttestationPolicy({ at: '2026-11-27T00:00:00Z' }));
  assert.ok(failedChecks(r).includes('pck-chain'));
  assert.match(r.checks.find((c) => c.name === 'pck-chain')!.detail, /expired at 2026-03-12/);
  assert.match(r.checks.find((c) => c.name === 'tcb-info')!.detail, /expired/);
  assert.equal(r.ok, false);
});

test("built-in IAS root is Intel's report-signing CA and verifies Intel's report-signing certificate", async () => {
  const { parseCertificate, pemCertificates, verifyChain } = await import('../../../src/attestation/x509.js');
  const policy = loadAttestationPolicy({});
  const leaf = parseCertificate(
    pemCertificates(readFileSync(fixture('intel-ias-report-signing-cert.pem'), 'utf8'))[0]!,
  );
  assert.equal(verifyChain(leaf, [], policy.iasAnchors, new Date('2020-01-01T00:00:00Z')).ok, true);
  const late = verifyChain(leaf, [], policy.iasAnchors, new Date('2027-01-01T00:00:00Z'));
  assert.equal(late.ok, false);
  assert.match(late.detail, /expired at 2026-11-20/);
});
