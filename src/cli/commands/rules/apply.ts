import { Flags } from '@oclif/core';
import { SengCommand } from '../../base.js';
import { policyArg, policyFlags } from '../../policy-flags.js';
import { lintPolicy, loadCompiledPolicyFrom, parseSetName } from '../../../policy/index.js';
import { liveApplyOptions, nftApplyDocument } from '../../../policy/nft.js';
import { dispatchPlan, nftSets } from '../../../policy/dispatch.js';
import { diffPolicy, type DiffLine } from '../../../policy/diff.js';
import { NftCli, type NftDocument } from '../../../nft/cli.js';
import { restoreDocument } from '../../../nft/snapshot.js';
import {
  createPending,
  takePending,
  waitForConfirmation,
  type ConfirmationOutcome,
} from '../../rules-pending.js';
import { EnvironmentError, SengError } from '../../../util/errors.js';
import { controlRequest, DEFAULT_CONTROL_PATH } from '../../../gateway/control.js';
import { createConnection } from 'node:net';
import { resolve } from 'node:path';

/** Extra seconds the gateway waits beyond --confirm before rolling back on its own. */
const GATEWAY_CONFIRM_GRACE_S = 5;

/**
 * Whether a gateway answers on the control socket. Only "nothing there" (no socket file,
 * or a socket nobody listens on) means no gateway runs; any other failure (EACCES as
 * non-root, a path that is not a socket) leaves open whether one runs, so it is an error
 * rather than a reason to change the rules behind a gateway's back.
 */
export function probeControl(path: string): Promise<'up' | 'absent'> {
  return new Promise((resolvePromise, reject) => {
    const c = createConnection(path);
    c.once('connect', () => {
      c.destroy();
      resolvePromise('up');
    });
    c.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') resolvePromise('absent');
      else
        reject(
          new EnvironmentError(
            'ECONTROL',
            `cannot tell whether a gateway runs: connecting to its control socket ${path} failed (${err.code ?? err.message})`,
            err.code === 'EACCES' || err.code === 'EPERM'
              ? 'run as root (the control socket is mode 0600); --direct applies with nft without asking the gateway'
              : 'pass the --control path of the running gateway, or --direct to apply with nft without it',
            err,
          ),
        );
    });
  });
}

/** Why a change waiting for confirmation was rolled back. */
function rollbackReason(outcome: Exclude<ConfirmationOutcome, 'confirmed'>, seconds: number): string {
  if (outcome === 'declined') return 'not kept (answered no)';
  if (outcome === 'interrupted') return 'interrupted before confirmation';
  return `not confirmed within ${seconds} s`;
}

interface ApplyResult {
  file: string;
  table: string;
  dryRun: boolean;
  applied: boolean;
  /** With --confirm: whether the admin confirmed (false never returns: a rollback is an error). */
  confirmed?: boolean;
  /** 'gateway' when a running seng serve --nft applied it (filling new sets with its live enclaves). */
  appliedBy: 'nft' | 'gateway' | null;
  changes: DiffLine[];
  newSets: string[];
  deletedSets: string[];
}

export default class RulesApply extends SengCommand<typeof RulesApply> {
  static override summary = 'Install a policy into nftables as one atomic transaction.';
  static override description = `The table's rules are replaced in one nft transaction: if the kernel rejects any part, the previous ruleset stays intact. Existing enclave-IP sets keep their elements, so live sessions keep working; sets the policy no longer uses are deleted.
--dry-run checks the whole transaction with the kernel (nft -c) and prints the changes without committing.
While \`seng serve --nft\` runs (its control socket answers), the policy is handed to the server, which swaps the rules in one transaction and fills new sets with its live enclaves; no session is dropped. Only when no gateway answers (no socket, or nobody listening on it) does it apply with nft directly, and then only if the table's sets hold no enclave IPs (a gateway's live state). If the socket cannot be reached for another reason (e.g. permission), it stops with the reason. --direct bypasses a running server.`;
  static override examples = [
    '<%= config.bin %> rules apply --dry-run rules/examples/spec-sample.yaml',
    '<%= config.bin %> rules apply -d nf.db my-policy.yaml',
  ];
  static override args = policyArg;
  static override flags = {
    ...policyFlags,
    'dry-run': Flags.boolean({ summary: 'Check with the kernel and show the changes; commit nothing.' }),
    force: Flags.boolean({ summary: 'Apply even though live enclaves would be missing from new sets.' }),
    control: Flags.string({ summary: 'Control socket of a running gateway.', default: DEFAULT_CONTROL_PATH }),
    direct: Flags.boolean({ summary: 'Apply with nft directly even when a gateway is running.' }),
    confirm: Flags.integer({
      summary: 'Roll back to the previous rules unless confirmed within SECONDS.',
      description:
        'Confirm with y at the prompt (on a terminal) or with `seng rules confirm` from another shell. Through a running gateway, the gateway itself also rolls back a few seconds later if this command is gone (e.g. the ssh session dropped).',
      min: 1,
      helpValue: 'SECONDS',
    }),
  };

  async run(): Promise<ApplyResult> {
    const { compiled: c, policy, apps } = await loadCompiledPolicyFrom(this.args.file, this.flags.db);
    for (const w of lintPolicy(policy, apps)) {
      process.stderr.write(`Warning: ${this.args.file}:${w.line}:${w.col}: ${w.path}: ${w.message}\n`);
    }
    const compiled = this.flags.table ? { ...c, table: this.flags.table } : c;
    const viaGateway = await this.applyThroughGateway(compiled.table);
    if (viaGateway) return viaGateway;
    const nft = new NftCli();
    const live = await nft.listTable(compiled.table);
    const liveNames = new Set((live?.sets ?? []).map((s) => s.name));
    const tableSets = nftSets(compiled);
    // A per-app dispatch chain that is not live yet starts like a new set: nft alone does
    // not know which registered enclaves run that app (the gateway does).
    const liveChains = new Set((live?.chains ?? []).map((c) => c.name));
    const newChains = dispatchPlan(compiled).chains.filter((c) => c.includes('_app_') && !liveChains.has(c));
    const newSets = [...tableSets.map((s) => s.name).filter((n) => !liveNames.has(n)), ...newChains];
    const wanted = new Set(tableSets.map((s) => s.name));
    const doc = nftApplyDocument(compiled, liveApplyOptions(compiled, live));
    const deletedSets = [...liveNames].filter((n) => !wanted.has(n) && parseSetName(n) !== undefined);
    const registered = live?.sets.find((s) => s.name === 'enclaves')?.elements.length ?? 0;
    const liveElements = (live?.sets ?? [])
      .filter((s) => parseSetName(s.name) !== undefined)
      .reduce((n, s) => n + s.elements.length, 0);
    if (liveElements > 0 && !this.flags.direct && !this.flags.force && !this.flags['dry-run']) {
      // No gateway answered, yet the sets hold enclave IPs: a gateway's state (one with
      // another control socket, or one that died). Replacing its rules directly would
      // fight with it.
      throw new SengError(
        'ELIVESESSIONS',
        `no gateway answers on ${this.flags.control}, but table ip ${compiled.table} holds ${liveElements} enclave IPs in its sets (a gateway's live state)`,
        {
          hint: `apply through that gateway with --control PATH (its control socket); if no gateway uses table ${compiled.table}, pass --direct`,
        },
      );
    }
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
    } else if (this.flags.confirm !== undefined) {
      await this.applyWithConfirmation(nft, compiled.table, doc, changes, this.flags.confirm);
      return {
        file: this.args.file,
        table: compiled.table,
        dryRun: false,
        applied: true,
        appliedBy: 'nft',
        confirmed: true,
        changes,
        newSets,
        deletedSets,
      };
    } else {
      await nft.run(doc);
      this.log(
        `applied ${this.args.file} to table ip ${compiled.table} (${compiled.rules.length} rules, ${tableSets.length} sets)`,
      );
    }
    this.logChanges(changes);
    return {
      file: this.args.file,
      table: compiled.table,
      dryRun: this.flags['dry-run'],
      applied: !this.flags['dry-run'],
      appliedBy: this.flags['dry-run'] ? null : 'nft',
      changes,
      newSets,
      deletedSets,
    };
  }

  private logChanges(changes: DiffLine[]): void {
    if (changes.length === 0) this.log('no rule changes');
    for (const l of changes) this.log(`${l.op} ${l.line}`);
  }

  /**
   * Applies, then waits for the admin's confirmation; without it the table is put back
   * exactly as it was before (rules, chains, sets and their elements at that moment).
   */
  private async applyWithConfirmation(
    nft: NftCli,
    table: string,
    doc: NftDocument,
    changes: DiffLine[],
    seconds: number,
  ): Promise<void> {
    const before = await nft.listTableJson(table);
    const pending = createPending(table, { file: resolve(this.args.file), seconds });
    try {
      await nft.run(doc);
    } catch (e) {
      takePending(pending);
      throw e;
    }
    this.log(`applied ${this.args.file} to table ip ${table}, pending confirmation`);
    this.logChanges(changes);
    const outcome = await waitForConfirmation(pending, seconds, (m) => process.stderr.write(`${m}\n`));
    if (outcome === 'confirmed') {
      this.log(`confirmed: the new rules of table ip ${table} stay`);
      return;
    }
    await nft.run(restoreDocument(table, 'ip', before));
    throw new SengError(
      'EROLLEDBACK',
      `${rollbackReason(outcome, seconds)}: table ip ${table} is back to the rules it had before`,
      {
        hint: 'apply again, and confirm with y or `seng rules confirm` (from another shell) in time',
      },
    );
  }

  /**
   * Waits for the admin's confirmation of a change the gateway applied with confirmSeconds,
   * then tells the gateway to keep it or to put the previous policy back at once.
   */
  private async confirmThroughGateway(control: string, table: string, seconds: number): Promise<void> {
    const pending = createPending(table, { file: resolve(this.args.file), seconds, gateway: control });
    const outcome = await waitForConfirmation(pending, seconds, (m) => process.stderr.write(`${m}\n`));
    const reply = (await controlRequest(control, {
      cmd: 'confirm',
      ...(outcome === 'confirmed' ? {} : { rollback: true }),
    })) as { waiting: boolean };
    if (outcome === 'confirmed' && reply.waiting) {
      this.log(`confirmed: the gateway keeps the new rules of table ip ${table}`);
      return;
    }
    const why = outcome === 'confirmed' ? 'confirmed too late' : rollbackReason(outcome, seconds);
    throw new SengError(
      'EROLLEDBACK',
      `${why}: the gateway put the previous policy of table ip ${table} back`,
      {
        hint: 'apply again, and confirm with y or `seng rules confirm` (from another shell) in time',
      },
    );
  }

  /** Hands the policy to a running `seng serve --nft`; undefined when there is none to hand it to. */
  private async applyThroughGateway(table: string): Promise<ApplyResult | undefined> {
    const control = this.flags.control;
    if (this.flags['dry-run'] || this.flags.direct) return undefined;
    if ((await probeControl(control)) === 'absent') return undefined;
    try {
      const seconds = this.flags.confirm;
      const r = (await controlRequest(control, {
        cmd: 'policy',
        path: resolve(this.args.file),
        // The gateway's own deadline is a little later than ours, so a confirmation given at
        // the last moment still reaches it; without us (ssh dropped) it rolls back by itself.
        ...(seconds === undefined ? {} : { confirmSeconds: seconds + GATEWAY_CONFIRM_GRACE_S }),
      })) as {
        policy: string;
        sessions: number;
      };
      this.log(`applied through the running gateway: ${r.policy} (${r.sessions} live sessions kept)`);
      if (seconds !== undefined) await this.confirmThroughGateway(control, table, seconds);
      return {
        file: this.args.file,
        table,
        dryRun: false,
        applied: true,
        appliedBy: 'gateway',
        changes: [],
        newSets: [],
        deletedSets: [],
      };
    } catch (err) {
      if ((err as SengError).code === 'ENOTNFT') return undefined;
      throw err;
    }
  }
}
