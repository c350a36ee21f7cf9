/**
 * Benchmark worker for section 3, run inside a fresh network namespace (the "router" of
 * bench/enforcement.ts) so that its nftables table and conntrack purges touch nothing else.
 *
 *  1. generates a policy of 1,000 rules over 1,000 apps and 100 categories, times parsing +
 *     compiling, and applying it (NftEnforcer.start: one `nft -j -f` transaction);
 *  2. times single joins and leaves (set updates over netlink; leave includes the conntrack
 *     purge of the enclave IP), one at a time;
 *  3. times a burst of 1,000 concurrent joins, then 1,000 leaves (coalesced into batches);
 *  4. registers 10, then 10,000 enclaves (10.128.0.1, …; 10.128.0.10 is the traffic source of
 *     the per-packet test) and waits for "next" on stdin after each, so the parent can send
 *     traffic through the namespace.
 * Results are JSON lines on stdout.
 */
import { createInterface } from 'node:readline';
import { NftEnforcer } from '../../src/enforce/nft.js';
import type { EnclaveRegistration } from '../../src/enforce/types.js';
import { purgeConntrack } from '../../src/enforce/conntrack.js';
import { compilePolicy, parsePolicy } from '../../src/policy/index.js';

const APPS = 1000;
const CATEGORIES = 100;
const RULES = 1000;
const quick = process.argv.includes('--quick');
const table = `bnch${process.pid}`;

const emit = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);
const app = (i: number) => (i % APPS).toString(16).padStart(8, '0').repeat(8);
const cat = (i: number) => `cat${i % CATEGORIES}`;

function policyText(): string {
  const lines = ['version: 1', `table: ${table}`, 'rules:'];
  for (let i = 0; i < RULES; i++) {
    lines.push(`  - name: r${i}`, '    chain: forward', `    src-app: "${app(i)}"`);
    if (i % 2 === 0) lines.push('    protocol: tcp', `    dport: ${10000 + i}`);
    else lines.push(`    dst-cat: ${cat(Math.floor(i / 10))}`);
    lines.push('    action: accept');
  }
  return `${lines.join('\n')}\n`;
}

function reg(i: number): EnclaveRegistration {
  const ip = ((10 << 24) | (128 << 16)) + 1 + i;
  return {
    enclaveIp: ip >>> 0,
    mrEnclave: Buffer.from(app(i), 'hex'),
    mrSigner: Buffer.alloc(32, 0xab),
    hostIp: ((10 << 24) | (52 << 16) | 2) >>> 0,
    categories: [cat(i), cat(i + 37)],
  };
}

const ms = (t0: number) => performance.now() - t0;
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function main(): Promise<void> {
  let t0 = performance.now();
  const text = policyText();
  const compiled = compilePolicy(parsePolicy(text, 'bench-policy'));
  const compileMs = ms(t0);
  // The per-packet phase re-registers thousands of enclaves; it skips the purges (not measured there).
  let purging = true;
  const enforcer = new NftEnforcer({
    policy: compiled,
    purge: (ip) => (purging ? purgeConntrack(ip) : Promise.resolve(0)),
  });
  t0 = performance.now();
  await enforcer.start();
  const applyMs = ms(t0);
  emit({
    event: 'compiled',
    rules: compiled.rules.length,
    sets: compiled.sets.length,
    apps: APPS,
    categories: CATEGORIES,
    compileMs,
    applyMs,
  });
  try {
    // Single join/leave, one at a time.
    const joins: number[] = [];
    const leaves: number[] = [];
    const n = quick ? 100 : 500;
    for (let i = 0; i < n; i++) {
      const r = reg(20000 + i);
      t0 = performance.now();
      await enforcer.join(r);
      joins.push(ms(t0));
      t0 = performance.now();
      await enforcer.leave(r);
      await enforcer.purged(r.enclaveIp); // the row reports leave including its purge
      leaves.push(ms(t0));
    }
    // The conntrack purge alone (what leave adds to the set update).
    const purges: number[] = [];
    for (let i = 0; i < Math.min(n, 100); i++) {
      t0 = performance.now();
      await purgeConntrack(reg(20000 + i).enclaveIp);
      purges.push(ms(t0));
    }
    emit({ event: 'single', joinMs: joins, leaveMs: leaves, purgeMs: purges });
    // Bursts of 1,000.
    const burst = Array.from({ length: 1000 }, (_, i) => reg(30000 + i));
    let b0 = enforcer.stats.batches;
    t0 = performance.now();
    await Promise.all(burst.map((r) => enforcer.join(r)));
    const burstJoinMs = ms(t0);
    const joinBatches = enforcer.stats.batches - b0;
    b0 = enforcer.stats.batches;
    t0 = performance.now();
    await Promise.all(burst.map((r) => enforcer.leave(r)));
    const burstLeaveMs = ms(t0);
    emit({
      event: 'burst',
      size: burst.length,
      joinMs: burstJoinMs,
      joinBatches,
      leaveMs: burstLeaveMs,
      leaveBatches: enforcer.stats.batches - b0,
    });
    // Per-packet: 10, then 10,000 registered enclaves, alternating (rounds) against drift.
    purging = false;
    const all = Array.from({ length: 10000 }, (_, i) => reg(i));
    let have = 0;
    const rounds = quick ? 1 : 2;
    for (let round = 0; round < rounds; round++) {
      for (const count of [10, 10000]) {
        if (count > have) await Promise.all(all.slice(have, count).map((r) => enforcer.join(r)));
        else await Promise.all(all.slice(count, have).map((r) => enforcer.leave(r)));
        have = count;
        emit({ event: 'ready', enclaves: count, round });
        const next = await lines.next();
        if (next.done) return;
      }
    }
  } finally {
    await enforcer.stop();
  }
  emit({ event: 'done' });
}

main()
  .then(() => process.exit(0))
  .catch((err: unknown) => {
    emit({ event: 'error', error: err instanceof Error ? err.message : String(err) });
    process.exit(1);
  });
