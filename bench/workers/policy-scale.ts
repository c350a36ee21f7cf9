/**
 * Benchmark worker for the policy-scale section (bench/policy-scale.ts), run inside the
 * "router" namespace so its nftables tables touch nothing else.
 *
 * Prepares, one after the other, the rulesets the parent sends 64-byte UDP through
 * (`ready` event, then it waits for "next" on stdin):
 *   small    10 rules, 10 enclaves, the compiled (dispatch) ruleset;
 *   large    10,000 rules over 10,000 apps, 100,000 enclaves, the compiled ruleset;
 *   linear   the same 10,000 rules as one first-match chain (the shape before dispatch);
 *   category 10,000 rules: 1,000 src-app rules, then 9,000 src-cat rules over 1,000
 *            categories (9 each), 100,000 enclaves each in two categories (≈ 1,000
 *            distinct category sets); the source's category (C0) has the last 9 rules
 *            (none matches the traffic). The 9,000 src-cat rules form one category run:
 *            one verdict-map lookup jumps to the profile chain of the source's categories
 *            (created by the enforcer at the first join of that set), which walks only
 *            C0's block of 9 rules. The number of profile chains the joins created is
 *            reported with the setup.
 * The traffic source 10.128.0.10 is an enclave whose app's only rule is the LAST of the
 * linear list (and does not match the traffic): the worst case of a linear list.
 * With the large ruleset in place, a burst of 10,000 joins and one of 10,000 leaves go
 * through NftEnforcer.joinMany / leaveMany, as a firewall agent does it: time and kernel
 * transactions (the conntrack purges are stubbed: they follow the leave, not part of it).
 * The same burst runs with the category ruleset (enclaves in two categories each, in
 * category sets no installed enclave has): its joins also write category-map elements and
 * create the ≈ 1,000 profile chains they need, in the same transaction.
 * Results are JSON lines on stdout.
 */
import { createInterface } from 'node:readline';
import { execFileSync } from 'node:child_process';
import { NftEnforcer } from '../../src/enforce/nft.js';
import { NftNetlink } from '../../src/enforce/nft-netlink.js';
import type { EnclaveRegistration } from '../../src/enforce/types.js';
import { compilePolicy, parsePolicy } from '../../src/policy/index.js';
import { ruleExpressions } from '../../src/policy/nft.js';
import { NftCli } from '../../src/nft/cli.js';
import type { CompiledPolicy } from '../../src/policy/types.js';

const quick = process.argv.includes('--quick');
const emit = (o: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify(o)}\n`);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const ms = (t0: number): number => performance.now() - t0;

const app = (i: number): string => (i + 1).toString(16).padStart(8, '0').repeat(8);
const SOURCE_INDEX = 9; // 10.128.0.1 + 9 = 10.128.0.10, the traffic source

function policyText(table: string, rules: number): string {
  const lines = ['version: 1', `table: ${table}`, 'rules:'];
  for (let i = 0; i < rules; i++) {
    // Rule i names app (rules-1-i): the source's app (index 9) comes near the end.
    const a = rules - 1 - i;
    lines.push(
      `  - { name: r${i}, chain: forward, action: accept, src-app: "${app(a)}", protocol: udp, dport: ${10000 + (i % 50000)} }`,
    );
  }
  return `${lines.join('\n')}\n`;
}

const CATEGORY_APP_RULES = 1000;
const CATEGORIES = 1000;

/** The category policy: src-app rules first, then src-cat rules, C0's (the source's) last. */
function categoryPolicyText(table: string, rules: number): string {
  const lines = ['version: 1', `table: ${table}`, 'rules:'];
  const appRules = Math.min(CATEGORY_APP_RULES, rules);
  const catRules = rules - appRules;
  const perCat = Math.max(1, Math.ceil(catRules / CATEGORIES));
  for (let i = 0; i < appRules; i++) {
    // Apps 1..appRules: not the source's app (0), whose enclaves fall through to the category rules.
    lines.push(
      `  - { name: a${i}, chain: forward, action: accept, src-app: "${app(i + 1)}", protocol: udp, dport: ${10000 + i} }`,
    );
  }
  for (let j = 0; j < catRules; j++) {
    const cat = Math.floor((catRules - 1 - j) / perCat);
    lines.push(
      `  - { name: c${j}, chain: forward, action: accept, src-cat: C${cat}, protocol: udp, dport: ${20000 + (j % 40000)} }`,
    );
  }
  return `${lines.join('\n')}\n`;
}

/** The category configuration's registrations: two categories each, the source only in C0. */
function catReg(i: number): EnclaveRegistration {
  const r = reg(i, CATEGORY_APP_RULES + 1);
  r.categories = i === SOURCE_INDEX ? ['C0'] : [`C${i % CATEGORIES}`, `C${(i * 7 + 1) % CATEGORIES}`];
  return r;
}

function reg(i: number, apps: number): EnclaveRegistration {
  const ip = ((10 << 24) | (128 << 16)) + 1 + i;
  return {
    enclaveIp: ip >>> 0,
    // The source's app is the one of the last rule of the linear list; others spread over all apps.
    mrEnclave: Buffer.from(app(i === SOURCE_INDEX ? 0 : i % apps), 'hex'),
    mrSigner: Buffer.alloc(32, 0xab),
    hostIp: ((10 << 24) | (52 << 16) | 2) >>> 0,
    categories: [],
  };
}

async function waitNext(): Promise<boolean> {
  const n = await lines.next();
  return !n.done;
}

function dropTable(table: string): void {
  execFileSync('nft', ['delete', 'table', 'ip', table], { stdio: 'ignore' });
}

/** Installs the compiled ruleset and registers `enclaves` (joinMany in chunks: setup, not the measured burst). */
async function compiled(
  table: string,
  rules: number,
  enclaves: number,
  category = false,
): Promise<NftEnforcer> {
  const text = category ? categoryPolicyText(table, rules) : policyText(table, rules);
  const policy = compilePolicy(parsePolicy(text, `${table}.yaml`));
  const enforcer = new NftEnforcer({ policy, purge: async () => 0 });
  let t0 = performance.now();
  await enforcer.start();
  const applyMs = ms(t0);
  t0 = performance.now();
  const regs = Array.from({ length: enclaves }, (_, i) => (category ? catReg(i) : reg(i, rules)));
  for (let i = 0; i < regs.length; i += 25_000) await enforcer.joinMany(regs.slice(i, i + 25_000));
  emit({
    event: 'installed',
    table,
    rules,
    enclaves,
    applyMs,
    joinMs: ms(t0),
    profileChains: enforcer.stats.profileChains,
  });
  return enforcer;
}

/** The pre-dispatch shape: every rule in the base chain, walked in order. */
async function linear(table: string, rules: number, enclaves: number): Promise<void> {
  const policy: CompiledPolicy = compilePolicy(parsePolicy(policyText(table, rules), `${table}.yaml`));
  const base = { family: 'ip', table };
  const cmds: Record<string, unknown>[] = [{ add: { table: { family: 'ip', name: table } } }];
  for (const s of policy.sets) cmds.push({ add: { set: { ...base, name: s.name, type: 'ipv4_addr' } } });
  cmds.push({
    add: { chain: { ...base, name: 'forward', type: 'filter', hook: 'forward', prio: 0, policy: 'accept' } },
  });
  for (const r of policy.rules)
    cmds.push({ add: { rule: { ...base, chain: 'forward', expr: ruleExpressions(r) } } });
  let t0 = performance.now();
  // 10,000 rules with a set lookup each take nft ≈ 15 s on the shared machine: more than
  // NftCli's default timeout (made for a gateway's interactive applies).
  await new NftCli(['nft'], 180_000).run({ nftables: cmds });
  const applyMs = ms(t0);
  t0 = performance.now();
  const nl = new NftNetlink({ table });
  const regs = Array.from({ length: enclaves }, (_, i) => reg(i, rules));
  const names = new Set(policy.sets.map((s) => s.name));
  for (let i = 0; i < regs.length; i += 10_000) {
    const chunk = regs.slice(i, i + 10_000);
    const bySet = new Map<string, number[]>([['enclaves', chunk.map((r) => r.enclaveIp)]]);
    for (const r of chunk) {
      const name = `app_${r.mrEnclave.toString('hex')}`;
      if (names.has(name)) bySet.set(name, [...(bySet.get(name) ?? []), r.enclaveIp]);
    }
    await nl.apply([...bySet].map(([set, add]) => ({ set, add, remove: [] })));
  }
  nl.close();
  emit({ event: 'installed', table, rules, enclaves, applyMs, joinMs: ms(t0) });
}

/**
 * 10,000 joins, then 10,000 leaves, with the large policy and its enclaves in place,
 * batched as a firewall agent does it (joinMany / leaveMany).
 */
async function burst(
  e: NftEnforcer,
  big: { rules: number; enclaves: number },
  category = false,
): Promise<void> {
  const regs = Array.from({ length: 10_000 }, (_, i) => {
    if (!category) return reg(big.enclaves + i, big.rules);
    // Category sets the installed enclaves do not have (one per 10 joiners): their profile
    // chains are created in the burst's transaction.
    const r = catReg(big.enclaves + i);
    const k = Math.floor(i / 10);
    r.categories = [`C${k % CATEGORIES}`, `C${(k * 3 + 2) % CATEGORIES}`];
    return r;
  });
  const p0 = e.stats.profileChains;
  let b0 = e.stats.batches;
  let t0 = performance.now();
  await e.joinMany(regs);
  const joinMs = ms(t0);
  const joinTransactions = e.stats.batches - b0;
  b0 = e.stats.batches;
  t0 = performance.now();
  await e.leaveMany(regs);
  const leaveMs = ms(t0);
  const leaveTransactions = e.stats.batches - b0;
  emit({
    event: category ? 'categoryBurst' : 'burst',
    size: regs.length,
    joinMs,
    joinTransactions,
    leaveMs,
    leaveTransactions,
    profileChains: e.stats.profileChains - p0,
  });
}

async function main(): Promise<void> {
  const big = { rules: 10_000, enclaves: quick ? 20_000 : 100_000 };
  const measure = async (name: string, rules: number, enclaves: number, round: number): Promise<boolean> => {
    emit({ event: 'ready', config: name, rules, enclaves, round });
    return waitNext();
  };
  // small and large alternate (rounds) against drift in the shared machine's load; the
  // burst runs on the last large setup; the linear chain (slow to fill) comes once at the end.
  const rounds = quick ? 1 : 3;
  for (let round = 0; round < rounds; round++) {
    let e = await compiled('pssmall', 10, 10);
    if (!(await measure('small', 10, 10, round))) return;
    await e.stop();
    dropTable('pssmall');
    e = await compiled('pslarge', big.rules, big.enclaves);
    if (!(await measure('large', big.rules, big.enclaves, round))) return;
    if (round === rounds - 1) await burst(e, big);
    await e.stop();
    dropTable('pslarge');
    e = await compiled('pscat', big.rules, big.enclaves, true);
    if (!(await measure('category', big.rules, big.enclaves, round))) return;
    if (round === rounds - 1) await burst(e, big, true);
    await e.stop();
    dropTable('pscat');
  }
  await linear('pslinear', big.rules, big.enclaves);
  if (!(await measure('linear', big.rules, big.enclaves, 0))) return;
  dropTable('pslinear');
  emit({ event: 'done' });
}

main().catch((e: unknown) => {
  emit({ event: 'error', error: e instanceof Error ? e.message : String(e) });
  process.exit(1);
});
