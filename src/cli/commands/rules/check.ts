import { SengCommand } from '../../base.js';
import { policyArg, policyFlags } from '../../policy-flags.js';
import { loadCompiledPolicyFrom } from '../../../policy/index.js';
import { lintPolicy } from '../../../policy/lint.js';
import type { PolicyIssue } from '../../../policy/errors.js';
import type { SetSpec } from '../../../policy/types.js';
import { formatCidr } from '../../../util/ipv4.js';

interface CheckResult {
  file: string;
  ok: true;
  table: string;
  rules: number;
  variants: number;
  chains: Record<string, number>;
  defaults: Record<string, string>;
  sets: { name: string; kind: SetSpec['kind']; value?: string }[];
  apps: { ref: string; measurements: string[]; names: string[] }[];
  warnings: PolicyIssue[];
}

export default class RulesCheck extends SengCommand<typeof RulesCheck> {
  static override summary = 'Validate a policy file and show what it compiles to.';
  static override description = `Checks the format (every problem with its line and column), resolves app names in the database (-d) and lists the enclave-IP sets the rules need. Exit status 1 when the policy is invalid. Changes nothing.`;
  static override examples = [
    '<%= config.bin %> rules check rules/examples/spec-sample.yaml',
    '<%= config.bin %> rules check -d nf.db my-policy.yaml --json',
  ];
  static override args = policyArg;
  static override flags = policyFlags;

  async run(): Promise<CheckResult> {
    const { policy, compiled, apps } = await loadCompiledPolicyFrom(this.args.file, this.flags.db);
    const warnings = lintPolicy(policy, apps);
    const chains: Record<string, number> = { input: 0, forward: 0, output: 0 };
    for (const r of policy.rules) chains[r.chain] = (chains[r.chain] ?? 0) + 1;
    const sets = compiled.sets.map((s) => ({
      name: s.name,
      kind: s.kind,
      ...(s.kind === 'app' && { value: s.mrEnclave }),
      ...(s.kind === 'cat' && { value: s.category }),
      ...(s.kind === 'host' && { value: formatCidr(s.cidr) }),
    }));
    this.log(
      `${this.args.file}: OK — ${policy.rules.length} rules (input ${chains.input}, forward ${chains.forward}, output ${chains.output})`,
    );
    this.log(
      `  table ip ${this.flags.table ?? compiled.table}; defaults: ${Object.entries(compiled.defaults)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')}`,
    );
    for (const s of sets)
      this.log(`  set ${s.name}${s.kind === 'enclaves' ? ' (all registered enclaves)' : ''}`);
    for (const a of compiled.apps) {
      this.log(
        `  app ${a.ref} → ${a.measurements.join(', ')}${a.names.length ? ` (${a.names.join(', ')})` : ''}`,
      );
    }
    for (const w of warnings) {
      process.stderr.write(`Warning: ${this.args.file}:${w.line}:${w.col}: ${w.path}: ${w.message}\n`);
    }
    return {
      file: this.args.file,
      ok: true,
      table: this.flags.table ?? compiled.table,
      rules: policy.rules.length,
      variants: compiled.rules.length,
      chains,
      defaults: compiled.defaults,
      sets,
      apps: compiled.apps,
      warnings,
    };
  }
}
