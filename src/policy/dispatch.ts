/**
 * Dispatch plan: how the compiled nftables ruleset keeps the per-packet cost independent
 * of the number of rules and of registered enclaves.
 *
 * A first-match list walked linearly costs one test per rule. Instead, each hook whose
 * rules talk about the packet's source as an enclave (`src-app`, `src-cat`, `src-host`)
 * decides once, by the source address, which short chain holds every rule that can still
 * apply to that source, in the original order:
 *
 *   base chain <hook>:
 *     ip saddr vmap @dispatch_<hook>        enclave of an app named in a src-app condition
 *                                            → goto <hook>_app_<mrenclave>
 *     ip saddr @enclaves goto <hook>_enclave any other enclave
 *     <rules without a source seng condition> every other source
 *   <hook>_seg_<n>:  a run of rules without a positive src-app condition (negated ones
 *                    specialized away; such a rule gets a segment of its own), each rule
 *                    compiled once
 *   <hook>_blk_<l>_<n>: jumps to up to BLOCK_FANOUT segments or lower blocks (only with more
 *                    segments than that): any run of segments is a few jumps
 *   <hook>_app_<M>:  the rules whose src-app conditions hold for app M (those conditions
 *                    removed: they are decided by the dispatch) and, in file order between
 *                    them, jumps covering the segments M does not negate
 *   <hook>_enclave:  jumps covering every segment (apps the policy does not name); without
 *                    app chains it holds the rules itself
 *
 * Inside a segment, a maximal run of consecutive rules whose only source condition is a
 * positive src-cat (a "category run") is ONE rule, dispatched by the enclave's categories:
 *
 *   ip saddr vmap @catmap_<hook>_<r>      enclave IP → jump <hook>_cp_<r>_<hash>; no element
 *                                          (none of the run's categories): the run is skipped
 *   <hook>_cb_<r>_<pos>_<hex category>:   a block: consecutive rules of one category in run r
 *                                          (the src-cat condition removed: the map decided it);
 *                                          a category interleaved with others has several
 *   <hook>_cp_<r>_<hash>:                 a profile: `jump` to every block of the categories of
 *                                          one category set (restricted to run r's), in run
 *                                          order = the run filtered to what can match, in order
 *
 * The map's verdicts are `jump`, not `goto`: a profile that ends without a verdict returns and
 * the walk goes on after the run, so the first match is exact. Profiles exist only for the
 * category sets live enclaves have: the enforcer creates one (and the map element) in the
 * same netlink transaction as the first join of that set, and a policy apply re-derives them
 * from the live enclaves (deleting the others); between applies they stay, at most one per
 * (run, category set seen since). Block names carry the run, position and category, so the
 * enforcer rebuilds the runs from the live chain names when the policy was applied with nft
 * directly ({@link liveCatRuns}). The iptables output has no maps and stays linear.
 *
 * A segment or block that ends without a verdict returns to the chain that jumped, so the
 * first match is kept; the compiled ruleset is the policy's rules plus O(apps × own rules ×
 * fanout × depth) jumps, not one copy of the shared rules per app.
 *
 * The verdict map is a hash lookup (its cost does not grow with the 100,000 elements),
 * and `goto` (not `jump`) means a chain that ends without a verdict ends the hook with the
 * base chain's policy, exactly as the linear list did. A source that is not an enclave
 * never satisfies a source seng condition (SPEC §5.2, even negated), so its rules are the
 * ones without any. Per packet, nft walks the rules naming the packet's source app, the
 * rules that name neither a source app nor (positively, alone) a source category, one map
 * lookup per category run, and the rules of the source's own categories in each run:
 * independent of how many other apps, categories, rules and enclaves the policy and the sets
 * hold. Still walked one by one (one O(1) set lookup each): src-host rules, negated src-cat
 * rules, rules with both src-app and src-cat (in their app's chain), and rules that also
 * negate a src-app (a segment of their own); see rules/README.md,
 * "What is walked". Hooks without any source seng condition keep the plain list.
 *
 * A src-app condition is decided by the map alone, so an `app_<M>` set exists only when
 * a dst-app condition needs it ({@link nftSets}): with 10,000 apps named as sources, a join
 * writes two or three elements, not one per app set. The map's elements follow from the
 * enclaves' apps: the enforcement backend writes them in the same netlink batch as the
 * set elements, and a policy apply re-derives them (from its registrations, or from the
 * live map and app sets when applied with nft directly).
 */
import { createHash } from 'node:crypto';
import type { Chain, CompiledRule, CompiledPolicy, SetSpec } from './types.js';
import { CHAINS } from './types.js';

/** Base chains that dispatch keep these names; the others are regular chains of the table. */
export function dispatchMapName(hook: Chain): string {
  return `dispatch_${hook}`;
}
export function enclaveChainName(hook: Chain): string {
  return `${hook}_enclave`;
}
export function appChainName(hook: Chain, mrEnclave: string): string {
  return `${hook}_app_${mrEnclave}`;
}
export function segmentChainName(hook: Chain, n: number): string {
  return `${hook}_seg_${n}`;
}
export function blockChainName(hook: Chain, level: number, n: number): string {
  return `${hook}_blk_${level}_${n}`;
}
/** The verdict map of category run `n`: enclave IP → jump to its category profile chain. */
export function catMapName(hook: Chain, n: number): string {
  return `catmap_${hook}_${n}`;
}
/**
 * A block of category run `n`: the rules at position `pos` (block order in the run) of one
 * category. The category is in the name (hex of its ≤ 20 bytes, so ≤ 40 characters and any
 * character allowed), so the enforcer can rebuild the run from the live chain names alone.
 */
export function catBlockChainName(hook: Chain, n: number, pos: number, category: string): string {
  return `${hook}_cb_${n}_${pos}_${Buffer.from(category, 'utf8').toString('hex')}`;
}
/** The profile chain of run `n` for a set of its categories (`key`: a hash of the set). */
export function catProfileChainName(hook: Chain, n: number, key: string): string {
  return `${hook}_cp_${n}_${key}`;
}

/** Regular chains and maps the plan owns (so a new policy deletes the obsolete ones). */
export const DISPATCH_CHAIN =
  /^(input|forward|output)_(enclave|app_[0-9a-f]{64}|seg_[0-9]+|blk_[0-9]+_[0-9]+|cb_[0-9]+_[0-9]+_(?:[0-9a-f]{2})+)$/;
/** Category block chains: hook, run, position, category (hex). */
export const CAT_BLOCK_CHAIN = /^(input|forward|output)_cb_([0-9]+)_([0-9]+)_((?:[0-9a-f]{2})+)$/;
/** Profile chains, created for the category sets live enclaves have (not part of the plan). */
export const CAT_PROFILE_CHAIN = /^(input|forward|output)_cp_([0-9]+)_([0-9a-f]{16})$/;
/** Dispatch maps: by source app (goto) and per category run (jump). */
export const DISPATCH_MAP = /^(?:dispatch_(input|forward|output)|catmap_(input|forward|output)_[0-9]+)$/;
export const CAT_MAP = /^catmap_(input|forward|output)_([0-9]+)$/;

/**
 * A rule of a dispatch chain, a `jump` to a shared segment or block chain, or the one
 * rule of a category run (`ip saddr vmap @<catmap>`).
 */
export type ChainItem = CompiledRule | { jump: string } | { vmap: string };
export const isJump = (i: ChainItem): i is { jump: string } => 'jump' in i;
export const isVmap = (i: ChainItem): i is { vmap: string } => 'vmap' in i;

/** One block of a category run: consecutive rules of one category, that condition removed. */
export interface CatBlock {
  chain: string;
  category: string;
  rules: CompiledRule[];
}

/** What the enforcer needs of a category run (also rebuilt from live chain names). */
export interface CatRunShape {
  hook: Chain;
  index: number;
  map: string;
  blocks: { chain: string; category: string }[];
}

/**
 * A maximal run of consecutive rules (inside a segment) whose only source condition is a
 * positive src-cat: compiled as one `ip saddr vmap @<map>` rule. Each enclave's element
 * jumps to the profile chain of its categories in the run, which jumps to those
 * categories' blocks in run order: exactly the run's rules that can match it, in order.
 */
export interface CatRun extends CatRunShape {
  blocks: CatBlock[];
  /** The run's rules as written (for docs and tests). */
  rules: CompiledRule[];
}

export interface AppChain {
  mrEnclave: string;
  chain: string;
  rules: ChainItem[];
}

/** A shared run of rules without a positive src-app condition, jumped to by the chains that need it. */
export interface Segment {
  chain: string;
  /** The segment's rules in order (each compiled once, in the segment or a category block). */
  rules: CompiledRule[];
  /** What the segment chain holds: its rules, category runs replaced by their vmap rule. */
  body: ChainItem[];
  /** Apps a rule of the segment negates (`src-app: '!M'`): their chains skip the segment. */
  negates: Set<string>;
}

export interface HookPlan {
  hook: Chain;
  /** False: no rule of this hook has a source seng condition; the base chain is the plain list. */
  split: boolean;
  /** Rules for sources that are not enclaves (all rules when not split). */
  plain: CompiledRule[];
  /** `<hook>_enclave` and its body (when split): jumps to every segment. */
  enclaveChain: string;
  enclave: ChainItem[];
  /** `<hook>_seg_<n>`: each rule without a positive src-app condition, once. */
  segments: Segment[];
  /** Block chains over the segments (jumps only), lowest level first. */
  blocks: { chain: string; jumps: string[] }[];
  /** The verdict map (when some rule of the hook has a src-app condition). */
  map?: string;
  apps: AppChain[];
  /** Category runs of the segments, with their maps and block chains. */
  catRuns: CatRun[];
}

export interface DispatchPlan {
  hooks: HookPlan[];
  /**
   * Every regular chain of the plan (category blocks and segments first: they hold no
   * jumps), and every map. Profile chains are not in it: they follow the live enclaves.
   */
  chains: string[];
  maps: string[];
}

const hasSrcSeng = (r: CompiledRule): boolean => r.seng.some((c) => c.side === 'src');

/**
 * The rule as seen from a chain where the source is an enclave of app `m` (undefined: an
 * app the policy does not name): its src-app conditions are decided here — undefined if
 * one is false, else the rule without them.
 */
export function specialize(r: CompiledRule, m: string | undefined): CompiledRule | undefined {
  const srcApps = r.seng.filter((c) => c.side === 'src' && c.kind === 'app');
  if (srcApps.length === 0) return r;
  for (const c of srcApps) if ((c.value === m) === c.negate) return undefined;
  return { ...r, seng: r.seng.filter((c) => !(c.side === 'src' && c.kind === 'app')) };
}

/** The hook's rules in file order, as segments (shared runs) and own rules (one app's). */
type Step = { segment: Segment } | { app: string; rule: CompiledRule };

/**
 * Cuts the hook's rules into steps: a rule with a positive src-app condition is its app's
 * own step; the rules between two such rules form one segment, except that a rule negating
 * an app gets a segment of its own (the negated apps skip just that one rule).
 */
function steps(
  hook: Chain,
  rules: CompiledRule[],
): { steps: Step[]; segments: Segment[]; named: Set<string> } {
  const out: Step[] = [];
  const segments: Segment[] = [];
  const named = new Set<string>();
  let open: Segment | undefined;
  const newSegment = (negates: Set<string>): Segment => {
    const s: Segment = { chain: segmentChainName(hook, segments.length), rules: [], body: [], negates };
    segments.push(s);
    out.push({ segment: s });
    return s;
  };
  for (const rule of rules) {
    const srcApps = rule.seng.filter((c) => c.side === 'src' && c.kind === 'app');
    for (const c of srcApps) named.add(c.value);
    const positive = srcApps.find((c) => !c.negate);
    if (positive) {
      out.push({ app: positive.value, rule });
      open = undefined;
    } else if (srcApps.length > 0) {
      // Negated src-app conditions only: they hold for every other enclave (specialized away).
      newSegment(new Set(srcApps.map((c) => c.value))).rules.push(
        specialize(rule, undefined) as CompiledRule,
      );
      open = undefined;
    } else {
      open ??= newSegment(new Set());
      open.rules.push(rule);
    }
  }
  return { steps: out, segments, named };
}

/** A positive src-cat is the rule's only source condition: it can be dispatched by category. */
function catDispatchable(r: CompiledRule): string | undefined {
  const src = r.seng.filter((c) => c.side === 'src');
  const c = src[0];
  return src.length === 1 && c && c.kind === 'cat' && !c.negate ? c.value : undefined;
}

/**
 * Fills each segment's body: its rules, with every maximal run of category-dispatchable
 * rules replaced by one vmap rule (the run, its blocks and map appended to `runs`).
 */
function fillBodies(hook: Chain, segments: Segment[], runs: CatRun[]): void {
  for (const s of segments) {
    let run: CatRun | undefined;
    for (const r of s.rules) {
      const category = s.negates.size === 0 ? catDispatchable(r) : undefined;
      if (category === undefined) {
        run = undefined;
        s.body.push(r);
        continue;
      }
      if (!run) {
        const index = runs.length;
        run = { hook, index, map: catMapName(hook, index), blocks: [], rules: [] };
        runs.push(run);
        s.body.push({ vmap: run.map });
      }
      run.rules.push(r);
      const rule = { ...r, seng: r.seng.filter((c) => c.side !== 'src') };
      const last = run.blocks[run.blocks.length - 1];
      if (last?.category === category) last.rules.push(rule);
      else
        run.blocks.push({
          chain: catBlockChainName(hook, run.index, run.blocks.length, category),
          category,
          rules: [rule],
        });
    }
  }
}

function hookPlan(hook: Chain, rules: CompiledRule[]): HookPlan {
  const split = rules.some(hasSrcSeng);
  const plan: HookPlan = {
    hook,
    split,
    plain: split ? rules.filter((r) => !hasSrcSeng(r)) : rules,
    enclaveChain: enclaveChainName(hook),
    enclave: [],
    segments: [],
    blocks: [],
    apps: [],
    catRuns: [],
  };
  if (!split) return plan;
  const cut = steps(hook, rules);
  fillBodies(hook, cut.segments, plan.catRuns);
  if (cut.named.size === 0) {
    // No app chain to share the rules with: the enclave chain holds them itself.
    plan.enclave = cut.segments.flatMap((s) => s.body);
    return plan;
  }
  plan.segments = cut.segments;
  const cover = jumpTree(hook, cut.segments, plan.blocks);
  plan.enclave = cover(undefined, 0, cut.segments.length);
  plan.map = dispatchMapName(hook);
  // Each app's chain: its own rules inline and, between them, jumps covering the segments in
  // between (those it does not negate), in file order. A segment or block that gives no
  // verdict returns, so first match is kept. Every rule is compiled once.
  const own = new Map<string, { before: number; rule: CompiledRule }[]>();
  let seen = 0;
  for (const step of cut.steps) {
    if ('segment' in step) seen += 1;
    else {
      const list = own.get(step.app) ?? [];
      list.push({ before: seen, rule: step.rule });
      own.set(step.app, list);
    }
  }
  for (const m of [...cut.named].sort()) {
    const items: ChainItem[] = [];
    let from = 0;
    for (const { before, rule } of own.get(m) ?? []) {
      items.push(...cover(m, from, before));
      from = before;
      const s = specialize(rule, m);
      if (s) items.push(s);
    }
    items.push(...cover(m, from, cut.segments.length));
    plan.apps.push({ mrEnclave: m, chain: appChainName(hook, m), rules: items });
  }
  return plan;
}

/** Children per block chain of the jump tree (its depth stays ≤ 6 for 100,000 segments). */
export const BLOCK_FANOUT = 8;

interface TreeNode {
  chain: string;
  from: number;
  to: number;
  negates: Set<string>;
  children: TreeNode[];
}

/**
 * A tree of block chains over the segments (`<hook>_blk_<level>_<n>`: jumps to up to
 * {@link BLOCK_FANOUT} children), appended to `blocks`; returns the function that covers
 * segments [from, to) for app `m` with O(fanout × depth) jumps, skipping the segments that
 * negate `m` (a block holding one is opened). Without it, an app chain would need a jump
 * per segment, and apps whose rules are scattered between the others would cost
 * apps × segments jumps. nftables refuses chains nested deeper than 16, so the tree is flat.
 */
function jumpTree(
  hook: Chain,
  segments: Segment[],
  blocks: { chain: string; jumps: string[] }[],
): (m: string | undefined, from: number, to: number) => ChainItem[] {
  let level: TreeNode[] = segments.map((s, i) => ({
    chain: s.chain,
    from: i,
    to: i + 1,
    negates: s.negates,
    children: [],
  }));
  for (let depth = 1; level.length > BLOCK_FANOUT; depth += 1) {
    const up: TreeNode[] = [];
    for (let i = 0; i < level.length; i += BLOCK_FANOUT) {
      const children = level.slice(i, i + BLOCK_FANOUT);
      const node: TreeNode = {
        chain: blockChainName(hook, depth, up.length),
        from: (children[0] as TreeNode).from,
        to: (children[children.length - 1] as TreeNode).to,
        negates: new Set(children.flatMap((c) => [...c.negates])),
        children,
      };
      blocks.push({ chain: node.chain, jumps: children.map((c) => c.chain) });
      up.push(node);
    }
    level = up;
  }
  const top = level;
  return (m, from, to) => {
    const out: ChainItem[] = [];
    const visit = (n: TreeNode): void => {
      if (n.to <= from || n.from >= to) return;
      if (from <= n.from && n.to <= to && !(m !== undefined && n.negates.has(m))) {
        out.push({ jump: n.chain });
        return;
      }
      for (const c of n.children) visit(c);
    };
    for (const n of top) visit(n);
    return out;
  };
}

/** The dispatch plan of a compiled policy (a pure function of it). */
export function dispatchPlan(p: CompiledPolicy): DispatchPlan {
  const hooks = CHAINS.map((h) =>
    hookPlan(
      h,
      p.rules.filter((r) => r.chain === h),
    ),
  );
  const chains: string[] = [];
  const maps: string[] = [];
  for (const h of hooks) {
    if (!h.split) continue;
    chains.push(
      ...h.catRuns.flatMap((r) => r.blocks.map((b) => b.chain)),
      ...h.segments.map((s) => s.chain),
      ...h.blocks.map((b) => b.chain),
      h.enclaveChain,
      ...h.apps.map((a) => a.chain),
    );
    if (h.map) maps.push(h.map);
    maps.push(...h.catRuns.map((r) => r.map));
  }
  return { hooks, chains, maps };
}

/**
 * The sets the nftables table holds: the policy's sets minus the app sets that only
 * src-app conditions use (the dispatch decides those).
 */
export function nftSets(p: CompiledPolicy): SetSpec[] {
  const used = new Set<string>();
  for (const r of p.rules)
    for (const c of r.seng) if (!(c.side === 'src' && c.kind === 'app')) used.add(c.set);
  return p.sets.filter((s) => s.kind !== 'app' || used.has(s.name));
}

/** One element of a dispatch map: enclave IP (dotted) → goto chain. */
export interface DispatchElement {
  map: string;
  ip: string;
  chain: string;
}

/** The map elements for enclaves whose apps are known: `members(mrEnclave)` lists their IPs. */
export function dispatchElements(
  plan: DispatchPlan,
  members: (mrEnclave: string) => string[],
): DispatchElement[] {
  const out: DispatchElement[] = [];
  for (const h of plan.hooks) {
    if (!h.map) continue;
    for (const a of h.apps) {
      for (const ip of members(a.mrEnclave)) out.push({ map: h.map, ip, chain: a.chain });
    }
  }
  return out;
}

/** Map targets for one app (what the enforcer adds on join): map → chain. */
export function dispatchTargets(plan: DispatchPlan): Map<string, { map: string; chain: string }[]> {
  const out = new Map<string, { map: string; chain: string }[]>();
  for (const h of plan.hooks) {
    if (!h.map) continue;
    for (const a of h.apps) {
      const list = out.get(a.mrEnclave) ?? [];
      list.push({ map: h.map, chain: a.chain });
      out.set(a.mrEnclave, list);
    }
  }
  return out;
}

/** The category runs of a plan, as the enforcer needs them. */
export function catRunShapes(plan: DispatchPlan): CatRunShape[] {
  return plan.hooks.flatMap((h) =>
    h.catRuns.map((r) => ({
      hook: r.hook,
      index: r.index,
      map: r.map,
      blocks: r.blocks.map((b) => ({ chain: b.chain, category: b.category })),
    })),
  );
}

/**
 * The category runs of a live table seng holds no policy for, rebuilt from its chain and map
 * names (a block chain names its run, its position and its category).
 */
export function liveCatRuns(chains: Iterable<string>, maps: Iterable<string>): CatRunShape[] {
  const haveMap = new Set(maps);
  const runs = new Map<string, CatRunShape & { at: number[] }>();
  for (const name of chains) {
    const m = CAT_BLOCK_CHAIN.exec(name);
    if (!m) continue;
    const hook = m[1] as Chain;
    const index = Number(m[2]);
    const map = catMapName(hook, index);
    if (!haveMap.has(map)) continue;
    const run = runs.get(map) ?? { hook, index, map, blocks: [], at: [] };
    run.blocks.push({ chain: name, category: Buffer.from(m[4] as string, 'hex').toString('utf8') });
    run.at.push(Number(m[3]));
    runs.set(map, run);
  }
  const hookOrder = (h: Chain): number => CHAINS.indexOf(h);
  const sorted = [...runs.values()].sort(
    (a, b) => hookOrder(a.hook) - hookOrder(b.hook) || a.index - b.index,
  );
  return sorted.map(({ at, ...run }) => {
    const order = run.blocks.map((b, i) => ({ b, pos: at[i] as number })).sort((x, y) => x.pos - y.pos);
    return { ...run, blocks: order.map((o) => o.b) };
  });
}

/** A profile chain: the blocks of one run an enclave with given categories walks, in order. */
export interface CatProfile {
  map: string;
  chain: string;
  jumps: string[];
}

/**
 * The profile of `categories` in the run: undefined when the enclave has none of the run's
 * categories (no map element: the run cannot match it). Enclaves whose categories agree on
 * the run's categories share the chain (its name hashes that intersection).
 */
export function catProfile(run: CatRunShape, categories: Iterable<string>): CatProfile | undefined {
  const have = new Set(categories);
  const blocks = run.blocks.filter((b) => have.has(b.category));
  if (blocks.length === 0) return undefined;
  const key = createHash('sha256')
    .update([...new Set(blocks.map((b) => b.category))].sort().join('\n'))
    .digest('hex')
    .slice(0, 16);
  return {
    map: run.map,
    chain: catProfileChainName(run.hook, run.index, key),
    jumps: blocks.map((b) => b.chain),
  };
}

/**
 * The category-map elements and the profile chains they need, for enclaves with known
 * categories (`members`: enclave IP (dotted) → its categories).
 */
export function catElements(
  runs: CatRunShape[],
  members: Iterable<[string, readonly string[]]>,
): { profiles: Map<string, string[]>; elements: DispatchElement[] } {
  const profiles = new Map<string, string[]>();
  const elements: DispatchElement[] = [];
  for (const [ip, categories] of members) {
    for (const run of runs) {
      const p = catProfile(run, categories);
      if (!p) continue;
      profiles.set(p.chain, p.jumps);
      elements.push({ map: p.map, ip, chain: p.chain });
    }
  }
  return { profiles, elements };
}
