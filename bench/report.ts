/**
 * Renders BENCHMARKS.md from the raw results: tables with ratios, the targets of issue 8
 * (met / missed), machine and date, how to reproduce, and the hand-written findings of
 * bench/findings.md (profiles and design conclusions that numbers alone do not tell).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DatapathResult, SystemResult, TestName, TestResult } from './datapath.js';
import type { AdmissionResult } from './admission.js';
import type { EnforcementResult } from './enforcement.js';
import type { MemoryResult } from './memory.js';
import type { ProfileSummary } from './profile.js';
import { repoRoot } from './lib/lab.js';
import type { MachineInfo, OpensslSpeed } from './lib/util.js';

export interface BenchResults {
  version: 1;
  mode: 'quick' | 'full';
  machine: MachineInfo;
  opensslSpeed?: OpensslSpeed;
  sections: {
    datapath?: DatapathResult;
    admission?: AdmissionResult;
    enforcement?: EnforcementResult;
    memory?: MemoryResult;
    profile?: ProfileSummary[];
  };
  errors: Record<string, string>;
  durationSeconds: number;
  /** /proc/loadavg at the end of the run. */
  loadAverageEnd?: string;
  /** SENG_BENCH_GATEWAY_WRAP, when an experiment prefixed the gateway's command. */
  gatewayWrap?: string;
}

const fmt = (x: number | undefined, digits = 0): string => {
  if (x === undefined || !Number.isFinite(x)) return '—';
  return x.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
};
const ratio = (a: number | undefined, b: number | undefined): number =>
  a !== undefined && b !== undefined && b > 0 ? a / b : NaN;
const row = (cells: string[]) => `| ${cells.join(' | ')} |`;
const table = (head: string[], rows: string[][]) =>
  [row(head), row(head.map(() => '---')), ...rows.map(row)].join('\n');

interface Target {
  target: string;
  value: string;
  met: boolean | undefined;
}

function find(d: DatapathResult | undefined, system: string, test: TestName): TestResult | undefined {
  return d?.systems.find((s) => s.system === system)?.results.find((r) => r.test === test && !r.error);
}

function metric(r: TestResult | undefined, test: TestName): number | undefined {
  if (!r) return undefined;
  return test.startsWith('tcp') ? r.mbps : r.pps;
}

function targets(res: BenchResults): Target[] {
  const out: Target[] = [];
  const d = res.sections.datapath;
  for (const suite of ['rsa', 'ec']) {
    for (const test of ['tcp1', 'tcp4', 'udp1400', 'udp64'] as TestName[]) {
      const sr = find(d, `seng-${suite}`, test);
      const r = sr?.ratioToOpenvpn ?? ratio(metric(sr, test), metric(find(d, 'openvpn', test), test));
      out.push({
        target: `seng-${suite} ${test} ≥ 1.0× OpenVPN`,
        value: Number.isFinite(r) ? `${fmt(r, 2)}×` : 'not measured',
        met: Number.isFinite(r) ? r >= 1 : undefined,
      });
    }
  }
  const a = res.sections.admission;
  for (const suite of ['ec', 'rsa']) {
    const runs = a?.runs.filter((r) => r.suite === suite && r.gatewayCores === 2 && !r.error) ?? [];
    const best = runs.reduce<(typeof runs)[number] | undefined>(
      (m, r) => (!m || r.perSecond > m.perSecond ? r : m),
      undefined,
    );
    const r = best?.ratioToCryptoLimit;
    const cap = Math.max(...runs.map((x) => x.capacityRatioToCryptoLimit ?? NaN).filter(Number.isFinite));
    out.push({
      target: `admissions (${suite}, best concurrency) ≥ 0.5× crypto-only limit`,
      value:
        r !== undefined
          ? `${fmt(r, 2)}× delivered (c=${best?.concurrency}); ${fmt(cap, 2)}× per gateway CPU-second`
          : 'not measured',
      met: r !== undefined ? r >= 0.5 : undefined,
    });
  }
  const e = res.sections.enforcement;
  out.push({
    target: 'nftables join median ≤ 1 ms',
    value: e?.join ? `${fmt(e.join.median, 3)} ms` : 'not measured',
    met: e?.join ? e.join.median <= 1 : undefined,
  });
  out.push({
    target: 'nftables leave (incl. conntrack purge) median ≤ 1 ms',
    value: e?.leave ? `${fmt(e.leave.median, 3)} ms` : 'not measured',
    met: e?.leave ? e.leave.median <= 1 : undefined,
  });
  out.push({
    target: 'burst of 1,000 joins batched',
    value: e?.burst ? `${e.burst.joinBatches} transactions, ${fmt(e.burst.joinMs, 1)} ms` : 'not measured',
    met: e?.burst ? e.burst.joinBatches <= 10 : undefined,
  });
  const a10 = meanCost(e, 10);
  const a10k = meanCost(e, 10000);
  if (a10 && a10k) {
    // Max forwarding rate is the robust figure; machine-wide CPU per datagram is swamped by other load.
    const r = ratio(a10k.pps, a10.pps);
    out.push({
      target: 'per-packet cost with 10,000 vs 10 enclaves does not grow (max rate ≥ 0.9×)',
      value: `${fmt(r, 2)}× max forwarding rate (${fmt(a10k.pps)} vs ${fmt(a10.pps)} pkt/s)`,
      met: Number.isFinite(r) ? r >= 0.9 : undefined,
    });
  }
  const m = res.sections.memory;
  const last = m?.points[m.points.length - 1];
  if (last?.kibPerSession !== undefined) {
    out.push({
      target: '≤ 10 KiB gateway memory per idle session',
      value: `${fmt(last.kibPerSession, 2)} KiB (${fmt(last.sessions)} sessions)`,
      met: last.kibPerSession <= 10,
    });
  }
  return out;
}

function meanCost(
  e: EnforcementResult | undefined,
  enclaves: number,
): { cpu: number; pps: number } | undefined {
  const xs = e?.packetCost.filter((p) => p.enclaves === enclaves && !p.error) ?? [];
  if (!xs.length) return undefined;
  const mean = (f: (p: (typeof xs)[number]) => number) => xs.reduce((a, p) => a + f(p), 0) / xs.length;
  return { cpu: mean((p) => p.cpuMicrosecondsPerPacket), pps: mean((p) => p.maxPps) };
}

function datapathTables(d: DatapathResult): string {
  const openvpn = d.systems.find((s) => s.system === 'openvpn');
  const measured = d.systems.filter((s) => s.available);
  const parts: string[] = [];
  const head = [
    'system',
    'TCP 1 stream Mbit/s',
    'TCP 4 streams Mbit/s',
    'UDP 1400 B pkt/s',
    'UDP 64 B pkt/s',
  ];
  parts.push(
    table(
      head,
      measured.map((s) => [
        `**${s.system}**`,
        ...(['tcp1', 'tcp4', 'udp1400', 'udp64'] as TestName[]).map((t) => cell(s, t, openvpn)),
      ]),
    ),
  );
  parts.push(
    '',
    `Each figure is the median of ${d.rounds} sample(s). Ratios in parentheses are to OpenVPN in this run; for seng they are the lower median of the paired ratios (OpenVPN and seng measured back to back, alternating, per round; with 2 rounds the lower of the two — conservative), so they can differ from the ratio of the two medians shown. UDP: datagrams per second that reached the service (iperf3 \`-b 0\`, sender unlimited).`,
    '',
    '**CPU seconds per GB delivered** (gateway-side process / client-side process; for raw veth the forwarding happens in softirq and is not attributed):',
    '',
    table(
      ['system', 'TCP 1', 'TCP 4', 'UDP 1400', 'UDP 64'],
      measured
        .filter((s) => s.system !== 'raw')
        .map((s) => [
          `**${s.system}**`,
          ...(['tcp1', 'tcp4', 'udp1400', 'udp64'] as TestName[]).map((t) => {
            const r = s.results.find((x) => x.test === t && !x.error);
            return r ? `${fmt(r.cpuPerGB.gateway, 1)} / ${fmt(r.cpuPerGB.client, 1)}` : '—';
          }),
        ]),
    ),
    '',
    '**Utilisation during the test** (CPU seconds ÷ wall seconds; 1.00 = one core saturated) — shows which process limits:',
    '',
    table(
      ['system', 'TCP 1 gw / client', 'TCP 4 gw / client', 'UDP 1400 gw / client', 'UDP 64 gw / client'],
      measured
        .filter((s) => s.system !== 'raw')
        .map((s) => [
          `**${s.system}**`,
          ...(['tcp1', 'tcp4', 'udp1400', 'udp64'] as TestName[]).map((t) => {
            const r = s.results.find((x) => x.test === t && !x.error);
            return r
              ? `${fmt((r.cpu.gateway ?? NaN) / r.seconds, 2)} / ${fmt((r.cpu.client ?? NaN) / r.seconds, 2)}`
              : '—';
          }),
        ]),
    ),
  );
  for (const s of d.systems) {
    if (!s.available) parts.push('', `- ${s.system}: not measured — ${s.note ?? ''}`);
    if (s.error) parts.push('', `- ${s.system}: **error** — ${s.error}`);
    for (const r of s.results) if (r.error) parts.push('', `- ${s.system} ${r.test}: **error** — ${r.error}`);
  }
  return parts.join('\n');
}

function cell(s: SystemResult, t: TestName, openvpn: SystemResult | undefined): string {
  const r = s.results.find((x) => x.test === t && !x.error);
  const v = metric(r, t);
  if (v === undefined) return '—';
  const o = metric(
    openvpn?.results.find((x) => x.test === t && !x.error),
    t,
  );
  const rr = s.system === 'openvpn' ? NaN : (r?.ratioToOpenvpn ?? ratio(v, o));
  return `${fmt(v)}${Number.isFinite(rr) ? ` (${fmt(rr, 2)}×)` : ''}`;
}

function scalingTable(res: BenchResults): string {
  const rows: string[][] = [];
  for (const s of res.sections.datapath?.systems ?? []) {
    const two = s.results.find((r) => r.test === 'tcp1' && !r.error);
    const one = s.oneCore && !s.oneCore.error ? s.oneCore : undefined;
    if (!two && !one) continue;
    rows.push([
      `data path ${s.system}, TCP 1 stream (Mbit/s)`,
      fmt(one?.mbps),
      fmt(two?.mbps),
      fmt(ratio(two?.mbps, one?.mbps), 2),
    ]);
  }
  for (const suite of ['ec', 'rsa']) {
    const runs =
      res.sections.admission?.runs.filter((r) => r.suite === suite && r.concurrency === 16 && !r.error) ?? [];
    const one = runs.find((r) => r.gatewayCores === 1);
    const two = runs.find((r) => r.gatewayCores === 2);
    if (one || two)
      rows.push([
        `admission ${suite}, 16 clients (setups/s)`,
        fmt(one?.perSecond, 1),
        fmt(two?.perSecond, 1),
        fmt(ratio(two?.perSecond, one?.perSecond), 2),
      ]);
  }
  if (!rows.length) return '_not measured_';
  return [
    table(['figure', '1 core', '2 cores', '2 / 1'], rows),
    '',
    'Data path, 1 core: every process of the system (gateway, client, iperf3 client and server) pinned to CPU 0 with `taskset`; 2 cores: unpinned. Admission, 1 core: only the gateway pinned to CPU 0 (the simulated clients stay free). Enforcement runs in the kernel (softirq on whichever CPU receives) and memory does not depend on cores; they are not repeated.',
  ].join('\n');
}

function admissionTables(a: AdmissionResult): string {
  const parts: string[] = [];
  parts.push(
    table(
      ['suite', 'crypto-only limit (setups/s, one core)', 'model'],
      a.cryptoLimits.map((l) => [l.suite, fmt(l.setupsPerSecond, 1), l.model]),
    ),
    '',
    table(
      [
        'suite',
        'clients',
        'setups/s',
        '× limit',
        'gateway busy',
        'setups per gateway CPU-s',
        '× limit',
        'latency median / p99 ms',
        'failures',
      ],
      a.runs
        .filter((r) => r.gatewayCores === 2)
        .map((r) =>
          r.error
            ? [r.suite, String(r.concurrency), `error: ${r.error}`, '', '', '', '', '', '']
            : [
                r.suite,
                String(r.concurrency),
                fmt(r.perSecond, 1),
                fmt(r.ratioToCryptoLimit, 2),
                fmt(r.gatewayUtilization, 2),
                fmt(r.perGatewayCpuSecond, 1),
                fmt(r.capacityRatioToCryptoLimit, 2),
                `${fmt(r.latencyMs.median, 1)} / ${fmt(r.latencyMs.p99, 1)}`,
                String(r.failures),
              ],
        ),
    ),
    '',
    ...a.runs
      .filter((r) => r.failures > 0)
      .map(
        (r) =>
          `- ${r.suite}, ${r.concurrency} clients: ${r.failures} failed setups; client side: ${Object.entries(
            r.errors ?? {},
          )
            .map(([k, v]) => `${v}× "${k}"`)
            .join('; ')}${
            r.gatewayRejections
              ? `; gateway log: ${Object.entries(r.gatewayRejections)
                  .map(([k, v]) => `${v}× "${k}"`)
                  .join('; ')}`
              : ''
          }`,
      ),
    '',
    '"setups/s" is what the gateway delivered while the simulated clients (same machine, other core) drove it; "setups per gateway CPU-s" divides by the CPU time the gateway process used and so is the admission capacity of one gateway core, independent of how fast the clients could go.',
  );
  return parts.join('\n');
}

function enforcementTables(e: EnforcementResult): string {
  const parts: string[] = [];
  if (e.policy)
    parts.push(
      `- Policy of ${fmt(e.policy.rules)} rules over ${fmt(e.policy.apps)} apps and ${fmt(e.policy.categories)} categories (${fmt(e.policy.sets)} nftables sets): parse + compile **${fmt(e.policy.compileMs, 1)} ms**, apply (one \`nft -j -f\` transaction) **${fmt(e.policy.applyMs, 1)} ms**.`,
    );
  if (e.join && e.leave)
    parts.push(
      `- One enclave at a time (${e.join.n} samples): join median **${fmt(e.join.median, 3)} ms** (p90 ${fmt(e.join.p90, 3)}, p99 ${fmt(e.join.p99, 3)}); leave incl. conntrack purge median **${fmt(e.leave.median, 3)} ms** (p90 ${fmt(e.leave.p90, 3)}, p99 ${fmt(e.leave.p99, 3)}).`,
    );
  if (e.burst)
    parts.push(
      `- Burst of ${fmt(e.burst.size)} concurrent joins: **${fmt(e.burst.joinMs, 1)} ms** in ${e.burst.joinBatches} kernel transaction(s); ${fmt(e.burst.size)} leaves: **${fmt(e.burst.leaveMs, 1)} ms** in ${e.burst.leaveBatches} transaction(s) (plus one conntrack purge per enclave).`,
    );
  if (e.packetCost.length)
    parts.push(
      '',
      table(
        [
          'round',
          'registered enclaves',
          'max 64 B datagrams/s through the forward chain',
          'machine CPU µs per datagram at the fixed rate',
          'fixed rate: sent / delivered pkt/s',
        ],
        e.packetCost.map((p) =>
          p.error
            ? [String(p.round + 1), fmt(p.enclaves), `error: ${p.error}`, '', '']
            : [
                String(p.round + 1),
                fmt(p.enclaves),
                fmt(p.maxPps),
                fmt(p.cpuMicrosecondsPerPacket, 2),
                `${fmt(p.fixedRatePps)} / ${fmt(p.fixedRateDelivered)}`,
              ],
        ),
      ),
      '',
      "The traffic source is itself a registered enclave, so every rule does its hash-set lookups (enclaves set, app set, category set) on each datagram. Rounds alternate 10 and 10,000 registrations so that drift in the shared machine's load shows up as disagreement between rounds. CPU per datagram is machine-wide busy time (/proc/stat) divided by datagrams sent, so it includes iperf3 and anything else running on the shared machine — it is too noisy to judge by; the maximum forwarding rate is the figure the target uses.",
    );
  for (const err of e.errors) parts.push(`- **error**: ${err}`);
  return parts.join('\n');
}

function profileTables(ps: ProfileSummary[]): string {
  const parts: string[] = [];
  for (const p of ps) {
    parts.push(
      `**${p.process}, ${p.scenario}** (${p.seconds} s): ` +
        Object.entries(p.buckets)
          .sort((a, b) => b[1] - a[1])
          .map(([k, v]) => `${k} ${fmt(v * 100)} %`)
          .join(', '),
      '',
      table(
        ['function (self time)', 'share of busy time'],
        p.top.slice(0, 8).map((t) => [`\`${t.fn}\``, `${fmt(t.share * 100, 1)} %`]),
      ),
      '',
    );
  }
  parts.push(
    '"(program)" is time in native code with no JS frame on the stack (libuv, syscalls, the addons\' work outside a JS call); time inside an addon function called from JS is charged to the JS function that called it (e.g. the DTLS session\'s send/receive wrappers).',
  );
  return parts.join('\n');
}

function memoryTable(m: MemoryResult): string {
  return [
    table(
      [
        'idle sessions',
        'sessions open',
        'gateway VmRSS (MiB)',
        'KiB per session',
        'JS heap used / committed after last major GC (MiB)',
        'time to open (s)',
      ],
      m.points.map((p) => [
        fmt(p.sessions),
        fmt(p.live),
        fmt(p.rssKiB / 1024, 1),
        fmt(p.kibPerSession, 2),
        p.jsHeapMiB ? `${fmt(p.jsHeapMiB.used, 1)} / ${fmt(p.jsHeapMiB.committed, 1)}` : '—',
        fmt(p.connectSeconds, 1),
      ]),
    ),
    '',
    `Suite ${m.suite === 'ec' ? 'ECDHE-ECDSA-AES128-GCM-SHA256' : m.suite}; one session = one enclave = two DTLS sessions plus its IP assignment. The JS heap comes from the gateway's own \`--trace-gc\` output (the last major GC before the reading, which may lag the newest sessions); VmRSS minus the committed JS heap is native memory (OpenSSL, libuv, addons, code). ${m.error ? `**error**: ${m.error}` : ''}`,
  ].join('\n');
}

export function renderReport(res: BenchResults): string {
  const m = res.machine;
  const out: string[] = [];
  out.push(
    '# seng benchmarks',
    '',
    `Generated by \`npm run bench${res.mode === 'quick' ? ' -- --quick' : ''}\` on ${m.date.slice(0, 16).replace('T', ' ')} UTC (${res.mode} run, ${Math.round(res.durationSeconds / 60)} min). All figures come from this one run on this one machine; only ratios within a run are comparable, never absolute numbers across runs or machines.`,
    '',
    `Machine: ${m.cpuModel}, ${m.cpus} CPUs, ${m.memoryGiB} GiB, Linux ${m.kernel}; Node ${m.node}; ${m.openssl}; ${m.iperf3}; ${m.openvpn}; commit ${m.commit}. Load average at start ${m.loadAverage}, at end ${res.loadAverageEnd ?? '—'} (the machine is shared: other work competes for the CPUs, which is why per-CPU-second figures — CPU s/GB, setups per gateway CPU-second — are the ones to compare). Raw results: \`bench/results/latest.json\`.${res.gatewayWrap ? ` **Experiment:** the gateway ran under \`${res.gatewayWrap}\`.` : ''}`,
    '',
    '## Targets',
    '',
    table(
      ['target', 'this run', 'met'],
      targets(res).map((t) => [t.target, t.value, t.met === undefined ? '—' : t.met ? 'yes' : '**no**']),
    ),
    '',
  );
  const findings = join(repoRoot, 'bench', 'findings.md');
  if (existsSync(findings)) out.push(readFileSync(findings, 'utf8').trim(), '');
  out.push('## 1. Tunnel data path', '');
  if (res.sections.datapath) {
    out.push(
      `enclave host ↔ gateway ↔ service in network namespaces, iperf3 for ${res.sections.datapath.seconds} s per test, enclave → service direction.`,
      '',
      datapathTables(res.sections.datapath),
      '',
    );
  } else out.push(`_not measured_ ${res.errors.datapath ?? ''}`, '');
  out.push('## 2. Admission rate', '');
  if (res.sections.admission) out.push(admissionTables(res.sections.admission), '');
  else out.push(`_not measured_ ${res.errors.admission ?? ''}`, '');
  if (res.opensslSpeed) {
    const s = res.opensslSpeed;
    out.push(
      `\`openssl speed\` (one core, ${s.seconds} s each): RSA-2048 ${fmt(s.rsa2048.sign)} sign/s, ${fmt(s.rsa2048.verify)} verify/s; RSA-3072 ${fmt(s.rsa3072.sign)} sign/s, ${fmt(s.rsa3072.verify)} verify/s; ECDSA P-256 ${fmt(s.ecdsaP256.sign)} sign/s, ${fmt(s.ecdsaP256.verify)} verify/s; ECDH P-256 ${fmt(s.ecdhP256.op)} op/s.`,
      '',
    );
  }
  out.push('## 3. Policy and enforcement cost (nftables mode)', '');
  if (res.sections.enforcement) out.push(enforcementTables(res.sections.enforcement), '');
  else out.push(`_not measured_ ${res.errors.enforcement ?? ''}`, '');
  out.push('## 4. Memory', '');
  if (res.sections.memory) out.push(memoryTable(res.sections.memory), '');
  else out.push(`_not measured_ ${res.errors.memory ?? ''}`, '');
  out.push('## 5. Scaling: 1 core vs 2 cores', '', scalingTable(res), '');
  if (res.sections.profile?.length)
    out.push(
      '## Profiles (node --cpu-prof, main thread, P-256 suite)',
      '',
      profileTables(res.sections.profile),
      '',
    );
  const errs = Object.entries(res.errors);
  if (errs.length) out.push('## Errors in this run', '', ...errs.map(([k, v]) => `- **${k}**: ${v}`), '');
  out.push(
    '## How to reproduce',
    '',
    '```sh',
    'npm ci && npm run build        # TypeScript and the native addons',
    'sudo npm run bench             # full run, ≈ 10 min; writes BENCHMARKS.md and bench/results/latest.json',
    'sudo npm run bench -- --quick  # short pass, a few minutes',
    'sudo npm run bench -- --only datapath   # or admission, enforcement, memory (comma-separated)',
    '```',
    '',
    'Needs root, iperf3, openvpn, openssl, nft, ip, taskset (scripts/install-system-deps.sh). Everything runs in network namespaces named `sg-bn-<pid>-<n>` that the run creates and deletes (also on Ctrl-C). Method and caveats: [docs/bench.md](docs/bench.md).',
    '',
  );
  return out.join('\n');
}
