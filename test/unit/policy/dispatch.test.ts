/**
 * The dispatch-shaped nftables document (src/policy/dispatch.ts) must decide every packet
 * like the reference evaluator (src/policy/evaluate.ts). The document is executed by a
 * small model of nft's rule evaluation (sets, verdict maps, goto, jump/return, first match), on many
 * generated policies; the integration test (test/integration/policy/generated.test.ts)
 * does the same with the kernel on real packets for a sample.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parsePolicy } from '../../../src/policy/parse.js';
import { compilePolicy, setHolds } from '../../../src/policy/compile.js';
import { appDirectoryFromList } from '../../../src/policy/apps.js';
import { evaluate, type Registration } from '../../../src/policy/evaluate.js';
import { liveApplyOptions, nftApplyDocument } from '../../../src/policy/nft.js';
import { restoreDocument } from '../../../src/nft/snapshot.js';
import {
  catElements,
  catRunShapes,
  dispatchPlan,
  isJump,
  isVmap,
  specialize,
  type ChainItem,
  type HookPlan,
} from '../../../src/policy/dispatch.js';

const specializeNames = (r: Parameters<typeof specialize>[0], m: string): boolean =>
  specialize(r, m) !== undefined;
import { cidrContains, parseCidr, parseIpv4 } from '../../../src/util/ipv4.js';
import { catProfile, liveCatRuns } from '../../../src/policy/dispatch.js';
import type { CompiledPolicy } from '../../../src/policy/types.js';
import {
  GEN_APPS,
  GEN_CAT_CHANGES,
  GEN_CAT_REGS,
  GEN_REGS,
  genCatPolicy,
  genPackets,
  genPolicy,
  APP_A,
  type GenPacket,
  type GenReg,
} from './policy-gen.js';
import { NftEnforcer, type ElementWriter, type NftRunner } from '../../../src/enforce/nft.js';
import type { ChainCreation, SetElementChange } from '../../../src/enforce/nft-netlink.js';
import type { EnclaveRegistration } from '../../../src/enforce/types.js';
import { formatIpv4 } from '../../../src/util/ipv4.js';

type Expr = Record<string, unknown>;
interface Model {
  sets: Map<string, Set<string>>;
  /** Verdict maps: key → target chain, and whether the verdict is a jump (else goto). */
  maps: Map<string, Map<string, { target: string; jump: boolean }>>;
  chains: Map<string, Expr[][]>;
  policies: Map<string, string>;
}

/** Loads an nft JSON document into a model (only what seng's documents use). */
function load(doc: { nftables: Expr[] }, m?: Model): Model {
  const model = m ?? { sets: new Map(), maps: new Map(), chains: new Map(), policies: new Map() };
  for (const cmd of doc.nftables) {
    const [op, body] = Object.entries(cmd)[0] as [string, Expr];
    const [kind, o] = Object.entries(body)[0] as [string, Expr];
    const name = o.name as string;
    if (op === 'add' && kind === 'set' && !model.sets.has(name)) model.sets.set(name, new Set());
    else if (op === 'add' && kind === 'map' && !model.maps.has(name)) model.maps.set(name, new Map());
    else if (op === 'add' && kind === 'chain') {
      if (!model.chains.has(name)) model.chains.set(name, []);
      if (o.policy) model.policies.set(name, o.policy as string);
    } else if (op === 'add' && kind === 'rule') model.chains.get(o.chain as string)?.push(o.expr as Expr[]);
    else if (op === 'add' && kind === 'element') {
      for (const e of o.elem as unknown[]) {
        if (Array.isArray(e)) {
          const v = e[1] as Expr;
          const target = ((v.goto ?? v.jump) as Expr).target as string;
          assert.ok(model.chains.has(target), `map element jumps to missing chain ${target}`);
          model.maps.get(name)?.set(e[0] as string, { target, jump: v.jump !== undefined });
        } else model.sets.get(name)?.add(e as string);
      }
    } else if (op === 'flush' && kind === 'chain') model.chains.set(name, []);
    else if (op === 'flush' && kind === 'map') model.maps.get(name)?.clear();
    else if (op === 'delete' && kind === 'chain') model.chains.delete(name);
    else if (op === 'delete' && kind === 'map') model.maps.delete(name);
    else if (op === 'delete' && kind === 'set') model.sets.delete(name);
  }
  return model;
}

type Value = string | number | undefined;

function fieldOf(left: Expr, p: GenPacket): Value | null {
  if (left.ct) return 'new';
  if (left.meta) {
    const key = (left.meta as Expr).key;
    return key === 'iifname' ? p.iif : key === 'oifname' ? undefined : p.protocol;
  }
  const pl = left.payload as { protocol: string; field: string };
  if (pl.protocol === 'ip') return pl.field === 'saddr' ? p.src : p.dst;
  // A transport header match carries nft's protocol dependency: other protocols never match.
  if (pl.protocol !== p.protocol) return null;
  return pl.field === 'dport' ? p.dport : undefined;
}

function equals(v: Value, right: unknown, m: Model): boolean {
  if (typeof right === 'string' && right.startsWith('@')) {
    const set = m.sets.get(right.slice(1));
    assert.ok(set, `rule refers to missing set ${right}`);
    return typeof v === 'string' && set.has(v);
  }
  if (v === undefined) return false;
  if (typeof right === 'string' && right.endsWith('*')) return String(v).startsWith(right.slice(0, -1));
  if (typeof right === 'string' || typeof right === 'number') return v === right;
  const r = right as Expr;
  if (r.set) return (r.set as unknown[]).some((x) => equals(v, x, m));
  if (r.prefix) {
    const { addr, len } = r.prefix as { addr: string; len: number };
    return cidrContains(parseCidr(`${addr}/${len}`), parseIpv4(String(v)));
  }
  if (r.range) {
    const [a, b] = r.range as [number, number];
    return typeof v === 'number' && v >= a && v <= b;
  }
  throw new Error(`unmodelled right-hand side ${JSON.stringify(right)}`);
}

type Outcome = string | undefined; // a verdict, or undefined: fell off the chain

function runChain(m: Model, chain: string, p: GenPacket): Outcome {
  rules: for (const rule of m.chains.get(chain) ?? []) {
    for (const e of rule) {
      if (e.match) {
        const { op, left, right } = e.match as { op: string; left: Expr; right: unknown };
        const v = fieldOf(left, p);
        if (v === null) continue rules;
        const hit = op === 'in' ? ([] as unknown[]).concat(right).includes(v) : equals(v, right, m);
        if (hit === (op === '!=')) continue rules;
      } else if (e.vmap) {
        const data = (e.vmap as Expr).data as string;
        const v = m.maps.get(data.slice(1))?.get(fieldOf((e.vmap as Expr).key as Expr, p) as string);
        if (v === undefined) continue rules;
        if (!v.jump) return runChain(m, v.target, p);
        // A jump returns when the called chain ends without a verdict: the walk goes on.
        const got = runChain(m, v.target, p);
        if (got !== undefined) return got;
        continue rules;
      } else if (e.goto) return runChain(m, (e.goto as Expr).target as string, p);
      else if (e.jump) {
        // A jump returns when the called chain ends without a verdict.
        const target = (e.jump as Expr).target as string;
        assert.ok(m.chains.has(target), `rule jumps to missing chain ${target}`);
        const got = runChain(m, target, p);
        if (got !== undefined) return got;
      } else if ('accept' in e || 'drop' in e || 'reject' in e) return Object.keys(e)[0];
      else if (!('counter' in e) && !('log' in e))
        throw new Error(`unmodelled statement ${JSON.stringify(e)}`);
    }
  }
  return undefined;
}

function decide(m: Model, p: GenPacket): string {
  return runChain(m, p.chain, p) ?? (m.policies.get(p.chain) as string);
}

const apps = appDirectoryFromList(GEN_APPS);
const regMap = (regs = GEN_REGS): Map<number, Registration> =>
  new Map(
    regs.map((r) => [
      parseIpv4(r.ip),
      { mrEnclave: r.mrEnclave, categories: r.categories, hostIp: parseIpv4(r.host) },
    ]),
  );

/** The document with the sets and maps filled as the enforcer keeps them for `regs`. */
function filledDocument(c: CompiledPolicy, regs = GEN_REGS): { nftables: Expr[] } {
  const elements = new Map<string, string[]>();
  for (const s of c.sets) {
    const ips = regs
      .filter((r) =>
        setHolds(s, {
          mrEnclave: Buffer.from(r.mrEnclave, 'hex'),
          categories: r.categories,
          hostIp: parseIpv4(r.host),
        }),
      )
      .map((r) => r.ip);
    elements.set(s.name, ips);
  }
  const appMembers = new Map<string, string[]>();
  for (const r of regs) appMembers.set(r.mrEnclave, [...(appMembers.get(r.mrEnclave) ?? []), r.ip]);
  const catMembers = new Map(regs.map((r) => [r.ip, r.categories]));
  return nftApplyDocument(c, { elements, appMembers, catMembers }) as { nftables: Expr[] };
}

function mismatches(text: string, packets: GenPacket[], m: Model, regs = GEN_REGS): string[] {
  const policy = parsePolicy(text, 'gen.yaml');
  const rm = regMap(regs);
  const out: string[] = [];
  for (const p of packets) {
    const want = evaluate(policy, { ...p, src: parseIpv4(p.src), dst: parseIpv4(p.dst) }, rm, apps).action;
    const got = decide(m, p);
    if (got !== want) out.push(`${JSON.stringify(p)}: nft model ${got}, evaluator ${want}`);
  }
  return out;
}

test('the dispatch document decides like the evaluator on 150 generated policies', () => {
  const packets = [...genPackets('input'), ...genPackets('forward')];
  let negatingSegments = 0;
  let sharedSegments = 0;
  for (let seed = 1; seed <= 150; seed += 1) {
    const text = genPolicy(seed, 4 + (seed % 25), 'gen', ['input', 'forward']);
    const c = compilePolicy(parsePolicy(text, 'gen.yaml'), { apps });
    for (const h of dispatchPlan(c).hooks) {
      negatingSegments += h.segments.filter((s) => s.negates.size > 0).length;
      sharedSegments += h.segments.filter((s) => s.negates.size === 0 && s.rules.length > 1).length;
    }
    const bad = mismatches(text, packets, load(filledDocument(c)));
    assert.deepEqual(bad.slice(0, 5), [], `seed ${seed}:\n${text}`);
  }
  assert.ok(negatingSegments > 20 && sharedSegments > 20, 'the policies exercise both kinds of segment');
});

test('re-applying over a live table (other policy, stale chains and map) gives the same decisions', () => {
  const packets = genPackets('input');
  for (let seed = 400; seed < 440; seed += 1) {
    const first = compilePolicy(parsePolicy(genPolicy(seed, 12, 'gen'), 'a.yaml'), { apps });
    const model = load(filledDocument(first));
    const text = genPolicy(seed + 1000, 12, 'gen');
    const next = compilePolicy(parsePolicy(text, 'b.yaml'), { apps });
    // What `rules apply` passes: the live table as NftCli.listTable reads it.
    const live = liveApplyOptions(next, {
      sets: [...model.sets].map(([name, v]) => ({ name, elements: [...v] })),
      chains: [...model.chains.keys()].map((name) => ({ name })),
      maps: [...model.maps].map(([name, m]) => ({
        name,
        elements: [...m.keys()],
        gotos: [...m.values()].map((v) => (v.jump ? undefined : v.target)),
      })),
    });
    const newSets = next.sets.filter((s) => !model.sets.has(s.name));
    const elements = new Map<string, string[]>();
    for (const s of newSets) {
      const ips = GEN_REGS.filter((r) =>
        setHolds(s, {
          mrEnclave: Buffer.from(r.mrEnclave, 'hex'),
          categories: r.categories,
          hostIp: parseIpv4(r.host),
        }),
      ).map((r) => r.ip);
      elements.set(s.name, ips);
    }
    // The live table knows the apps of the enclaves the first policy dispatched or kept in
    // app sets; enclaves of other apps are as unknown to `rules apply` as new sets' members:
    // the server fills them. Give those from the registrations, like a server would.
    const known = new Set([...(live.appMembers?.values() ?? [])].flat());
    const appMembers = new Map(live.appMembers);
    for (const r of GEN_REGS) {
      if (!known.has(r.ip)) appMembers.set(r.mrEnclave, [...(appMembers.get(r.mrEnclave) ?? []), r.ip]);
    }
    // Categories: the live category sets tell those the first policy named; a server knows all.
    const catMembers = new Map(GEN_REGS.map((r) => [r.ip, r.categories]));
    const doc = nftApplyDocument(next, { ...live, appMembers, elements, catMembers }) as {
      nftables: Expr[];
    };
    load(doc, model);
    assert.deepEqual(mismatches(text, packets, model).slice(0, 5), [], `seed ${seed}`);
    // Nothing of the first policy's dispatch is left over.
    const plan = dispatchPlan(next);
    const profiles = catElements(catRunShapes(plan), catMembers).profiles;
    for (const name of model.chains.keys()) {
      if (!['input', 'forward', 'output'].includes(name))
        assert.ok(plan.chains.includes(name) || profiles.has(name), `stale chain ${name}`);
    }
  }
});

/** The rule names a dispatch chain walks, with its segment jumps expanded. */
function walked(h: HookPlan | undefined, items: ChainItem[]): string[] {
  const segments = new Map((h?.segments ?? []).map((s) => [s.chain, s.rules]));
  const blocks = new Map((h?.blocks ?? []).map((b) => [b.chain, b.jumps.map((jump) => ({ jump }))]));
  const runs = new Map((h?.catRuns ?? []).map((r) => [r.map, r.rules]));
  return items.flatMap((i) => {
    if (isVmap(i)) return (runs.get(i.vmap) ?? []).map((r) => r.name);
    if (!isJump(i)) return [i.name];
    const block = blocks.get(i.jump);
    if (block) return walked(h, block);
    const rules = segments.get(i.jump);
    assert.ok(rules, `jump to unknown chain ${i.jump}`);
    return rules.map((r) => r.name);
  });
}

/** Rules of a hook's plan, jumps included. */
const planSize = (h: HookPlan): number =>
  h.plain.length +
  h.enclave.length +
  h.segments.reduce((n, s) => n + s.rules.length, 0) +
  h.blocks.reduce((n, b) => n + b.jumps.length, 0) +
  h.apps.reduce((n, a) => n + a.rules.length, 0);

test('a source app gets a chain with only its rules and the rules naming no source app', () => {
  const rules = Array.from(
    { length: 200 },
    (_, i) =>
      `  - { name: app${i}, chain: forward, action: accept, src-app: '${i.toString(16).padStart(64, '0')}', protocol: udp, dport: ${1000 + i} }`,
  );
  const text = `version: 1\ndefaults: { forward: drop }\nrules:\n  - { name: est, chain: forward, action: accept, state: [established] }\n${rules.join('\n')}\n  - { name: web, chain: forward, action: accept, src-cat: Web }\n`;
  const plan = dispatchPlan(compilePolicy(parsePolicy(text, 'many.yaml')));
  const fwd = plan.hooks.find((h) => h.hook === 'forward');
  assert.equal(fwd?.apps.length, 200);
  for (const a of fwd?.apps ?? [])
    assert.deepEqual(walked(fwd, a.rules), ['est', `app${parseInt(a.mrEnclave, 16)}`, 'web']);
  assert.deepEqual(walked(fwd, fwd?.enclave ?? []), ['est', 'web']);
  assert.deepEqual(
    fwd?.plain.map((r) => r.name),
    ['est'],
  );
});

test('negated source apps: the named app is left out of its own chain, every other enclave keeps the rule', () => {
  const text = `version: 1\nrules:\n  - { name: not-a, chain: input, action: drop, src-app: '!${APP_A}' }\n`;
  const plan = dispatchPlan(compilePolicy(parsePolicy(text, 'neg.yaml')));
  const input = plan.hooks[0];
  assert.deepEqual(
    input?.apps.map((a) => [a.mrEnclave, a.rules.length]),
    [[APP_A, 0]],
  );
  assert.deepEqual(walked(input, input?.enclave ?? []), ['not-a']);
  assert.deepEqual(input?.plain, [], 'a source that is no enclave never matches a source seng condition');
});

test('rules apply re-derives the dispatch map from the live app sets and maps', () => {
  const text = `version: 1\nrules:\n  - { name: a, chain: forward, action: drop, src-app: ${APP_A} }\n`;
  const c = compilePolicy(parsePolicy(text, 'a.yaml'));
  const live = {
    sets: [
      { name: 'enclaves', elements: ['192.168.28.2', '192.168.28.3'] },
      { name: `app_${APP_A}`, elements: ['192.168.28.2'] },
      { name: 'cat_Gone', elements: ['192.168.28.3'] },
    ],
    chains: [{ name: 'forward' }, { name: 'input_enclave' }],
    maps: [
      { name: 'dispatch_input', elements: ['192.168.28.3'] },
      { name: 'dispatch_forward', elements: ['192.168.28.4'], gotos: [`forward_app_${APP_A}`] },
    ],
  };
  const model = load(nftApplyDocument(c, liveApplyOptions(c, live)) as { nftables: Expr[] });
  assert.deepEqual(
    [...(model.maps.get('dispatch_forward') ?? [])].map(([ip, v]) => [ip, v.target]).sort(),
    [
      ['192.168.28.2', `forward_app_${APP_A}`],
      ['192.168.28.4', `forward_app_${APP_A}`],
    ],
    'from the live app set and from the live map',
  );
  assert.ok(!model.sets.has(`app_${APP_A}`), 'a set only src-app conditions would use is not created');
  assert.ok(!model.maps.has('dispatch_input'), 'the obsolete map is deleted');
  assert.ok(!model.chains.has('input_enclave'), 'the obsolete chain is deleted');
  assert.ok(!model.sets.has('cat_Gone'), 'the obsolete set is deleted');
});

test('a rollback snapshot adds verdict-map elements after the chains they name', () => {
  const listing = [
    { table: { family: 'ip', name: 't', handle: 1 } },
    {
      map: {
        family: 'ip',
        table: 't',
        name: 'dispatch_input',
        type: 'ipv4_addr',
        map: 'verdict',
        handle: 2,
        elem: [['10.0.0.1', { goto: { target: 'input_enclave' } }]],
      },
    },
    { chain: { family: 'ip', table: 't', name: 'input_enclave', handle: 3 } },
  ];
  const cmds = restoreDocument('t', 'ip', listing).nftables.map((c) => JSON.stringify(c));
  const chainAt = cmds.findIndex((c) => c.includes('"chain"'));
  const elemAt = cmds.findIndex((c) => c.includes('"element"'));
  assert.ok(chainAt > 0 && elemAt > chainAt, cmds.join('\n'));
  assert.ok(!cmds.some((c) => c.includes('"map"') && c.includes('"elem"')), 'the map itself comes empty');
});

test('general rules are compiled once: 1,000 apps and 10,000 category rules stay near 11,000 rules', () => {
  const app = (i: number): string => (i + 1).toString(16).padStart(64, '0');
  const cat = (from: number): string[] =>
    Array.from(
      { length: 5000 },
      (_, i) =>
        `  - { name: cat${from + i}, chain: forward, action: accept, src-cat: C${(from + i) % 1000}, protocol: tcp, dport: ${1 + ((from + i) % 60000)} }`,
    );
  const own = Array.from(
    { length: 1000 },
    (_, i) =>
      `  - { name: app${i}, chain: forward, action: accept, src-app: '${app(i)}', protocol: udp, dport: 53 }`,
  );
  const text = `version: 1\ndefaults: { forward: drop }\nrules:\n${[...cat(0), ...own, ...cat(5000)].join('\n')}\n  - { name: not-1, chain: forward, action: drop, src-app: '!${app(1)}' }\n`;
  const c = compilePolicy(parsePolicy(text, 'mixed.yaml'));
  const fwd = dispatchPlan(c).hooks.find((h) => h.hook === 'forward');
  assert.ok(fwd);
  const total = planSize(fwd);
  const rules = c.rules.length;
  const apps = fwd.apps.length;
  assert.equal(apps, 1000);
  // Each rule once, plus one jump per app and segment (3 segments: two runs and the negation).
  assert.ok(total <= rules + 3 * apps + 3, `${total} compiled rules for ${rules} rules and ${apps} apps`);
  assert.equal(
    fwd.segments.reduce((n, s) => n + s.rules.length, 0),
    10001,
    'every rule without a positive src-app condition is in exactly one segment',
  );
  // The chains still walk what the linear list would (in order), minus the negated rule for app 1.
  const a1 = fwd.apps.find((a) => a.mrEnclave === app(1));
  const names = walked(fwd, a1?.rules ?? []);
  assert.equal(names.length, 10001);
  assert.deepEqual(
    [names[4999], names[5000], names[5001], names.at(-1)],
    ['cat4999', 'app1', 'cat5000', 'cat9999'],
  );
  const a2 = fwd.apps.find((a) => a.mrEnclave === app(2));
  assert.equal(walked(fwd, a2?.rules ?? []).at(-1), 'not-1');
  // The nft document holds those rules (and their jumps) once.
  const doc = nftApplyDocument(c) as { nftables: Expr[] };
  const added = doc.nftables.filter((cmd) => (cmd.add as Expr | undefined)?.rule !== undefined).length;
  assert.ok(added <= rules + 3 * apps + 10, `${added} rules in the document`);
});

test('scattered source-app rules: a tree of block chains keeps the jumps near apps × fanout × depth', () => {
  const app = (i: number): string => (i + 1).toString(16).padStart(64, '0');
  const lines: string[] = [];
  for (let i = 0; i < 1000; i++) {
    for (let j = 0; j < 10; j++)
      lines.push(
        `  - { name: cat${i * 10 + j}, chain: input, action: accept, src-cat: C${j}, protocol: tcp, dport: ${1 + i} }`,
      );
    lines.push(`  - { name: app${i}, chain: input, action: accept, src-app: '${app(i)}' }`);
    if (i % 97 === 0)
      lines.push(`  - { name: not${i}, chain: input, action: drop, src-app: '!${app(i + 1)}' }`);
  }
  const text = `version: 1\nrules:\n${lines.join('\n')}\n`;
  const c = compilePolicy(parsePolicy(text, 'scattered.yaml'));
  const input = dispatchPlan(c).hooks[0];
  assert.ok(input);
  assert.ok(input.segments.length > 1000, 'one segment per run and per negating rule');
  const total = planSize(input);
  // A jump per segment would be ≈ 1,000 apps × 1,000 segments.
  assert.ok(total < c.rules.length + 60 * 1000, `${total} compiled rules for ${c.rules.length} rules`);
  // Every app still walks exactly the rules the linear list would test for it, in order.
  const linear = (m: string): string[] =>
    c.rules.filter((r) => r.chain === 'input' && specializeNames(r, m)).map((r) => r.name);
  for (const i of [0, 1, 2, 96, 97, 98, 500, 999]) {
    const items: ChainItem[] = input.apps.find((x) => x.mrEnclave === app(i))?.rules ?? [];
    assert.deepEqual(walked(input, items), linear(app(i)), `app ${i}`);
  }
  assert.deepEqual(walked(input, input.enclave), linear('0'.repeat(64)));
});

test('the dispatch document decides like the evaluator on large generated policies (block chains)', () => {
  const packets = genPackets('input');
  for (let seed = 600; seed < 630; seed += 1) {
    const text = genPolicy(seed, 150, 'gen', ['input']);
    const c = compilePolicy(parsePolicy(text, 'gen.yaml'), { apps });
    assert.ok((dispatchPlan(c).hooks[0]?.blocks.length ?? 0) > 0, `seed ${seed} has block chains`);
    const bad = mismatches(text, packets, load(filledDocument(c)));
    assert.deepEqual(bad.slice(0, 5), [], `seed ${seed}:\n${text}`);
  }
});

/** The enforcer's whole-table documents, loaded into the model. */
class ModelNft implements NftRunner {
  constructor(readonly model: Model) {}
  async run(doc: { nftables: Record<string, unknown>[] }): Promise<void> {
    load(doc as { nftables: Expr[] }, this.model);
  }
  async listTable(): Promise<{
    sets: { name: string; elements: string[] }[];
    maps: { name: string; elements: string[]; gotos: (string | undefined)[] }[];
    chains: { name: string }[];
  }> {
    const m = this.model;
    return {
      sets: [...m.sets].map(([name, v]) => ({ name, elements: [...v] })),
      maps: [...m.maps].map(([name, v]) => ({
        name,
        elements: [...v.keys()],
        gotos: [...v.values()].map((x) => (x.jump ? undefined : x.target)),
      })),
      chains: [...m.chains.keys()].map((name) => ({ name })),
    };
  }
}

/** The enforcer's netlink batches (profile chains, then removals, then additions), on the model. */
class ModelWriter implements ElementWriter {
  created = 0;
  constructor(readonly model: Model) {}
  async apply(changes: SetElementChange[], chains: ChainCreation[] = []): Promise<void> {
    const m = this.model;
    for (const c of chains) {
      for (const j of c.jumps) assert.ok(m.chains.has(j), `profile ${c.name} jumps to missing chain ${j}`);
      m.chains.set(
        c.name,
        c.jumps.map((target) => [{ jump: { target } }]),
      );
      this.created += 1;
    }
    for (const c of changes) {
      const map = m.maps.get(c.set);
      const set = m.sets.get(c.set);
      assert.ok(map || set, `batch names missing set ${c.set}`);
      for (const ip of [...c.remove, ...(c.replace ?? [])]) {
        map?.delete(formatIpv4(ip));
        set?.delete(formatIpv4(ip));
      }
    }
    for (const c of changes) {
      c.add.forEach((ip, i) => {
        const map = m.maps.get(c.set);
        if (!map) return void m.sets.get(c.set)?.add(formatIpv4(ip));
        const target = c.gotoChains?.[i] as string;
        assert.ok(m.chains.has(target), `element of ${c.set} names missing chain ${target}`);
        assert.ok(
          !map.has(formatIpv4(ip)),
          `element ${formatIpv4(ip)} of ${c.set} exists (the kernel refuses)`,
        );
        map.set(formatIpv4(ip), { target, jump: c.jump === true });
      });
    }
  }
  close(): void {}
}

const toReg = (r: GenReg): EnclaveRegistration => ({
  enclaveIp: parseIpv4(r.ip),
  mrEnclave: Buffer.from(r.mrEnclave, 'hex'),
  mrSigner: Buffer.alloc(32),
  hostIp: parseIpv4(r.host),
  categories: [...r.categories],
});

test('category runs: profile chains list exactly the filtered first-match blocks', () => {
  const text = `version: 1\nrules:\n${[
    ['a1', 'A'],
    ['b1', 'B'],
    ['a2', 'A'],
    ['a3', 'A'],
    ['c1', "'c.d'"],
    ['b2', 'B'],
  ]
    .map(
      ([n, c]) => `  - { name: ${n}, chain: input, action: accept, src-cat: ${c}, protocol: udp, dport: 1 }`,
    )
    .join(
      '\n',
    )}\n  - { name: host, chain: input, action: drop, src-host: 10.0.0.0/8 }\n  - { name: a4, chain: input, action: accept, src-cat: A }\n  - { name: nota, chain: input, action: drop, src-cat: '!A' }\n  - { name: appcat, chain: input, action: drop, src-app: '${APP_A}', src-cat: A }\n`;
  const plan = dispatchPlan(compilePolicy(parsePolicy(text, 'runs.yaml')));
  const input = plan.hooks[0];
  assert.ok(input);
  // Two runs, cut by the src-host rule; the negated src-cat rule is walked; the app's rule stays in its chain.
  assert.deepEqual(
    input.catRuns.map((r) => r.rules.map((x) => x.name)),
    [['a1', 'b1', 'a2', 'a3', 'c1', 'b2'], ['a4']],
  );
  const run = input.catRuns[0];
  assert.ok(run);
  assert.deepEqual(
    run.blocks.map((b) => [b.category, b.rules.map((x) => x.name)]),
    [
      ['A', ['a1']],
      ['B', ['b1']],
      ['A', ['a2', 'a3']],
      ['c.d', ['c1']],
      ['B', ['b2']],
    ],
  );
  assert.ok(run.blocks.every((b) => b.rules.every((x) => !x.seng.some((c) => c.side === 'src'))));
  assert.match(run.blocks[3]?.chain ?? '', /^input_cb_0_3_632e64$/, 'a category in hex');
  const names = (cats: string[]): string[] =>
    (catProfile(run, cats)?.jumps ?? []).flatMap(
      (j) => run.blocks.find((b) => b.chain === j)?.rules.map((x) => x.name) ?? [],
    );
  assert.deepEqual(names(['A']), ['a1', 'a2', 'a3']);
  assert.deepEqual(names(['B', 'A']), ['a1', 'b1', 'a2', 'a3', 'b2']);
  assert.deepEqual(names(['c.d', 'Z']), ['c1']);
  assert.equal(catProfile(run, ['Z']), undefined, 'no category of the run: no element');
  assert.equal(catProfile(run, ['A', 'B'])?.chain, catProfile(run, ['B', 'Z', 'A'])?.chain);
  assert.notEqual(catProfile(run, ['A'])?.chain, catProfile(run, ['A', 'B'])?.chain);
  // The enforcer rebuilds the same runs from the live chain and map names alone.
  const shapes = liveCatRuns([...plan.chains].reverse(), plan.maps);
  assert.deepEqual(
    shapes.map((r) => [r.map, r.blocks]),
    input.catRuns.map((r) => [r.map, r.blocks.map((b) => ({ chain: b.chain, category: b.category }))]),
  );
  assert.deepEqual(walked(input, input.enclave), c(text));
  function c(t: string): string[] {
    return compilePolicy(parsePolicy(t, 'runs.yaml'))
      .rules.filter((r) => specialize(r, undefined))
      .map((r) => r.name);
  }
});

test('category dispatch decides like the evaluator on 120 generated category policies', () => {
  const packets = [...genPackets('input'), ...genPackets('forward')];
  let runs = 0;
  let interleaved = 0;
  for (let seed = 1; seed <= 120; seed += 1) {
    const text = genCatPolicy(seed, 6 + (seed % 40), 'gen', ['input', 'forward']);
    const c = compilePolicy(parsePolicy(text, 'gen.yaml'), { apps });
    for (const h of dispatchPlan(c).hooks) {
      runs += h.catRuns.length;
      interleaved += h.catRuns.filter(
        (r) => new Set(r.blocks.map((b) => b.category)).size < r.blocks.length,
      ).length;
    }
    const bad = mismatches(text, packets, load(filledDocument(c, GEN_CAT_REGS)), GEN_CAT_REGS);
    assert.deepEqual(bad.slice(0, 5), [], `seed ${seed}:\n${text}`);
  }
  assert.ok(runs > 100 && interleaved > 30, `${runs} runs, ${interleaved} with a category in several blocks`);
});

test('the enforcer keeps category maps and profile chains exact through joins, category changes, leaves and re-applies', async () => {
  const packets = [...genPackets('input'), ...genPackets('forward')];
  let created = 0;
  for (let seed = 700; seed < 760; seed += 1) {
    const text = genCatPolicy(seed, 10 + (seed % 30), 'seng', ['input', 'forward']);
    const policy = compilePolicy(parsePolicy(text, 'gen.yaml'), { apps });
    const model = load({ nftables: [] });
    const writer = new ModelWriter(model);
    const e = new NftEnforcer({ policy, nft: new ModelNft(model), elements: writer, purge: async () => 0 });
    const check = (regs: GenReg[], what: string, t = text): void =>
      assert.deepEqual(mismatches(t, packets, model, regs).slice(0, 5), [], `seed ${seed}, ${what}:\n${t}`);
    // Half of the enclaves are live at start (a fleet agent's leases), the others join.
    await e.start({ initial: GEN_CAT_REGS.slice(0, 2).map(toReg) });
    await e.joinMany(GEN_CAT_REGS.slice(2).map(toReg));
    let regs = GEN_CAT_REGS.map((r) => ({ ...r }));
    check(regs, 'after joins');
    for (const change of GEN_CAT_CHANGES) {
      regs = regs.map((r) =>
        r.mrEnclave === change.mrEnclave ? { ...r, categories: change.categories } : r,
      );
      await e.updateCategories(Buffer.from(change.mrEnclave, 'hex'), change.categories, regs.map(toReg));
      check(regs, `after categories of ${change.mrEnclave.slice(0, 4)} → ${change.categories.join(',')}`);
    }
    const leaving = ['192.168.28.2', '192.168.28.5'];
    await e.leaveMany(regs.filter((r) => leaving.includes(r.ip)).map(toReg));
    regs = regs.filter((r) => !leaving.includes(r.ip));
    check(regs, 'after leaves');
    await e.joinMany(GEN_CAT_REGS.filter((r) => leaving.includes(r.ip)).map(toReg));
    regs = [...regs, ...GEN_CAT_REGS.filter((r) => leaving.includes(r.ip))];
    check(regs, 'after re-joins');
    const nextText = genCatPolicy(seed + 5000, 20, 'seng', ['input', 'forward']);
    await e.applyPolicy(compilePolicy(parsePolicy(nextText, 'next.yaml'), { apps }));
    check(regs, 'after a policy apply', nextText);
    // Only the profiles of live category sets survive an apply.
    const profiles = [...model.chains.keys()].filter((n) => /_cp_/.test(n));
    const shapes = liveCatRuns(model.chains.keys(), model.maps.keys());
    const needed = new Set(
      regs.flatMap((r) =>
        shapes.map((s) => catProfile(s, r.categories)?.chain).filter((x) => x !== undefined),
      ),
    );
    assert.deepEqual(profiles.sort(), [...needed].sort(), `seed ${seed}: profiles after apply`);
    await e.stop();
    // A gateway without a policy (applied with nft directly) rebuilds the runs from the names.
    const bare = new NftEnforcer({ nft: new ModelNft(model), elements: writer, purge: async () => 0 });
    await bare.start({ initial: regs.slice(0, 1).map(toReg) });
    await bare.joinMany(regs.slice(1).map(toReg));
    check(regs, 'without a policy held', nextText);
    await bare.stop();
    created += writer.created;
  }
  assert.ok(created > 100, `${created} profile chains created by joins and category changes`);
});
