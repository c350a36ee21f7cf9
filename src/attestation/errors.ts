/** Typed errors of the attestation library. */
import { SengError } from '../util/errors.js';

/**
 * The input is not a well-formed RA-TLS certificate (or its evidence is malformed).
 * This is the only error `parseRaTlsCertificate` throws, whatever bytes it is given.
 */
export class AttestationParseError extends SengError {
  constructor(message: string, cause?: unknown) {
    super('EATTEST_PARSE', message, {
      hint: 'Pass an RA-TLS client certificate (DER or PEM) that carries SGX evidence in the 1.2.840.113741.1337.* extensions.',
      cause,
    });
  }
}

/** A trust anchor or policy setting cannot be used (missing file, not a certificate, bad value). */
export class AttestationPolicyError extends SengError {
  constructor(message: string, hint?: string, cause?: unknown) {
    super('EATTEST_POLICY', message, { ...(hint === undefined ? {} : { hint }), cause });
  }
}

/** A simulation CA directory is missing or incomplete, or a simulated certificate cannot be made. */
export class SimAuthorityError extends SengError {
  constructor(message: string, hint?: string, cause?: unknown) {
    super('ESIM_CA', message, { ...(hint === undefined ? {} : { hint }), cause });
  }
}
