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
import type { CompiledPolicy } from '../../../src/policy/types.js';
import { GEN_APPS, GEN_REGS, genPackets, genPolicy, APP_A, type GenPacket } from './policy-gen.js';

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
  return nftApplyDocument(c, { elements, appMembers }) as { nftables: Expr[] };
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
    const doc = nftApplyDocument(next, { ...live, appMembers, elements }) as { nftables: Expr[] };
    load(doc, model);
    assert.deepEqual(mismatches(text, packets, model).slice(0, 5), [], `seed ${seed}`);
    // Nothing of the first policy's dispatch is left over.
    const plan = dispatchPlan(next);
    for (const name of model.chains.keys()) {
      if (!['input', 'forward', 'output'].includes(name))
        assert.ok(plan.chains.includes(name), `stale chain ${name}`);
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
