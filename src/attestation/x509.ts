/**
 * X.509 certificates as attestation needs them: a strict parser (never throws anything
 * but DerError), signature verification of one link, and a chain builder that checks each
 * link's signature and validity window itself. We do not use a generic path validator
 * because Intel's PCK certificates carry critical SGX extensions that such validators
 * reject; what we check instead is spelled out in `verifyChain`.
 */
import { createPublicKey, verify as cryptoVerify, createHash, type KeyObject } from 'node:crypto';
import {
  DerError,
  TAG,
  children,
  decodeBitFlags,
  decodeBitString,
  decodeBoolean,
  decodeOid,
  decodeSmallInt,
  decodeTime,
  expectTag,
  parseDer,
  type DerNode,
} from './der.js';

export interface CertExtension {
  oid: string;
  critical: boolean;
  value: Buffer;
}

export interface ParsedCertificate {
  der: Buffer;
  tbs: Buffer;
  version: number;
  serialHex: string;
  signatureAlgorithm: string;
  signature: Buffer;
  issuerRaw: Buffer;
  subjectRaw: Buffer;
  issuer: string;
  subject: string;
  notBefore: Date;
  notAfter: Date;
  /** DER SubjectPublicKeyInfo. */
  spki: Buffer;
  publicKeyAlgorithm: string;
  /** Contents of the subjectPublicKey BIT STRING (RSAPublicKey DER, or the EC point). */
  publicKeyBits: Buffer;
  extensions: CertExtension[];
  basicConstraints: { ca: boolean; pathLen?: number } | undefined;
  /** keyUsage bits (bit 0 = digitalSignature, bit 5 = keyCertSign) or undefined when absent. */
  keyUsage: number | undefined;
  /** SHA-256 of the DER, lowercase hex. */
  fingerprint: string;
}

export const OID_BASIC_CONSTRAINTS = '2.5.29.19';
export const OID_KEY_USAGE = '2.5.29.15';
export const KEY_USAGE_KEY_CERT_SIGN = 1 << 5;
export const KEY_USAGE_DIGITAL_SIGNATURE = 1 << 0;

const NAME_ATTRS: Record<string, string> = {
  '2.5.4.3': 'CN',
  '2.5.4.6': 'C',
  '2.5.4.7': 'L',
  '2.5.4.8': 'ST',
  '2.5.4.10': 'O',
  '2.5.4.11': 'OU',
};

/** A readable form of a DER Name ("CN=…, O=…"); best effort, never throws. */
export function nameToString(raw: Buffer): string {
  try {
    const parts: string[] = [];
    for (const rdn of children(parseDer(raw))) {
      for (const atv of children(rdn)) {
        const [type, value] = children(atv);
        if (!type || !value) continue;
        const oid = decodeOid(type);
        const key = NAME_ATTRS[oid] ?? oid;
        const text =
          value.tag === 0x1e
            ? Buffer.from(value.value).swap16().toString('utf16le')
            : value.value.toString('utf8');
        parts.push(`${key}=${text}`);
      }
    }
    return parts.join(', ');
  } catch {
    return '<unreadable name>';
  }
}

function parseExtensions(node: DerNode): CertExtension[] {
  const seqNode = expectTag(children(node)[0], TAG.SEQUENCE, 'extensions');
  const out: CertExtension[] = [];
  const seen = new Set<string>();
  for (const ext of children(seqNode)) {
    const parts = children(expectTag(ext, TAG.SEQUENCE, 'extension'));
    const oid = decodeOid(expectTag(parts[0], TAG.OID, 'extension id'));
    let critical = false;
    let i = 1;
    if (parts[i]?.tag === TAG.BOOLEAN) {
      critical = decodeBoolean(parts[i]!);
      i++;
    }
    const value = expectTag(parts[i], TAG.OCTET_STRING, `value of extension ${oid}`).value;
    if (parts.length !== i + 1) throw new DerError(`extension ${oid} has trailing fields`);
    if (seen.has(oid)) throw new DerError(`extension ${oid} appears twice`);
    seen.add(oid);
    out.push({ oid, critical, value });
  }
  return out;
}

/** Parses one DER certificate. Throws DerError on any structural problem. */
export function parseCertificate(der: Buffer): ParsedCertificate {
  const cert = expectTag(parseDer(der), TAG.SEQUENCE, 'Certificate');
  const [tbsNode, algNode, sigNode, ...rest] = children(cert);
  if (rest.length) throw new DerError('Certificate has trailing fields');
  const tbs = expectTag(tbsNode, TAG.SEQUENCE, 'TBSCertificate');
  const sigAlg = decodeOid(
    expectTag(children(expectTag(algNode, TAG.SEQUENCE, 'signatureAlgorithm'))[0], TAG.OID, 'algorithm'),
  );
  const signature = decodeBitString(expectTag(sigNode, TAG.BIT_STRING, 'signatureValue'));

  const f = children(tbs);
  let i = 0;
  let version = 1;
  if (f[0]?.tag === 0xa0) {
    version = decodeSmallInt(expectTag(children(f[0])[0], TAG.INTEGER, 'version')) + 1;
    i++;
  }
  const serial = expectTag(f[i++], TAG.INTEGER, 'serialNumber');
  const innerAlg = expectTag(f[i++], TAG.SEQUENCE, 'signature');
  const innerAlgOid = decodeOid(expectTag(children(innerAlg)[0], TAG.OID, 'algorithm'));
  if (innerAlgOid !== sigAlg)
    throw new DerError('signature algorithm in TBSCertificate differs from the outer one');
  const issuer = expectTag(f[i++], TAG.SEQUENCE, 'issuer');
  const validity = children(expectTag(f[i++], TAG.SEQUENCE, 'validity'));
  if (validity.length !== 2) throw new DerError('validity must have two times');
  const notBefore = decodeTime(validity[0]!);
  const notAfter = decodeTime(validity[1]!);
  const subject = expectTag(f[i++], TAG.SEQUENCE, 'subject');
  const spkiNode = expectTag(f[i++], TAG.SEQUENCE, 'subjectPublicKeyInfo');
  const spkiParts = children(spkiNode);
  const keyAlg = decodeOid(
    expectTag(
      children(expectTag(spkiParts[0], TAG.SEQUENCE, 'key algorithm'))[0],
      TAG.OID,
      'key algorithm id',
    ),
  );
  const publicKeyBits = decodeBitString(expectTag(spkiParts[1], TAG.BIT_STRING, 'subjectPublicKey'));
  let extensions: CertExtension[] = [];
  for (; i < f.length; i++) {
    const n = f[i]!;
    if (n.tag === 0xa3) extensions = parseExtensions(n);
    else if (n.tag !== 0x81 && n.tag !== 0x82 && n.tag !== 0xa1 && n.tag !== 0xa2) {
      throw new DerError(`unexpected field with tag 0x${n.tag.toString(16)} in TBSCertificate`);
    }
  }
  let basicConstraints: ParsedCertificate['basicConstraints'];
  let keyUsage: number | undefined;
  for (const ext of extensions) {
    if (ext.oid === OID_BASIC_CONSTRAINTS) {
      const parts = children(expectTag(parseDer(ext.value), TAG.SEQUENCE, 'basicConstraints'));
      let ca = false;
      let pathLen: number | undefined;
      for (const p of parts) {
        if (p.tag === TAG.BOOLEAN) ca = decodeBoolean(p);
        else if (p.tag === TAG.INTEGER) pathLen = decodeSmallInt(p);
      }
      basicConstraints = pathLen === undefined ? { ca } : { ca, pathLen };
    } else if (ext.oid === OID_KEY_USAGE) {
      keyUsage = decodeBitFlags(parseDer(ext.value));
    }
  }
  return {
    der,
    tbs: tbs.raw,
    version,
    serialHex: serial.value.toString('hex'),
    signatureAlgorithm: sigAlg,
    signature,
    issuerRaw: issuer.raw,
    subjectRaw: subject.raw,
    issuer: nameToString(issuer.raw),
    subject: nameToString(subject.raw),
    notBefore,
    notAfter,
    spki: spkiNode.raw,
    publicKeyAlgorithm: keyAlg,
    publicKeyBits,
    extensions,
    basicConstraints,
    keyUsage,
    fingerprint: createHash('sha256').update(der).digest('hex'),
  };
}

const PEM_RE = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]*?)-----END CERTIFICATE-----/g;

/** DER of every CERTIFICATE block in a PEM text (in order). */
export function pemCertificates(text: string): Buffer[] {
  const out: Buffer[] = [];
  for (const m of text.matchAll(PEM_RE)) out.push(Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64'));
  return out;
}

export function toPem(der: Buffer, label = 'CERTIFICATE'): string {
  const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n');
  return `-----BEGIN ${label}-----\n${b64}${b64.endsWith('\n') ? '' : '\n'}-----END ${label}-----\n`;
}

// Loaded public keys by SPKI (loading is the expensive part of checking a chain link).
const keyCache = new Map<string, KeyObject | null>();
const KEY_CACHE_MAX = 4096;

/** The certificate's public key, or null when Node cannot load it (unsupported or malformed). */
export function publicKeyOf(cert: ParsedCertificate): KeyObject | null {
  const id = cert.spki.toString('base64');
  const hit = keyCache.get(id);
  if (hit !== undefined) return hit;
  let key: KeyObject | null = null;
  try {
    key = createPublicKey({ key: cert.spki, format: 'der', type: 'spki' });
  } catch {
    key = null;
  }
  if (keyCache.size >= KEY_CACHE_MAX) keyCache.clear();
  keyCache.set(id, key);
  return key;
}

const SIG_ALGS: Record<string, { hash: string; ec: boolean }> = {
  '1.2.840.113549.1.1.5': { hash: 'sha1', ec: false },
  '1.2.840.113549.1.1.11': { hash: 'sha256', ec: false },
  '1.2.840.113549.1.1.12': { hash: 'sha384', ec: false },
  '1.2.840.113549.1.1.13': { hash: 'sha512', ec: false },
  '1.2.840.10045.4.1': { hash: 'sha1', ec: true },
  '1.2.840.10045.4.3.2': { hash: 'sha256', ec: true },
  '1.2.840.10045.4.3.3': { hash: 'sha384', ec: true },
  '1.2.840.10045.4.3.4': { hash: 'sha512', ec: true },
};

/** Verifies `cert`'s signature with `key`. Returns an explanation on failure, null on success. */
export function checkCertSignature(
  cert: Pick<ParsedCertificate, 'tbs' | 'signatureAlgorithm' | 'signature'>,
  key: KeyObject,
): string | null {
  const alg = SIG_ALGS[cert.signatureAlgorithm];
  if (!alg) return `unsupported signature algorithm ${cert.signatureAlgorithm}`;
  const keyType = key.asymmetricKeyType;
  if (alg.ec ? keyType !== 'ec' : keyType !== 'rsa')
    return `signature algorithm does not match the ${keyType} key`;
  try {
    const ok = cryptoVerify(alg.hash, cert.tbs, key, cert.signature);
    return ok ? null : 'signature does not verify';
  } catch (e) {
    return `signature does not verify (${(e as Error).message})`;
  }
}

// Signature results of certificate links never change: memoize them so that verifying many
// clients of the same platform (same PCK and TCB-signing chains) costs one check per link.
const linkCache = new Map<string, string | null>();
const LINK_CACHE_MAX = 4096;

function checkLink(cert: ParsedCertificate, issuer: ParsedCertificate): string | null {
  const id = `${cert.fingerprint}/${issuer.fingerprint}`;
  const hit = linkCache.get(id);
  if (hit !== undefined) return hit;
  const key = publicKeyOf(issuer);
  const problem = key ? checkCertSignature(cert, key) : `key of ${describe(issuer)} cannot be loaded`;
  if (linkCache.size >= LINK_CACHE_MAX) linkCache.clear();
  linkCache.set(id, problem);
  return problem;
}

function describe(cert: ParsedCertificate): string {
  const cn = /CN=([^,]*)/.exec(cert.subject)?.[1];
  return `"${cn ?? cert.subject}"`;
}

function sameName(a: ParsedCertificate, b: ParsedCertificate): boolean {
  return a.issuerRaw.equals(b.subjectRaw) || (a.issuer === b.subject && a.issuer !== '<unreadable name>');
}

function validityProblem(cert: ParsedCertificate, at: Date): string | null {
  if (at < cert.notBefore) return `${describe(cert)} is not valid before ${cert.notBefore.toISOString()}`;
  if (at > cert.notAfter) return `${describe(cert)} expired at ${cert.notAfter.toISOString()}`;
  return null;
}

function issuerProblem(cert: ParsedCertificate): string | null {
  if (!cert.basicConstraints?.ca)
    return `${describe(cert)} is not a CA certificate (basicConstraints CA:true missing)`;
  if (cert.keyUsage !== undefined && (cert.keyUsage & KEY_USAGE_KEY_CERT_SIGN) === 0) {
    return `${describe(cert)} lacks the keyCertSign key usage`;
  }
  return null;
}

export interface ChainResult {
  ok: boolean;
  detail: string;
  /** The path from the leaf up to (and including) the trust anchor, as subject CNs. */
  path: ParsedCertificate[];
}

/**
 * Builds and checks a path from `leaf` through certificates of `pool` to one of `anchors`:
 * every link's signature verifies with its issuer's key, every certificate (anchor included)
 * is within its validity window at `at`, every issuer is a CA (basicConstraints CA:true, and
 * keyCertSign when keyUsage is present), and pathLen constraints hold. Unknown critical
 * extensions (Intel's SGX OIDs) are accepted.
 */
export function verifyChain(
  leaf: ParsedCertificate,
  pool: ParsedCertificate[],
  anchors: ParsedCertificate[],
  at: Date,
): ChainResult {
  const path: ParsedCertificate[] = [leaf];
  let cur = leaf;
  for (let depth = 0; depth < 8; depth++) {
    const v = validityProblem(cur, at);
    if (v) return { ok: false, detail: `${v} (checked at ${at.toISOString()})`, path };
    const self = anchors.find((a) => a.der.equals(cur.der));
    if (self) {
      const stray = strayProblem(pool, path, self);
      if (stray) return { ok: false, detail: stray, path };
      return { ok: true, detail: chainDetail(path, at), path };
    }
    let lastProblem: string | null = null;
    // A configured trust anchor that issued `cur`?
    for (const anchor of anchors) {
      if (!sameName(cur, anchor)) continue;
      const sigProblem = checkLink(cur, anchor);
      if (sigProblem) {
        lastProblem ??= `${describe(cur)} is not signed by trust anchor ${describe(anchor)}: ${sigProblem}`;
        continue;
      }
      const problem =
        issuerProblem(anchor) ??
        validityProblem(anchor, at) ??
        pathLenProblem(anchor, path) ??
        strayProblem(pool, path, anchor);
      if (problem) return { ok: false, detail: problem, path: [...path, anchor] };
      return { ok: true, detail: chainDetail([...path, anchor], at), path: [...path, anchor] };
    }
    // An intermediate from the evidence?
    let next: ParsedCertificate | undefined;
    let untrustedRoot: ParsedCertificate | undefined;
    for (const cand of pool) {
      if (path.some((p) => p.der.equals(cand.der)) || !sameName(cur, cand)) continue;
      const sigProblem = checkLink(cur, cand);
      if (sigProblem) {
        lastProblem ??= `${describe(cur)} is not signed by ${describe(cand)}: ${sigProblem}`;
        continue;
      }
      // A self-signed certificate carried in the evidence is never trusted by itself: the path
      // must end at a configured anchor.
      if (cand.issuerRaw.equals(cand.subjectRaw)) {
        untrustedRoot = cand;
        continue;
      }
      const problem = issuerProblem(cand) ?? pathLenProblem(cand, path);
      if (problem) return { ok: false, detail: problem, path };
      next = cand;
      break;
    }
    if (!next) {
      if (lastProblem) return { ok: false, detail: lastProblem, path };
      if (untrustedRoot) {
        return {
          ok: false,
          detail: `${describe(cur)} is issued by ${describe(untrustedRoot)} (carried in the evidence), which is not a configured trust anchor (trusted: ${anchors.map(describe).join(', ') || '(none)'})`,
          path: [...path, untrustedRoot],
        };
      }
      const selfSigned = cur.issuerRaw.equals(cur.subjectRaw);
      const anchorNames = anchors.map(describe).join(', ') || '(none)';
      return {
        ok: false,
        detail: selfSigned
          ? `chain ends at self-signed ${describe(cur)}, which is not a configured trust anchor (trusted: ${anchorNames})`
          : `no issuer found for ${describe(cur)} (issuer ${cur.issuer}); trusted: ${anchorNames}`,
        path,
      };
    }
    path.push(next);
    cur = next;
  }
  return { ok: false, detail: 'certificate chain is too long', path };
}

/**
 * Every certificate the evidence carries must be on the validated path, or be a copy of the
 * root: self-signed with the trust anchor's key. Anything else means the chain is not what it
 * claims to be.
 */
function strayProblem(
  pool: ParsedCertificate[],
  path: ParsedCertificate[],
  anchor: ParsedCertificate,
): string | null {
  for (const c of pool) {
    if (path.some((p) => p.der.equals(c.der))) continue;
    if (c.issuerRaw.equals(c.subjectRaw) && c.publicKeyBits.equals(anchor.publicKeyBits)) continue;
    return `the evidence carries ${describe(c)}, which is neither on the path to the trust anchor nor a copy of it`;
  }
  return null;
}

function pathLenProblem(issuer: ParsedCertificate, below: ParsedCertificate[]): string | null {
  const limit = issuer.basicConstraints?.pathLen;
  // Intermediates below this issuer (the leaf does not count).
  const intermediates = below.length - 1;
  if (limit !== undefined && intermediates > limit) {
    return `${describe(issuer)} allows ${limit} intermediate CA(s) below it, found ${intermediates}`;
  }
  return null;
}

function chainDetail(path: ParsedCertificate[], at: Date): string {
  return `${path.map(describe).join(' → ')} (valid at ${at.toISOString()})`;
}
