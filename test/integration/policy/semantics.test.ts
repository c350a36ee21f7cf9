/**
 * The compiled nftables rules and the reference evaluator of the kernel match semantics
 * (src/policy/evaluate.ts) must agree on every generated packet, negations included,
 * before and after enclaves disconnect. Runs in a fresh network namespace (root needed).
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

after(cleanupAll);

const A = 'a1'.repeat(32);
const B = 'b2'.repeat(32);
const C = 'c3'.repeat(32);
const D = 'd4'.repeat(32);

const POLICY = `
version: 1
table: sgpol${process.pid}
defaults: { input: drop }
rules:
  - { name: app-b-dropped, chain: input, action: drop, src-app: ${B} }
  - { name: not-web, chain: input, action: accept, src-cat: '!Web', protocol: udp, dport: 7001 }
  - { name: host-outside-10, chain: input, action: drop, src-host: { not: 10.0.0.0/8 }, protocol: udp, dport: 7002 }
  - { name: port-7002, chain: input, action: accept, protocol: udp, dport: 7002 }
  - { name: not-app-a, chain: input, action: accept, src-app: '!${A}', protocol: udp, dport: 7003 }
  - { name: to-web, chain: input, action: accept, dst-cat: Web, protocol: udp, dport: 7004 }
  - { name: web-to-not-172, chain: input, action: accept, src-cat: Web, dst-host: '!172.16.0.0/12', protocol: udp, dport: 7005 }
  - { name: multi-by-name, chain: input, action: accept, src-app: multi, protocol: udp, dport: 7006 }
  - { name: not-multi-dst, chain: input, action: accept, dst-app: { not: multi }, src-host: 10.0.0.0/8, protocol: udp, dport: 7007 }
  - { name: plain-l3, chain: input, action: accept, src-addr: 10.5.0.0/16, protocol: udp, dport: [7008, 7009] }
  - { name: iface-not-lo, chain: input, action: accept, in-iface: { not: lo }, protocol: udp, dport: 7010 }
  - { name: iface-wildcard, chain: input, action: accept, in-iface: 'l+', src-cat: Mail, protocol: udp, dport: 7010 }
`;

const RELOAD = `
version: 1
table: sgpol${process.pid}
defaults: { input: drop }
rules:
  - { name: mail-7001, chain: input, action: accept, src-cat: Mail, protocol: udp, dport: 7001 }
  - { name: not-172-hosts, chain: input, action: accept, src-host: { not: 172.16.0.0/12 }, dst-cat: { not: Mail }, protocol: udp, dport: [7002, 7003] }
  - { name: to-app-a, chain: input, action: accept, dst-app: ${A}, protocol: udp }
  - { name: from-gw-net, chain: input, action: accept, src-addr: 10.5.0.0/16, dst-host: 10.0.0.0/8, protocol: udp, dport: 7004 }
`;

test(
  'compiled nftables rules agree with the reference evaluator on every packet',
  { timeout: 120_000 },
  async () => {
    await runCase(undefined);
  },
);

test(
  'a policy reload keeps sessions: new sets are filled from live enclaves',
  { timeout: 120_000 },
  async () => {
    await runCase(RELOAD);
  },
);

async function runCase(reload: string | undefined): Promise<void> {
  const ns = await createNetns('pol');
  const apps = [
    { name: 'alpha', mrEnclave: A },
    { name: 'beta', mrEnclave: B },
    { name: 'multi', mrEnclave: C },
    { name: 'multi', mrEnclave: D },
  ];
  const regs: WorkerInput['regs'] = [
    { ip: '192.168.28.2', mrEnclave: A, categories: ['Web'], host: '10.1.1.1' },
    { ip: '192.168.28.3', mrEnclave: B, categories: [], host: '10.2.2.2' },
    { ip: '192.168.28.4', mrEnclave: C, categories: ['Mail'], host: '172.16.5.5' },
    { ip: '192.168.28.5', mrEnclave: D, categories: ['Web', 'Mail'], host: '192.0.2.7' },
  ];
  const sources = [
    '192.168.28.2',
    '192.168.28.3',
    '192.168.28.4',
    '192.168.28.5',
    '192.168.28.6',
    '10.5.0.1',
  ];
  const dests = ['192.168.28.1', '192.168.28.2', '192.168.28.5', '192.168.28.6'];
  for (const a of new Set([...sources, ...dests])) await ns.ip('addr', 'add', `${a}/32`, 'dev', 'lo');
  // A ct expression makes the namespace track connections (the gateway host does).
  await ns.exec('nft', [
    'add table ip ctrack; add chain ip ctrack c { type filter hook prerouting priority -150; }; add rule ip ctrack c ct state new counter; add chain ip ctrack o { type filter hook output priority -150; }; add rule ip ctrack o ct state new counter',
  ]);
  const packets: WorkerInput['packets'] = [];
  for (const src of sources) {
    for (const dst of dests)
      for (let dport = 7001; dport <= 7010; dport += 1) packets.push({ id: packets.length, src, dst, dport });
  }
  const leave = ['192.168.28.2', '192.168.28.5'];
  const input: WorkerInput = {
    policy: POLICY,
    apps,
    regs,
    packets,
    leave,
    ...(reload !== undefined && { reload }),
  };
  const worker = join(repoRoot, 'dist', 'test', 'integration', 'policy', 'semantics-worker.js');
  const r = await ns.exec(process.execPath, [worker], { input: JSON.stringify(input), timeoutMs: 60_000 });
  const out = JSON.parse(r.stdout) as WorkerOutput;

  const dir = appDirectoryFromList(apps);
  const expected = (live: WorkerInput['regs'], text = POLICY): number[] => {
    const policy = parsePolicy(text, 'semantics.yaml');
    const m = new Map<number, Registration>(
      live.map((x) => [
        parseIpv4(x.ip),
        { mrEnclave: x.mrEnclave, categories: x.categories, hostIp: parseIpv4(x.host) },
      ]),
    );
    return packets
      .filter((p) => {
        const v = evaluate(
          policy,
          {
            chain: 'input',
            src: parseIpv4(p.src),
            dst: parseIpv4(p.dst),
            protocol: 'udp',
            dport: p.dport,
            iif: 'lo',
          },
          m,
          dir,
        );
        return v.action === 'accept';
      })
      .map((p) => p.id);
  };
  const describe = (ids: number[]): string[] => ids.map((id) => JSON.stringify(packets[id]));
  const diff = (got: number[], want: number[]): string[] => [
    ...describe(want.filter((x) => !got.includes(x))).map((s) => `expected accept, was dropped: ${s}`),
    ...describe(got.filter((x) => !want.includes(x))).map((s) => `expected drop, was accepted: ${s}`),
  ];
  const want1 = expected(regs);
  assert.ok(want1.length > 20 && want1.length < packets.length - 20, 'the case mix exercises both verdicts');
  assert.deepEqual(diff(out.phase1, want1), []);
  // After two enclaves disconnect: their set entries and conntrack entries are gone, and
  // every verdict follows the evaluator with them unregistered.
  for (const [name, elems] of Object.entries(out.setsAfterLeave)) {
    for (const ip of leave) assert.ok(!elems.includes(ip), `${ip} still in set ${name}`);
  }
  assert.ok(out.setsAfterLeave.enclaves?.includes('192.168.28.3'));
  assert.ok(out.conntrackBefore > 0, 'accepted flows created conntrack entries');
  assert.equal(out.conntrackAfter, 0);
  if (reload !== undefined) {
    const wantR = expected(regs, reload);
    assert.ok(wantR.length > 10 && wantR.length < packets.length - 10, 'the reload exercises both verdicts');
    assert.deepEqual(diff(out.phaseReload ?? [], wantR), []);
    assert.deepEqual(out.setsAfterLeave.cat_Mail, ['192.168.28.4'], 'filled at reload, minus the leaver');
  }
  const want2 = expected(
    regs.filter((x) => !leave.includes(x.ip)),
    reload ?? POLICY,
  );
  assert.deepEqual(diff(out.phase2, want2), []);
}
