/**
 * nftables enforcement backend: per-app, per-category and per-host firewall rules
 * without the seng kernel module.
 *
 * The policy's rules live in one nftables table owned by seng (see src/policy/nft.ts)
 * and refer to sets of enclave IPs; this backend keeps those sets equal to the live
 * sessions: `join` adds the enclave IP to the sets it belongs in (all enclaves, its app,
 * its categories, the host subnets that contain its untrusted host IP) and to the
 * dispatch maps that send its packets to its app's chains (src/policy/dispatch.ts), in
 * the same kernel transaction; `leave` removes all of it in one transaction. The
 * conntrack purge is not part of `leave`: it runs right after (coalesced with the purges
 * of other leavers, ConntrackPurger), and `purged(ip)` tells the gateway when the IP may
 * be handed out again.
 *
 * Set updates go over a long-lived netfilter netlink socket (src/enforce/nft-netlink.ts)
 * and are coalesced: every join/leave issued in the same event-loop turn (or within
 * `batchDelayMs`) becomes one kernel transaction, one round trip. Policy reloads are one
 * `nft -j -f` transaction that keeps existing sets and fills new ones from the live
 * registrations, so sessions survive a reload.
 */
import type { Logger } from '../util/log.js';
import { silentLogger } from '../util/log.js';
import { formatIpv4, parseIpv4, type Ipv4 } from '../util/ipv4.js';
import { SengError, errorMessage } from '../util/errors.js';
import type { EnclaveRegistration, Enforcer } from './types.js';
import type { CompiledPolicy, SetSpec } from '../policy/types.js';
import { ENCLAVES_SET, parseSetName, setHolds } from '../policy/compile.js';
import { NFT_FAMILY, liveApplyOptions, nftApplyDocument, type NftCommand } from '../policy/nft.js';
import { NftCli } from '../nft/cli.js';
import { checkTableName } from '../nft/names.js';
import { NftNetlink, type ChainCreation, type SetElementChange } from './nft-netlink.js';
import { ConntrackPurger } from './conntrack.js';
import {
  CAT_MAP,
  CAT_PROFILE_CHAIN,
  DISPATCH_CHAIN,
  DISPATCH_MAP,
  catElements,
  catProfile,
  catRunShapes,
  dispatchPlan,
  dispatchTargets,
  liveCatRuns,
  nftSets,
  type CatRunShape,
} from '../policy/dispatch.js';
import { loadCompiledPolicy } from '../policy/index.js';

/** Writes set-element changes (and the profile chains they need) as one transaction. */
export interface ElementWriter {
  apply(changes: SetElementChange[], chains?: ChainCreation[]): Promise<void>;
  close(): void;
}

/** Runs whole-table nft transactions and reads the table back. */
export interface NftRunner {
  run(doc: { nftables: NftCommand[] }, opts?: { check?: boolean }): Promise<void>;
  listTable(table: string): Promise<{
    sets: { name: string; elements: string[] }[];
    maps?: { name: string; elements: string[] }[];
    chains?: { name: string }[];
  } | null>;
}

export interface NftEnforcerOptions {
  /** Policy installed by start() (and replaced by applyPolicy). Without one, start() keeps the live rules. */
  policy?: CompiledPolicy;
  /** Table name (default: the policy's, else `seng`). */
  tableName?: string;
  logger?: Logger;
  /** Deletes conntrack entries of an IP (default: a coalescing ConntrackPurger of src/enforce/conntrack.ts). */
  purge?: (ip: Ipv4) => Promise<number>;
  nft?: NftRunner;
  elements?: ElementWriter;
  /** Extra time to gather a batch (default 0: everything issued in the same event-loop turn). */
  batchDelayMs?: number;
  /**
   * Policy file: start() loads it when `policy` is not given, and reloadPolicy() (SIGHUP,
   * `seng rules apply` while serving) re-reads it. App names resolve in `db`.
   */
  policyFile?: string;
  db?: string;
}

export class NftEnforcerError extends SengError {
  constructor(message: string, hint?: string, cause?: unknown) {
    super('ENFTENFORCE', message, { ...(hint === undefined ? {} : { hint }), cause });
  }
}

/** A queued element change: remove, add to a set, or add to a map (goto a chain). */
type ElementOp = boolean | { goto: string; replace: boolean };

/** Where an app's enclaves go in the dispatch maps. */
type Targets = Map<string, { map: string; chain: string }[]>;

/** `add element` commands that put the registrations into their sets and dispatch maps. */
function initialElements(
  table: string,
  regs: EnclaveRegistration[],
  index: SetIndex,
  targets: Targets,
  runs: CatRunShape[] = [],
): NftCommand[] {
  const bySet = new Map<string, unknown[]>();
  const add = (name: string, elem: unknown): void => {
    const list = bySet.get(name) ?? [];
    list.push(elem);
    bySet.set(name, list);
  };
  for (const reg of regs) {
    const ip = formatIpv4(reg.enclaveIp);
    for (const name of index.setsOf(reg)) add(name, ip);
    for (const t of targets.get(reg.mrEnclave.toString('hex')) ?? [])
      add(t.map, [ip, { goto: { target: t.chain } }]);
  }
  // Category maps: the profile chains first (re-filled: a live one may predate the blocks).
  const cmds: NftCommand[] = [];
  const base = { family: NFT_FAMILY, table };
  const cat = catElements(
    runs,
    regs.map((r) => [formatIpv4(r.enclaveIp), r.categories]),
  );
  for (const [name, jumps] of cat.profiles) {
    cmds.push({ add: { chain: { ...base, name } } }, { flush: { chain: { ...base, name } } });
    for (const target of jumps)
      cmds.push({ add: { rule: { ...base, chain: name, expr: [{ jump: { target } }] } } });
  }
  for (const e of cat.elements) add(e.map, [e.ip, { jump: { target: e.chain } }]);
  cmds.push(
    ...[...bySet].map(([name, elem]) => ({
      add: { element: { ...base, name, elem } },
    })),
  );
  return cmds;
}

/** Dispatch targets of a live table that seng did not get a policy for (names tell the plan). */
function liveTargets(live: { maps?: { name: string }[]; chains?: { name: string }[] } | null): Targets {
  const out: Targets = new Map();
  const maps = new Set((live?.maps ?? []).map((m) => m.name).filter((n) => DISPATCH_MAP.test(n)));
  for (const c of live?.chains ?? []) {
    const m = DISPATCH_CHAIN.exec(c.name);
    const hook = m?.[1];
    const app = /^app_([0-9a-f]{64})$/.exec(m?.[2] ?? '')?.[1];
    if (!hook || !app || !maps.has(`dispatch_${hook}`)) continue;
    const list = out.get(app) ?? [];
    list.push({ map: `dispatch_${hook}`, chain: c.name });
    out.set(app, list);
  }
  return out;
}

/** Category runs and profile chains of a live table seng did not get a policy for. */
function liveCategories(live: { maps?: { name: string }[]; chains?: { name: string }[] } | null): {
  runs: CatRunShape[];
  profiles: Set<string>;
} {
  const chains = (live?.chains ?? []).map((c) => c.name);
  return {
    runs: liveCatRuns(
      chains,
      (live?.maps ?? []).map((m) => m.name),
    ),
    profiles: new Set(chains.filter((c) => CAT_PROFILE_CHAIN.test(c))),
  };
}

/**
 * The sets indexed by what decides membership: with 10,000 app sets, a join costs a
 * lookup of its own app and categories, not a test of every set.
 */
class SetIndex {
  private readonly byApp = new Map<string, string[]>();
  private readonly byCategory = new Map<string, string[]>();
  private readonly others: SetSpec[] = [];

  constructor(sets: Iterable<SetSpec>) {
    for (const s of sets) {
      if (s.kind === 'app') push(this.byApp, s.mrEnclave, s.name);
      else if (s.kind === 'cat') push(this.byCategory, s.category, s.name);
      else this.others.push(s);
    }
  }

  setsOf(reg: EnclaveRegistration): string[] {
    const out = [...(this.byApp.get(reg.mrEnclave.toString('hex')) ?? [])];
    for (const c of new Set(reg.categories)) out.push(...(this.byCategory.get(c) ?? []));
    for (const s of this.others) if (setHolds(s, reg)) out.push(s.name);
    return out;
  }
}

function push(m: Map<string, string[]>, key: string, value: string): void {
  const list = m.get(key);
  if (list) list.push(value);
  else m.set(key, [value]);
}

interface Waiter {
  resolve: () => void;
  reject: (e: unknown) => void;
}

export class NftEnforcer implements Enforcer {
  readonly name = 'nftables';
  readonly table: string;
  private policy: CompiledPolicy | undefined;
  private readonly log: Logger;
  private readonly purge: (ip: Ipv4) => Promise<number>;
  private purger: ConntrackPurger | undefined;
  /** Conntrack purges after leave, by IP (failed ones stay: that IP stays quarantined). */
  private readonly purges = new Map<Ipv4, Promise<void>>();
  /** Dispatch-map entries per app (mrenclave hex) of the installed policy. */
  private targets: Targets = new Map();
  /** Category runs of the installed policy (or of the live table without one). */
  private runs: CatRunShape[] = [];
  /** `runs` by the categories they name. */
  private runsByCategory = new Map<string, CatRunShape[]>();
  /**
   * Profile chains that exist in the table. A chain is created in the batch of the first
   * join that needs it and kept until the next policy apply or start, which re-derive them
   * from the live enclaves (so at most one per category set seen since then per run).
   */
  private profiles = new Set<string>();
  /** Profile chains the pending batch creates (name → block chains it jumps to). */
  private newProfiles = new Map<string, string[]>();
  private readonly nft: NftRunner;
  private readonly writer: ElementWriter;
  private readonly batchDelayMs: number;
  /** Live registrations by enclave IP. */
  private readonly regs = new Map<Ipv4, EnclaveRegistration>();
  /** The sets of the table, by name. */
  private catalog = new Map<string, SetSpec>();
  /** `catalog` indexed (rebuilt when the catalog changes). */
  private indexed: { of: Map<string, SetSpec>; size: number; index: SetIndex } | undefined;
  /** Desired element state changes not yet written: set → ip → present? */
  private pending = new Map<string, Map<Ipv4, ElementOp>>();
  private waiters: Waiter[] = [];
  private scheduled = false;
  /** Serializes batches and policy swaps. */
  private chain: Promise<void> = Promise.resolve();
  private started = false;
  private policyFile: string | undefined;
  private readonly db: string | undefined;
  /** A policy change waiting for confirmation, and what comes back without it. */
  private pendingChange: { timer: NodeJS.Timeout; rollback: (why: string) => void } | undefined;
  /** The last rollback of an unconfirmed change (settled when it has run). */
  private rollbackRun: Promise<void> = Promise.resolve();
  /** Counters for `seng status` and benchmarks. */
  readonly stats = { batches: 0, elementOps: 0, failures: 0, profileChains: 0 };

  constructor(opts: NftEnforcerOptions = {}) {
    this.policy = opts.policy;
    // Checked before the name reaches nft (commands) or netlink (set updates).
    this.table = checkTableName(opts.tableName ?? opts.policy?.table ?? 'seng');
    if (opts.policy && opts.policy.table !== this.table) {
      throw new NftEnforcerError(
        `policy is for table ${opts.policy.table}, the enforcer manages table ${this.table}`,
      );
    }
    this.log = (opts.logger ?? silentLogger).child({ backend: 'nftables', table: this.table });
    this.purge =
      opts.purge ??
      ((ip) => {
        this.purger ??= new ConntrackPurger();
        return this.purger.purge(ip);
      });
    this.nft = opts.nft ?? new NftCli();
    this.writer = opts.elements ?? new NftNetlink({ table: this.table });
    this.batchDelayMs = opts.batchDelayMs ?? 0;
    this.policyFile = opts.policyFile;
    this.db = opts.db;
    if (!this.policy && this.policyFile) this.policy = loadCompiledPolicy(this.policyFile, this.db).compiled;
    // The server's table (--nft-table) wins over the policy's `table:`.
    if (this.policy) this.policy = { ...this.policy, table: this.table };
  }

  /**
   * Re-reads the policy file (and the database for app names) and swaps the rules in
   * one transaction. Returns a one-line summary. Validation errors leave everything as is.
   */
  async reloadPolicy(): Promise<string> {
    if (!this.policyFile) return 'no policy file configured; rules left as they are';
    const { compiled } = loadCompiledPolicy(this.policyFile, this.db);
    await this.applyPolicy(compiled);
    return `${this.policyFile}: ${compiled.rules.length} rules, ${compiled.sets.length} sets`;
  }

  /**
   * Makes `path` the policy file (`seng rules apply FILE` against a running gateway) and
   * applies it; on a validation or kernel error the previous file and rules stay in force.
   */
  async usePolicyFile(path: string, opts: { confirmWithinMs?: number } = {}): Promise<string> {
    const { compiled } = loadCompiledPolicy(path, this.db);
    const previous = this.policy;
    const previousFile = this.policyFile;
    if (opts.confirmWithinMs !== undefined) {
      if (this.pendingChange) {
        throw new NftEnforcerError(
          'another policy change is waiting for confirmation',
          'confirm it (seng rules confirm) or wait until it is rolled back',
        );
      }
      if (!previous) {
        throw new NftEnforcerError(
          'no policy is installed to roll back to',
          'apply this policy without --confirm first',
        );
      }
    }
    await this.applyPolicy(compiled);
    this.policyFile = path;
    if (opts.confirmWithinMs !== undefined && previous) {
      this.armRollback(previous, previousFile, opts.confirmWithinMs);
    }
    return `${path}: ${compiled.rules.length} rules, ${compiled.sets.length} sets`;
  }

  /**
   * Keeps a change made with `confirmWithinMs` (the admin confirmed in time). False when
   * nothing is waiting (never changed, already confirmed, or already rolled back).
   */
  confirmPolicy(): boolean {
    const p = this.pendingChange;
    if (!p) return false;
    clearTimeout(p.timer);
    this.pendingChange = undefined;
    this.log.info({ policy: this.policyFile }, 'policy change confirmed');
    return true;
  }

  /** Whether a policy change waits for confirmation (for status output and tests). */
  pendingConfirmation(): boolean {
    return this.pendingChange !== undefined;
  }

  /**
   * Rolls a change made with `confirmWithinMs` back at once (the admin declined, or its
   * confirmation window closed on the client's side). False when nothing is waiting.
   */
  async rollbackPolicy(): Promise<boolean> {
    const p = this.pendingChange;
    if (!p) return false;
    clearTimeout(p.timer);
    this.pendingChange = undefined;
    p.rollback('policy change declined: previous policy restored');
    await this.rollbackRun;
    return true;
  }

  private armRollback(previous: CompiledPolicy, file: string | undefined, ms: number): void {
    const rollback = (why: string): void => {
      // Through applyPolicy: live sessions keep working, sets the previous policy needs
      // are filled from them again.
      this.rollbackRun = this.applyPolicy(previous)
        .then(() => {
          this.policyFile = file;
          this.log.warn({ policy: file }, why);
        })
        .catch((e: unknown) =>
          this.log.error({ err: errorMessage(e) }, 'rolling back an unconfirmed policy change failed'),
        );
    };
    const timer = setTimeout(() => {
      if (this.pendingChange?.timer !== timer) return;
      this.pendingChange = undefined;
      rollback('policy change not confirmed in time: previous policy restored');
    }, ms);
    timer.unref();
    this.pendingChange = { timer, rollback };
  }

  /** Resolves when a pending rollback (if any) has run; for tests. */
  rollbackDone(): Promise<void> {
    return this.rollbackRun;
  }

  /** The installed policy, if any. */
  currentPolicy(): CompiledPolicy | undefined {
    return this.policy;
  }

  /** The sets currently managed (for status output and tests). */
  sets(): SetSpec[] {
    return [...this.catalog.values()];
  }

  /**
   * Installs the policy (if any) and reconciles: the table and its sets exist, and every
   * element left by an earlier run is removed. `initial`: registrations live already (the
   * fleet agent's leases), whose set and dispatch-map elements are added in the SAME
   * transaction, so the sets are never seen empty in between.
   */
  async start(opts: { initial?: EnclaveRegistration[] } = {}): Promise<void> {
    await this.serialize(async () => {
      const live = await this.nft.listTable(this.table);
      const liveSets = live?.sets ?? [];
      const cmds: NftCommand[] = [];
      const initial = opts.initial ?? [];
      if (this.policy) {
        // No session is live yet: the dispatch maps start empty (no members); the initial
        // registrations' category profiles are part of the document (it deletes the others).
        const { appMembers: _none, catMembers: _old, ...names } = liveApplyOptions(this.policy, live);
        const catMembers = new Map(initial.map((r) => [formatIpv4(r.enclaveIp), [...r.categories]]));
        cmds.push(...nftApplyDocument(this.policy, { ...names, catMembers }).nftables);
      } else {
        cmds.push({ add: { table: { family: NFT_FAMILY, name: this.table } } });
        cmds.push({
          add: { set: { family: NFT_FAMILY, table: this.table, name: ENCLAVES_SET, type: 'ipv4_addr' } },
        });
        // Rules left as they are: a policy applied with `seng rules apply` may dispatch
        // through maps; their stale elements go, and joins fill them again.
        for (const m of live?.maps ?? []) {
          if (DISPATCH_MAP.test(m.name) && m.elements.length)
            cmds.push({ flush: { map: { family: NFT_FAMILY, table: this.table, name: m.name } } });
        }
      }
      // Stale elements: flush every seng set that survives this transaction.
      const keep = new Set(this.policy ? nftSets(this.policy).map((s) => s.name) : []);
      let stale = 0;
      for (const s of liveSets) {
        if (!parseSetName(s.name)) continue;
        if (this.policy && !keep.has(s.name)) continue; // deleted by the document
        if (s.elements.length) {
          stale += s.elements.length;
          cmds.push({ flush: { set: { family: NFT_FAMILY, table: this.table, name: s.name } } });
        }
      }
      const catalog = new Map<string, SetSpec>();
      const plan = this.policy ? dispatchPlan(this.policy) : undefined;
      const targets = plan ? dispatchTargets(plan) : liveTargets(live);
      const lc = liveCategories(live);
      const runs = plan ? catRunShapes(plan) : lc.runs;
      if (this.policy) for (const s of nftSets(this.policy)) catalog.set(s.name, s);
      else {
        for (const s of liveSets) {
          const spec = parseSetName(s.name);
          if (spec) catalog.set(s.name, spec);
        }
        catalog.set(ENCLAVES_SET, { kind: 'enclaves', name: ENCLAVES_SET });
      }
      // After the flushes: the initial elements are what the sets hold when this commits.
      // (With a policy, the document already holds the category profiles and elements.)
      cmds.push(
        ...initialElements(this.table, initial, new SetIndex(catalog.values()), targets, plan ? [] : runs),
      );
      await this.nft.run({ nftables: cmds });
      const initialProfiles = catElements(
        runs,
        initial.map((r) => [formatIpv4(r.enclaveIp), r.categories]),
      ).profiles.keys();
      this.catalog = catalog;
      this.targets = targets;
      this.setRuns(runs);
      // Without a policy, live profile chains stay (only their elements were flushed).
      this.profiles = new Set([...(plan ? [] : lc.profiles), ...initialProfiles]);
      this.regs.clear();
      for (const reg of initial) this.regs.set(reg.enclaveIp, { ...reg, categories: [...reg.categories] });
      this.started = true;
      this.log.info(
        { sets: this.catalog.size, staleElements: stale, rules: this.policy?.rules.length },
        this.policy
          ? 'nftables policy installed, sets reconciled'
          : 'nftables sets reconciled (rules left as they are)',
      );
    });
  }

  /**
   * Swaps in a new policy in one transaction without dropping sessions: existing sets
   * keep their elements, new sets are filled from the live registrations in the same
   * transaction, obsolete seng sets are deleted.
   */
  async applyPolicy(policy: CompiledPolicy): Promise<void> {
    if (policy.table !== this.table) {
      throw new NftEnforcerError(
        `policy is for table ${policy.table}, this server manages table ${this.table}`,
        'set `table:` in the policy',
      );
    }
    await this.serialize(async () => {
      // Pending element changes go first, so the live state matches `regs`.
      await this.writeBatch();
      const live = await this.nft.listTable(this.table);
      const liveNames = new Set((live?.sets ?? []).map((s) => s.name));
      const elements = new Map<string, string[]>();
      const members = new Map<string, string[]>();
      const appMembers = new Map<string, string[]>();
      const catMembers = new Map<string, string[]>();
      const sets = nftSets(policy);
      const index = new SetIndex(sets);
      for (const r of this.regs.values()) {
        const ip = formatIpv4(r.enclaveIp);
        for (const name of index.setsOf(r)) push(members, name, ip);
        push(appMembers, r.mrEnclave.toString('hex'), ip);
        catMembers.set(ip, [...r.categories]);
      }
      for (const s of sets) {
        const ips = members.get(s.name) ?? [];
        if (liveNames.has(s.name) && this.catalog.has(s.name)) continue;
        if (ips.length) elements.set(s.name, ips);
      }
      // The dispatch maps are re-derived from the live registrations in the same transaction.
      await this.nft.run(
        nftApplyDocument(policy, { ...liveApplyOptions(policy, live), elements, appMembers, catMembers }),
      );
      const plan = dispatchPlan(policy);
      this.policy = policy;
      this.catalog = new Map(sets.map((s) => [s.name, s]));
      this.targets = dispatchTargets(plan);
      this.setRuns(catRunShapes(plan));
      // The document created exactly these profile chains and deleted the others.
      this.profiles = new Set(catElements(this.runs, catMembers).profiles.keys());
      this.log.info(
        { rules: policy.rules.length, sets: policy.sets.length, source: policy.source },
        'nftables policy reloaded',
      );
    });
  }

  /** One transaction with the joins issued in the same event-loop turn. */
  async join(reg: EnclaveRegistration): Promise<void> {
    await this.joinMany([reg]);
  }

  /** Every registration in ONE kernel transaction (sets and dispatch maps). */
  async joinMany(regs: EnclaveRegistration[]): Promise<void> {
    this.requireStarted();
    for (const reg of regs) this.queueJoin(reg);
    await this.flushSoon();
  }

  /**
   * Removes the enclave from the sets and maps (one transaction, shared with the leaves of
   * the same turn) and starts the purge of its conntrack entries, which `purged()` awaits.
   */
  async leave(reg: EnclaveRegistration): Promise<void> {
    await this.leaveMany([reg]);
  }

  /** Every removal in ONE kernel transaction; the conntrack purges follow, coalesced. */
  async leaveMany(regs: EnclaveRegistration[]): Promise<void> {
    this.requireStarted();
    for (const reg of regs) this.queueLeave(reg);
    await this.flushSoon();
    // Only now: a purge before the removal is committed could miss entries created meanwhile.
    for (const reg of regs) this.startPurge(reg.enclaveIp);
  }

  /**
   * Resolves when the conntrack purge that followed the IP's last leave has run (at once if
   * none is pending); rejects when it failed, and keeps rejecting: the IP must stay
   * quarantined (`seng conntrack purge` by hand, then a restart, frees it).
   */
  purged(ip: Ipv4): Promise<void> {
    return this.purges.get(ip) ?? Promise.resolve();
  }

  private startPurge(ip: Ipv4): void {
    const run = this.purge(ip).then(
      (n) => {
        if (this.purges.get(ip) === run) this.purges.delete(ip);
        this.log.debug({ ip: formatIpv4(ip), conntrack: n }, 'enclave left, conntrack purged');
      },
      (e: unknown) => {
        const err = new NftEnforcerError(
          `enclave ${formatIpv4(ip)} left but purging its conntrack entries failed: ${errorMessage(e)}`,
          'run `seng conntrack purge` for that IP; it stays quarantined until then',
          e,
        );
        this.log.error({ ip: formatIpv4(ip), err: err.message }, 'conntrack purge after leave failed');
        throw err;
      },
    );
    run.catch(() => undefined); // observed through purged(); never an unhandled rejection
    this.purges.set(ip, run);
  }

  private queueJoin(reg: EnclaveRegistration): void {
    this.regs.set(reg.enclaveIp, { ...reg, categories: [...reg.categories] });
    for (const name of this.index().setsOf(reg)) this.queue(name, reg.enclaveIp, true);
    for (const t of this.targets.get(reg.mrEnclave.toString('hex')) ?? []) {
      this.queue(t.map, reg.enclaveIp, t.chain);
    }
    for (const run of this.runsOf(reg.categories)) {
      const p = catProfile(run, reg.categories);
      if (p) this.queue(p.map, reg.enclaveIp, this.needProfile(p.chain, p.jumps));
    }
  }

  private setRuns(runs: CatRunShape[]): void {
    this.runs = runs;
    this.runsByCategory = new Map();
    for (const run of runs)
      for (const c of new Set(run.blocks.map((b) => b.category))) {
        const list = this.runsByCategory.get(c) ?? [];
        list.push(run);
        this.runsByCategory.set(c, list);
      }
  }

  /** The category runs naming any of these categories (a join looks up its own, not every run). */
  private runsOf(categories: readonly string[]): CatRunShape[] {
    const out = new Set<CatRunShape>();
    for (const c of categories) for (const run of this.runsByCategory.get(c) ?? []) out.add(run);
    return [...out];
  }

  /** The profile chain, created in the pending batch when the table does not have it yet. */
  private needProfile(chain: string, jumps: string[]): string {
    if (!this.profiles.has(chain)) this.newProfiles.set(chain, jumps);
    return chain;
  }

  private queueLeave(reg: EnclaveRegistration): void {
    const known = this.regs.get(reg.enclaveIp) ?? reg;
    this.regs.delete(reg.enclaveIp);
    for (const name of this.index().setsOf(known)) this.queue(name, reg.enclaveIp, false);
    for (const t of this.targets.get(known.mrEnclave.toString('hex')) ?? []) {
      this.queue(t.map, reg.enclaveIp, false);
    }
    for (const run of this.runsOf(known.categories)) {
      if (catProfile(run, known.categories)) this.queue(run.map, reg.enclaveIp, false);
    }
  }

  async updateCategories(
    mrEnclave: Buffer,
    categories: string[],
    active: EnclaveRegistration[],
  ): Promise<void> {
    this.requireStarted();
    for (const a of active) {
      if (!a.mrEnclave.equals(mrEnclave)) continue;
      const before = this.regs.get(a.enclaveIp) ?? a;
      const after = { ...before, categories: [...categories] };
      this.regs.set(a.enclaveIp, after);
      for (const s of this.catalog.values()) {
        if (s.kind !== 'cat') continue;
        const was = setHolds(s, before);
        const now = setHolds(s, after);
        if (was !== now) this.queue(s.name, a.enclaveIp, now);
      }
      // The category maps follow: the element moves to the new profile (same batch).
      for (const run of this.runsOf([...before.categories, ...categories])) {
        const was = catProfile(run, before.categories)?.chain;
        const now = catProfile(run, after.categories);
        if (was === now?.chain) continue;
        if (was !== undefined) this.queue(run.map, a.enclaveIp, false);
        if (now) this.queue(run.map, a.enclaveIp, this.needProfile(now.chain, now.jumps));
      }
    }
    await this.flushSoon();
  }

  /** Removes every element this backend added; the table and its rules stay (enclave rules then match nobody). */
  async stop(): Promise<void> {
    if (this.pendingChange) clearTimeout(this.pendingChange.timer);
    this.pendingChange = undefined;
    if (!this.started) {
      this.writer.close();
      return;
    }
    for (const reg of [...this.regs.values()]) this.queueLeave(reg);
    try {
      await this.flushSoon();
    } finally {
      this.started = false;
      this.writer.close();
      this.purger?.close();
      this.purger = undefined;
    }
    this.log.info('nftables sets emptied');
  }

  private index(): SetIndex {
    const i = this.indexed;
    if (i && i.of === this.catalog && i.size === this.catalog.size) return i.index;
    const index = new SetIndex(this.catalog.values());
    this.indexed = { of: this.catalog, size: this.catalog.size, index };
    return index;
  }

  private requireStarted(): void {
    if (!this.started)
      throw new NftEnforcerError('the nftables backend is not started', 'call start() first');
  }

  /** `present`: true/false for a set element, a chain name for a dispatch-map element. */
  private queue(set: string, ip: Ipv4, present: boolean | string): void {
    let m = this.pending.get(set);
    if (!m) {
      m = new Map();
      this.pending.set(set, m);
    }
    const prev = m.get(ip);
    if (typeof present !== 'string') m.set(ip, present);
    // A map element removed and added again in one batch may still hold another verdict.
    else m.set(ip, { goto: present, replace: prev === false || (typeof prev === 'object' && prev.replace) });
  }

  private serialize(fn: () => Promise<void>): Promise<void> {
    const run = this.chain.then(fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** Resolves when the changes queued so far are in the kernel. */
  private flushSoon(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      if (this.scheduled) return;
      this.scheduled = true;
      const go = (): void => {
        this.scheduled = false;
        void this.serialize(() => this.writeBatch());
      };
      if (this.batchDelayMs > 0) setTimeout(go, this.batchDelayMs);
      else setImmediate(go);
    });
  }

  /** Writes everything pending as one transaction and settles the waiters of those changes. */
  private async writeBatch(): Promise<void> {
    const pending = this.pending;
    const waiters = this.waiters;
    const created = this.newProfiles;
    this.pending = new Map();
    this.waiters = [];
    this.newProfiles = new Map();
    if (pending.size === 0) {
      for (const w of waiters) w.resolve();
      return;
    }
    const changes: SetElementChange[] = [];
    let ops = 0;
    for (const [set, m] of pending) {
      const c: SetElementChange = { set, add: [], remove: [], ...(CAT_MAP.test(set) && { jump: true }) };
      for (const [ip, op] of m) {
        if (op === false) c.remove.push(ip);
        else if (op === true) c.add.push(ip);
        else {
          c.add.push(ip);
          (c.gotoChains ??= []).push(op.goto);
          if (op.replace) (c.replace ??= []).push(ip);
        }
      }
      ops += m.size;
      changes.push(c);
    }
    const chains = [...created].map(([name, jumps]) => ({ name, jumps }));
    try {
      try {
        await this.writer.apply(changes, chains);
      } catch (e) {
        // A set may have been removed behind our back (an admin, a policy applied without
        // the server): re-read the table, drop missing sets from the catalog, retry once.
        this.log.warn({ err: errorMessage(e) }, 'set update failed; re-reading the table and retrying');
        const live = await this.nft.listTable(this.table);
        const names = new Set([...(live?.sets ?? []), ...(live?.maps ?? [])].map((s) => s.name));
        for (const n of [...this.catalog.keys()]) if (!names.has(n)) this.catalog.delete(n);
        if (!this.policy) {
          this.targets = liveTargets(live);
          this.setRuns(liveCategories(live).runs);
        }
        const retry = changes.filter((c) => names.has(c.set));
        if (!names.has(ENCLAVES_SET)) throw e;
        // Profile chains whose blocks are gone cannot be created (nor their elements added).
        const liveChains = new Set((live?.chains ?? []).map((c) => c.name));
        const possible = chains.filter((c) => c.jumps.every((j) => liveChains.has(j)));
        await this.writer.apply(retry, possible);
      }
      for (const c of chains) this.profiles.add(c.name);
      this.stats.batches += 1;
      this.stats.profileChains += chains.length;
      this.stats.elementOps += ops;
      for (const w of waiters) w.resolve();
    } catch (e) {
      this.stats.failures += 1;
      const err = new NftEnforcerError(
        `updating the nftables sets of table ${NFT_FAMILY} ${this.table} failed: ${errorMessage(e)}`,
        `check \`nft list table ${NFT_FAMILY} ${this.table}\`; restart seng serve --nft to reconcile`,
        e,
      );
      this.log.error({ err: err.message }, 'nftables set update failed');
      for (const w of waiters) w.reject(err);
    }
  }
}

/** Parses an nft element string back to an address (for tests and status output). */
export function elementToIp(e: string): Ipv4 {
  return parseIpv4(e);
}
