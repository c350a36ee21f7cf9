/**
 * The attestation cache (src/attestation/cache.ts): hits only on identical certificate bytes
 * under the same policy, expires with the validity windows, is bounded (LRU), is cleared by a
 * reload, and never stores a failure.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AttestationCache,
  certificateHash,
  createSimCertificate,
  loadAttestationPolicy,
  parseRaTlsCertificate,
  resultValidUntil,
} from '../../../src/attestation/index.js';
import { key, MRENCLAVE, MRSIGNER, simCa } from './helpers.js';

const ca = simCa();
const policy = loadAttestationPolicy({ iasRootPem: ca.iasRoot.pem, sgxRootPem: ca.sgxRoot.pem });
const dcap = (slot = 0, debug = false) =>
  createSimCertificate(ca, {
    kind: 'dcap',
    mrEnclave: MRENCLAVE,
    mrSigner: MRSIGNER,
    keyType: 'p256',
    privateKey: key('p256', slot),
    debug,
  }).certDer;

test('identical bytes hit the cache; the identity is that of the certificate', () => {
  const cache = new AttestationCache();
  const der = dcap();
  const first = cache.attest(der, policy);
  assert.ok(first.ok && !first.cached);
  const second = cache.attest(Buffer.from(der), policy);
  assert.ok(second.ok && second.cached);
  assert.equal(second.identity.mrEnclave.toString('hex'), MRENCLAVE);
  assert.equal(second.identity.mrSigner.toString('hex'), MRSIGNER);
  assert.equal(second.identity.certHash, certificateHash(der));
  assert.deepEqual(cache.stats, { hits: 1, misses: 1, evictions: 0 });
});

test('one changed byte is a miss, verified from scratch (and fails)', () => {
  const cache = new AttestationCache();
  const der = dcap();
  assert.ok(cache.attest(der, policy).ok);
  const tampered = Buffer.from(der);
  tampered[tampered.length - 5]! ^= 0x01; // inside the certificate signature
  const r = cache.attest(tampered, policy);
  assert.equal(r.ok, false);
  assert.equal(cache.stats.misses, 2);
  assert.equal(cache.size, 1);
});

test('a failing verification is never cached and never becomes a pass', () => {
  const cache = new AttestationCache();
  const debugEnclave = dcap(0, true); // DEBUG attribute: refused unless allowDebug
  for (let i = 0; i < 3; i++) {
    const r = cache.attest(debugEnclave, policy);
    assert.ok(!r.ok && r.stage === 'verify' && r.result.failed.length > 0);
  }
  const garbage = cache.attest(Buffer.from('not a certificate'), policy);
  assert.ok(!garbage.ok && garbage.stage === 'parse');
  assert.equal(cache.size, 0);
  assert.equal(cache.stats.hits, 0);
});

test('a pass under one policy is not reused under another (stricter) policy', () => {
  const cache = new AttestationCache();
  const der = dcap();
  assert.ok(cache.attest(der, policy).ok);
  const strict = loadAttestationPolicy({
    iasRootPem: ca.iasRoot.pem,
    sgxRootPem: ca.sgxRoot.pem,
    allowedSigners: ['00'.repeat(32)],
  });
  const r = cache.attest(der, strict);
  assert.equal(r.ok, false);
  assert.equal(cache.stats.hits, 0);
});

test('entries expire with the validity windows and the TTL', () => {
  const der = dcap();
  const evidence = parseRaTlsCertificate(der);
  const now = Date.now();
  const until = resultValidUntil(evidence, policy, now);
  assert.ok(until <= evidence.certificate.notAfter.getTime());
  assert.ok(until > now);
  let clock = now;
  const cache = new AttestationCache({ now: () => clock, maxTtlMs: 60_000 });
  assert.ok(cache.attest(der, policy).ok);
  clock = now + 59_000;
  assert.ok((cache.attest(der, policy) as { cached: boolean }).cached);
  clock = now + 61_000; // past the TTL
  assert.equal((cache.attest(der, policy) as { cached: boolean }).cached, false);
  clock = until + 1; // past a validity window: re-verified, never served from the cache
  assert.equal((cache.attest(der, policy) as { cached: boolean }).cached, false);
});

test('the collateral nextUpdate bounds an entry', () => {
  const evidence = parseRaTlsCertificate(dcap());
  assert.equal(evidence.kind, 'dcap');
  if (evidence.kind !== 'dcap' || !evidence.tcbInfo) return assert.fail('the fixture carries TCB info');
  const next = Date.parse(/"nextUpdate"\s*:\s*"([^"]*)"/.exec(evidence.tcbInfo)![1]!);
  assert.ok(resultValidUntil(evidence, policy, Date.now()) <= next);
});

test('the cache is bounded: least recently used entries are evicted', () => {
  const cache = new AttestationCache({ maxEntries: 2 });
  const [a, b, c] = [dcap(0), dcap(1), dcap(2)];
  cache.attest(a, policy);
  cache.attest(b, policy);
  cache.attest(a, policy); // a is now the most recently used
  cache.attest(c, policy); // evicts b
  assert.equal(cache.size, 2);
  assert.equal(cache.stats.evictions, 1);
  assert.ok((cache.attest(a, policy) as { cached: boolean }).cached);
  assert.equal((cache.attest(b, policy) as { cached: boolean }).cached, false);
});

test('clear() (a reload) drops every entry', () => {
  const cache = new AttestationCache();
  const der = dcap();
  cache.attest(der, policy);
  cache.clear();
  assert.equal(cache.size, 0);
  assert.equal((cache.attest(der, policy) as { cached: boolean }).cached, false);
});
