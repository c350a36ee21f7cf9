/** Shared fixtures of the attestation tests: one test authority per process, reusable keys. */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { join } from 'node:path';
import { repoRoot } from '../../helpers/cli.js';
import {
  createSimCa,
  createSimCertificate,
  loadAttestationPolicy,
  parseRaTlsCertificate,
  verifyEvidence,
  type AttestationPolicy,
  type AttestationPolicyOptions,
  type SimCa,
  type SimCertificateOptions,
  type VerificationResult,
} from '../../../src/attestation/index.js';
import { buildRaTlsCertificate, type ExtensionSpec } from '../../../src/attestation/sim.js';

export const fixture = (name: string): string => join(repoRoot, 'test', 'fixtures', 'attestation', name);

export const MRENCLAVE = 'a1'.repeat(32);
export const MRSIGNER = 'b2'.repeat(32);

let ca: SimCa | undefined;
let otherCa: SimCa | undefined;
export function simCa(): SimCa {
  ca ??= createSimCa();
  return ca;
}
/** A second, unrelated test authority ("wrong root"). */
export function otherSimCa(): SimCa {
  otherCa ??= createSimCa();
  return otherCa;
}

const keys = new Map<string, KeyObject>();
/** Cached keys: RSA-3072 generation takes up to a second. */
export function key(type: 'rsa3072' | 'p256', slot = 0): KeyObject {
  const k = `${type}/${slot}`;
  let v = keys.get(k);
  if (!v) {
    v =
      type === 'rsa3072'
        ? generateKeyPairSync('rsa', { modulusLength: 3072 }).privateKey
        : generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
    keys.set(k, v);
  }
  return v;
}

export function simPolicy(
  extra: AttestationPolicyOptions = {},
  authority: SimCa = simCa(),
): AttestationPolicy {
  return loadAttestationPolicy({
    iasRootPem: authority.iasRoot.pem,
    sgxRootPem: authority.sgxRoot.pem,
    ...extra,
  });
}

export interface Made {
  der: Buffer;
  exts: ExtensionSpec[];
  key: KeyObject;
}

export function make(
  opts: Partial<SimCertificateOptions> & { kind: 'epid' | 'dcap' },
  keyType: 'rsa3072' | 'p256' = 'p256',
): Made {
  const privateKey = opts.privateKey ?? key(keyType);
  const c = createSimCertificate(simCa(), { mrEnclave: MRENCLAVE, mrSigner: MRSIGNER, ...opts, privateKey });
  return { der: c.certDer, exts: c.extensions, key: privateKey };
}

/** Re-wraps modified evidence in a certificate validly self-signed by `key`. */
export function rewrap(m: Made, edit: (exts: ExtensionSpec[]) => void, withKey: KeyObject = m.key): Buffer {
  const exts = m.exts.map((e) => ({ ...e, value: Buffer.from(e.value) }));
  edit(exts);
  return buildRaTlsCertificate(withKey, exts);
}

export function ext(exts: ExtensionSpec[], suffix: number): ExtensionSpec {
  const e = exts.find((x) => x.oid === `1.2.840.113741.1337.${suffix}`);
  if (!e) throw new Error(`no extension .${suffix}`);
  return e;
}

export function verifyDer(der: Buffer | string, policy: AttestationPolicy): VerificationResult {
  return verifyEvidence(parseRaTlsCertificate(der), policy);
}

/** Names of the checks that ran and failed. */
export function failedChecks(r: VerificationResult): string[] {
  return r.checks.filter((c) => c.status === 'fail').map((c) => c.name);
}

export function statusOf(r: VerificationResult, name: string): string | undefined {
  return r.checks.find((c) => c.name === name)?.status;
}

/** XORs one byte of a buffer in place. */
export function flip(buf: Buffer, i: number, mask = 0x01): void {
  buf[i] = buf[i]! ^ mask;
}
