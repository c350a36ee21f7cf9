/**
 * Generated policies on real nftables: the dispatch-shaped ruleset (verdict map → per-app
 * chains jumping to shared segment and block chains) installed by NftEnforcer decides real UDP packets exactly like the reference
 * evaluator, before and after enclaves leave; joinMany and leaveMany are one kernel
 * transaction each, and the conntrack entries of leavers are gone once purged() resolved.
 * Runs in a fresh network namespace (root needed).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { createNetns, cleanupAll } from '../../helpers/netns.js';
import { repoRoot } from '../../helpers/cli.js';
import { parsePolicy } from '../../../src/policy/parse.js';
import { appDirectoryFromList } from '../../../src/policy/apps.js';
import { evaluate, type Registration } from '../../../src/policy/evaluate.js';
import { parseIpv4 } from '../../../src/util/ipv4.js';
import type { WorkerInput, WorkerOutput } from './semantics-worker.js';
import {
  GEN_ADDRS,
  GEN_APPS,
  GEN_CAT_CHANGES,
  GEN_CAT_REGS,
  GEN_REGS,
  genCatPolicy,
  genPackets,
  genPolicy,
  type GenReg,
} from '../../unit/policy/policy-gen.js';

after(cleanupAll);

// [seed, rules, kind]: the 150-rule policy has block chains over its segments (jumps two
// deep); the category policies dispatch src-cat runs through category maps to profile chains
// the enforcer creates at join, with enclaves in several categories that change while live.
const SEEDS: [number, number, 'app' | 'category'][] = [
  [11, 30, 'app'],
  [23, 30, 'app'],
  [37, 30, 'app'],
  [601, 150, 'app'],
  [5, 40, 'category'],
  [17, 60, 'category'],
];

for (const [seed, size, kind] of SEEDS) {
  const cat = kind === 'category';
  const startRegs: GenReg[] = cat ? GEN_CAT_REGS : GEN_REGS;
  // After the category changes (category policies only): what the leaves start from.
  let changed = startRegs;
  for (const c of cat ? GEN_CAT_CHANGES : [])
    changed = changed.map((r) => (r.mrEnclave === c.mrEnclave ? { ...r, categories: c.categories } : r));
  test(
    `generated ${kind} policy (seed ${seed}, ${size} rules): real packets follow the evaluator`,
    { timeout: 120_000 },
    async () => {
      const ns = await createNetns('gen');
      for (const a of GEN_ADDRS) await ns.ip('addr', 'add', `${a}/32`, 'dev', 'lo');
      await ns.exec('nft', [
        'add table ip ctrack; add chain ip ctrack c { type filter hook prerouting priority -150; }; add rule ip ctrack c ct state new counter; add chain ip ctrack o { type filter hook output priority -150; }; add rule ip ctrack o ct state new counter',
      ]);
      const table = `gen${process.pid % 100000}`;
      const text = cat ? genCatPolicy(seed, size, table, ['input']) : genPolicy(seed, size, table, ['input']);
      const packets = genPackets('input');
      assert.match(
        text,
        cat ? /src-cat: / : /src-app: /,
        'the policy dispatches on source apps / categories',
      );
      const leave = ['192.168.28.2', '192.168.28.4'];
      const input: WorkerInput = {
        policy: text,
        apps: GEN_APPS,
        regs: startRegs,
        ...(cat && { changes: GEN_CAT_CHANGES }),
        packets: packets.map(({ id, src, dst, dport }) => ({ id, src, dst, dport })),
        leave,
        many: true,
      };
      const worker = join(repoRoot, 'dist', 'test', 'integration', 'policy', 'semantics-worker.js');
      const r = await ns.exec(process.execPath, [worker], {
        input: JSON.stringify(input),
        timeoutMs: 90_000,
      });
      assert.equal(r.code, 0, r.stderr);
      const out = JSON.parse(r.stdout) as WorkerOutput;

      const policy = parsePolicy(text, 'gen.yaml');
      const dir = appDirectoryFromList(GEN_APPS);
      const accepted = (live: typeof GEN_REGS): number[] => {
        const regs = new Map<number, Registration>(
          live.map((x) => [
            parseIpv4(x.ip),
            { mrEnclave: x.mrEnclave, categories: x.categories, hostIp: parseIpv4(x.host) },
          ]),
        );
        return packets
          .filter(
            (p) =>
              evaluate(policy, { ...p, src: parseIpv4(p.src), dst: parseIpv4(p.dst) }, regs, dir).action ===
              'accept',
          )
          .map((p) => p.id);
      };
      const diff = (got: number[], want: number[]): string[] => [
        ...want
          .filter((x) => !got.includes(x))
          .map((id) => `expected accept, dropped: ${JSON.stringify(packets[id])}`),
        ...got
          .filter((x) => !want.includes(x))
          .map((id) => `expected drop, accepted: ${JSON.stringify(packets[id])}`),
      ];
      assert.deepEqual(diff(out.phase1, accepted(startRegs)), [], text);
      if (cat) {
        assert.deepEqual(
          diff(out.phaseChanged ?? [], accepted(changed)),
          [],
          `after category changes:\n${text}`,
        );
        assert.ok(out.profileChains > 0, 'the joins created profile chains');
      }
      assert.deepEqual(diff(out.phase2, accepted(changed.filter((x) => !leave.includes(x.ip)))), [], text);
      assert.equal(out.joinBatches, 1, 'joinMany is one kernel transaction');
      assert.equal(out.leaveBatches, 1, 'leaveMany is one kernel transaction');
      assert.equal(out.conntrackAfter, 0, 'no conntrack entry of a leaver survives its purge');
      for (const [name, elems] of Object.entries(out.setsAfterLeave)) {
        for (const ip of leave) assert.ok(!elems.includes(ip), `${ip} still in ${name}`);
      }
    },
  );
}
