// Bounded mutation test: thousands of randomly corrupted certificates (seeded, reproducible).
// None may crash the parser/verifier with anything but AttestationParseError, and none may pass.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import {
  AttestationParseError,
  loadAttestationPolicy,
  parseRaTlsCertificate,
  verifyEvidence,
  type AttestationPolicy,
  type Evidence,
} from '../../../src/attestation/index.js';
import { toPem, type ParsedCertificate } from '../../../src/attestation/x509.js';
import { fixture, make, rewrap, simPolicy, type Made } from './helpers.js';

const SEED = Number(process.env.SENG_MUTATION_SEED ?? 0x5e6a77e5);
const ITERATIONS = 3000;

function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** What the verdict depends on, besides the certificate's own key: unchanged means the mutation was a no-op. */
function canonical(ev: Evidence): string {
  const h = createHash('sha256');
  const certs = (list: ParsedCertificate[]) => {
    for (const c of list) if (!c.issuerRaw.equals(c.subjectRaw)) h.update(c.der);
  };
  if (ev.kind === 'epid') {
    h.update(ev.ias.report.bytes).update(ev.ias.signature).update(ev.ias.signingCert.der);
    // The EPID signature after the body of a separately carried quote is verifiable only by IAS
    // (which vouches for the body); the verifier checks the body and the declared length.
    if (ev.separateQuote) h.update(ev.separateQuote.subarray(0, 436)).update(String(ev.separateQuote.length));
  } else {
    h.update(ev.quote.subarray(0, ev.quote.length - ev.signatureData.certData.length));
    certs(ev.pckChain);
    certs(ev.tcbSigningChain);
    h.update(ev.tcbInfo ?? '-').update(ev.qeIdentity ?? '-');
    h.update(ev.rootCaCrl ?? '-').update(ev.pckCrl ?? '-');
  }
  return h.digest('hex');
}

interface Base {
  name: string;
  made?: Made;
  der: Buffer;
  policy: AttestationPolicy;
  /** Extension suffixes whose values carry signed evidence (mutated and re-wrapped under a valid signature). */
  signedValues: number[];
}

test(
  `mutation: ${ITERATIONS} corrupted certificates never crash and never pass (seed ${SEED})`,
  { timeout: 240_000 },
  () => {
    const rnd = prng(SEED);
    const int = (n: number) => Math.floor(rnd() * n);
    const sample = readFileSync(fixture('ecdsa-ratls.der'));
    const epidRaw = make({ kind: 'epid', includeQuote: true });
    const epidB64 = make({ kind: 'epid', encoding: 'base64' });
    const dcap = make({ kind: 'dcap', pckExtensions: false });
    const bases: Base[] = [
      { name: 'epid-raw', made: epidRaw, der: epidRaw.der, policy: simPolicy(), signedValues: [2, 5, 6] },
      { name: 'epid-base64', made: epidB64, der: epidB64.der, policy: simPolicy(), signedValues: [2, 4, 5] },
      { name: 'dcap', made: dcap, der: dcap.der, policy: simPolicy(), signedValues: [6, 9, 10, 11, 12, 13] },
      {
        name: 'sample',
        der: sample,
        policy: loadAttestationPolicy({ at: '2019-03-20T00:00:00Z', allowDebug: true }),
        signedValues: [],
      },
    ];
    for (const b of bases) {
      // Sanity: the generated bases pass unmodified (the sample fails only its key binding).
      const r = verifyEvidence(parseRaTlsCertificate(b.der), b.policy);
      if (b.name === 'sample') assert.deepEqual(r.failed, ['report-data-binding']);
      else assert.equal(r.ok, true, b.name);
    }
    const baseCanon = new Map(bases.map((b) => [b.name, canonical(parseRaTlsCertificate(b.der))]));

    const counts = { parseError: 0, rejected: 0, noop: 0 };
    const kinds = new Map<string, number>();
    for (let i = 0; i < ITERATIONS; i++) {
      const b = bases[int(bases.length)]!;
      let input: Buffer | string;
      let op = int(b.signedValues.length ? 7 : 6);
      let rewrapped = false;
      let where = '';
      const der = Buffer.from(b.der);
      switch (op) {
        case 0: // flip 1–4 bytes anywhere
        case 1: {
          const n = 1 + int(4);
          for (let k = 0; k < n; k++) {
            const at = int(der.length);
            der[at] = der[at]! ^ (1 + int(255));
          }
          input = der;
          break;
        }
        case 2: // truncate
          input = der.subarray(0, int(der.length));
          break;
        case 3: {
          // insert random bytes
          const at = int(der.length);
          const ins = Buffer.from(Array.from({ length: 1 + int(8) }, () => int(256)));
          input = Buffer.concat([der.subarray(0, at), ins, der.subarray(at)]);
          break;
        }
        case 4: {
          // overwrite a random range, sometimes presented as PEM
          const at = int(der.length);
          const len = Math.min(der.length - at, 1 + int(64));
          for (let k = 0; k < len; k++) der[at + k] = int(256);
          if (der.equals(b.der)) der[at] = der[at]! ^ 0xff; // random bytes equal to the original: force a change
          input = rnd() < 0.5 ? der : toPem(der);
          break;
        }
        case 5: // random garbage, DER-looking or not
          input = Buffer.from(
            Array.from({ length: int(600) }, (_, k) => (k === 0 && rnd() < 0.7 ? 0x30 : int(256))),
          );
          break;
        default: {
          // mutate signed evidence inside the certificate and re-sign the certificate
          const suffix = b.signedValues[int(b.signedValues.length)]!;
          rewrapped = true;
          op = 6;
          input = rewrap(b.made!, (exts) => {
            const e = exts.find((x) => x.oid === `1.2.840.113741.1337.${suffix}`)!;
            const n = 1 + int(3);
            for (let k = 0; k < n; k++) {
              const at = int(e.value.length);
              const x = 1 + int(255);
              where += ` .${suffix}[${at}]^${x} (${JSON.stringify(String.fromCharCode(e.value[at]!))})`;
              e.value[at] = e.value[at]! ^ x;
            }
          });
        }
      }
      kinds.set(String(op), (kinds.get(String(op)) ?? 0) + 1);
      let ev: Evidence;
      try {
        ev = parseRaTlsCertificate(input);
      } catch (e) {
        assert.ok(
          e instanceof AttestationParseError,
          `iteration ${i} (${b.name}, op ${op}): ${(e as Error)?.stack ?? String(e)}`,
        );
        counts.parseError++;
        continue;
      }
      if (rewrapped && canonical(ev) === baseCanon.get(b.name)) {
        counts.noop++; // e.g. a flipped base64 padding bit or PEM line break: same evidence
        continue;
      }
      const r = verifyEvidence(ev, b.policy);
      assert.equal(
        r.ok,
        false,
        `iteration ${i} (${b.name}, op ${op}${where}) passed: ${JSON.stringify(r.checks)}`,
      );
      assert.ok(r.failed.length > 0);
      counts.rejected++;
    }
    assert.equal(counts.parseError + counts.rejected + counts.noop, ITERATIONS);
    // The corpus must exercise both layers, and no-ops must stay rare.
    assert.ok(counts.rejected > ITERATIONS / 10, JSON.stringify(counts));
    assert.ok(counts.parseError > ITERATIONS / 10, JSON.stringify(counts));
    assert.ok(counts.noop < ITERATIONS / 50, JSON.stringify(counts));
  },
);
