/**
 * SGX quote and report structures (SPEC §2; Intel "ECDSA Quote Library API", quote v3).
 * Parsers here throw only `QuoteFormatError`; the evidence parser turns it into an
 * AttestationParseError.
 */

export class QuoteFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'QuoteFormatError';
  }
}

export const QUOTE_HEADER_SIZE = 48;
export const REPORT_BODY_SIZE = 384;
/** Header + ISV report body: what IAS reports as isvEnclaveQuoteBody, and what the DCAP ISV signature covers. */
export const QUOTE_BODY_SIZE = QUOTE_HEADER_SIZE + REPORT_BODY_SIZE;

export const ATTRIBUTE_INIT = 1n << 0n;
export const ATTRIBUTE_DEBUG = 1n << 1n;
export const ATTRIBUTE_MODE64BIT = 1n << 2n;

/** Intel's QE vendor id (939a7233-f79c-4ca9-940a-0db3957f0607). */
export const INTEL_QE_VENDOR_ID = Buffer.from('939a7233f79c4ca9940a0db3957f0607', 'hex');

export interface ReportBody {
  raw: Buffer;
  cpuSvn: Buffer;
  miscSelect: number;
  isvExtProdId: Buffer;
  /** attributes.flags (bit 1 = DEBUG, bit 2 = MODE64BIT). */
  attributesFlags: bigint;
  attributesXfrm: bigint;
  /** The 16 attribute bytes (flags ‖ xfrm) as they appear in the report. */
  attributes: Buffer;
  mrEnclave: Buffer;
  mrSigner: Buffer;
  configId: Buffer;
  isvProdId: number;
  isvSvn: number;
  configSvn: number;
  isvFamilyId: Buffer;
  reportData: Buffer;
}

export function parseReportBody(raw: Buffer): ReportBody {
  if (raw.length !== REPORT_BODY_SIZE)
    throw new QuoteFormatError(`report body is ${raw.length} bytes, expected 384`);
  return {
    raw,
    cpuSvn: raw.subarray(0, 16),
    miscSelect: raw.readUInt32LE(16),
    isvExtProdId: raw.subarray(32, 48),
    attributesFlags: raw.readBigUInt64LE(48),
    attributesXfrm: raw.readBigUInt64LE(56),
    attributes: raw.subarray(48, 64),
    mrEnclave: raw.subarray(64, 96),
    mrSigner: raw.subarray(128, 160),
    configId: raw.subarray(192, 256),
    isvProdId: raw.readUInt16LE(256),
    isvSvn: raw.readUInt16LE(258),
    configSvn: raw.readUInt16LE(260),
    isvFamilyId: raw.subarray(304, 320),
    reportData: raw.subarray(320, 384),
  };
}

export interface QuoteHeader {
  version: number;
  /** EPID: sign type (0 unlinkable, 1 linkable). DCAP: attestation key type (2 = ECDSA P-256). */
  signOrKeyType: number;
  epidGroupId: number;
  qeSvn: number;
  pceSvn: number;
  /** EPID: xeid (4 bytes) + basename (32). DCAP: QE vendor id (16) + user data (20). */
  qeVendorId: Buffer;
  userData: Buffer;
  basename: Buffer;
}

export function parseQuoteHeader(raw: Buffer): QuoteHeader {
  if (raw.length < QUOTE_HEADER_SIZE)
    throw new QuoteFormatError(`quote header is truncated (${raw.length} bytes)`);
  return {
    version: raw.readUInt16LE(0),
    signOrKeyType: raw.readUInt16LE(2),
    epidGroupId: raw.readUInt32LE(4),
    qeSvn: raw.readUInt16LE(8),
    pceSvn: raw.readUInt16LE(10),
    qeVendorId: raw.subarray(12, 28),
    userData: raw.subarray(28, 48),
    basename: raw.subarray(16, 48),
  };
}

export const CERT_DATA_PCK_CHAIN = 5;

export interface DcapSignatureData {
  /** ECDSA signature (r ‖ s) over the first 432 bytes of the quote, by the attestation key. */
  isvSignature: Buffer;
  /** Attestation public key, x ‖ y (P-256). */
  attestationKey: Buffer;
  qeReport: ReportBody;
  /** ECDSA signature (r ‖ s) over the QE report body, by the PCK leaf key. */
  qeReportSignature: Buffer;
  qeAuthData: Buffer;
  certDataType: number;
  certData: Buffer;
}

/** Parses the signature data of a DCAP v3 quote; `quote` is the whole quote. Exact sizes are enforced. */
export function parseDcapSignatureData(quote: Buffer): DcapSignatureData {
  if (quote.length < QUOTE_BODY_SIZE + 4)
    throw new QuoteFormatError(`quote is truncated (${quote.length} bytes)`);
  const sigLen = quote.readUInt32LE(QUOTE_BODY_SIZE);
  const start = QUOTE_BODY_SIZE + 4;
  if (start + sigLen !== quote.length) {
    throw new QuoteFormatError(
      `signature data length ${sigLen} does not match the quote size ${quote.length} (expected ${quote.length - start})`,
    );
  }
  const sig = quote.subarray(start);
  const fixed = 64 + 64 + REPORT_BODY_SIZE + 64;
  if (sig.length < fixed + 2) throw new QuoteFormatError('signature data is truncated');
  let o = 0;
  const isvSignature = sig.subarray(o, (o += 64));
  const attestationKey = sig.subarray(o, (o += 64));
  const qeReport = parseReportBody(sig.subarray(o, (o += REPORT_BODY_SIZE)));
  const qeReportSignature = sig.subarray(o, (o += 64));
  const authLen = sig.readUInt16LE(o);
  o += 2;
  if (o + authLen + 6 > sig.length)
    throw new QuoteFormatError('QE authentication data overruns the signature data');
  const qeAuthData = sig.subarray(o, (o += authLen));
  const certDataType = sig.readUInt16LE(o);
  const certLen = sig.readUInt32LE(o + 2);
  o += 6;
  if (o + certLen !== sig.length) {
    throw new QuoteFormatError(
      `certification data size ${certLen} does not match the remaining ${sig.length - o} bytes`,
    );
  }
  const certData = sig.subarray(o, o + certLen);
  return { isvSignature, attestationKey, qeReport, qeReportSignature, qeAuthData, certDataType, certData };
}
