/**
 * X.509 CRLs as DCAP collateral (root CA CRL in .12, PCK CRL in .13): parsing from DER, PEM,
 * URL-encoded PEM or hex (the forms Intel's PCS and RA-TLS libraries use), and the revocation
 * check of a validated PCK path. Nothing here throws on malformed input.
 */
import type { KeyObject } from 'node:crypto';
import {
  TAG,
  children,
  decodeBitString,
  decodeOid,
  decodeTime,
  expectTag,
  parseDer,
  type DerNode,
} from './der.js';
import { checkCertSignature, nameToString, publicKeyOf, type ParsedCertificate } from './x509.js';

export interface ParsedCrl {
  der: Buffer;
  tbs: Buffer;
  signatureAlgorithm: string;
  signature: Buffer;
  issuerRaw: Buffer;
  issuer: string;
  thisUpdate: Date;
  nextUpdate: Date | undefined;
  /** Revoked serial numbers, lowercase hex without leading zero bytes. */
  revoked: Set<string>;
}

export function normalizeSerial(hex: string): string {
  return hex.toLowerCase().replace(/^(00)+(?=..)/, '');
}

function isTime(n: DerNode | undefined): boolean {
  return n !== undefined && (n.tag === TAG.UTC_TIME || n.tag === TAG.GENERALIZED_TIME);
}

export function parseCrlDer(der: Buffer): ParsedCrl {
  const [tbsNode, algNode, sigNode, ...rest] = children(
    expectTag(parseDer(der), TAG.SEQUENCE, 'CertificateList'),
  );
  if (rest.length) throw new Error('CertificateList has trailing fields');
  const tbs = expectTag(tbsNode, TAG.SEQUENCE, 'TBSCertList');
  const signatureAlgorithm = decodeOid(
    expectTag(children(expectTag(algNode, TAG.SEQUENCE, 'signatureAlgorithm'))[0], TAG.OID, 'algorithm'),
  );
  const signature = decodeBitString(expectTag(sigNode, TAG.BIT_STRING, 'signatureValue'));
  const f = children(tbs);
  let i = 0;
  if (f[i]?.tag === TAG.INTEGER) i++;
  expectTag(f[i++], TAG.SEQUENCE, 'signature');
  const issuer = expectTag(f[i++], TAG.SEQUENCE, 'issuer');
  const thisUpdate = decodeTime(f[i++]!);
  let nextUpdate: Date | undefined;
  if (isTime(f[i])) nextUpdate = decodeTime(f[i++]!);
  const revoked = new Set<string>();
  if (f[i]?.tag === TAG.SEQUENCE) {
    for (const entry of children(f[i]!)) {
      const serial = expectTag(
        children(expectTag(entry, TAG.SEQUENCE, 'revoked entry'))[0],
        TAG.INTEGER,
        'serial',
      );
      revoked.add(normalizeSerial(serial.value.toString('hex')));
    }
  }
  return {
    der,
    tbs: tbs.raw,
    signatureAlgorithm,
    signature,
    issuerRaw: issuer.raw,
    issuer: nameToString(issuer.raw),
    thisUpdate,
    nextUpdate,
    revoked,
  };
}

/** Decodes a CRL extension value in any of the forms seen in practice, or returns the problem. */
export function decodeCrl(value: Buffer): ParsedCrl | string {
  let der: Buffer | undefined;
  if (value[0] === 0x30) der = value;
  else {
    let text = value.toString('latin1').trim();
    if (/%[0-9a-f]{2}/i.test(text)) {
      try {
        text = decodeURIComponent(text);
      } catch {
        return 'is URL-encoded with a bad escape';
      }
    }
    const pem = /-----BEGIN X509 CRL-----([A-Za-z0-9+/=\s]*?)-----END X509 CRL-----/.exec(text);
    if (pem) der = Buffer.from(pem[1]!.replace(/\s+/g, ''), 'base64');
    else if (/^(?:[0-9a-fA-F]{2})+$/.test(text)) der = Buffer.from(text, 'hex');
  }
  if (!der) return 'is neither DER, PEM nor hex';
  try {
    return parseCrlDer(der);
  } catch (e) {
    return `is malformed (${(e as Error).message})`;
  }
}

/**
 * Checks one CRL against the validated path: issued and signed by a CA on the path, current at
 * `at`, and revoking none of the certificates that CA issued on the path. Returns the problem or null.
 */
export function crlProblem(
  crl: ParsedCrl,
  path: ParsedCertificate[],
  at: Date,
  what: string,
): { problem: string | null; checked: string } {
  const idx = path.findIndex((c) => c.subjectRaw.equals(crl.issuerRaw));
  if (idx < 0)
    return { problem: `${what} is issued by ${crl.issuer}, which is not on the PCK path`, checked: '' };
  const issuer = path[idx]!;
  const key: KeyObject | null = publicKeyOf(issuer);
  const sig = key ? checkCertSignature(crl, key) : 'issuer key cannot be loaded';
  if (sig) return { problem: `${what} signature: ${sig}`, checked: '' };
  if (at < crl.thisUpdate)
    return { problem: `${what} is not yet valid (thisUpdate ${crl.thisUpdate.toISOString()})`, checked: '' };
  if (crl.nextUpdate && at > crl.nextUpdate) {
    return { problem: `${what} is stale (nextUpdate ${crl.nextUpdate.toISOString()})`, checked: '' };
  }
  // Certificates issued by the CRL issuer on the path are those just below it.
  const below = path.slice(0, idx).filter((c) => c.issuerRaw.equals(issuer.subjectRaw));
  for (const c of below) {
    if (crl.revoked.has(normalizeSerial(c.serialHex))) {
      const cn = /CN=([^,]*)/.exec(c.subject)?.[1] ?? c.subject;
      return {
        problem: `"${cn}" (serial ${normalizeSerial(c.serialHex)}) is revoked by the ${what}`,
        checked: '',
      };
    }
  }
  const cn = /CN=([^,]*)/.exec(issuer.subject)?.[1] ?? issuer.subject;
  return {
    problem: null,
    checked: `${what} of "${cn}" (${crl.revoked.size} revoked, next update ${crl.nextUpdate?.toISOString() ?? 'none'})`,
  };
}
