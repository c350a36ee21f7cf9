// Policy construction: defaults, trust anchors, and typed errors for bad settings.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AttestationParseError,
  AttestationPolicyError,
  SimAuthorityError,
  createSimCertificate,
  loadAttestationPolicy,
  loadSimCa,
  parseRaTlsCertificate,
  verifyEvidence,
} from '../../../src/attestation/index.js';
import { createSimCa } from '../../../src/attestation/sim.js';
import { MRENCLAVE, MRSIGNER, fixture, simCa } from './helpers.js';

test('defaults: Intel roots, OK/UpToDate only, no debug', () => {
  const p = loadAttestationPolicy();
  assert.match(p.iasAnchors[0]!.subject, /Intel SGX Attestation Report Signing CA/);
  assert.match(p.sgxAnchors[0]!.subject, /Intel SGX Root CA/);
  assert.deepEqual([...p.allowStatus].sort(), ['OK', 'UpToDate']);
  assert.equal(p.allowDebug, false);
  assert.equal(p.at, undefined);
});

test('bad policy settings throw AttestationPolicyError with a message', () => {
  const dir = mkdtempSync(join(tmpdir(), `seng-attest-policy-${process.pid}-`));
  try {
    writeFileSync(join(dir, 'empty.pem'), 'nothing here');
    writeFileSync(
      join(dir, 'broken.pem'),
      '-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n',
    );
    const cases: [Parameters<typeof loadAttestationPolicy>[0], RegExp][] = [
      [{ iasRootPath: join(dir, 'missing.pem') }, /cannot read the IAS root file .*ENOENT/],
      [{ sgxRootPath: join(dir, 'empty.pem') }, /contains no PEM certificate/],
      [{ sgxRootPath: join(dir, 'broken.pem') }, /malformed/],
      [{ at: 'not a time' }, /invalid --at time/],
      [{ minIsvSvn: -1 }, /non-negative integer/],
      [{ minIsvSvn: 70000 }, /exceeds 65535/],
      [{ allowedSigners: ['abc'] }, /not 32 bytes of hex/],
      [{ allowedProdIds: [NaN] }, /not 0…65535/],
      [{ allowStatus: ['GROUP_REVOKED'] }, /cannot be allowed/],
    ];
    for (const [opts, re] of cases) {
      assert.throws(
        () => loadAttestationPolicy(opts),
        (e: unknown) => e instanceof AttestationPolicyError && re.test(e.message),
      );
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('several anchors in one PEM file are all trusted', () => {
  const pem = simCa().sgxRoot.pem + simCa().iasRoot.pem;
  const p = loadAttestationPolicy({ sgxRootPem: pem, iasRootPem: pem });
  assert.equal(p.sgxAnchors.length, 2);
  const c = createSimCertificate(simCa(), { kind: 'dcap', mrEnclave: MRENCLAVE, mrSigner: MRSIGNER });
  assert.equal(verifyEvidence(parseRaTlsCertificate(c.certDer), p).ok, true);
});

test('parse errors: non-certificates and non-RA-TLS certificates', () => {
  const inputs: (Buffer | string)[] = [
    Buffer.alloc(0),
    'hello',
    Buffer.from([0x30, 0x03, 0x02, 0x01, 0x00]),
    // An ordinary certificate without SGX evidence (Intel's IAS CA):
    readFileSync(fixture('intel-ias-report-signing-ca.pem'), 'utf8'),
  ];
  for (const input of inputs) assert.throws(() => parseRaTlsCertificate(input), AttestationParseError);
  assert.throws(() => parseRaTlsCertificate(42 as unknown as Buffer), AttestationParseError);
});

test('sim CA: written, reloaded, refuses overwrite; incomplete directories are typed errors', () => {
  const dir = mkdtempSync(join(tmpdir(), `seng-attest-simca-${process.pid}-`));
  try {
    const ca = createSimCa(join(dir, 'ca'));
    const loaded = loadSimCa(join(dir, 'ca'));
    assert.equal(loaded.sgxRoot.pem, ca.sgxRoot.pem);
    const c = createSimCertificate(loaded, { kind: 'epid', mrEnclave: MRENCLAVE, mrSigner: MRSIGNER });
    const p = loadAttestationPolicy({
      iasRootPath: join(dir, 'ca', 'ias-root.pem'),
      sgxRootPath: join(dir, 'ca', 'sgx-root.pem'),
    });
    assert.equal(verifyEvidence(parseRaTlsCertificate(c.certPem), p).ok, true);
    assert.throws(() => createSimCa(join(dir, 'ca')), SimAuthorityError);
    assert.throws(() => loadSimCa(join(dir, 'nothing')), /manifest\.json is missing/);
    rmSync(join(dir, 'ca', 'sgx-pck.key.pem'));
    assert.throws(() => loadSimCa(join(dir, 'ca')), SimAuthorityError);
    assert.throws(
      () => createSimCertificate(loaded, { kind: 'epid', mrEnclave: 'xx', mrSigner: MRSIGNER }),
      /MRENCLAVE must be 32 bytes/,
    );
    assert.throws(
      () =>
        createSimCertificate(loaded, {
          kind: 'epid',
          mrEnclave: MRENCLAVE,
          mrSigner: MRSIGNER,
          status: 'UpToDate',
        }),
      /unknown EPID quote status/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
