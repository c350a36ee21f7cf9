/**
 * Attestation library: RA-TLS certificate parsing, evidence verification against a policy,
 * and the test attestation authority (simulation only).
 */
export { AttestationParseError, AttestationPolicyError, SimAuthorityError } from './errors.js';
export {
  parseRaTlsCertificate,
  quoteFingerprint,
  keyBindingHash,
  certificateBytes,
  OID as RATLS_OID,
  type Evidence,
  type EpidEvidence,
  type DcapEvidence,
  type IasReport,
  type AttestationKind,
  type ValueEncoding,
} from './evidence.js';
export {
  loadAttestationPolicy,
  EPID_QUOTE_STATUSES,
  DCAP_TCB_STATUSES,
  type AttestationPolicy,
  type AttestationPolicyOptions,
} from './policy.js';
export {
  verifyEvidence,
  enclaveIdentity,
  type AttestationCheck,
  type CheckStatus,
  type EnclaveIdentity,
  type VerificationResult,
} from './verify.js';
export {
  AttestationCache,
  certificateHash,
  resultValidUntil,
  type AttestationCacheOptions,
  type AttestationOutcome,
  type AttestedIdentity,
} from './cache.js';
export { describeEvidence, type EvidenceSummary } from './describe.js';
export {
  createSimCa,
  loadSimCa,
  createSimCertificate,
  createSimCrl,
  SIM_CA_FILES,
  type SimCa,
  type SimCertificateOptions,
  type SimCertificate,
} from './sim.js';
