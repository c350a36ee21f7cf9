import { Flags } from '@oclif/core';
import { SengCommand } from '../../base.js';
import { policyArg, policyFlags } from '../../../policy/cli-common.js';
import { lintPolicy, loadCompiledPolicy, parseSetName } from '../../../policy/index.js';
import { nftApplyDocument } from '../../../policy/nft.js';
import { diffPolicy, type DiffLine } from '../../../policy/diff.js';
import { NftCli } from '../../../enforce/nft-cli.js';
import { SengError } from '../../../util/errors.js';

interface ApplyResult {
  file: string;
  table: string;
  dryRun: boolean;
  applied: boolean;
  changes: DiffLine[];
  newSets: string[];
  deletedSets: string[];
}

export default class RulesApply extends SengCommand<typeof RulesApply> {
  static override summary = 'Install a policy into nftables as one atomic transaction.';
  static override description = `The table's rules are replaced in one nft transaction: if the kernel rejects any part, the previous ruleset stays intact. Existing enclave-IP sets keep their elements, so live sessions keep working; sets the policy no longer uses are deleted.
--dry-run checks the whole transaction with the kernel (nft -c) and prints the changes without committing.
While \`seng serve --nft\` runs, change its policy file and send SIGHUP (or \`seng kick\`-style control reload) instead: the server fills new sets with its live enclaves, which this command cannot know.`;
  static override examples = [
    '<%= config.bin %> rules apply --dry-run rules/examples/spec-sample.yaml',
    '<%= config.bin %> rules apply -d nf.db my-policy.yaml',
  ];
  static override args = policyArg;
  static override flags = {
    ...policyFlags,
    'dry-run': Flags.boolean({ summary: 'Check with the kernel and show the changes; commit nothing.' }),
    force: Flags.boolean({ summary: 'Apply even though live enclaves would be missing from new sets.' }),
  };

  async run(): Promise<ApplyResult> {
    const { compiled: c, policy, apps } = loadCompiledPolicy(this.args.file, this.flags.db);
    for (const w of lintPolicy(policy, apps)) {
      process.stderr.write(`Warning: ${this.args.file}:${w.line}:${w.col}: ${w.path}: ${w.message}\n`);
    }
    const compiled = this.flags.table ? { ...c, table: this.flags.table } : c;
    const nft = new NftCli();
    const live = await nft.listTable(compiled.table);
    const liveNames = new Set((live?.sets ?? []).map((s) => s.name));
    const newSets = compiled.sets.map((s) => s.name).filter((n) => !liveNames.has(n));
    const wanted = new Set(compiled.sets.map((s) => s.name));
    const doc = nftApplyDocument(compiled, { liveSets: [...liveNames] });
    const deletedSets = [...liveNames].filter((n) => !wanted.has(n) && parseSetName(n) !== undefined);
    const registered = live?.sets.find((s) => s.name === 'enclaves')?.elements.length ?? 0;
    if (registered > 0 && newSets.length > 0 && !this.flags.force && !this.flags['dry-run']) {
      throw new SengError(
        'ELIVESESSIONS',
        `${registered} enclaves are registered in table ip ${compiled.table}, and the new sets ${newSets.join(', ')} would start empty`,
        {
          hint: 'reload through the running gateway (edit its --policy file, then SIGHUP) so it fills them, or pass --force',
        },
      );
    }
    const { lines } = await diffPolicy(compiled, nft);
    const changes = lines.filter((l) => l.op !== ' ');
    if (this.flags['dry-run']) {
      await nft.run(doc, { check: true });
      this.log(
        `dry run: the kernel accepts the transaction for table ip ${compiled.table}; nothing was changed`,
      );
    } else {
      await nft.run(doc);
      this.log(
        `applied ${this.args.file} to table ip ${compiled.table} (${compiled.rules.length} rules, ${compiled.sets.length} sets)`,
      );
    }
    if (changes.length === 0) this.log('no rule changes');
    for (const l of changes) this.log(`${l.op} ${l.line}`);
    return {
      file: this.args.file,
      table: compiled.table,
      dryRun: this.flags['dry-run'],
      applied: !this.flags['dry-run'],
      changes,
      newSets,
      deletedSets,
    };
  }
}
