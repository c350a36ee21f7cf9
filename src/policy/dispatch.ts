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
 *   <hook>_app_<M>:  the rules whose src-app conditions hold for app M (those conditions
 *                    removed: they are decided by the dispatch), plus the rules without
 *                    src-app conditions, in file order
 *   <hook>_enclave:  the rules without a positive src-app condition (negated src-app
 *                    conditions hold there: the app is named nowhere), in file order
 *
 * The verdict map is a hash lookup (its cost does not grow with the 100,000 elements),
 * and `goto` (not `jump`) means a chain that ends without a verdict ends the hook with the
 * base chain's policy, exactly as the linear list did. A source that is not an enclave
 * never satisfies a source seng condition (SPEC §5.2, even negated), so its rules are the
 * ones without any. Per packet, nft walks only the rules naming the packet's source app
 * plus the rules that name no source app: independent of how many other apps, rules and
 * enclaves the policy and the sets hold. The remaining category/host conditions stay O(1)
 * set lookups. Hooks without any source seng condition keep the plain list.
 *
 * A src-app condition is decided by the map alone, so an `app_<M>` set exists only when
 * a dst-app condition needs it ({@link nftSets}): with 10,000 apps named as sources, a join
 * writes two or three elements, not one per app set. The map's elements follow from the
 * enclaves' apps: the enforcement backend writes them in the same netlink batch as the
 * set elements, and a policy apply re-derives them (from its registrations, or from the
 * live map and app sets when applied with nft directly).
 */
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

/** Regular chains and maps the plan owns (so a new policy deletes the obsolete ones). */
export const DISPATCH_CHAIN = /^(input|forward|output)_(enclave|app_[0-9a-f]{64})$/;
export const DISPATCH_MAP = /^dispatch_(input|forward|output)$/;

export interface AppChain {
  mrEnclave: string;
  chain: string;
  rules: CompiledRule[];
}

export interface HookPlan {
  hook: Chain;
  /** False: no rule of this hook has a source seng condition; the base chain is the plain list. */
  split: boolean;
  /** Rules for sources that are not enclaves (all rules when not split). */
  plain: CompiledRule[];
  /** `<hook>_enclave` and its rules (when split). */
  enclaveChain: string;
  enclave: CompiledRule[];
  /** The verdict map (when some rule of the hook has a src-app condition). */
  map?: string;
  apps: AppChain[];
}

export interface DispatchPlan {
  hooks: HookPlan[];
  /** Every regular chain of the plan, and every map. */
  chains: string[];
  maps: string[];
}

const isSrcApp = (r: CompiledRule): boolean => r.seng.some((c) => c.side === 'src' && c.kind === 'app');
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

function hookPlan(hook: Chain, rules: CompiledRule[]): HookPlan {
  const split = rules.some(hasSrcSeng);
  const plan: HookPlan = {
    hook,
    split,
    plain: split ? rules.filter((r) => !hasSrcSeng(r)) : rules,
    enclaveChain: enclaveChainName(hook),
    enclave: [],
    apps: [],
  };
  if (!split) return plan;
  plan.enclave = rules.map((r) => specialize(r, undefined)).filter((r): r is CompiledRule => r !== undefined);
  if (!rules.some(isSrcApp)) return plan;
  plan.map = dispatchMapName(hook);
  // A rule with a positive src-app condition belongs to that one app's chain; every other
  // rule to every app chain (unless it negates that app). Merging the two by position
  // keeps the file order and costs O(general rules + own rules) per app, not O(all rules).
  const general: { at: number; rule: CompiledRule; negates: Set<string> }[] = [];
  const own = new Map<string, { at: number; rule: CompiledRule }[]>();
  const named = new Set<string>();
  rules.forEach((rule, at) => {
    const srcApps = rule.seng.filter((c) => c.side === 'src' && c.kind === 'app');
    for (const c of srcApps) named.add(c.value);
    const positive = srcApps.find((c) => !c.negate);
    if (positive) {
      const list = own.get(positive.value) ?? [];
      list.push({ at, rule });
      own.set(positive.value, list);
    } else general.push({ at, rule, negates: new Set(srcApps.map((c) => c.value)) });
  });
  for (const m of [...named].sort()) {
    const mine = own.get(m) ?? [];
    const out: CompiledRule[] = [];
    let i = 0;
    for (const g of general) {
      while (i < mine.length && (mine[i] as { at: number }).at < g.at)
        pushSpecialized(out, (mine[i++] as { rule: CompiledRule }).rule, m);
      if (!g.negates.has(m)) pushSpecialized(out, g.rule, m);
    }
    while (i < mine.length) pushSpecialized(out, (mine[i++] as { rule: CompiledRule }).rule, m);
    plan.apps.push({ mrEnclave: m, chain: appChainName(hook, m), rules: out });
  }
  return plan;
}

function pushSpecialized(out: CompiledRule[], r: CompiledRule, m: string): void {
  const s = specialize(r, m);
  if (s) out.push(s);
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
    chains.push(h.enclaveChain, ...h.apps.map((a) => a.chain));
    if (h.map) maps.push(h.map);
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
