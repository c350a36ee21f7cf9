import { Flags } from '@oclif/core';
import { SengCommand } from '../../base.js';
import { policyArg, policyFlags } from '../../policy-flags.js';
import { loadCompiledPolicyFrom } from '../../../policy/index.js';
import { diffPolicy, type PolicyDiff } from '../../../policy/diff.js';

export default class RulesDiff extends SengCommand<typeof RulesDiff> {
  static override summary = 'Show what applying a policy would change in the live nftables table.';
  static override description = `Lines starting with - are live and would go, + would be added. Set elements and counter values are not compared (the gateway owns them). Needs root. Changes nothing.`;
  static override examples = ['<%= config.bin %> rules diff rules/examples/spec-sample.yaml'];
  static override args = policyArg;
  static override flags = {
    ...policyFlags,
    'exit-code': Flags.boolean({ summary: 'Exit with status 3 when there are differences (for scripts).' }),
  };

  async run(): Promise<PolicyDiff> {
    const { compiled: c } = await loadCompiledPolicyFrom(this.args.file, this.flags.db);
    const compiled = this.flags.table ? { ...c, table: this.flags.table } : c;
    const d = await diffPolicy(compiled);
    if (!d.exists) this.log(`table ip ${d.table} does not exist yet; applying creates:`);
    if (!d.changed) this.log(`table ip ${d.table} already matches ${this.args.file}`);
    else for (const l of d.lines) if (l.op !== ' ') this.log(`${l.op} ${l.line}`);
    if (d.changed && this.flags['exit-code']) process.exitCode = 3;
    return d;
  }
}
