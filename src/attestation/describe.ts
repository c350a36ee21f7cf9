/** A JSON-friendly summary of evidence (what `seng attest inspect` prints). */
import { pckSgxInfo } from './collateral.js';
import { keyBindingHash, quoteFingerprint, type Evidence } from './evidence.js';

export interface EvidenceSummary {
  kind: Evidence['kind'];
  mrEnclave: string;
  mrSigner: string;
  reportData: string;
  isvProdId: number;
  isvSvn: number;
  debug: boolean;
  mode64bit: boolean;
  attributes: string;
  miscSelect: number;
  cpuSvn: string;
  configSvn: number;
  configId: string;
  isvExtProdId: string;
  isvFamilyId: string;
  /** Whether report_data[0..32] equals SHA-256 of the certificate key (unverified claim). */
  keyBound: boolean;
  quote: {
    version: number;
    signType?: number;
    attestationKeyType?: number;
    qeSvn: number;
    pceSvn: number;
    size: number;
  };
  quoteFingerprint: string;
  certificate: {
    subject: string;
    issuer: string;
    notBefore: string;
    notAfter: string;
    keyAlgorithm: string;
    sha256: string;
  };
  // EPID
  quoteStatus?: string;
  reportTimestamp?: string;
  reportId?: string;
  reportVersion?: number;
  advisoryIds?: string[];
  advisoryUrl?: string;
  epidGroupId?: string;
  iasSigningCert?: string;
  encoding?: Record<string, string>;
  // DCAP
  pckChainSource?: string;
  pck?: {
    subject: string;
    fmspc?: string;
    pceId?: string;
    tcbComponents?: number[];
    pceSvn?: number;
    notAfter: string;
  };
  qeReport?: { mrEnclave: string; mrSigner: string; isvProdId: number; isvSvn: number };
  collateral?: {
    tcbInfo: boolean;
    tcbSigningChain: number;
    qeIdentity: boolean;
    rootCaCrl: boolean;
    pckCrl: boolean;
  };
}

const KEY_ALGS: Record<string, string> = {
  '1.2.840.113549.1.1.1': 'rsa',
  '1.2.840.10045.2.1': 'ec',
};

export function describeEvidence(ev: Evidence): EvidenceSummary {
  const r = ev.report;
  const cert = ev.certificate;
  const base: EvidenceSummary = {
    kind: ev.kind,
    mrEnclave: ev.mrEnclave.toString('hex'),
    mrSigner: ev.mrSigner.toString('hex'),
    reportData: ev.reportData.toString('hex'),
    isvProdId: ev.isvProdId,
    isvSvn: ev.isvSvn,
    debug: ev.debug,
    mode64bit: (r.attributesFlags & 4n) !== 0n,
    attributes: r.attributes.toString('hex'),
    miscSelect: r.miscSelect,
    cpuSvn: r.cpuSvn.toString('hex'),
    configSvn: r.configSvn,
    configId: r.configId.toString('hex'),
    isvExtProdId: r.isvExtProdId.toString('hex'),
    isvFamilyId: r.isvFamilyId.toString('hex'),
    keyBound: keyBindingHash(cert).equals(ev.reportData.subarray(0, 32)),
    quote: {
      version: ev.header.version,
      ...(ev.kind === 'epid'
        ? { signType: ev.header.signOrKeyType }
        : { attestationKeyType: ev.header.signOrKeyType }),
      qeSvn: ev.header.qeSvn,
      pceSvn: ev.header.pceSvn,
      size: ev.kind === 'epid' ? (ev.separateQuote?.length ?? ev.quote.length) : ev.quote.length,
    },
    quoteFingerprint: quoteFingerprint(ev),
    certificate: {
      subject: cert.subject,
      issuer: cert.issuer,
      notBefore: cert.notBefore.toISOString(),
      notAfter: cert.notAfter.toISOString(),
      keyAlgorithm: KEY_ALGS[cert.publicKeyAlgorithm] ?? cert.publicKeyAlgorithm,
      sha256: cert.fingerprint,
    },
  };
  if (ev.kind === 'epid') {
    const rep = ev.ias.report;
    return {
      ...base,
      quoteStatus: rep.quoteStatus,
      reportTimestamp: rep.timestamp.toISOString(),
      ...(rep.id === undefined ? {} : { reportId: rep.id }),
      ...(rep.version === undefined ? {} : { reportVersion: rep.version }),
      advisoryIds: rep.advisoryIds,
      ...(rep.advisoryUrl === undefined ? {} : { advisoryUrl: rep.advisoryUrl }),
      epidGroupId: ev.quote.subarray(4, 8).toString('hex'),
      iasSigningCert: ev.ias.signingCert.subject,
      encoding: ev.ias.encoding,
    };
  }
  const leaf = ev.pckChain[0];
  const info = leaf ? pckSgxInfo(leaf) : undefined;
  const qe = ev.signatureData.qeReport;
  return {
    ...base,
    pckChainSource: ev.pckChainSource,
    ...(leaf
      ? {
          pck: {
            subject: leaf.subject,
            notAfter: leaf.notAfter.toISOString(),
            ...(info && typeof info !== 'string'
              ? {
                  fmspc: info.fmspc,
                  pceId: info.pceId,
                  tcbComponents: info.tcbComponents,
                  pceSvn: info.pceSvn,
                }
              : {}),
          },
        }
      : {}),
    qeReport: {
      mrEnclave: qe.mrEnclave.toString('hex'),
      mrSigner: qe.mrSigner.toString('hex'),
      isvProdId: qe.isvProdId,
      isvSvn: qe.isvSvn,
    },
    collateral: {
      tcbInfo: ev.tcbInfo !== undefined,
      tcbSigningChain: ev.tcbSigningChain.length,
      qeIdentity: ev.qeIdentity !== undefined,
      rootCaCrl: ev.rootCaCrl !== undefined,
      pckCrl: ev.pckCrl !== undefined,
    },
  };
}
