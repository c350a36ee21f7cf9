import { Args } from '@oclif/core';
import { SengCommand } from '../../base.js';
import { describeEvidence, type EvidenceSummary } from '../../../attestation/describe.js';
import { readEvidence } from '../../attestation-flags.js';

export default class AttestInspect extends SengCommand<typeof AttestInspect> {
  static override summary = 'Show the SGX evidence an RA-TLS certificate claims (nothing is verified).';
  static override description =
    'Parses the certificate (DER or PEM) and prints the enclave identity from its quote: kind (epid/dcap), MRENCLAVE, MRSIGNER, report data, ISV product id and SVN, DEBUG attribute, and for EPID the IAS report status and timestamp. Use `seng attest verify` to decide whether to trust it.';
  static override examples = [
    '<%= config.bin %> attest inspect client.der',
    '<%= config.bin %> attest inspect client.pem --json | jq -r .mrEnclave',
  ];
  static override args = {
    cert: Args.string({ description: 'RA-TLS certificate file (DER or PEM; - for stdin)', required: true }),
  };

  async run(): Promise<EvidenceSummary> {
    const summary = describeEvidence(readEvidence(this.args.cert));
    const rows: [string, string][] = [
      ['kind', summary.kind],
      ['MRENCLAVE', summary.mrEnclave],
      ['MRSIGNER', summary.mrSigner],
      ['ISV product id', String(summary.isvProdId)],
      ['ISV SVN', String(summary.isvSvn)],
      ['debug', summary.debug ? 'yes (DEBUG attribute set)' : 'no'],
      ['report data', summary.reportData],
      ['key bound', summary.keyBound ? 'yes (report data = SHA-256 of the certificate key)' : 'NO'],
      [
        'quote',
        `v${summary.quote.version}, ${summary.quote.size} bytes, fingerprint ${summary.quoteFingerprint}`,
      ],
    ];
    if (summary.kind === 'epid') {
      rows.push(['IAS status', summary.quoteStatus ?? '']);
      rows.push(['IAS timestamp', summary.reportTimestamp ?? '']);
      if (summary.advisoryIds?.length) rows.push(['advisories', summary.advisoryIds.join(', ')]);
    } else {
      rows.push(['PCK chain from', summary.pckChainSource ?? '']);
      if (summary.pck?.fmspc) rows.push(['FMSPC', summary.pck.fmspc]);
      const c = summary.collateral;
      if (c)
        rows.push([
          'collateral',
          `TCB info: ${c.tcbInfo ? 'yes' : 'no'}, QE identity: ${c.qeIdentity ? 'yes' : 'no'}`,
        ]);
    }
    const w = Math.max(...rows.map(([k]) => k.length));
    for (const [k, v] of rows) this.log(`${k.padEnd(w)}  ${v}`);
    return summary;
  }
}
