/**
 * RA-TLS certificate → attestation evidence (SPEC §2). Parsing is structural only: it
 * says what the certificate claims; `verifyEvidence` decides whether to believe it.
 * `parseRaTlsCertificate` throws nothing but AttestationParseError, whatever it is given.
 */
import { createHash } from 'node:crypto';
import { DerError } from './der.js';
import { AttestationParseError } from './errors.js';
import {
  ATTRIBUTE_DEBUG,
  CERT_DATA_PCK_CHAIN,
  QUOTE_BODY_SIZE,
  QuoteFormatError,
  parseDcapSignatureData,
  parseQuoteHeader,
  parseReportBody,
  type DcapSignatureData,
  type QuoteHeader,
  type ReportBody,
} from './quote.js';
import { parseCertificate, pemCertificates, type ParsedCertificate } from './x509.js';

export const RATLS_OID_ARC = '1.2.840.113741.1337';
export const OID = {
  iasReport: `${RATLS_OID_ARC}.2`,
  iasSigningCa: `${RATLS_OID_ARC}.3`,
  iasSigningCert: `${RATLS_OID_ARC}.4`,
  iasSignature: `${RATLS_OID_ARC}.5`,
  quote: `${RATLS_OID_ARC}.6`,
  pckCert: `${RATLS_OID_ARC}.7`,
  pckChain: `${RATLS_OID_ARC}.8`,
  tcbInfo: `${RATLS_OID_ARC}.9`,
  tcbSigningChain: `${RATLS_OID_ARC}.10`,
  qeIdentity: `${RATLS_OID_ARC}.11`,
  rootCaCrl: `${RATLS_OID_ARC}.12`,
  pckCrl: `${RATLS_OID_ARC}.13`,
} as const;

export type AttestationKind = 'epid' | 'dcap';
/** How the EPID extension values were stored: bytes directly (sgx-ra-tls) or base64 (Go-era clients). */
export type ValueEncoding = 'raw' | 'base64';

export interface IasReport {
  /** The exact bytes of the report body, as signed by IAS. */
  bytes: Buffer;
  id: string | undefined;
  version: number | undefined;
  timestamp: Date;
  timestampText: string;
  quoteStatus: string;
  /** isvEnclaveQuoteBody, decoded (432 bytes). */
  quoteBody: Buffer;
  advisoryIds: string[];
  advisoryUrl: string | undefined;
  platformInfoBlob: string | undefined;
  nonce: string | undefined;
  epidPseudonym: string | undefined;
}

interface EvidenceBase {
  kind: AttestationKind;
  certificate: ParsedCertificate;
  /** The quote every check and the fingerprint use (EPID: the IAS report's quote body unless the certificate also carries the quote). */
  quote: Buffer;
  header: QuoteHeader;
  report: ReportBody;
  mrEnclave: Buffer;
  mrSigner: Buffer;
  reportData: Buffer;
  isvProdId: number;
  isvSvn: number;
  debug: boolean;
}

export interface EpidEvidence extends EvidenceBase {
  kind: 'epid';
  ias: {
    report: IasReport;
    signature: Buffer;
    /** Report-signing certificate (.4). */
    signingCert: ParsedCertificate;
    /** Report-signing CA as carried in the certificate (.3), if any: a chain candidate, never trusted by itself. */
    caCert: ParsedCertificate | undefined;
    encoding: Record<'report' | 'caCert' | 'signingCert' | 'signature', ValueEncoding | 'absent'>;
  };
  /** The full quote when the certificate carries it in .6 besides the IAS report. */
  separateQuote: Buffer | undefined;
}

export interface DcapEvidence extends EvidenceBase {
  kind: 'dcap';
  signatureData: DcapSignatureData;
  /** PCK leaf first, then its issuers as carried in the evidence. */
  pckChain: ParsedCertificate[];
  pckChainSource: 'quote' | 'extensions' | 'none';
  /** Collateral as found in the certificate (text; evaluated by the verifier). */
  tcbInfo: string | undefined;
  tcbSigningChain: ParsedCertificate[];
  qeIdentity: string | undefined;
  rootCaCrl: Buffer | undefined;
  pckCrl: Buffer | undefined;
}

export type Evidence = EpidEvidence | DcapEvidence;

function fail(message: string, cause?: unknown): never {
  throw new AttestationParseError(message, cause);
}

const BASE64_RE = /^[A-Za-z0-9+/\r\n]+={0,2}\s*$/;

function looksBase64(b: Buffer): boolean {
  if (b.length === 0 || b.length > 1 << 22) return false;
  return BASE64_RE.test(b.toString('latin1'));
}

/** PEM text, possibly URL-encoded (as Intel PCS headers and the sgx-ra-tls sample store chains). */
function pemText(value: Buffer, what: string): string {
  let text = value.toString('latin1');
  if (/^\s*-----BEGIN%20/.test(text) || /%0A/i.test(text)) {
    try {
      text = decodeURIComponent(text);
    } catch (e) {
      fail(`${what} is URL-encoded PEM with a bad escape`, e);
    }
  }
  return text;
}

function parseCertOrFail(der: Buffer, what: string): ParsedCertificate {
  try {
    return parseCertificate(der);
  } catch (e) {
    fail(`${what} is not a valid X.509 certificate: ${(e as Error).message}`, e);
  }
}

function pemChain(value: Buffer, what: string): ParsedCertificate[] {
  const text = pemText(value, what);
  const ders = pemCertificates(text);
  if (ders.length === 0) fail(`${what} holds no PEM certificate`);
  return ders.map((d, i) => parseCertOrFail(d, `${what} (certificate ${i + 1})`));
}

/** An EPID certificate value: PEM text (raw form) or base64 of the DER (Go-era form). */
function epidCert(value: Buffer, what: string): { cert: ParsedCertificate; encoding: ValueEncoding } {
  const text = value.toString('latin1');
  if (text.includes('-----BEGIN')) {
    const certs = pemChain(value, what);
    if (certs.length !== 1) fail(`${what} must hold exactly one certificate, found ${certs.length}`);
    return { cert: certs[0]!, encoding: 'raw' };
  }
  if (value[0] === 0x30) return { cert: parseCertOrFail(value, what), encoding: 'raw' };
  if (looksBase64(value))
    return { cert: parseCertOrFail(Buffer.from(text, 'base64'), what), encoding: 'base64' };
  fail(`${what} is neither PEM, DER nor base64 of a DER certificate`);
}

const IAS_TS_RE = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|\+00:00)?$/;

export function parseIasTimestamp(text: string): Date | undefined {
  const m = IAS_TS_RE.exec(text);
  if (!m) return undefined;
  const [y, mo, d, h, mi, s] = [1, 2, 3, 4, 5, 6].map((i) => Number(m[i]));
  const ms = m[7] ? Math.floor(Number(`0${m[7]}`) * 1000) : 0;
  const t = Date.UTC(y!, mo! - 1, d, h, mi, s, ms);
  const dt = new Date(t);
  if (
    Number.isNaN(t) ||
    dt.getUTCDate() !== d ||
    dt.getUTCMonth() !== mo! - 1 ||
    h! > 23 ||
    mi! > 59 ||
    s! > 59
  ) {
    return undefined;
  }
  return dt;
}

function optString(o: Record<string, unknown>, key: string): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') fail(`IAS report field "${key}" must be a string`);
  return v;
}

function parseIasReport(value: Buffer): { report: IasReport; encoding: ValueEncoding } {
  let bytes = value;
  let encoding: ValueEncoding = 'raw';
  const first = value.toString('latin1').trimStart()[0];
  if (first !== '{') {
    if (!looksBase64(value)) fail('IAS report (extension .2) is neither JSON nor base64 of JSON');
    bytes = Buffer.from(value.toString('latin1'), 'base64');
    encoding = 'base64';
  }
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    fail(`IAS report is not valid JSON: ${(e as Error).message}`, e);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json))
    fail('IAS report is not a JSON object');
  const o = json as Record<string, unknown>;
  const quoteStatus = optString(o, 'isvEnclaveQuoteStatus');
  if (!quoteStatus) fail('IAS report lacks isvEnclaveQuoteStatus');
  const timestampText = optString(o, 'timestamp');
  if (!timestampText) fail('IAS report lacks timestamp');
  const timestamp = parseIasTimestamp(timestampText);
  if (!timestamp) fail(`IAS report timestamp "${timestampText}" is not YYYY-MM-DDTHH:MM:SS[.ffffff]`);
  const bodyB64 = optString(o, 'isvEnclaveQuoteBody');
  if (!bodyB64) fail('IAS report lacks isvEnclaveQuoteBody');
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(bodyB64)) fail('isvEnclaveQuoteBody is not base64');
  const quoteBody = Buffer.from(bodyB64, 'base64');
  if (quoteBody.length !== QUOTE_BODY_SIZE) {
    fail(`isvEnclaveQuoteBody is ${quoteBody.length} bytes, expected ${QUOTE_BODY_SIZE}`);
  }
  const adv = o.advisoryIDs;
  let advisoryIds: string[] = [];
  if (adv !== undefined && adv !== null) {
    if (!Array.isArray(adv) || adv.some((a) => typeof a !== 'string'))
      fail('advisoryIDs must be an array of strings');
    advisoryIds = adv as string[];
  }
  const version = o.version;
  if (version !== undefined && typeof version !== 'number') fail('IAS report version must be a number');
  const idv = o.id;
  return {
    report: {
      bytes,
      id: typeof idv === 'string' || typeof idv === 'number' ? String(idv) : undefined,
      version: version as number | undefined,
      timestamp,
      timestampText,
      quoteStatus,
      quoteBody,
      advisoryIds,
      advisoryUrl: optString(o, 'advisoryURL'),
      platformInfoBlob: optString(o, 'platformInfoBlob'),
      nonce: optString(o, 'nonce'),
      epidPseudonym: optString(o, 'epidPseudonym'),
    },
    encoding,
  };
}

function parseSignature(value: Buffer): { signature: Buffer; encoding: ValueEncoding } {
  if (looksBase64(value)) {
    const decoded = Buffer.from(value.toString('latin1'), 'base64');
    // RSA signatures are 256/384/512 bytes; a raw signature that happens to be all base64 text
    // of exactly the right shape is astronomically unlikely.
    if ([256, 384, 512].includes(decoded.length)) return { signature: decoded, encoding: 'base64' };
  }
  if (value.length === 0) fail('IAS report signature (extension .5) is empty');
  return { signature: value, encoding: 'raw' };
}

function identity(
  base: Omit<
    EvidenceBase,
    'kind' | 'mrEnclave' | 'mrSigner' | 'reportData' | 'isvProdId' | 'isvSvn' | 'debug'
  >,
) {
  return {
    ...base,
    mrEnclave: base.report.mrEnclave,
    mrSigner: base.report.mrSigner,
    reportData: base.report.reportData,
    isvProdId: base.report.isvProdId,
    isvSvn: base.report.isvSvn,
    debug: (base.report.attributesFlags & ATTRIBUTE_DEBUG) !== 0n,
  };
}

/** Reads a certificate from DER bytes or PEM text (the first CERTIFICATE block). */
export function certificateBytes(input: Buffer | string): Buffer {
  const buf = typeof input === 'string' ? Buffer.from(input, 'utf8') : input;
  // DER starts with a SEQUENCE tag; anything else is treated as PEM text.
  if (buf[0] !== 0x30) {
    const ders = pemCertificates(buf.toString('latin1'));
    if (ders.length === 0) fail('the PEM input contains no CERTIFICATE block');
    return ders[0]!;
  }
  return buf;
}

/**
 * Parses an RA-TLS certificate (DER bytes or PEM text) into attestation evidence.
 * Throws only AttestationParseError.
 */
export function parseRaTlsCertificate(input: Buffer | string): Evidence {
  try {
    return parseUnchecked(input);
  } catch (e) {
    if (e instanceof AttestationParseError) throw e;
    if (e instanceof DerError || e instanceof QuoteFormatError) fail(e.message, e);
    // Anything else is unexpected, but the contract is "parse errors only".
    fail(`malformed certificate: ${(e as Error)?.message ?? String(e)}`, e);
  }
}

function parseUnchecked(input: Buffer | string): Evidence {
  if (!Buffer.isBuffer(input) && typeof input !== 'string') fail('certificate must be a Buffer or a string');
  const der = certificateBytes(input);
  if (der.length === 0) fail('empty certificate');
  const certificate = parseCertificate(Buffer.from(der));
  const ext = new Map(certificate.extensions.map((e) => [e.oid, e.value]));

  if (ext.has(OID.iasReport)) {
    const { report, encoding: reportEnc } = parseIasReport(ext.get(OID.iasReport)!);
    const sigValue = ext.get(OID.iasSignature);
    if (!sigValue) fail('EPID certificate lacks the IAS report signature (extension .5)');
    const { signature, encoding: sigEnc } = parseSignature(sigValue);
    const signingValue = ext.get(OID.iasSigningCert);
    if (!signingValue) fail('EPID certificate lacks the IAS report-signing certificate (extension .4)');
    const signing = epidCert(signingValue, 'IAS report-signing certificate (extension .4)');
    const caValue = ext.get(OID.iasSigningCa);
    const ca = caValue ? epidCert(caValue, 'IAS report-signing CA certificate (extension .3)') : undefined;
    const separateQuote = ext.get(OID.quote);
    const quote = report.quoteBody;
    const header = parseQuoteHeader(quote);
    const body = parseReportBody(quote.subarray(48, QUOTE_BODY_SIZE));
    return {
      kind: 'epid',
      ...identity({ certificate, quote, header, report: body }),
      ias: {
        report,
        signature,
        signingCert: signing.cert,
        caCert: ca?.cert,
        encoding: {
          report: reportEnc,
          signature: sigEnc,
          signingCert: signing.encoding,
          caCert: ca?.encoding ?? 'absent',
        },
      },
      separateQuote: separateQuote ? Buffer.from(separateQuote) : undefined,
    };
  }

  const quoteValue = ext.get(OID.quote);
  if (!quoteValue) {
    fail('not an RA-TLS certificate: it has neither an IAS report (1.2.840.113741.1337.2) nor a quote (.6)');
  }
  const quote = Buffer.from(quoteValue);
  const header = parseQuoteHeader(quote);
  if (header.version !== 3) {
    fail(
      header.version === 2 || header.version === 1
        ? 'the certificate carries an EPID quote but no IAS attestation report (extension .2); it cannot be verified'
        : `unsupported quote version ${header.version} (expected 3 for DCAP)`,
    );
  }
  if (header.signOrKeyType !== 2)
    fail(`unsupported attestation key type ${header.signOrKeyType} (expected 2, ECDSA P-256)`);
  if (quote.length < QUOTE_BODY_SIZE + 4) fail(`quote is truncated (${quote.length} bytes)`);
  const body = parseReportBody(quote.subarray(48, QUOTE_BODY_SIZE));
  const signatureData = parseDcapSignatureData(quote);

  let pckChain: ParsedCertificate[] = [];
  let pckChainSource: DcapEvidence['pckChainSource'] = 'none';
  if (signatureData.certDataType === CERT_DATA_PCK_CHAIN) {
    pckChain = pemChain(signatureData.certData, 'PCK certificate chain in the quote');
    pckChainSource = 'quote';
  } else if (ext.has(OID.pckCert)) {
    pckChain = pemChain(ext.get(OID.pckCert)!, 'PCK certificate (extension .7)');
    if (ext.has(OID.pckChain))
      pckChain.push(...pemChain(ext.get(OID.pckChain)!, 'PCK signing chain (extension .8)'));
    pckChainSource = 'extensions';
  }
  const text = (oid: string) => {
    const v = ext.get(oid);
    return v ? v.toString('utf8') : undefined;
  };
  const tcbChainValue = ext.get(OID.tcbSigningChain);
  return {
    kind: 'dcap',
    ...identity({ certificate, quote, header, report: body }),
    signatureData,
    pckChain,
    pckChainSource,
    tcbInfo: text(OID.tcbInfo),
    tcbSigningChain: tcbChainValue ? pemChain(tcbChainValue, 'TCB info signing chain (extension .10)') : [],
    qeIdentity: text(OID.qeIdentity),
    rootCaCrl: ext.get(OID.rootCaCrl),
    pckCrl: ext.get(OID.pckCrl),
  };
}

/** SHA-256 over the certificate's subjectPublicKey BIT STRING contents: what report_data[0..32] must hold. */
export function keyBindingHash(certificate: ParsedCertificate): Buffer {
  return createHash('sha256').update(certificate.publicKeyBits).digest();
}

/**
 * A stable fingerprint of the attested quote (hex SHA-256), so a gateway can check that a
 * second session presents the same evidence as the first. DCAP: the whole quote, signatures
 * included. EPID: the quote body together with the IAS report and its signature.
 */
export function quoteFingerprint(evidence: Evidence): string {
  const h = createHash('sha256').update(evidence.kind).update(evidence.quote);
  if (evidence.kind === 'epid') h.update(evidence.ias.report.bytes).update(evidence.ias.signature);
  return h.digest('hex');
}
