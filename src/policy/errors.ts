/**
 * Policy errors: every problem found in a policy file, each with its line and column,
 * reported together (an admin fixes them all in one go instead of one per run).
 */
import { SengError } from '../util/errors.js';

export interface PolicyIssue {
  /** 1-based line and column in the policy file (0 when the problem has no location). */
  line: number;
  col: number;
  /** Where in the document, e.g. `rules[2].dport`. */
  path: string;
  message: string;
}

export class PolicyError extends SengError {
  readonly file: string;
  readonly issues: PolicyIssue[];

  constructor(file: string, issues: PolicyIssue[], hint?: string) {
    const lines = issues.map(
      (i) => `  ${file}:${i.line}:${i.col}: ${i.path ? `${i.path}: ` : ''}${i.message}`,
    );
    super(
      'EPOLICY',
      `${file}: ${issues.length} problem${issues.length === 1 ? '' : 's'} in the policy\n${lines.join('\n')}`,
      { hint: hint ?? 'see rules/README.md for the policy format (rules/policy.schema.json for editors)' },
    );
    this.file = file;
    this.issues = issues;
  }

  override toJSON(): { code: string; message: string; hint?: string; file: string; issues: PolicyIssue[] } {
    return { ...super.toJSON(), file: this.file, issues: this.issues };
  }
}
