/**
 * Attestation result cache: enclaves that reconnect (or open their second tunnel) present the
 * very same RA-TLS certificate, so parsing and verifying it again is wasted work. Entries are
 * keyed by SHA-256 of the exact certificate DER and by the policy they were verified under;
 * only *passing* verifications are stored, so a hit can never turn a failure into a pass — at
 * worst a miss re-runs the full verification.
 *
 * An entry lives until the earliest time any input of the verification could stop being
 * valid: the notAfter of every certificate involved (the RA-TLS leaf, PCK and TCB-signing
 * chains, the trust anchors), the nextUpdate of the collateral (TCB info, QE identity, CRLs),
 * the end of the IAS report's allowed age — and never longer than `maxTtlMs`. The lower bounds
 * of those windows (notBefore, issueDate) only move into the past, so they cannot expire a pass.
 * The cache is bounded (least recently used entries go first) and `clear()` drops everything
 * (on a policy or database reload).
 */
import { createHash } from 'node:crypto';
import { decodeCrl } from './crl.js';
import {
  keyBindingHash,
  parseRaTlsCertificate,
  quoteFingerprint,
  type AttestationKind,
  type Evidence,
} from './evidence.js';
import type { AttestationPolicy } from './policy.js';
import { verifyEvidence, type VerificationResult } from './verify.js';

/** What the gateway keeps of a passing verification: the identity, not the parsed evidence. */
export interface AttestedIdentity {
  kind: AttestationKind;
  mrEnclave: Buffer;
  mrSigner: Buffer;
  /** quoteFingerprint(evidence): equal quotes, equal fingerprints. */
  fingerprint: string;
  /** keyBindingHash of the certificate key, hex. */
  keyHash: string;
  /** SHA-256 of the certificate DER, hex (the cache key). */
  certHash: string;
}

export type AttestationOutcome =
  | { ok: true; identity: AttestedIdentity; cached: boolean }
  | { ok: false; stage: 'parse'; error: unknown }
  | { ok: false; stage: 'verify'; result: VerificationResult; mrEnclave: Buffer; mrSigner: Buffer };

export interface AttestationCacheOptions {
  /** Most entries kept (least recently used evicted first). Default 4096; 0 disables caching. */
  maxEntries?: number;
  /** Upper bound of an entry's life even when every validity window is longer. Default 10 min. */
  maxTtlMs?: number;
  /** Clock (ms since the epoch); tests pass their own. */
  now?: () => number;
}

interface Entry {
  identity: AttestedIdentity;
  expiresAt: number;
}

/**
 * A copy with its own memory: a view would keep the whole certificate alive, and Buffer.from()
 * of a small buffer would keep an 8 KiB pool slab alive per enclave.
 */
function ownCopy(b: Buffer): Buffer {
  const out = Buffer.allocUnsafeSlow(b.length);
  b.copy(out);
  return out;
}

export function certificateHash(der: Buffer): string {
  return createHash('sha256').update(der).digest('hex');
}

const NEXT_UPDATE_RE = /"nextUpdate"\s*:\s*"([^"]*)"/g;

/** The earliest nextUpdate in a collateral document (every occurrence counts; unparsable → now). */
function earliestNextUpdate(text: string, now: number): number {
  let min = Infinity;
  for (const m of text.matchAll(NEXT_UPDATE_RE)) {
    const t = Date.parse(m[1] ?? '');
    min = Math.min(min, Number.isNaN(t) ? now : t);
  }
  return min;
}

/**
 * The earliest time at which a passing verification of `evidence` under `policy` may stop
 * passing because a validity window closes. A fixed policy time (`policy.at`) freezes the clock
 * of the verification, so then only the caller's TTL bounds the entry.
 */
export function resultValidUntil(evidence: Evidence, policy: AttestationPolicy, now: number): number {
  if (policy.at) return Infinity;
  const times: number[] = [evidence.certificate.notAfter.getTime()];
  if (evidence.kind === 'epid') {
    if (policy.maxReportAgeSec !== undefined) {
      times.push(evidence.ias.report.timestamp.getTime() + (policy.maxReportAgeSec + 1) * 1000);
    }
  } else {
    for (const c of [...evidence.pckChain, ...evidence.tcbSigningChain, ...policy.sgxAnchors]) {
      times.push(c.notAfter.getTime());
    }
    for (const doc of [evidence.tcbInfo, evidence.qeIdentity]) {
      if (doc !== undefined) times.push(earliestNextUpdate(doc, now));
    }
    for (const raw of [evidence.pckCrl, evidence.rootCaCrl]) {
      if (!raw) continue;
      const crl = decodeCrl(raw);
      if (typeof crl === 'string') times.push(now);
      else if (crl.nextUpdate) times.push(crl.nextUpdate.getTime());
    }
  }
  return Math.min(...times);
}

export class AttestationCache {
  private readonly entries = new Map<string, Entry>();
  private readonly maxEntries: number;
  private readonly maxTtlMs: number;
  private readonly now: () => number;
  /** The policy the entries were verified under; another policy object empties the cache. */
  private policy: AttestationPolicy | undefined;
  /** Counters for status and benchmarks. */
  readonly stats = { hits: 0, misses: 0, evictions: 0 };

  constructor(opts: AttestationCacheOptions = {}) {
    this.maxEntries = opts.maxEntries ?? 4096;
    this.maxTtlMs = opts.maxTtlMs ?? 10 * 60 * 1000;
    this.now = opts.now ?? Date.now;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Drops every entry (policy or database reload). */
  clear(): void {
    this.entries.clear();
  }

  /**
   * Parses and verifies `der` under `policy`, or returns the identity of an earlier pass of
   * the identical bytes under the same policy that has not expired.
   */
  attest(der: Buffer, policy: AttestationPolicy): AttestationOutcome {
    if (policy !== this.policy) {
      this.entries.clear();
      this.policy = policy;
    }
    const certHash = certificateHash(der);
    const now = this.now();
    const hit = this.entries.get(certHash);
    if (hit) {
      this.entries.delete(certHash);
      if (hit.expiresAt > now) {
        this.entries.set(certHash, hit); // most recently used last
        this.stats.hits++;
        return { ok: true, identity: hit.identity, cached: true };
      }
    }
    this.stats.misses++;
    let evidence: Evidence;
    try {
      evidence = parseRaTlsCertificate(der);
    } catch (error) {
      return { ok: false, stage: 'parse', error };
    }
    const result = verifyEvidence(evidence, policy);
    if (!result.ok) {
      return {
        ok: false,
        stage: 'verify',
        result,
        mrEnclave: evidence.mrEnclave,
        mrSigner: evidence.mrSigner,
      };
    }
    const identity: AttestedIdentity = {
      kind: evidence.kind,
      mrEnclave: ownCopy(evidence.mrEnclave),
      mrSigner: ownCopy(evidence.mrSigner),
      fingerprint: quoteFingerprint(evidence),
      keyHash: keyBindingHash(evidence.certificate).toString('hex'),
      certHash,
    };
    const expiresAt = Math.min(now + this.maxTtlMs, resultValidUntil(evidence, policy, now));
    if (this.maxEntries > 0 && expiresAt > now) {
      this.entries.set(certHash, { identity, expiresAt });
      while (this.entries.size > this.maxEntries) {
        const oldest = this.entries.keys().next().value as string;
        this.entries.delete(oldest);
        this.stats.evictions++;
      }
    }
    return { ok: true, identity, cached: false };
  }
}
