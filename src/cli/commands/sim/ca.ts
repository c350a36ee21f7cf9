import { Flags } from '@oclif/core';
import { resolve, join } from 'node:path';
import { SengCommand } from '../../base.js';
import { createSimCa, SIM_CA_FILES } from '../../../attestation/sim.js';

export default class SimCa extends SengCommand<typeof SimCa> {
  static override summary =
    'Create a TEST attestation authority (IAS root + report-signing key, SGX root/PCK chain).';
  static override description = `For labs without SGX hardware. Writes PEM certificates and keys plus manifest.json to DIR:
  ${SIM_CA_FILES.iasRoot}         test IAS report-signing root (use with: attest verify --ias-root)
  ${SIM_CA_FILES.iasSigning} + ${SIM_CA_FILES.iasSigningKey}
  ${SIM_CA_FILES.sgxRoot}         test SGX root (use with: attest verify --sgx-root)
  ${SIM_CA_FILES.pckCa}, ${SIM_CA_FILES.pck} + ${SIM_CA_FILES.pckKey}
  ${SIM_CA_FILES.tcbSigning} + ${SIM_CA_FILES.tcbSigningKey}
Certificates made from it are trusted only by a gateway pointed at these test roots. Never configure them in production.`;
  static override examples = ['<%= config.bin %> sim ca --out ./sim-ca'];
  static override flags = {
    out: Flags.string({
      summary: 'Directory to write the authority to (created if missing).',
      required: true,
      helpValue: 'DIR',
    }),
    force: Flags.boolean({ summary: 'Replace an authority already in DIR.' }),
  };

  async run(): Promise<{ dir: string; iasRoot: string; sgxRoot: string; files: Record<string, string> }> {
    const dir = resolve(this.flags.out);
    createSimCa(dir, { force: this.flags.force });
    const out = {
      dir,
      iasRoot: join(dir, SIM_CA_FILES.iasRoot),
      sgxRoot: join(dir, SIM_CA_FILES.sgxRoot),
      files: Object.fromEntries(Object.entries(SIM_CA_FILES).map(([k, v]) => [k, join(dir, v)])),
    };
    this.log(`created TEST attestation authority in ${dir}`);
    this.log(`  verify with: seng attest verify CERT --ias-root ${out.iasRoot} --sgx-root ${out.sgxRoot}`);
    return out;
  }
}
