/**
 * Compiled policy → nftables, through nft's JSON API (`nft -j -f`), plus a text
 * rendering in nft syntax for humans (`seng rules render --format nft`).
 *
 * One table (family ip) owned by seng holds the enclave-IP sets, three base chains
 * (input, forward, output; filter priority) and, for hooks whose rules name the source
 * enclave, a verdict map and per-app chains that the base chain dispatches to once per
 * packet (src/policy/dispatch.ts explains the shape and why it is first-match exact).
 * Applying a policy is ONE JSON document, which nft commits as one netlink transaction:
 * either all of it takes effect or none. The document adds the table and any missing
 * sets (existing sets, and their live elements, are kept), re-declares the chains with
 * their policies, flushes them and re-adds every rule, re-derives the dispatch maps from
 * the app sets' members, and deletes seng sets, maps and chains the policy no longer uses.
 */
import { formatIpv4, type Cidr } from '../util/ipv4.js';
import type { NftCommand, NftDocument } from '../nft/cli.js';
import { checkNftName, checkTableName } from '../nft/names.js';
import { InputError } from '../util/errors.js';
import { ENCLAVES_SET, parseSetName } from './compile.js';
import {
  CAT_PROFILE_CHAIN,
  DISPATCH_CHAIN,
  isJump,
  isVmap,
  type ChainItem,
  DISPATCH_MAP,
  catElements,
  catRunShapes,
  dispatchElements,
  dispatchPlan,
  nftSets,
  type HookPlan,
} from './dispatch.js';
import { RULE_NAME } from './parse.js';
import type { CompiledPolicy, CompiledRule, Negatable, PortRange, SengCondition } from './types.js';
import { CHAINS } from './types.js';

export type { NftCommand, NftDocument };

export const NFT_FAMILY = 'ip';
/** Base chain priority (filter = 0): after mangle/DNAT, like iptables' filter table. */
export const NFT_PRIORITY = 0;

function iface(name: string): string {
  // iptables writes a prefix wildcard as "eth+", nft as "eth*".
  return name.endsWith('+') ? `${name.slice(0, -1)}*` : name;
}

function addrJson(c: Cidr): unknown {
  return c.prefix === 32 ? formatIpv4(c.network) : { prefix: { addr: formatIpv4(c.network), len: c.prefix } };
}

function addrText(c: Cidr): string {
  return c.prefix === 32 ? formatIpv4(c.network) : `${formatIpv4(c.network)}/${c.prefix}`;
}

function portJson(p: PortRange): unknown {
  return p.from === p.to ? p.from : { range: [p.from, p.to] };
}

function portText(p: PortRange): string {
  return p.from === p.to ? String(p.from) : `${p.from}-${p.to}`;
}

function listJson<T>(values: T[], one: (v: T) => unknown): unknown {
  return values.length === 1 ? one(values[0] as T) : { set: values.map(one) };
}

function listText<T>(values: T[], one: (v: T) => string): string {
  return values.length === 1 ? one(values[0] as T) : `{ ${values.map(one).join(', ')} }`;
}

function match(left: unknown, right: unknown, negate: boolean): NftCommand {
  return { match: { op: negate ? '!=' : '==', left, right } };
}

const payload = (protocol: string, field: string): unknown => ({ payload: { protocol, field } });
const meta = (key: string): unknown => ({ meta: { key } });

/** Seng conditions of one side: the registered-enclave check first, then each condition. */
function sengSides(r: CompiledRule): { side: 'src' | 'dst'; conds: SengCondition[] }[] {
  return (['src', 'dst'] as const)
    .map((side) => ({ side, conds: r.seng.filter((c) => c.side === side) }))
    .filter((s) => s.conds.length > 0);
}

/** `srcIsEnclave`: the rule sits in a dispatch chain, where the source is known to be an enclave. */
export function ruleExpressions(
  r: CompiledRule,
  enclavesSet = 'enclaves',
  srcIsEnclave = false,
): NftCommand[] {
  const e: NftCommand[] = [];
  if (r.state)
    e.push({
      match: {
        op: 'in',
        left: { ct: { key: 'state' } },
        right: r.state.length === 1 ? r.state[0] : [...r.state],
      },
    });
  if (r.inIface) e.push(match(meta('iifname'), iface(r.inIface.value), r.inIface.negate));
  if (r.outIface) e.push(match(meta('oifname'), iface(r.outIface.value), r.outIface.negate));
  if (r.protocol) e.push(match(meta('l4proto'), r.protocol.value, r.protocol.negate));
  if (r.srcAddr) e.push(match(payload('ip', 'saddr'), listJson(r.srcAddr.value, addrJson), r.srcAddr.negate));
  if (r.dstAddr) e.push(match(payload('ip', 'daddr'), listJson(r.dstAddr.value, addrJson), r.dstAddr.negate));
  const l4 = r.protocol?.value ?? 'tcp';
  if (r.sport) e.push(match(payload(l4, 'sport'), listJson(r.sport.value, portJson), r.sport.negate));
  if (r.dport) e.push(match(payload(l4, 'dport'), listJson(r.dport.value, portJson), r.dport.negate));
  for (const { side, conds } of sengSides(r)) {
    const field = side === 'src' ? 'saddr' : 'daddr';
    // SPEC §5.2: a condition about an address can only hold for a registered enclave,
    // even when negated. The positive set lookups imply it; the explicit check makes the
    // rule correct on its own and costs one hash lookup.
    if (!(side === 'src' && srcIsEnclave)) e.push(match(payload('ip', field), `@${enclavesSet}`, false));
    for (const c of conds) e.push(match(payload('ip', field), `@${c.set}`, c.negate));
  }
  if (r.counter) e.push({ counter: null });
  if (r.log) e.push({ log: { prefix: r.log.prefix, level: r.log.level } });
  e.push({ [r.action]: null });
  return e;
}

function neg(n: Negatable<unknown>): string {
  return n.negate ? '!= ' : '';
}

/** The same rule in nft syntax (what `nft list` would show, modulo counters). */
export function ruleText(r: CompiledRule, enclavesSet = 'enclaves', srcIsEnclave = false): string {
  const t: string[] = [];
  if (r.state) t.push(`ct state ${r.state.join(',')}`);
  if (r.inIface) t.push(`iifname ${neg(r.inIface)}"${iface(r.inIface.value)}"`);
  if (r.outIface) t.push(`oifname ${neg(r.outIface)}"${iface(r.outIface.value)}"`);
  if (r.protocol) t.push(`meta l4proto ${neg(r.protocol)}${r.protocol.value}`);
  if (r.srcAddr) t.push(`ip saddr ${neg(r.srcAddr)}${listText(r.srcAddr.value, addrText)}`);
  if (r.dstAddr) t.push(`ip daddr ${neg(r.dstAddr)}${listText(r.dstAddr.value, addrText)}`);
  const l4 = r.protocol?.value ?? 'tcp';
  if (r.sport) t.push(`${l4} sport ${neg(r.sport)}${listText(r.sport.value, portText)}`);
  if (r.dport) t.push(`${l4} dport ${neg(r.dport)}${listText(r.dport.value, portText)}`);
  for (const { side, conds } of sengSides(r)) {
    const field = side === 'src' ? 'saddr' : 'daddr';
    if (!(side === 'src' && srcIsEnclave)) t.push(`ip ${field} @${enclavesSet}`);
    for (const c of conds) t.push(`ip ${field} ${c.negate ? '!= ' : ''}@${c.set}`);
  }
  if (r.counter) t.push('counter');
  if (r.log) t.push(`log prefix "${r.log.prefix}"${r.log.level === 'warn' ? '' : ` level ${r.log.level}`}`);
  t.push(r.action);
  t.push(`comment "${r.name}"`);
  return t.join(' ');
}

/**
 * Defence in depth: a CompiledPolicy may come from a caller rather than the parser, so
 * every name that ends up in nft's input is checked again here (table, sets, chains,
 * and the rule names nft text quotes as comments).
 */
export function checkPolicyNames(p: CompiledPolicy, elements?: Map<string, string[]>): void {
  checkTableName(p.table);
  for (const s of p.sets) checkNftName('set', s.name);
  for (const c of CHAINS) checkNftName('chain', c);
  for (const r of p.rules) {
    if (!(CHAINS as readonly string[]).includes(r.chain)) checkNftName('chain', r.chain);
    for (const c of r.seng) checkNftName('set', c.set);
    if (!RULE_NAME.test(r.name)) throw new InputError(`rule name ${JSON.stringify(r.name)} is not allowed`);
  }
  for (const name of elements?.keys() ?? []) checkNftName('set', name);
}

export interface ApplyDocumentOptions {
  /** Names of the sets that exist in the live table (obsolete seng sets get deleted). */
  liveSets?: string[];
  /** Names of the chains that exist in the live table (obsolete dispatch chains get deleted). */
  liveChains?: string[];
  /** Names of the maps that exist in the live table (flushed and re-derived; obsolete ones deleted). */
  liveMaps?: string[];
  /** Elements to add to sets in the same transaction (e.g. a server filling new sets). */
  elements?: Map<string, string[]>;
  /**
   * The enclave IPs of each app (64 hex → dotted IPs): the dispatch maps are re-derived
   * from it. Missing: the maps start empty.
   */
  appMembers?: Map<string, string[]>;
  /**
   * The categories of each enclave (dotted IP → categories): the category maps and the
   * profile chains they jump to are derived from it. Missing: the maps start empty.
   */
  catMembers?: Map<string, string[]>;
}

/** A live table as far as applying needs it (NftCli.listTable gives it). */
export interface LiveState {
  sets: { name: string; elements: string[] }[];
  chains?: { name: string }[];
  maps?: { name: string; elements: string[]; gotos?: (string | undefined)[] }[];
}

/**
 * The apply options that keep a live table's state: its object names, and which app each
 * live enclave runs as far as the table tells (its `app_*` sets, and the dispatch maps'
 * `goto <hook>_app_<hex>` elements), from which the new dispatch maps are derived.
 */
export function liveApplyOptions(_p: CompiledPolicy, live: LiveState | null): ApplyDocumentOptions {
  const apps = new Map<string, Set<string>>();
  const note = (app: string, ip: string): void => {
    const s = apps.get(app) ?? new Set<string>();
    s.add(ip);
    apps.set(app, s);
  };
  const cats = new Map<string, string[]>();
  for (const s of live?.sets ?? []) {
    const spec = parseSetName(s.name);
    if (spec?.kind === 'app') for (const ip of s.elements) note(spec.mrEnclave, ip);
    // Category sets hold every category the live policy names: enough for its category maps.
    if (spec?.kind === 'cat')
      for (const ip of s.elements) cats.set(ip, [...(cats.get(ip) ?? []), spec.category]);
  }
  for (const m of live?.maps ?? []) {
    if (!DISPATCH_MAP.test(m.name)) continue;
    m.elements.forEach((ip, i) => {
      const app = /_app_([0-9a-f]{64})$/.exec(m.gotos?.[i] ?? '')?.[1];
      if (app) note(app, ip);
    });
  }
  return {
    liveSets: (live?.sets ?? []).map((s) => s.name),
    liveChains: (live?.chains ?? []).map((c) => c.name),
    liveMaps: (live?.maps ?? []).map((m) => m.name),
    appMembers: new Map([...apps].map(([k, v]) => [k, [...v]])),
    catMembers: cats,
  };
}

const gotoJson = (chain: string): NftCommand => ({ goto: { target: chain } });
const jumpJson = (chain: string): NftCommand => ({ jump: { target: chain } });
const vmapJson = (map: string): NftCommand => ({ vmap: { key: payload('ip', 'saddr'), data: `@${map}` } });

/** Base chain body: dispatch (when split) then the rules for every other source. */
function baseChainRules(h: HookPlan): NftCommand[][] {
  const out: NftCommand[][] = [];
  const saddr = payload('ip', 'saddr');
  if (h.map) out.push([{ vmap: { key: saddr, data: `@${h.map}` } }]);
  if (h.split) out.push([match(saddr, `@${ENCLAVES_SET}`, false), gotoJson(h.enclaveChain)]);
  return out;
}

/**
 * The one-transaction document that makes the live table equal to the policy while
 * keeping existing sets and their elements (see src/policy/dispatch.ts for the shape).
 */
export function nftApplyDocument(p: CompiledPolicy, opts: ApplyDocumentOptions = {}): NftDocument {
  checkPolicyNames(p, opts.elements);
  const plan = dispatchPlan(p);
  for (const c of plan.chains) checkNftName('chain', c);
  const table = p.table;
  const base = { family: NFT_FAMILY, table };
  const cmds: NftCommand[] = [{ add: { table: { family: NFT_FAMILY, name: table } } }];
  const sets = nftSets(p);
  for (const s of sets) {
    cmds.push({ add: { set: { ...base, name: s.name, type: 'ipv4_addr' } } });
  }
  for (const m of plan.maps)
    cmds.push({ add: { map: { ...base, name: m, type: 'ipv4_addr', map: 'verdict' } } });
  for (const chain of CHAINS) {
    cmds.push({
      add: {
        chain: {
          ...base,
          name: chain,
          type: 'filter',
          hook: chain,
          prio: NFT_PRIORITY,
          policy: p.defaults[chain],
        },
      },
    });
  }
  // Profile chains for the category sets of the known enclaves (they follow the enclaves).
  const cat = catElements(catRunShapes(plan), opts.catMembers ?? []);
  const profiles = [...cat.profiles.keys()];
  for (const c of profiles) checkNftName('chain', c);
  for (const c of [...plan.chains, ...profiles]) cmds.push({ add: { chain: { ...base, name: c } } });
  // `add chain` does not empty an existing chain, nor `add map` a map: flush, then refill.
  const liveChains = new Set(opts.liveChains ?? []);
  const wanted = new Set([...plan.chains, ...profiles]);
  const obsoleteChains = [...liveChains].filter(
    (c) => (DISPATCH_CHAIN.test(c) || CAT_PROFILE_CHAIN.test(c)) && !wanted.has(c),
  );
  // Chains just created need no flush (and thousands of flushes cost nft much time); without
  // `liveChains`, every dispatch chain may exist.
  const existing = opts.liveChains ? [...wanted].filter((c) => liveChains.has(c)) : [...wanted];
  for (const chain of [...CHAINS, ...existing, ...obsoleteChains]) {
    cmds.push({ flush: { chain: { ...base, name: chain } } });
  }
  const liveMaps = (opts.liveMaps ?? []).filter((m) => DISPATCH_MAP.test(m));
  for (const m of liveMaps) cmds.push({ flush: { map: { ...base, name: m } } });
  const addRule = (chain: string, r: CompiledRule, srcIsEnclave: boolean): void => {
    cmds.push({
      add: {
        rule: { ...base, chain, comment: r.name, expr: ruleExpressions(r, ENCLAVES_SET, srcIsEnclave) },
      },
    });
  };
  // The dispatch chains' rules first, the base chains' (with their goto / vmap) last: once a
  // rule that jumps is in the transaction, the kernel re-validates the table at every rule
  // added after it, which made a 10,000-app policy take a minute instead of seconds.
  const addItem = (chain: string, i: ChainItem): void => {
    if (isJump(i)) cmds.push({ add: { rule: { ...base, chain, expr: [jumpJson(i.jump)] } } });
    else if (isVmap(i)) cmds.push({ add: { rule: { ...base, chain, expr: [vmapJson(i.vmap)] } } });
    else addRule(chain, i, true);
  };
  for (const h of plan.hooks)
    for (const run of h.catRuns)
      for (const b of run.blocks) for (const r of b.rules) addRule(b.chain, r, true);
  for (const h of plan.hooks) for (const s of h.segments) for (const i of s.body) addItem(s.chain, i);
  for (const [chain, jumps] of cat.profiles) for (const jump of jumps) addItem(chain, { jump });
  for (const h of plan.hooks)
    for (const b of h.blocks) for (const jump of b.jumps) addItem(b.chain, { jump });
  for (const h of plan.hooks) {
    if (!h.split) continue;
    for (const i of h.enclave) addItem(h.enclaveChain, i);
    for (const a of h.apps) for (const i of a.rules) addItem(a.chain, i);
  }
  for (const h of plan.hooks) {
    for (const expr of baseChainRules(h)) cmds.push({ add: { rule: { ...base, chain: h.hook, expr } } });
    for (const r of h.plain) addRule(h.hook, r, false);
  }
  const inTable = new Set(sets.map((s) => s.name));
  for (const [set, elems] of opts.elements ?? []) {
    if (elems.length && inTable.has(set))
      cmds.push({ add: { element: { ...base, name: set, elem: elems } } });
  }
  const members = (app: string): string[] => opts.appMembers?.get(app) ?? [];
  const byMap = new Map<string, unknown[]>();
  for (const e of dispatchElements(plan, members)) {
    const list = byMap.get(e.map) ?? [];
    list.push([e.ip, gotoJson(e.chain)]);
    byMap.set(e.map, list);
  }
  for (const e of cat.elements) {
    const list = byMap.get(e.map) ?? [];
    list.push([e.ip, jumpJson(e.chain)]);
    byMap.set(e.map, list);
  }
  for (const [name, elem] of byMap) cmds.push({ add: { element: { ...base, name, elem } } });
  for (const name of liveMaps) {
    if (!plan.maps.includes(name)) cmds.push({ delete: { map: { ...base, name } } });
  }
  for (const name of obsoleteChains) cmds.push({ delete: { chain: { ...base, name } } });
  for (const name of opts.liveSets ?? []) {
    if (!inTable.has(name) && parseSetName(name)) cmds.push({ delete: { set: { ...base, name } } });
  }
  return { nftables: cmds };
}

/** The policy as an nft script, for review (apply it with `seng rules apply`, which is atomic). */
export function nftText(p: CompiledPolicy): string {
  checkPolicyNames(p);
  const out: string[] = [
    `# nftables ruleset generated by seng from ${p.source}`,
    '# Review only: `seng rules apply` installs it atomically and keeps the live set elements.',
    `table ${NFT_FAMILY} ${p.table} {`,
  ];
  for (const s of nftSets(p)) {
    const what =
      s.kind === 'enclaves'
        ? 'every registered enclave IP'
        : s.kind === 'app'
          ? `enclave IPs of app ${s.mrEnclave}`
          : s.kind === 'cat'
            ? `enclave IPs of apps in category "${s.category}"`
            : `enclave IPs whose untrusted host is in ${addrText(s.cidr)}`;
    out.push(
      `\tset ${s.name} {`,
      `\t\ttype ipv4_addr`,
      `\t\tcomment "${what.replace(/"/g, "'")}"`,
      `\t}`,
      '',
    );
  }
  const plan = dispatchPlan(p);
  for (const m of plan.maps) {
    const what = m.startsWith('catmap_')
      ? 'enclave IP -> jump to the profile chain of its categories in this run (filled by the enforcer)'
      : 'enclave IP -> goto the chain of its app (filled by the enforcer)';
    out.push(`\tmap ${m} {`, `\t\ttype ipv4_addr : verdict`, `\t\tcomment "${what}"`, `\t}`, '');
  }
  const chunks: string[][] = [];
  for (const h of plan.hooks) {
    const lines = [
      `\tchain ${h.hook} {`,
      `\t\ttype filter hook ${h.hook} priority filter; policy ${p.defaults[h.hook]};`,
    ];
    if (h.map) lines.push(`\t\tip saddr vmap @${h.map}`);
    if (h.split) lines.push(`\t\tip saddr @${ENCLAVES_SET} goto ${h.enclaveChain}`);
    for (const r of h.plain) lines.push(`\t\t${ruleText(r)}`);
    lines.push('\t}');
    chunks.push(lines);
    if (!h.split) continue;
    const regular = (name: string, rules: ChainItem[], what: string): void => {
      chunks.push([
        `\tchain ${name} {`,
        `\t\t# ${what}`,
        ...rules.map(
          (r) =>
            `\t\t${isJump(r) ? `jump ${r.jump}` : isVmap(r) ? `ip saddr vmap @${r.vmap}` : ruleText(r, ENCLAVES_SET, true)}`,
        ),
        '\t}',
      ]);
    };
    for (const run of h.catRuns)
      run.blocks.forEach((b, pos) =>
        regular(
          b.chain,
          b.rules,
          `category ${JSON.stringify(b.category)}, block ${pos} of run ${run.index} (jumped to by the profile chains ${h.hook}_cp_${run.index}_<hash> the enforcer creates for the category sets of live enclaves)`,
        ),
      );
    for (const s of h.segments) {
      const what = s.negates.size ? `enclaves of apps other than ${[...s.negates].join(', ')}` : 'enclaves';
      regular(s.chain, s.body, `shared by the chains below: ${what}`);
    }
    for (const b of h.blocks)
      regular(
        b.chain,
        b.jumps.map((jump) => ({ jump })),
        'a block of segments (jumped to by the chains below)',
      );
    regular(h.enclaveChain, h.enclave, 'enclaves of apps no src-app condition names');
    for (const a of h.apps) regular(a.chain, a.rules, `enclaves of app ${a.mrEnclave}`);
  }
  chunks.forEach((lines, i) => {
    out.push(...lines);
    if (i < chunks.length - 1) out.push('');
  });
  out.push('}');
  return `${out.join('\n')}\n`;
}
