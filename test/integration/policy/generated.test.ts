/**
 * Generated policies on real nftables: the dispatch-shaped ruleset (verdict map → per-app
 * chains) installed by NftEnforcer decides real UDP packets exactly like the reference
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
import { GEN_ADDRS, GEN_APPS, GEN_REGS, genPackets, genPolicy } from '../../unit/policy/policy-gen.js';

after(cleanupAll);

const SEEDS = [11, 23, 37];

for (const seed of SEEDS) {
  test(
    `generated policy (seed ${seed}): real packets follow the evaluator`,
    { timeout: 120_000 },
    async () => {
      const ns = await createNetns('gen');
      for (const a of GEN_ADDRS) await ns.ip('addr', 'add', `${a}/32`, 'dev', 'lo');
      await ns.exec('nft', [
        'add table ip ctrack; add chain ip ctrack c { type filter hook prerouting priority -150; }; add rule ip ctrack c ct state new counter; add chain ip ctrack o { type filter hook output priority -150; }; add rule ip ctrack o ct state new counter',
      ]);
      const text = genPolicy(seed, 30, `gen${process.pid % 100000}`, ['input']);
      const packets = genPackets('input');
      assert.match(text, /src-app: /, 'the policy dispatches on source apps');
      const leave = ['192.168.28.2', '192.168.28.4'];
      const input: WorkerInput = {
        policy: text,
        apps: GEN_APPS,
        regs: GEN_REGS,
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
      assert.deepEqual(diff(out.phase1, accepted(GEN_REGS)), [], text);
      assert.deepEqual(diff(out.phase2, accepted(GEN_REGS.filter((x) => !leave.includes(x.ip)))), [], text);
      assert.equal(out.joinBatches, 1, 'joinMany is one kernel transaction');
      assert.equal(out.leaveBatches, 1, 'leaveMany is one kernel transaction');
      assert.equal(out.conntrackAfter, 0, 'no conntrack entry of a leaver survives its purge');
      for (const [name, elems] of Object.entries(out.setsAfterLeave)) {
        for (const ip of leave) assert.ok(!elems.includes(ip), `${ip} still in ${name}`);
      }
    },
  );
}
