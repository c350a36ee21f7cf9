/**
 * Evidence → verdict. Every check is reported (name, result, whether admission requires it,
 * and a precise detail); admission requires every required check to pass. Synchronous and
 * cheap enough to run per handshake: trust anchors are parsed once in the policy.
 */
import { createHash, createPublicKey, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import {
  freshnessProblem,
  maskedEqual,
  matchTcbLevel,
  parseSignedJson,
  pckSgxInfo,
  verifyP1363,
  type PckSgxInfo,
} from './collateral.js';
import {
  keyBindingHash,
  quoteFingerprint,
  type DcapEvidence,
  type EpidEvidence,
  type Evidence,
} from './evidence.js';
import { crlProblem, decodeCrl } from './crl.js';
import { NEVER_ALLOWED_STATUSES, type AttestationPolicy } from './policy.js';
import { QUOTE_BODY_SIZE } from './quote.js';
import {
  KEY_USAGE_DIGITAL_SIGNATURE,
  checkCertSignature,
  publicKeyOf,
  verifyChain,
  type ParsedCertificate,
} from './x509.js';

export type CheckStatus = 'pass' | 'fail' | 'not-evaluated';

export interface AttestationCheck {
  name: string;
  /** true only when the check ran and passed. */
  ok: boolean;
  status: CheckStatus;
  /** Whether admission requires this check to pass. */
  required: boolean;
  detail: string;
}

export interface EnclaveIdentity {
  kind: Evidence['kind'];
  mrEnclave: string;
  mrSigner: string;
  isvProdId: number;
  isvSvn: number;
  debug: boolean;
  reportData: string;
  quoteFingerprint: string;
}

export interface VerificationResult {
  ok: boolean;
  kind: Evidence['kind'];
  checks: AttestationCheck[];
  /** Names of the required checks that did not pass. */
  failed: string[];
  identity: EnclaveIdentity;
  /** Time the validity windows were checked at (ISO). */
  checkedAt: string;
}

/** Clock skew tolerated for report timestamps in the future. */
const FUTURE_SKEW_MS = 5 * 60 * 1000;

class Checks {
  readonly list: AttestationCheck[] = [];
  pass(name: string, detail: string, required = true): void {
    this.list.push({ name, ok: true, status: 'pass', required, detail });
  }
  fail(name: string, detail: string, required = true): void {
    this.list.push({ name, ok: false, status: 'fail', required, detail });
  }
  result(name: string, problem: string | null, okDetail: string): boolean {
    if (problem) this.fail(name, problem);
    else this.pass(name, okDetail);
    return problem === null;
  }
  notEvaluated(name: string, detail: string, required: boolean): void {
    this.list.push({
      name,
      ok: false,
      status: required ? 'fail' : 'not-evaluated',
      required,
      detail: required ? `${detail} (required by policy)` : `not evaluated: ${detail}`,
    });
  }
}

export function enclaveIdentity(evidence: Evidence): EnclaveIdentity {
  return {
    kind: evidence.kind,
    mrEnclave: evidence.mrEnclave.toString('hex'),
    mrSigner: evidence.mrSigner.toString('hex'),
    isvProdId: evidence.isvProdId,
    isvSvn: evidence.isvSvn,
    debug: evidence.debug,
    reportData: evidence.reportData.toString('hex'),
    quoteFingerprint: quoteFingerprint(evidence),
  };
}

/** Verifies evidence against a policy. Never throws for any parsed evidence. */
export function verifyEvidence(evidence: Evidence, policy: AttestationPolicy): VerificationResult {
  const c = new Checks();
  const now = policy.at ?? new Date();
  certificateSignature(c, evidence.certificate);
  if (evidence.kind === 'epid') verifyEpid(c, evidence, policy, now);
  else verifyDcap(c, evidence, policy, now);
  commonChecks(c, evidence, policy);
  const failed = c.list.filter((x) => x.required && x.status !== 'pass').map((x) => x.name);
  return {
    ok: failed.length === 0,
    kind: evidence.kind,
    checks: c.list,
    failed,
    identity: enclaveIdentity(evidence),
    checkedAt: now.toISOString(),
  };
}

function certificateSignature(c: Checks, cert: ParsedCertificate): void {
  const key = publicKeyOf(cert);
  if (!key) {
    c.fail('certificate-signature', 'the certificate public key cannot be loaded');
    return;
  }
  const problem = checkCertSignature(cert, key);
  c.result(
    'certificate-signature',
    problem ? `the certificate is not self-signed by its own key: ${problem}` : null,
    'the certificate is signed by its own (attested) key',
  );
}

/** A signing leaf whose keyUsage is present must allow digitalSignature. */
function signingUsageProblem(cert: ParsedCertificate, what: string): string | null {
  if (cert.keyUsage !== undefined && (cert.keyUsage & KEY_USAGE_DIGITAL_SIGNATURE) === 0) {
    return `the ${what} certificate's keyUsage does not allow digitalSignature`;
  }
  return null;
}

// ------------------------------------------------------------------------------------ EPID

function verifyEpid(c: Checks, ev: EpidEvidence, policy: AttestationPolicy, now: Date): void {
  const { report, signature, signingCert, caCert } = ev.ias;
  const chainAt = policy.at ?? report.timestamp;
  const chain = verifyChain(signingCert, caCert ? [caCert] : [], policy.iasAnchors, chainAt);
  c.result(
    'ias-chain',
    chain.ok
      ? signingUsageProblem(signingCert, 'report-signing')
      : `${chain.detail}; trust anchor: ${policy.iasRootSource}`,
    policy.at ? chain.detail : `${chain.detail}, the IAS report timestamp`,
  );

  const key = publicKeyOf(signingCert);
  let sigOk = false;
  let sigProblem = 'the report-signing certificate key cannot be loaded';
  if (key) {
    if (key.asymmetricKeyType !== 'rsa')
      sigProblem = `the report-signing key is ${key.asymmetricKeyType}, not RSA`;
    else {
      try {
        sigOk = cryptoVerify('sha256', report.bytes, key, signature);
      } catch {
        sigOk = false;
      }
      sigProblem = `the RSA-SHA256 signature (${signature.length} bytes) does not verify over the ${report.bytes.length} report bytes`;
    }
  }
  c.result(
    'ias-signature',
    sigOk ? null : sigProblem,
    `RSA-SHA256 signature over the exact ${report.bytes.length} report bytes verifies`,
  );

  const status = report.quoteStatus;
  const advisories = report.advisoryIds.length ? `; advisories: ${report.advisoryIds.join(', ')}` : '';
  const allowed = policy.allowStatus.has(status) && !NEVER_ALLOWED_STATUSES.has(status);
  c.result(
    'quote-status',
    allowed
      ? null
      : `IAS quote status ${status} is not allowed (allowed: ${[...policy.allowStatus].join(', ')})${advisories}`,
    `IAS quote status ${status}${advisories}`,
  );

  const ts = report.timestamp;
  if (ts.getTime() > now.getTime() + FUTURE_SKEW_MS) {
    c.fail(
      'report-age',
      `the report timestamp ${ts.toISOString()} is in the future (now ${now.toISOString()})`,
    );
  } else if (policy.maxReportAgeSec !== undefined) {
    const age = Math.max(0, Math.floor((now.getTime() - ts.getTime()) / 1000));
    c.result(
      'report-age',
      age > policy.maxReportAgeSec
        ? `the report is ${age} s old (issued ${ts.toISOString()}), maximum ${policy.maxReportAgeSec} s`
        : null,
      `the report is ${age} s old, maximum ${policy.maxReportAgeSec} s`,
    );
  }

  // The quote every other check uses is the IAS-signed quote body; a separately carried quote must match it.
  const hdr = ev.header;
  let bodyProblem: string | null = null;
  if (hdr.version !== 1 && hdr.version !== 2)
    bodyProblem = `the quote body has version ${hdr.version}, not an EPID quote (1 or 2)`;
  else if (ev.separateQuote) {
    const sep = ev.separateQuote;
    if (sep.length < QUOTE_BODY_SIZE + 4)
      bodyProblem = `the quote in extension .6 is only ${sep.length} bytes`;
    else if (sep.readUInt32LE(QUOTE_BODY_SIZE) !== sep.length - QUOTE_BODY_SIZE - 4) {
      bodyProblem = `the quote in extension .6 declares a ${sep.readUInt32LE(QUOTE_BODY_SIZE)}-byte signature but carries ${sep.length - QUOTE_BODY_SIZE - 4} bytes`;
    } else if (!sep.subarray(0, QUOTE_BODY_SIZE).equals(ev.quote)) {
      let at = 0;
      while (sep[at] === ev.quote[at]) at++;
      bodyProblem = `the quote in extension .6 differs from the IAS report's isvEnclaveQuoteBody (first difference at byte ${at})`;
    }
  }
  c.result(
    'quote-body-match',
    bodyProblem,
    ev.separateQuote
      ? 'the quote in extension .6 matches the IAS report quote body (its EPID signature is verifiable only by IAS)'
      : `the quote is the IAS report's isvEnclaveQuoteBody (EPID v${hdr.version}); the certificate carries no other copy`,
  );
}

// ------------------------------------------------------------------------------------ DCAP

function rawP256Key(xy: Buffer): KeyObject | null {
  try {
    return createPublicKey({
      key: {
        kty: 'EC',
        crv: 'P-256',
        x: xy.subarray(0, 32).toString('base64url'),
        y: xy.subarray(32, 64).toString('base64url'),
      },
      format: 'jwk',
    });
  } catch {
    return null;
  }
}

function verifyDcap(c: Checks, ev: DcapEvidence, policy: AttestationPolicy, now: Date): void {
  const sd = ev.signatureData;
  const leaf = ev.pckChain[0];
  let leafKey: KeyObject | null = null;
  let pckPath: ParsedCertificate[] | null = null;
  if (!leaf) {
    c.fail(
      'pck-chain',
      `the evidence carries no PCK certificate (quote certification data type ${sd.certDataType}, no extension .7)`,
    );
  } else {
    const chain = verifyChain(leaf, ev.pckChain.slice(1), policy.sgxAnchors, now);
    let problem = chain.ok ? null : `${chain.detail}; trust anchor: ${policy.sgxRootSource}`;
    if (!problem && leaf.basicConstraints?.ca) problem = 'the PCK certificate is a CA certificate';
    problem ??= signingUsageProblem(leaf, 'PCK');
    if (c.result('pck-chain', problem, `${chain.detail}; PCK chain from the ${ev.pckChainSource}`))
      pckPath = chain.path;
    leafKey = publicKeyOf(leaf);
  }

  if (!leafKey) {
    c.fail(
      'qe-report-signature',
      leaf ? 'the PCK certificate key cannot be loaded' : 'no PCK certificate to verify with',
    );
  } else {
    const ok =
      leafKey.asymmetricKeyType === 'ec' && verifyP1363(sd.qeReport.raw, sd.qeReportSignature, leafKey);
    c.result(
      'qe-report-signature',
      ok ? null : 'the QE report signature does not verify with the PCK certificate key',
      'the QE report is signed by the PCK certificate key',
    );
  }

  const expected = createHash('sha256').update(sd.attestationKey).update(sd.qeAuthData).digest();
  const rd = sd.qeReport.reportData;
  let bindProblem: string | null = null;
  if (!rd.subarray(0, 32).equals(expected)) {
    bindProblem = `QE report data ${rd.subarray(0, 32).toString('hex')} ≠ SHA-256(attestation key ‖ QE auth data) ${expected.toString('hex')}`;
  } else if (rd.subarray(32).some((b) => b !== 0)) {
    bindProblem = 'the second half of the QE report data is not zero';
  }
  c.result(
    'qe-report-data',
    bindProblem,
    'the QE report binds the attestation key (SHA-256 of key ‖ QE auth data)',
  );

  const attKey = rawP256Key(sd.attestationKey);
  if (!attKey) c.fail('isv-report-signature', 'the attestation key is not a valid P-256 point');
  else {
    const ok = verifyP1363(ev.quote.subarray(0, QUOTE_BODY_SIZE), sd.isvSignature, attKey);
    c.result(
      'isv-report-signature',
      ok
        ? null
        : 'the ECDSA signature over the quote header and enclave report does not verify with the attestation key',
      'the quote header and enclave report are signed by the attestation key',
    );
  }

  const pckInfo = leaf ? pckSgxInfo(leaf) : 'no PCK certificate';
  const tcbOk = tcbInfoCheck(c, ev, policy, now, pckInfo);
  tcbStatusCheck(c, ev, policy, pckInfo, tcbOk);
  qeIdentityCheck(c, ev, policy, now);
  revocationCheck(c, ev, policy, now, pckPath);
}

function revocationCheck(
  c: Checks,
  ev: DcapEvidence,
  policy: AttestationPolicy,
  now: Date,
  path: ParsedCertificate[] | null,
): void {
  if (!ev.pckCrl && !ev.rootCaCrl) {
    c.notEvaluated(
      'pck-revocation',
      'the certificate carries no CRLs (extensions .12/.13)',
      policy.requireCollateral,
    );
    return;
  }
  if (!path) {
    c.notEvaluated('pck-revocation', 'the PCK chain did not verify', false);
    return;
  }
  const checked: string[] = [];
  for (const [value, what] of [
    [ev.pckCrl, 'PCK CRL'],
    [ev.rootCaCrl, 'root CA CRL'],
  ] as const) {
    if (!value) {
      checked.push(`no ${what}`);
      continue;
    }
    const crl = decodeCrl(value);
    if (typeof crl === 'string') {
      c.fail('pck-revocation', `the ${what} ${crl}`);
      return;
    }
    const r = crlProblem(crl, path, now, what);
    if (r.problem) {
      c.fail('pck-revocation', r.problem);
      return;
    }
    checked.push(r.checked);
  }
  c.pass('pck-revocation', `not revoked: ${checked.join('; ')}`);
}

// Collateral (TCB info, QE identity) is the same for every client of a platform: memoize its
// signature results (keyed by signer, content hash and signature; bounded).
const collateralCache = new Map<string, boolean>();

function collateralSignatureOk(
  signer: ParsedCertificate,
  data: Buffer,
  signature: Buffer,
  key: KeyObject,
): boolean {
  const id = `${signer.fingerprint}/${createHash('sha256').update(data).digest('hex')}/${signature.toString('hex')}`;
  const hit = collateralCache.get(id);
  if (hit !== undefined) return hit;
  const ok = verifyP1363(data, signature, key);
  if (collateralCache.size >= 1024) collateralCache.clear();
  collateralCache.set(id, ok);
  return ok;
}

/** Checks a TCB-signing-chain–signed document; returns the problem or null. */
function collateralSignatureProblem(
  ev: DcapEvidence,
  policy: AttestationPolicy,
  now: Date,
  signedBytes: Buffer,
  signature: Buffer,
  what: string,
): { problem: string | null; signer: string } {
  const signer = ev.tcbSigningChain[0];
  if (!signer)
    return { problem: `${what} is present but its signing chain (extension .10) is not`, signer: '' };
  const chain = verifyChain(signer, ev.tcbSigningChain.slice(1), policy.sgxAnchors, now);
  if (!chain.ok) return { problem: `${what} signing chain: ${chain.detail}`, signer: '' };
  const key = publicKeyOf(signer);
  if (!key || key.asymmetricKeyType !== 'ec')
    return { problem: `${what} signing key is not an EC key`, signer: '' };
  if (!collateralSignatureOk(signer, signedBytes, signature, key)) {
    return { problem: `${what} signature does not verify`, signer: '' };
  }
  return { problem: null, signer: chain.detail };
}

function tcbInfoCheck(
  c: Checks,
  ev: DcapEvidence,
  policy: AttestationPolicy,
  now: Date,
  pck: PckSgxInfo | string,
): { body: Record<string, unknown> } | null {
  if (ev.tcbInfo === undefined) {
    c.notEvaluated(
      'tcb-info',
      'the certificate carries no TCB info (extension .9)',
      policy.requireCollateral,
    );
    return null;
  }
  const doc = parseSignedJson(ev.tcbInfo, ['tcbInfo']);
  if (typeof doc === 'string') {
    c.fail('tcb-info', `TCB info ${doc}`);
    return null;
  }
  const { problem, signer } = collateralSignatureProblem(
    ev,
    policy,
    now,
    doc.signedBytes,
    doc.signature,
    'TCB info',
  );
  let p = problem ?? freshnessProblem(doc.body, now, 'TCB info');
  const fmspc = typeof doc.body.fmspc === 'string' ? doc.body.fmspc.toLowerCase() : undefined;
  const pceId = typeof doc.body.pceId === 'string' ? doc.body.pceId.toLowerCase() : undefined;
  if (!p && doc.body.id !== undefined && doc.body.id !== 'SGX')
    p = `TCB info is for "${String(doc.body.id)}", not SGX`;
  if (!p) {
    if (typeof pck === 'string') p = `cannot match TCB info to the platform: ${pck}`;
    else if (fmspc !== pck.fmspc)
      p = `TCB info is for FMSPC ${fmspc ?? '?'}, the PCK certificate has ${pck.fmspc}`;
    else if (pceId !== pck.pceId)
      p = `TCB info is for PCE-ID ${pceId ?? '?'}, the PCK certificate has ${pck.pceId}`;
  }
  const version = typeof doc.body.version === 'number' ? doc.body.version : '?';
  c.result(
    'tcb-info',
    p,
    `TCB info v${version} for FMSPC ${fmspc}, signed via ${signer}, next update ${String(doc.body.nextUpdate)}`,
  );
  return p ? null : { body: doc.body };
}

function tcbStatusCheck(
  c: Checks,
  ev: DcapEvidence,
  policy: AttestationPolicy,
  pck: PckSgxInfo | string,
  tcb: { body: Record<string, unknown> } | null,
): void {
  if (ev.tcbInfo === undefined) {
    c.notEvaluated(
      'tcb-status',
      'no TCB info to evaluate the platform TCB against',
      policy.requireCollateral,
    );
    return;
  }
  if (!tcb) {
    c.notEvaluated('tcb-status', 'the TCB info did not verify', false);
    return;
  }
  if (typeof pck === 'string') {
    c.fail('tcb-status', pck);
    return;
  }
  const m = matchTcbLevel(tcb.body, pck);
  if (typeof m === 'string') {
    c.fail('tcb-status', m);
    return;
  }
  const allowed = policy.allowStatus.has(m.status) && !NEVER_ALLOWED_STATUSES.has(m.status);
  const desc = `platform TCB (components ${pck.tcbComponents.join(',')}, PCE SVN ${pck.pceSvn}) matches TCB level ${m.index} with status ${m.status}${m.tcbDate ? ` (TCB date ${m.tcbDate})` : ''}`;
  c.result(
    'tcb-status',
    allowed ? null : `${desc}, which is not allowed (allowed: ${[...policy.allowStatus].join(', ')})`,
    desc,
  );
}

function qeIdentityCheck(c: Checks, ev: DcapEvidence, policy: AttestationPolicy, now: Date): void {
  if (ev.qeIdentity === undefined) {
    c.notEvaluated(
      'qe-identity',
      'the certificate carries no QE identity (extension .11)',
      policy.requireCollateral,
    );
    return;
  }
  const doc = parseSignedJson(ev.qeIdentity, ['qeIdentity', 'enclaveIdentity']);
  if (typeof doc === 'string') {
    c.fail('qe-identity', `QE identity ${doc}`);
    return;
  }
  const b = doc.body;
  const { problem } = collateralSignatureProblem(
    ev,
    policy,
    now,
    doc.signedBytes,
    doc.signature,
    'QE identity',
  );
  const qe = ev.signatureData.qeReport;
  const misc = Buffer.alloc(4);
  misc.writeUInt32BE(qe.miscSelect);
  const checks: [string, boolean | string][] = [
    ['MISCSELECT', maskedEqual(misc, b.miscselect, b.miscselectMask)],
    ['attributes', maskedEqual(qe.attributes, b.attributes, b.attributesMask)],
  ];
  let p = problem ?? freshnessProblem(b, now, 'QE identity');
  if (!p && b.id !== undefined && b.id !== 'QE') p = `QE identity is for "${String(b.id)}", not the QE`;
  for (const [field, r] of checks) {
    if (p) break;
    if (r !== true)
      p = r === false ? `QE report ${field} does not match the QE identity` : `QE identity ${field}: ${r}`;
  }
  if (!p && (typeof b.mrsigner !== 'string' || b.mrsigner.toLowerCase() !== qe.mrSigner.toString('hex'))) {
    p = `QE MRSIGNER ${qe.mrSigner.toString('hex')} differs from the QE identity's ${String(b.mrsigner)}`;
  }
  if (!p && b.isvprodid !== qe.isvProdId) p = `QE ISV product id ${qe.isvProdId} ≠ ${String(b.isvprodid)}`;
  let status = 'UpToDate';
  if (!p) {
    if (Array.isArray(b.tcbLevels)) {
      const level = (b.tcbLevels as { tcb?: { isvsvn?: unknown }; tcbStatus?: unknown }[]).find(
        (l) => typeof l?.tcb?.isvsvn === 'number' && qe.isvSvn >= l.tcb.isvsvn,
      );
      if (!level || typeof level.tcbStatus !== 'string')
        p = `QE ISV SVN ${qe.isvSvn} is below every QE identity TCB level`;
      else status = level.tcbStatus;
    } else if (typeof b.isvsvn === 'number') {
      if (qe.isvSvn < b.isvsvn) p = `QE ISV SVN ${qe.isvSvn} is below ${b.isvsvn}`;
    } else p = 'QE identity has neither tcbLevels nor isvsvn';
  }
  if (!p && (!policy.allowStatus.has(status) || NEVER_ALLOWED_STATUSES.has(status))) {
    p = `QE TCB status ${status} is not allowed (allowed: ${[...policy.allowStatus].join(', ')})`;
  }
  c.result(
    'qe-identity',
    p,
    `QE report matches the signed QE identity (${doc.member}), QE ISV SVN ${qe.isvSvn}, status ${status}`,
  );
}

// ------------------------------------------------------------------------------------ common

function commonChecks(c: Checks, ev: Evidence, policy: AttestationPolicy): void {
  const want = keyBindingHash(ev.certificate);
  const got = ev.reportData.subarray(0, 32);
  c.result(
    'report-data-binding',
    got.equals(want)
      ? null
      : `report_data[0..32] ${got.toString('hex')} ≠ SHA-256 of the certificate public key ${want.toString('hex')}: the TLS key is not bound to the enclave`,
    'report_data[0..32] is the SHA-256 of the certificate public key',
  );
  if (ev.debug) {
    if (policy.allowDebug) c.pass('debug', 'DEBUG attribute set; debug enclaves allowed by policy');
    else
      c.fail(
        'debug',
        'the enclave has the DEBUG attribute: its memory is readable by the host (allow with --allow-debug for tests only)',
      );
  } else c.pass('debug', 'production enclave (DEBUG attribute clear)');
  if (policy.minIsvSvn !== undefined) {
    c.result(
      'isv-svn',
      ev.isvSvn < policy.minIsvSvn ? `ISV SVN ${ev.isvSvn} is below the minimum ${policy.minIsvSvn}` : null,
      `ISV SVN ${ev.isvSvn} ≥ ${policy.minIsvSvn}`,
    );
  }
  if (policy.allowedProdIds) {
    c.result(
      'isv-prod-id',
      policy.allowedProdIds.has(ev.isvProdId)
        ? null
        : `ISV product id ${ev.isvProdId} is not allowed (allowed: ${[...policy.allowedProdIds].join(', ')})`,
      `ISV product id ${ev.isvProdId} is allowed`,
    );
  }
  if (policy.allowedSigners) {
    const s = ev.mrSigner.toString('hex');
    c.result(
      'mr-signer',
      policy.allowedSigners.has(s) ? null : `MRSIGNER ${s} is not in the allowed set`,
      `MRSIGNER ${s} is allowed`,
    );
  }
}
