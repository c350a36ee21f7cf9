/**
 * Verification policy: trust anchors (parsed once, cached in the policy object) and the
 * admission rules an operator can tighten or relax.
 */
import { readFileSync } from 'node:fs';
import { AttestationPolicyError } from './errors.js';
import { INTEL_IAS_REPORT_SIGNING_CA_PEM, INTEL_SGX_ROOT_CA_PEM } from './roots.js';
import { parseCertificate, pemCertificates, type ParsedCertificate } from './x509.js';

/** EPID quote statuses IAS reports (SPEC §2). */
export const EPID_QUOTE_STATUSES = [
  'OK',
  'GROUP_OUT_OF_DATE',
  'CONFIGURATION_NEEDED',
  'SW_HARDENING_NEEDED',
  'CONFIGURATION_AND_SW_HARDENING_NEEDED',
  'SIGNATURE_INVALID',
  'GROUP_REVOKED',
  'SIGNATURE_REVOKED',
  'KEY_REVOKED',
  'SIGRL_VERSION_MISMATCH',
] as const;

/** DCAP TCB statuses (TCB info / QE identity). */
export const DCAP_TCB_STATUSES = [
  'UpToDate',
  'SWHardeningNeeded',
  'ConfigurationNeeded',
  'ConfigurationAndSWHardeningNeeded',
  'OutOfDate',
  'OutOfDateConfigurationNeeded',
  'Revoked',
] as const;

/** Statuses that no policy can allow: the evidence is known to be invalid. */
export const NEVER_ALLOWED_STATUSES = new Set([
  'SIGNATURE_INVALID',
  'GROUP_REVOKED',
  'SIGNATURE_REVOKED',
  'KEY_REVOKED',
  'SIGRL_VERSION_MISMATCH',
  'Revoked',
]);

export interface AttestationPolicyOptions {
  /** PEM file with the IAS report-signing root(s). Default: Intel's SGX Attestation Report Signing CA. */
  iasRootPath?: string;
  /** PEM file with the SGX root(s) for DCAP. Default: Intel SGX Root CA. */
  sgxRootPath?: string;
  /** PEM text instead of a path (for the gateway's in-memory configuration and tests). */
  iasRootPem?: string;
  sgxRootPem?: string;
  /** Admit enclaves with the DEBUG attribute (never in production). */
  allowDebug?: boolean;
  /**
   * Extra statuses to accept besides `OK` (EPID) and `UpToDate` (DCAP), e.g. GROUP_OUT_OF_DATE,
   * SW_HARDENING_NEEDED, OutOfDate. Revocation and invalid-signature statuses are never accepted.
   */
  allowStatus?: string[];
  minIsvSvn?: number;
  allowedProdIds?: number[];
  /** Allowed MRSIGNER values (hex strings or 32-byte Buffers). */
  allowedSigners?: (string | Buffer)[];
  /** Maximum age of an IAS report in seconds (measured at `at`, or now). */
  maxReportAgeSec?: number;
  /** Verification time (certificate validity, collateral freshness, report age). Default: now. */
  at?: Date | string;
  /** DCAP: fail (instead of "not evaluated") when TCB info or QE identity is absent. */
  requireCollateral?: boolean;
}

export interface AttestationPolicy {
  iasAnchors: ParsedCertificate[];
  sgxAnchors: ParsedCertificate[];
  iasRootSource: string;
  sgxRootSource: string;
  allowDebug: boolean;
  allowStatus: Set<string>;
  minIsvSvn: number | undefined;
  allowedProdIds: Set<number> | undefined;
  allowedSigners: Set<string> | undefined;
  maxReportAgeSec: number | undefined;
  /** Fixed verification time, or undefined for "now at each call". */
  at: Date | undefined;
  requireCollateral: boolean;
}

function anchorsFrom(pem: string, source: string): ParsedCertificate[] {
  const ders = pemCertificates(pem);
  if (ders.length === 0) {
    throw new AttestationPolicyError(
      `${source} contains no PEM certificate`,
      'Pass a PEM file with the root certificate.',
    );
  }
  return ders.map((der, i) => {
    try {
      return parseCertificate(der);
    } catch (e) {
      throw new AttestationPolicyError(
        `certificate ${i + 1} of ${source} is malformed: ${(e as Error).message}`,
        undefined,
        e,
      );
    }
  });
}

function readPem(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new AttestationPolicyError(
      `cannot read the ${what} file ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      'Check the path; it must be a PEM certificate file.',
      e,
    );
  }
}

function hex32(v: string | Buffer): string {
  const h = Buffer.isBuffer(v) ? v.toString('hex') : v.toLowerCase().replace(/^0x/, '');
  if (!/^[0-9a-f]{64}$/.test(h)) {
    throw new AttestationPolicyError(
      `MRSIGNER "${String(Buffer.isBuffer(v) ? h : v)}" is not 32 bytes of hex`,
    );
  }
  return h;
}

export function parseTime(at: Date | string, what = 'time'): Date {
  const d = typeof at === 'string' ? new Date(at) : at;
  if (Number.isNaN(d.getTime())) {
    throw new AttestationPolicyError(
      `invalid ${what} "${String(at)}"`,
      'Use an ISO 8601 time, e.g. 2019-03-20T00:00:00Z.',
    );
  }
  return d;
}

/** Builds a policy; reads and parses the trust anchors once. Throws AttestationPolicyError. */
export function loadAttestationPolicy(opts: AttestationPolicyOptions = {}): AttestationPolicy {
  const ias = opts.iasRootPem
    ? { pem: opts.iasRootPem, source: 'the configured IAS root' }
    : opts.iasRootPath
      ? { pem: readPem(opts.iasRootPath, 'IAS root'), source: opts.iasRootPath }
      : { pem: INTEL_IAS_REPORT_SIGNING_CA_PEM, source: 'built-in Intel SGX Attestation Report Signing CA' };
  const sgx = opts.sgxRootPem
    ? { pem: opts.sgxRootPem, source: 'the configured SGX root' }
    : opts.sgxRootPath
      ? { pem: readPem(opts.sgxRootPath, 'SGX root'), source: opts.sgxRootPath }
      : { pem: INTEL_SGX_ROOT_CA_PEM, source: 'built-in Intel SGX Root CA' };
  const known = new Set<string>([...EPID_QUOTE_STATUSES, ...DCAP_TCB_STATUSES]);
  const allowStatus = new Set<string>(['OK', 'UpToDate']);
  for (const s of opts.allowStatus ?? []) {
    if (!known.has(s)) {
      throw new AttestationPolicyError(
        `unknown attestation status "${s}"`,
        `Known statuses: ${[...known].join(', ')}.`,
      );
    }
    if (NEVER_ALLOWED_STATUSES.has(s)) {
      throw new AttestationPolicyError(
        `status ${s} means the evidence is invalid or revoked and cannot be allowed`,
      );
    }
    allowStatus.add(s);
  }
  for (const [name, v] of [
    ['minimum ISV SVN', opts.minIsvSvn],
    ['maximum report age', opts.maxReportAgeSec],
  ] as const) {
    if (v !== undefined && (!Number.isInteger(v) || v < 0)) {
      throw new AttestationPolicyError(`${name} must be a non-negative integer, got ${String(v)}`);
    }
  }
  if (opts.minIsvSvn !== undefined && opts.minIsvSvn > 0xffff) {
    throw new AttestationPolicyError(`minimum ISV SVN ${opts.minIsvSvn} exceeds 65535`);
  }
  for (const p of opts.allowedProdIds ?? []) {
    if (!Number.isInteger(p) || p < 0 || p > 0xffff)
      throw new AttestationPolicyError(`ISV product id ${p} is not 0…65535`);
  }
  return {
    iasAnchors: anchorsFrom(ias.pem, ias.source),
    sgxAnchors: anchorsFrom(sgx.pem, sgx.source),
    iasRootSource: ias.source,
    sgxRootSource: sgx.source,
    allowDebug: opts.allowDebug ?? false,
    allowStatus,
    minIsvSvn: opts.minIsvSvn,
    allowedProdIds: opts.allowedProdIds ? new Set(opts.allowedProdIds) : undefined,
    allowedSigners: opts.allowedSigners ? new Set(opts.allowedSigners.map(hex32)) : undefined,
    maxReportAgeSec: opts.maxReportAgeSec,
    at: opts.at === undefined ? undefined : parseTime(opts.at, '--at time'),
    requireCollateral: opts.requireCollateral ?? false,
  };
}
