import { Args, Flags } from '@oclif/core';
import { SengCommand } from '../../base.js';
import { loadAttestationPolicy } from '../../../attestation/policy.js';
import { verifyEvidence, type VerificationResult } from '../../../attestation/verify.js';
import { listFlag, productIdsFlag, readEvidence } from '../../attestation-flags.js';

export default class AttestVerify extends SengCommand<typeof AttestVerify> {
  static override summary =
    'Verify an RA-TLS certificate against an attestation policy; exit 0 only if it is admitted.';
  static override description = `Runs every check that applies to the evidence (EPID/IAS or DCAP) and prints each with its result. Admission requires every required check to pass; checks whose inputs are absent (e.g. DCAP QE identity) are reported as "not evaluated".

Time: certificate chains and collateral are checked at --at, or else now; IAS report-signing chains at the report's own timestamp (IAS is retired and its signing certificate has expired).

Exit status: 0 admitted, 1 rejected (the checks are still printed) or unreadable certificate.`;
  static override examples = [
    '<%= config.bin %> attest verify client.der',
    '<%= config.bin %> attest verify client.der --ias-root sim-ca/ias-root.pem --sgx-root sim-ca/sgx-root.pem',
    '<%= config.bin %> attest verify sample.der --at 2019-03-20T00:00:00Z --allow-debug --json',
    '<%= config.bin %> attest verify client.der --allow-status GROUP_OUT_OF_DATE,SW_HARDENING_NEEDED --min-isv-svn 2',
  ];
  static override args = {
    cert: Args.string({ description: 'RA-TLS certificate file (DER or PEM; - for stdin)', required: true }),
  };
  static override flags = {
    'ias-root': Flags.string({
      summary:
        'PEM trust anchor for IAS report-signing certificates (default: Intel SGX Attestation Report Signing CA).',
      helpValue: 'PEM',
    }),
    'sgx-root': Flags.string({
      summary: 'PEM trust anchor for DCAP PCK and TCB-signing chains (default: Intel SGX Root CA).',
      helpValue: 'PEM',
    }),
    'allow-debug': Flags.boolean({ summary: 'Admit enclaves with the DEBUG attribute (tests only).' }),
    'allow-status': Flags.string({
      summary:
        'Also accept this EPID quote status or DCAP TCB status besides OK/UpToDate (repeatable, comma-separated), e.g. GROUP_OUT_OF_DATE, SW_HARDENING_NEEDED, OutOfDate.',
      multiple: true,
      multipleNonGreedy: true,
      helpValue: 'S',
    }),
    'min-isv-svn': Flags.integer({
      summary: 'Minimum ISV SVN of the enclave.',
      min: 0,
      max: 65535,
      helpValue: 'N',
    }),
    'allowed-prod-id': Flags.string({
      summary: 'Allowed ISV product id (repeatable, comma-separated).',
      multiple: true,
      multipleNonGreedy: true,
      helpValue: 'N',
    }),
    'allowed-signer': Flags.string({
      summary: 'Allowed MRSIGNER, 64 hex digits (repeatable, comma-separated).',
      multiple: true,
      multipleNonGreedy: true,
      helpValue: 'HEX',
    }),
    'max-report-age': Flags.integer({
      summary: 'Maximum age of an IAS report in seconds.',
      min: 0,
      helpValue: 'SEC',
    }),
    'require-collateral': Flags.boolean({
      summary: 'DCAP: reject when TCB info or QE identity is absent instead of reporting "not evaluated".',
    }),
    at: Flags.string({ summary: 'Verify as of this ISO 8601 time instead of now.', helpValue: 'ISO-TIME' }),
  };

  async run(): Promise<VerificationResult> {
    const f = this.flags;
    const prodIds = productIdsFlag(f['allowed-prod-id'], '--allowed-prod-id');
    const policy = loadAttestationPolicy({
      iasRootPath: f['ias-root'],
      sgxRootPath: f['sgx-root'],
      allowDebug: f['allow-debug'],
      allowStatus: listFlag(f['allow-status']),
      minIsvSvn: f['min-isv-svn'],
      allowedProdIds: f['allowed-prod-id'] ? prodIds : undefined,
      allowedSigners: f['allowed-signer'] ? listFlag(f['allowed-signer']) : undefined,
      maxReportAgeSec: f['max-report-age'],
      requireCollateral: f['require-collateral'],
      at: f.at,
    });
    const evidence = readEvidence(this.args.cert);
    const result = verifyEvidence(evidence, policy);
    const w = Math.max(...result.checks.map((c) => c.name.length));
    for (const c of result.checks) {
      const mark = c.status === 'pass' ? 'PASS' : c.status === 'fail' ? 'FAIL' : 'n/a ';
      this.log(
        `${mark}  ${c.name.padEnd(w)}  ${c.detail}${c.required || c.status === 'not-evaluated' ? '' : ' (informational)'}`,
      );
    }
    this.log(
      result.ok
        ? `ADMITTED: ${result.kind} enclave ${result.identity.mrEnclave}`
        : `REJECTED: ${result.failed.length} required check(s) failed: ${result.failed.join(', ')}`,
    );
    if (!result.ok) process.exitCode = 1;
    return result;
  }
}
