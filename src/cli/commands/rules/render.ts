import { Flags } from '@oclif/core';
import { SengCommand } from '../../base.js';
import { policyArg, policyFlags } from '../../policy-flags.js';
import { iptablesText, loadCompiledPolicyFrom, nftApplyDocument, nftText } from '../../../policy/index.js';

export default class RulesRender extends SengCommand<typeof RulesRender> {
  static override summary =
    'Print the rules a policy compiles to (nftables, iptables with -m seng, or nft JSON).';
  static override description = `--format nft: the table in nft syntax, for review.
--format json: the nft JSON document that \`seng rules apply\` commits as one transaction (for a fresh table).
--format iptables: an iptables-restore document for hosts with the seng kernel module (-m seng); load it with iptables-restore --noflush.`;
  static override examples = [
    '<%= config.bin %> rules render rules/examples/spec-sample.yaml --format nft',
    '<%= config.bin %> rules render rules/examples/spec-sample.yaml --format iptables | iptables-restore --noflush',
  ];
  static override args = policyArg;
  static override flags = {
    ...policyFlags,
    format: Flags.option({
      options: ['nft', 'iptables', 'json'] as const,
      default: 'nft' as const,
      summary: 'Output format.',
    })(),
    jumps: Flags.boolean({
      summary: 'iptables: also insert the jumps from INPUT/FORWARD/OUTPUT (first load only).',
    }),
  };

  async run(): Promise<{ format: string; output: string | object }> {
    const { compiled: c } = await loadCompiledPolicyFrom(this.args.file, this.flags.db);
    const compiled = this.flags.table ? { ...c, table: this.flags.table } : c;
    const format = this.flags.format;
    if (format === 'json') {
      const doc = nftApplyDocument(compiled);
      if (!this.jsonEnabled()) process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
      return { format, output: doc };
    }
    const text = format === 'nft' ? nftText(compiled) : iptablesText(compiled, { jumps: this.flags.jumps });
    if (!this.jsonEnabled()) process.stdout.write(text);
    return { format, output: text };
  }
}
