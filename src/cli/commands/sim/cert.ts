import { Flags } from '@oclif/core';
import { resolve, join } from 'node:path';
import { SengCommand } from '../../base.js';
import { InputError } from '../../../util/errors.js';
import { createSimCertificate, loadSimCa, SIM_CA_FILES, type SimKeyType } from '../../../attestation/sim.js';
import { parseRaTlsCertificate } from '../../../attestation/evidence.js';
import { describeEvidence, type EvidenceSummary } from '../../../attestation/describe.js';
import {
  canonicalOutputPath,
  checkDistinctOutputs,
  checkOutputPath,
  writeOutputFile,
} from '../../output-files.js';

export default class SimCert extends SengCommand<typeof SimCert> {
  static override summary = 'Make an RA-TLS client certificate signed by a TEST attestation authority.';
  static override description = `The certificate is self-signed by a new key (written as PKCS#8 PEM to --key) and carries SGX evidence bound to that key, in the layout real clients produce: EPID (IAS report, report-signing certificates and signature in 1.2.840.113741.1337.2-.5) or DCAP (v3 quote with PCK chain in .6, PCK certificate/chain in .7/.8, signed TCB info, TCB signing chain and QE identity in .9-.11, root CA and PCK CRLs in .12/.13).

--status sets the IAS quote status (EPID) or the TCB status of the platform's TCB level (DCAP).
--encoding base64 stores the EPID values the way the Go-era clients did.
--out-format pem writes PEM instead of DER (default: PEM if CERT ends in .pem, else DER).
Existing files are not replaced without --force; --out and --key must be two different files, and never files of the test authority itself.`;
  static override examples = [
    '<%= config.bin %> sim cert --ca sim-ca --kind epid --mrenclave $(printf a%.0s {1..64}) --mrsigner $(printf b%.0s {1..64}) --out enclave.der --key enclave.key',
    '<%= config.bin %> sim cert --ca sim-ca --kind dcap --key-type rsa3072 --mrenclave <64 hex> --mrsigner <64 hex> --isv-svn 2 --out enclave.pem --key enclave.key',
  ];
  static override flags = {
    ca: Flags.string({
      summary: 'Test authority directory made by `seng sim ca`.',
      required: true,
      helpValue: 'DIR',
    }),
    kind: Flags.option({
      options: ['epid', 'dcap'] as const,
      summary: 'Attestation kind.',
      required: true,
    })(),
    mrenclave: Flags.string({ summary: 'MRENCLAVE, 64 hex digits.', required: true, helpValue: 'HEX' }),
    mrsigner: Flags.string({ summary: 'MRSIGNER, 64 hex digits.', required: true, helpValue: 'HEX' }),
    debug: Flags.boolean({ summary: 'Set the DEBUG attribute.' }),
    'isv-svn': Flags.integer({ summary: 'ISV SVN (default 1).', min: 0, max: 65535, helpValue: 'N' }),
    'isv-prod-id': Flags.integer({
      summary: 'ISV product id (default 0).',
      min: 0,
      max: 65535,
      helpValue: 'N',
    }),
    status: Flags.string({
      summary: 'EPID quote status (default OK) or DCAP TCB status (default UpToDate).',
      helpValue: 'S',
    }),
    'key-type': Flags.option({
      options: ['p256', 'rsa3072'] as const,
      default: 'p256' as const,
      summary: 'Key type of the certificate.',
    })(),
    encoding: Flags.option({
      options: ['raw', 'base64'] as const,
      default: 'raw' as const,
      summary: 'EPID extension value form.',
    })(),
    'report-time': Flags.string({
      summary: 'EPID: IAS report timestamp (ISO 8601; default now).',
      helpValue: 'ISO-TIME',
    }),
    'no-collateral': Flags.boolean({
      summary: 'DCAP: leave out TCB info, its signing chain and QE identity.',
    }),
    'no-crls': Flags.boolean({ summary: 'DCAP: leave out the root CA and PCK CRLs.' }),
    out: Flags.string({ summary: 'Where to write the certificate.', required: true, helpValue: 'CERT' }),
    key: Flags.string({
      summary: 'Where to write the private key (PKCS#8 PEM, mode 0600).',
      required: true,
      helpValue: 'KEY',
    }),
    'out-format': Flags.option({ options: ['der', 'pem'] as const, summary: 'Certificate file format.' })(),
    force: Flags.boolean({ summary: 'Replace existing --out and --key files.' }),
  };

  async run(): Promise<{ cert: string; key: string; format: string; evidence: EvidenceSummary }> {
    const f = this.flags;
    let reportTimestamp: Date | undefined;
    if (f['report-time'] !== undefined) {
      reportTimestamp = new Date(f['report-time']);
      if (Number.isNaN(reportTimestamp.getTime()))
        throw new InputError(
          `invalid --report-time ${f['report-time']}`,
          'Use ISO 8601, e.g. 2024-01-01T00:00:00Z.',
        );
    }
    const outputs = [
      { flag: '--out', path: f.out },
      { flag: '--key', path: f.key },
    ] as const;
    checkDistinctOutputs(outputs[0], outputs[1]);
    const authorityFiles = new Set(
      Object.values(SIM_CA_FILES).map((n) => canonicalOutputPath(join(f.ca, n))),
    );
    for (const o of outputs) {
      if (authorityFiles.has(canonicalOutputPath(o.path)))
        throw new InputError(
          `${o.flag} ${o.path} is a file of the test authority ${f.ca}`,
          `write the enclave's certificate and key elsewhere, e.g. ${o.flag === '--out' ? '--out enclave.der' : '--key enclave.key'}`,
        );
      checkOutputPath(o.path, o.flag, f.force);
    }
    const ca = loadSimCa(f.ca);
    const made = createSimCertificate(ca, {
      kind: f.kind,
      mrEnclave: f.mrenclave,
      mrSigner: f.mrsigner,
      debug: f.debug,
      isvSvn: f['isv-svn'],
      isvProdId: f['isv-prod-id'],
      status: f.status,
      keyType: f['key-type'] as SimKeyType,
      encoding: f.encoding,
      reportTimestamp,
      collateral: !f['no-collateral'],
      crls: !f['no-crls'],
    });
    const format = f['out-format'] ?? (f.out.toLowerCase().endsWith('.pem') ? 'pem' : 'der');
    // The key first: a certificate without its key is useless, the other way round is harmless.
    writeOutputFile(f.key, made.keyPem, 0o600, f.force);
    writeOutputFile(f.out, format === 'pem' ? made.certPem : made.certDer, 0o644, f.force);
    const evidence = describeEvidence(parseRaTlsCertificate(made.certDer));
    this.log(`wrote TEST ${f.kind} RA-TLS certificate ${f.out} (${format}) and key ${f.key}`);
    this.log(`  MRENCLAVE ${evidence.mrEnclave}, quote fingerprint ${evidence.quoteFingerprint}`);
    return { cert: resolve(f.out), key: resolve(f.key), format, evidence };
  }
}
