/**
 * Renders BENCHMARKS.md from the raw results: tables with ratios, the targets of issues 12 and
 * 13 (and the enforcement targets of issue 8), met / missed, machine and date, how to reproduce, and the hand-written findings of
 * bench/findings.md (profiles and design conclusions that numbers alone do not tell).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TESTS, type DatapathResult, type SystemResult, type TestName, type TestResult } from './datapath.js';
import type { FuzzPhase, SoakResult } from './soak.js';
import type { GatewayState } from './lib/gateway-state.js';
import type { FuzzResult } from './fuzz.js';
import type { AdmissionResult } from './admission.js';
import type { EnforcementResult } from './enforcement.js';
import type { PolicyScaleResult } from './policy-scale.js';
import type { MemoryResult } from './memory.js';
import type { FleetResult } from './fleet.js';
import type { ProfileSummary } from './profile.js';
import { repoRoot } from './lib/lab.js';
import type { MachineInfo, OpensslSpeed } from './lib/util.js';

export interface BenchResults {
  version: 1;
  mode: 'quick' | 'full' | 'mixed';
  machine: MachineInfo;
  /** When each section finished (ISO time); sections kept by `--merge` keep their own time. */
  sectionTimes?: Record<string, string>;
  opensslSpeed?: OpensslSpeed;
  sections: {
    datapath?: DatapathResult;
    admission?: AdmissionResult;
    enforcement?: EnforcementResult;
    'policy-scale'?: PolicyScaleResult;
    memory?: MemoryResult;
    profile?: ProfileSummary[];
    soak?: SoakResult;
    fuzz?: FuzzResult;
    fleet?: FleetResult;
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

const TEST_LABEL: Record<TestName, string> = {
  tcp1: 'TCP 1 stream enclave → service',
  tcp4: 'TCP 4 streams enclave → service',
  udp1400: 'UDP 1400 B pkt/s enclave → service',
  udp64: 'UDP 64 B pkt/s enclave → service',
  tcp1r: 'TCP 1 stream service → enclave',
  tcp4r: 'TCP 4 streams service → enclave',
  udp1400r: 'UDP 1400 B pkt/s service → enclave',
  udp64r: 'UDP 64 B pkt/s service → enclave',
};

const SUITES = ['rsa', 'ec'] as const;

/** A target with a minimum size: missed when it failed, open (—) when it passed below the size (--quick). */
const enough = (bigEnough: boolean, passed: boolean): boolean | undefined =>
  !passed ? false : bigEnough ? true : undefined;

/** Issue 12 (data path) and issue 13 (admission, memory, robustness) targets; issue 8's enforcement rows. */
function targets(res: BenchResults): Target[] {
  const out: Target[] = [];
  const d = res.sections.datapath;
  for (const suite of SUITES) {
    for (const test of TESTS) {
      const need = test.startsWith('tcp') ? 2.0 : 1.5;
      const sr = find(d, `seng-${suite}`, test);
      const r = sr?.ratioToOpenvpn ?? ratio(metric(sr, test), metric(find(d, 'openvpn', test), test));
      out.push({
        target: `seng-${suite} ${TEST_LABEL[test]} ≥ ${fmt(need, 1)}× OpenVPN`,
        value: Number.isFinite(r) ? `${fmt(r, 2)}×` : 'not measured',
        met: Number.isFinite(r) ? r >= need : undefined,
      });
    }
  }
  for (const suite of SUITES) {
    const rs = TESTS.map((t) => [t, find(d, `seng-${suite}`, t)?.gatewayCpuPerGBRatio] as const).filter(
      (x): x is readonly [TestName, number] => x[1] !== undefined && Number.isFinite(x[1]),
    );
    const worst = rs.reduce<readonly [TestName, number] | undefined>(
      (m, x) => (!m || x[1] > m[1] ? x : m),
      undefined,
    );
    // Beside it: UDP per GB that iperf3 read, i.e. counting the datagrams the service's own
    // socket dropped (iperf3 too slow) against the tunnel that delivered them.
    const app = TESTS.map((t) => [t, find(d, `seng-${suite}`, t)?.gatewayCpuPerAppGBRatio] as const).filter(
      (x): x is readonly [TestName, number] => x[1] !== undefined && Number.isFinite(x[1]),
    );
    const worstApp = app.reduce<readonly [TestName, number] | undefined>(
      (m, x) => (!m || x[1] > m[1] ? x : m),
      undefined,
    );
    out.push({
      target: `seng-${suite} gateway CPU s per GB delivered to the receiving host ≤ 0.5× the OpenVPN server's (every test, both directions)`,
      value: worst
        ? `worst ${fmt(worst[1], 2)}× (${worst[0]}); best ${fmt(Math.min(...rs.map((x) => x[1])), 2)}×${
            worstApp ? `; per GB iperf3 read (UDP): worst ${fmt(worstApp[1], 2)}× (${worstApp[0]})` : ''
          }`
        : 'not measured',
      met: worst ? worst[1] <= 0.5 : undefined,
    });
  }
  const ec = d?.systems.find((x) => x.system === 'seng-ec');
  for (const sc of ec?.gatewayScaling ?? []) {
    out.push({
      target: `TCP 4 streams (${sc.test === 'tcp4r' ? 'service → enclave' : 'enclave → service'}), gateway on 2 cores vs 1 core ≥ 1.6×`,
      value: `${fmt(sc.ratio, 2)}× (${fmt(sc.twoCores.mbps)} vs ${fmt(sc.oneCore.mbps)} Mbit/s)`,
      met: Number.isFinite(sc.ratio) ? sc.ratio >= 1.6 : undefined,
    });
  }
  if (ec?.storm) {
    const st = ec.storm;
    // The row is judged on the storm whose clients run under SCHED_IDLE (clients on other hosts:
    // the gateway's own handshake work against its forwarding); the storm of clients competing
    // for the same two vCPUs is shown beside it. Results of older runs have only the latter.
    const idle = st.idleClients;
    const judged = idle ?? st;
    const phase = (p: typeof judged) =>
      `${fmt(p.ratio, 2)}× (${fmt(p.storm.mbps)} vs ${fmt(p.quiet.mbps)} Mbit/s; ${fmt(p.setups)} setups meanwhile)`;
    out.push({
      target: idle
        ? "TCP throughput of an established enclave during an admission storm ≥ 0.9× without (storm clients under SCHED_IDLE, i.e. not competing for the gateway host's CPU)"
        : 'TCP throughput of an established enclave during an admission storm ≥ 0.9× without',
      value: idle
        ? `${phase(idle)}; clients at normal priority on the same 2 vCPUs: ${phase(st)}`
        : phase(st),
      met: Number.isFinite(judged.ratio) ? judged.ratio >= 0.9 : undefined,
    });
  }
  const simBusy = (d?.systems ?? [])
    .filter((x) => x.system.startsWith('seng-'))
    .flatMap((x) => x.results.filter((r) => !r.error).map((r) => (r.cpu.client ?? NaN) / r.seconds));
  if (simBusy.length) {
    const max = Math.max(...simBusy);
    out.push({
      target: 'the simulator is not the bottleneck (seng sim enclave < 0.9 core in every seng test)',
      value: `busiest ${fmt(max, 2)} core`,
      met: max < 0.9,
    });
  }
  const a = res.sections.admission;
  for (const suite of ['ec', 'rsa']) {
    const runs = a?.runs.filter((r) => r.suite === suite && r.gatewayCores === 2 && !r.error) ?? [];
    const best = runs.reduce<(typeof runs)[number] | undefined>(
      (m, r) => (!m || (r.capacityRatioToCryptoLimit ?? 0) > (m.capacityRatioToCryptoLimit ?? 0) ? r : m),
      undefined,
    );
    const cap = best?.capacityRatioToCryptoLimit;
    const delivered = Math.max(...runs.map((x) => x.perSecond).filter(Number.isFinite));
    out.push({
      target: `admissions per gateway CPU-second (${suite}) ≥ 0.6× crypto-only limit`,
      value:
        cap !== undefined
          ? `${fmt(cap, 2)}× (${fmt(best?.perGatewayCpuSecond, 1)}/CPU-s at c=${best?.concurrency}); delivered ${fmt(delivered, 1)} setups/s with the clients beside it`
          : 'not measured',
      met: cap !== undefined ? cap >= 0.6 : undefined,
    });
  }
  for (const b of a?.bursts ?? []) {
    out.push({
      target: `burst of ${fmt(b.enclaves)} enclaves reconnecting at once (${b.suite}): all admitted, no setup timeout while the gateway had CPU to spare`,
      value: b.error
        ? `error: ${b.error}`
        : `${fmt(b.admitted)} admitted in ${fmt(b.seconds, 1)} s, p99 ${fmt(b.latencyMs.p99)} ms; ${b.timeouts} timeouts (${b.timeoutsWithSpareCpu} with CPU to spare)`,
      met: b.error ? undefined : b.admitted === b.enclaves && b.timeoutsWithSpareCpu === 0,
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
  const ps = res.sections['policy-scale'];
  if (ps?.ratio !== undefined) {
    const big = ps.rates.find((r) => r.config === 'large');
    out.push({
      target: `64 B forwarding rate through the compiled ruleset, ${fmt(big?.enclaves ?? 0)} enclaves / ${fmt(big?.rules ?? 0)} rules vs 10 / 10 ≥ 0.95× (issue 15)`,
      value: `${fmt(ps.ratio, 2)}×${ps.linearRatio !== undefined ? ` (old linear chain: ${fmt(ps.linearRatio, 2)}×)` : ''}`,
      met: ps.ratio >= 0.95,
    });
  }
  if (ps?.categoryRatio !== undefined) {
    const cat = ps.rates.find((r) => r.config === 'category');
    out.push({
      target: `category policy: 64 B forwarding rate, ${fmt(cat?.enclaves ?? 0)} enclaves / ${fmt(cat?.rules ?? 0)} rules (mostly src-cat, dispatched by category run) vs 10 / 10 ≥ 0.95× (issue 15)`,
      value: `${fmt(ps.categoryRatio, 2)}×`,
      met: ps.categoryRatio >= 0.95,
    });
  }
  if (ps?.burst) {
    out.push({
      target: `burst of ${fmt(ps.burst.size)} joins and of ${fmt(ps.burst.size)} leaves through the nft backend (issue 15): time and kernel transactions`,
      value: `joins ${fmt(ps.burst.joinMs, 1)} ms in ${ps.burst.joinTransactions}, leaves ${fmt(ps.burst.leaveMs, 1)} ms in ${ps.burst.leaveTransactions} transaction(s)`,
      met: ps.burst.joinTransactions === 1 && ps.burst.leaveTransactions === 1,
    });
  }
  const m = res.sections.memory;
  const last = m?.points[m.points.length - 1];
  if (last?.kibPerSession !== undefined) {
    out.push({
      target: `gateway RSS growth per idle enclave at ${fmt(last.sessions)} enclaves ≤ 10 KiB`,
      value: `${fmt(last.kibPerSession, 2)} KiB${last.jsHeapKiBPerSession !== undefined ? ` (JS heap ${fmt(last.jsHeapKiBPerSession, 2)}, native ${fmt(last.nativeKiBPerSession, 2)})` : ''}`,
      met: last.sessions >= 10000 ? last.kibPerSession <= 10 : undefined,
    });
  }
  const so = res.sections.soak;
  if (so?.fuzz) {
    const f = so.fuzz;
    out.push({
      target:
        '≥ 1,000,000 fuzzed datagrams on P and P+1: no crash, the established enclave forwards, no growth in slots or memory (JS heap ≤ 0.5 MiB, RSS ≤ 4 MiB)',
      value: `${fmt(f.report.sent)} sent; gateway ${f.gatewayAlive ? 'alive' : '**exited**'}; forwards ${f.forwardsAfter ? 'yes' : '**no**'}; leaks ${Object.keys(f.leaks).length ? JSON.stringify(f.leaks) : 'none'}; RSS ${f.rssGrowthKiB >= 0 ? '+' : ''}${fmt(f.rssGrowthKiB)} KiB, JS heap ${f.jsHeapGrowthKiB >= 0 ? '+' : ''}${fmt(f.jsHeapGrowthKiB)} KiB`,
      met: enough(
        f.report.sent >= 1_000_000,
        f.gatewayAlive &&
          f.forwardsAfter &&
          !Object.keys(f.leaks).length &&
          f.jsHeapGrowthKiB <= 512 &&
          f.rssGrowthKiB <= 4096,
      ),
    });
  }
  if (so?.forged) {
    const f = so.forged;
    out.push({
      target:
        "forged datagrams from the established sessions' own address:port: the session keeps forwarding",
      value: `${fmt(f.report.onSessionTuples)} of ${fmt(f.report.sent)} from the sessions' address:port; forwards ${f.forwardsAfter ? 'yes' : `**no**${f.victimCloseReason ? ` (${f.victimCloseReason})` : ''}`}; leaks ${Object.keys(f.leaks).length ? JSON.stringify(f.leaks) : 'none'}`,
      met: f.gatewayAlive && f.forwardsAfter && !Object.keys(f.leaks).length,
    });
  }
  if (so?.cycles) {
    const c = so.cycles;
    out.push({
      target:
        '≥ 10,000 connect/disconnect cycles: 0 leaked IPs, sessions, native objects, set elements, conntrack entries',
      value: `${fmt(c.setups)} setups (${c.failures} failed); leaks ${Object.keys(c.leaks).length ? JSON.stringify(c.leaks) : 'none'}`,
      met: enough(c.cycles >= 10_000, c.gatewayAlive && !Object.keys(c.leaks).length),
    });
  }
  out.push(...fleetTargets(res.sections.fleet));
  return out;
}

/** Issue 15: propagation, admissions on PostgreSQL, the agent's burst. */
function fleetTargets(f: FleetResult | undefined): Target[] {
  const p = f?.propagation;
  const a = f?.admission;
  const b = f?.burst;
  const pOk = p && !p.error && p.changes > 0;
  return [
    {
      target: 'policy change reaches 2 gateways + 1 agent: p99 ≤ 1 s',
      value: pOk
        ? `p50 ${fmt(p.allApplied.p50)} ms, p99 ${fmt(p.allApplied.p99)} ms over ${p.changes} changes (slowest of the three; ${p.missed} missed)`
        : p?.error
          ? `error: ${p.error}`
          : 'not measured',
      met: pOk ? p.missed === 0 && p.allApplied.p99 <= 1000 : undefined,
    },
    {
      target: 'admissions per gateway CPU-second, PostgreSQL (policy + registry) vs SQLite ≥ 0.9×',
      value:
        a && Number.isFinite(a.ratio)
          ? `${fmt(a.ratio, 2)}× (${fmt(a.postgres?.perGatewayCpuSecond, 1)} vs ${fmt(a.sqlite?.perGatewayCpuSecond, 1)})`
          : a?.error
            ? `error: ${a.error}`
            : 'not measured',
      met: a && Number.isFinite(a.ratio) ? a.ratio >= 0.9 : undefined,
    },
    {
      target: `agent burst of ${b?.enclaves ? fmt(b.enclaves) : '10,000'} joins and leaves: time, kernel transactions`,
      value:
        b && !b.error
          ? `joins ${fmt(b.joinSeconds, 2)} s / ${fmt(b.joinTransactions)} transactions; leaves ${fmt(b.leaveSeconds, 2)} s / ${fmt(b.leaveTransactions)} transactions`
          : b?.error
            ? `error: ${b.error}`
            : 'not measured',
      // No numeric target in the issue: met when the set ends up right both ways.
      met: b && !b.error ? b.setAfterJoin === b.enclaves && b.setAfterLeave === 0 : undefined,
    },
  ];
}

function fleetTables(f: FleetResult): string {
  const out: string[] = [];
  const p = f.propagation;
  out.push(
    `Policy change propagation (${p.changes} changes, each one autocommit INSERT/DELETE of a category row; from sending the statement to the follower's log line saying the change is in force).`,
    '',
    table(
      ['follower', 'p50 ms', 'p99 ms', 'max ms'],
      [
        ...p.followers.map((x) => [x.name, fmt(x.p50, 1), fmt(x.p99, 1), fmt(x.max, 1)]),
        ['all three', fmt(p.allApplied.p50, 1), fmt(p.allApplied.p99, 1), fmt(p.allApplied.max, 1)],
      ],
    ),
    '',
  );
  const a = f.admission;
  if (a.sqlite && a.postgres) {
    out.push(
      'Admissions (ECDSA P-256, 16 concurrent clients): SQLite policy + local lease history vs PostgreSQL policy + registry.',
      '',
      table(
        ['store', 'setups/s', 'per gateway CPU-s', 'p99 ms', 'failures'],
        (
          [
            ['SQLite', a.sqlite],
            ['PostgreSQL', a.postgres],
          ] as const
        ).map(([name, r]) => [
          name,
          fmt(r.perSecond, 1),
          fmt(r.perGatewayCpuSecond, 1),
          fmt(r.latencyMs.p99),
          String(r.failures),
        ]),
      ),
      '',
    );
  }
  const b = f.burst;
  if (!b.error) {
    out.push(
      `Agent burst: ${fmt(b.enclaves)} leases inserted in one transaction, then deleted in one; measured at the agent.`,
      '',
      table(
        ['phase', 'seconds', 'kernel transactions', 'set elements after'],
        [
          ['join', fmt(b.joinSeconds, 2), fmt(b.joinTransactions), fmt(b.setAfterJoin)],
          ['leave', fmt(b.leaveSeconds, 2), fmt(b.leaveTransactions), fmt(b.setAfterLeave)],
        ],
      ),
    );
  }
  return out.join('\n');
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
  const directions: [string, TestName[]][] = [
    ['enclave → service', ['tcp1', 'tcp4', 'udp1400', 'udp64']],
    ['service → enclave (iperf3 -R)', ['tcp1r', 'tcp4r', 'udp1400r', 'udp64r']],
  ];
  for (const [label, tests] of directions) {
    parts.push(
      `**${label}**`,
      '',
      table(
        ['system', 'TCP 1 stream Mbit/s', 'TCP 4 streams Mbit/s', 'UDP 1400 B pkt/s', 'UDP 64 B pkt/s'],
        measured.map((s) => [`**${s.system}**`, ...tests.map((t) => cell(s, t, openvpn))]),
      ),
      '',
    );
  }
  const tunnels = measured.filter((s) => s.system !== 'raw');
  parts.push(
    `Each figure is the median of ${d.rounds} sample(s) of ${d.seconds} s${
      d.roundsBySystem
        ? ` (${Object.entries(d.roundsBySystem)
            .map(([k, v]) => `${k}: ${v}`)
            .join(', ')})`
        : ''
    }. Ratios in parentheses are to OpenVPN in this run; for seng they are the lower median of the paired ratios (OpenVPN and seng measured back to back, alternating, per round; with 2 rounds the lower of the two — conservative), so they can differ from the ratio of the two medians shown. UDP: datagrams per second that reached the receiver (iperf3 \`-b 0\`, sender unlimited).`,
    '',
    "**CPU seconds per GB delivered** (gateway-side process / client-side process; for seng the ratio of the gateway's figure to the OpenVPN server's, paired, in parentheses; for raw veth the forwarding happens in softirq and is not attributed). UDP: per GB the tunnel delivered to the receiving host — what iperf3 read plus what its socket dropped because iperf3 read too slowly (`drops` of iperf3's sockets in /proc/net/udp and /proc/net/udp6 of the receiving iperf3's namespace, for both tunnels alike); the figure per GB iperf3 read follows after \"app\":",
    '',
    table(
      ['system', ...TESTS],
      tunnels.map((s) => [
        `**${s.system}**`,
        ...TESTS.map((t) => {
          const r = s.results.find((x) => x.test === t && !x.error);
          if (!r) return '—';
          const cr = r.gatewayCpuPerGBRatio;
          const per = r.cpuPerHostGB ?? r.cpuPerGB;
          const ar = r.gatewayCpuPerAppGBRatio;
          const appPart = r.cpuPerHostGB
            ? `; app ${fmt(r.cpuPerGB.gateway, 1)}${ar !== undefined ? ` (${fmt(ar, 2)}×)` : ''}`
            : '';
          return `${fmt(per.gateway, 1)} / ${fmt(per.client, 1)}${cr !== undefined ? ` (${fmt(cr, 2)}×)` : ''}${appPart}`;
        }),
      ]),
    ),
    '',
    "**Utilisation during the test**, gateway / client (CPU seconds ÷ wall seconds; 1.00 = one core saturated) — shows which process limits; for seng the client is `seng sim enclave`, so the gateway's figures stand on their own only where the simulator stays below one core:",
    '',
    table(
      ['system', ...TESTS],
      tunnels.map((s) => [
        `**${s.system}**`,
        ...TESTS.map((t) => {
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
  const ec = d.systems.find((s) => s.system === 'seng-ec');
  if (ec?.storm) {
    const st = ec.storm;
    parts.push(
      '',
      `**Admission storm** (seng-ec): TCP 1 stream of the established enclave ${fmt(st.quiet.mbps)} Mbit/s alone, ${fmt(st.storm.mbps)} Mbit/s (${fmt(st.ratio, 2)}×) while ${st.clients} clients in two processes at normal priority admitted ${fmt(st.setups)} enclaves (${st.failures} failed setups; clients ${fmt(st.clientUtilization, 2)} cores busy; gateway ${fmt((st.storm.cpu.gateway ?? NaN) / st.storm.seconds, 2)} cores during the storm, ${fmt((st.quiet.cpu.gateway ?? NaN) / st.quiet.seconds, 2)} without).`,
    );
    const idle = st.idleClients;
    if (idle)
      parts.push(
        '',
        `With the same clients under SCHED_IDLE (\`chrt --idle 0\`: they get only CPU time the gateway, iperf3 and the simulator leave, as clients on other hosts would): ${fmt(idle.quiet.mbps)} Mbit/s alone, ${fmt(idle.storm.mbps)} Mbit/s (${fmt(idle.ratio, 2)}×) during the storm, ${fmt(idle.setups)} enclaves admitted (${idle.failures} failed setups; clients ${fmt(idle.clientUtilization, 2)} cores busy; gateway ${fmt((idle.storm.cpu.gateway ?? NaN) / idle.storm.seconds, 2)} cores during the storm). The Targets row uses this figure.`,
      );
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
    for (const sc of s.gatewayScaling ?? []) {
      rows.push([
        `data path ${s.system}, ${TEST_LABEL[sc.test]} (Mbit/s)`,
        fmt(sc.oneCore.mbps),
        fmt(sc.twoCores.mbps),
        fmt(sc.ratio, 2),
      ]);
    }
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
    table(['figure', 'gateway on 1 core', 'gateway on 2 cores', '2 / 1'], rows),
    '',
    'Only the gateway process is confined (`taskset -a -p`, all its threads) to CPU 0, measured right before the same test with it free on both CPUs; the simulator, iperf3 and the kernel stay free. On a 2-CPU machine the "2 cores" gateway shares them with the simulator, iperf3 and the kernel\'s forwarding, so the ratio is a lower bound of what a second core gives the gateway. Enforcement runs in the kernel and memory does not depend on cores; they are not repeated.',
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
    ...(a.bursts?.length
      ? [
          '**Reconnect burst**: every enclave starts its setup at the same moment (two client processes); a setup that fails is retried until the deadline, as a real enclave would. Latency is from the burst\'s start to the enclave\'s admission (retries included); a timeout "with CPU to spare" is a setup the client gave up on while, in the second before, the gateway had used < 90 % of a core and the machine had ≥ 0.25 of a core idle (when the clients beside it take every CPU, the gateway has none to spare).',
          '',
          table(
            [
              'suite',
              'enclaves',
              'admitted',
              'seconds',
              'latency median / p90 / p99 / max ms',
              'attempts',
              'timeouts (with CPU to spare)',
              'gateway busy',
              'clients busy',
            ],
            a.bursts.map((b) =>
              b.error
                ? [b.suite, '', `error: ${b.error}`, '', '', '', '', '', '']
                : [
                    b.suite,
                    fmt(b.enclaves),
                    fmt(b.admitted),
                    fmt(b.seconds, 1),
                    `${fmt(b.latencyMs.median)} / ${fmt(b.latencyMs.p90)} / ${fmt(b.latencyMs.p99)} / ${fmt(b.latencyMs.max)}`,
                    fmt(b.attempts),
                    `${b.timeouts} (${b.timeoutsWithSpareCpu})`,
                    fmt(b.gatewayUtilization, 2),
                    fmt(b.clientUtilization, 2),
                  ],
            ),
          ),
          '',
          ...a.bursts
            .filter((b) => b.errors || b.gatewayDtlsCounters)
            .map(
              (b) =>
                `- burst ${b.suite}: client errors: ${
                  Object.entries(b.errors ?? {})
                    .map(([k, v]) => `${v}× "${k}"`)
                    .join('; ') || 'none'
                }; gateway DTLS listeners: ${Object.entries(b.gatewayDtlsCounters ?? {})
                  .map(([k, v]) => `${k} ${fmt(v)}`)
                  .join(', ')}`,
            ),
          '',
        ]
      : []),
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

function policyScaleTable(ps: PolicyScaleResult): string {
  const parts = [
    table(
      ['ruleset', 'rules', 'registered enclaves', '64 B datagrams/s delivered (sent)', 'apply / register'],
      ps.rates.map((r) => [
        r.config === 'linear'
          ? 'linear chain (before dispatch)'
          : r.config === 'category'
            ? `compiled (category: 1,000 src-app + 9,000 src-cat rules, one category run; ${fmt(r.profileChains ?? 0)} profile chains)`
            : `compiled (${r.config})`,
        fmt(r.rules),
        fmt(r.enclaves),
        r.error ? `error: ${r.error}` : `${fmt(r.deliveredPps)} (${fmt(r.sentPps)})`,
        r.applyMs !== undefined ? `${fmt(r.applyMs, 0)} ms / ${fmt(r.joinMs ?? 0, 0)} ms` : '',
      ]),
    ),
    '',
    "Two iperf3 UDP streams (64-byte payloads, unlimited rate) from an enclave IP through the router namespace's forward hook; the source's app has the last rule of the list and it does not match, the worst case of a linear chain. Rounds alternate small and large; on a shared 2-core machine they disagree by tens of per cent, so a ratio above 1 means the rate does not fall, not a speed-up; where delivered equals sent, the sender was the limit in that round. `npm run bench -- --only policy-scale` runs this alone.",
  ];
  if (ps.burst)
    parts.push(
      '',
      `- Burst of ${fmt(ps.burst.size)} joins (joinMany, with the large policy and its enclaves in place): **${fmt(ps.burst.joinMs, 1)} ms** in ${ps.burst.joinTransactions} kernel transaction(s); ${fmt(ps.burst.size)} leaves (leaveMany): **${fmt(ps.burst.leaveMs, 1)} ms** in ${ps.burst.leaveTransactions} (the conntrack purges follow, off the leave path).`,
    );
  const cb = ps.categoryBurst;
  if (cb)
    parts.push(
      `- The same burst with the category policy (enclaves in two categories each): joins **${fmt(cb.joinMs, 1)} ms** in ${cb.joinTransactions} transaction(s), creating ${fmt(cb.profileChains)} profile chain(s); leaves **${fmt(cb.leaveMs, 1)} ms** in ${cb.leaveTransactions}.`,
    );
  for (const err of ps.errors) parts.push(`- **error**: ${err}`);
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
        'of which JS heap / native (KiB)',
        'JS heap used / committed after a full GC (MiB)',
        'time to open (s)',
      ],
      m.points.map((p) => [
        fmt(p.sessions),
        fmt(p.live),
        fmt(p.rssKiB / 1024, 1),
        fmt(p.kibPerSession, 2),
        p.jsHeapKiBPerSession !== undefined
          ? `${fmt(p.jsHeapKiBPerSession, 2)} / ${fmt(p.nativeKiBPerSession, 2)}`
          : '—',
        p.heapKiB
          ? `${fmt(p.heapKiB.used / 1024, 1)} / ${fmt(p.heapKiB.total / 1024, 1)}`
          : p.jsHeapMiB
            ? `${fmt(p.jsHeapMiB.used, 1)} / ${fmt(p.jsHeapMiB.committed, 1)}`
            : '—',
        fmt(p.connectSeconds, 1),
      ]),
    ),
    '',
    `Suite ${m.suite === 'ec' ? 'ECDHE-ECDSA-AES128-GCM-SHA256' : m.suite}; one session = one enclave = two DTLS sessions plus its IP assignment. The JS heap is read by the bench probe preloaded into the gateway (\`process.memoryUsage()\` right after a full GC; older results: the gateway's \`--trace-gc\` output); per enclave, JS heap = growth of the committed heap, native = growth of VmRSS minus that (OpenSSL, libuv, addons). ${m.error ? `**error**: ${m.error}` : ''}`,
  ].join('\n');
}

function soakSection(so: SoakResult): string {
  const parts: string[] = [];
  const st = (x: GatewayState) =>
    `sessions ${x.sessions}, IPs ${x.ipsInUse}, handshakes ${x.handshakes}, native ${Object.entries(x.native)
      .map(([k, v]) => `${k} ${v}`)
      .join(
        ' ',
      )}, set elements ${x.nftElements ?? '—'}, conntrack ${x.conntrack.enclaveSubnet} (enclave subnet) / ${x.conntrack.all}, RSS ${fmt(x.rssKiB / 1024, 1)} MiB, JS heap ${fmt(x.jsHeapUsedKiB / 1024, 1)} MiB`;
  const fuzzLine = (name: string, f: FuzzPhase) => [
    `**${name}**: ${fmt(f.report.sent)} datagrams in ${fmt(f.report.seconds, 1)} s (${Object.entries(
      f.report.byKind,
    )
      .map(([k, v]) => `${k} ${fmt(v)}`)
      .join(
        ', ',
      )}; port P ${fmt(f.report.byPort[0])}, P+1 ${fmt(f.report.byPort[1])}; ${fmt(f.report.onSessionTuples)} from the established sessions' own address:port; seed ${f.report.seed})${f.udp ? `; the gateway namespace's UDP sockets received ${fmt(f.udp.inDatagrams)} datagrams in the phase, ${fmt(f.udp.rcvbufErrors)} dropped for full socket buffers` : ''}. Gateway ${f.gatewayAlive ? 'alive' : '**exited**'}; pings of the established enclave during: ${f.pingsDuring.ok}/${f.pingsDuring.tried}, after: ${f.forwardsAfter ? 'answered' : '**not answered**'}${f.victimCloseReason ? ` — session ended: ${f.victimCloseReason}` : ''}; leaked after ${f.settleSeconds} s: ${Object.keys(f.leaks).length ? `**${JSON.stringify(f.leaks)}**` : 'nothing'}; RSS ${fmt(f.rssGrowthKiB)} KiB, JS heap ${fmt(f.jsHeapGrowthKiB)} KiB over the phase.`,
    '',
    `- before: ${st(f.before)}`,
    `- after: ${st(f.after)}`,
    '',
  ];
  if (so.fuzz) parts.push(...fuzzLine('Fuzz from other addresses', so.fuzz));
  if (so.cycles) {
    const c = so.cycles;
    parts.push(
      `**Connect/disconnect cycles**: ${fmt(c.cycles)} cycles (connect, one ICMP echo to the gateway, close; 16 in flight) in ${fmt(c.seconds, 1)} s: ${fmt(c.setups)} setups, ${c.failures} failed${
        c.errors
          ? ` (${Object.entries(c.errors)
              .map(([k, v]) => `${v}× "${k}"`)
              .join('; ')})`
          : ''
      }. Gateway ${c.gatewayAlive ? 'alive' : '**exited**'}; established enclave ${c.forwardsAfter ? 'still forwards' : '**no longer forwards**'}; leaked after ${c.settleSeconds} s: ${Object.keys(c.leaks).length ? `**${JSON.stringify(c.leaks)}**` : 'nothing'}.`,
      '',
      `- before: ${st(c.before)}`,
      `- after: ${st(c.after)}`,
      '',
    );
  }
  if (so.forged)
    parts.push(...fuzzLine("Fuzz including the established sessions' own address:port", so.forged));
  for (const e of so.errors) parts.push(`- **error**: ${e}`);
  parts.push(
    'The gateway runs `seng serve --nft` (P-256 suite) with a conntrack-enabling table in its namespace and the bench probe preloaded. "Leaked" counts growth over the state before the phase, after waiting for the gateway to settle: sessions and enclave IPs (`seng status --json`), handshake slots and the DTLS addon\'s live objects (probe: `DtlsServer.stats()`, `nativeStats()`), nftables set elements (`nft -j list table ip seng`) and conntrack entries of the enclave subnet (`conntrack -L` in the gateway\'s namespace). The same worker runs in the CI-sized test `test/integration/gateway/fuzz-soak.test.ts`.',
  );
  return parts.join('\n');
}

/** When sections were re-run with `--merge`, says when each one ran. */
function sectionTimesNote(res: BenchResults): string {
  const times = Object.entries(res.sectionTimes ?? {});
  const days = new Set(times.map(([, t]) => t.slice(0, 16)));
  if (times.length === 0 || days.size <= 1) return '';
  const when = times.map(([name, t]) => `${name} ${t.slice(0, 16).replace('T', ' ')}`).join(', ');
  return ` Sections were measured at different times (\`--merge\`): ${when} UTC.`;
}

export function renderReport(res: BenchResults): string {
  const m = res.machine;
  const out: string[] = [];
  out.push(
    '# seng benchmarks',
    '',
    `Generated by \`npm run bench${res.mode === 'quick' ? ' -- --quick' : ''}\` on ${m.date.slice(0, 16).replace('T', ' ')} UTC (${res.mode} run, ${Math.round(res.durationSeconds / 60)} min). All figures of a section come from one run on this one machine; only ratios within a section are comparable, never absolute numbers across runs or machines.${sectionTimesNote(res)}`,
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
      `enclave host ↔ gateway ↔ service in network namespaces, iperf3 for ${res.sections.datapath.seconds} s per test, both directions.`,
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
  out.push('### Policy cost independent of scale (dispatch, issue 15)', '');
  const ps = res.sections['policy-scale'];
  if (ps) out.push(policyScaleTable(ps), '');
  else out.push(`_not measured_ ${res.errors['policy-scale'] ?? ''}`, '');
  out.push('## 4. Memory', '');
  if (res.sections.memory) out.push(memoryTable(res.sections.memory), '');
  else out.push(`_not measured_ ${res.errors.memory ?? ''}`, '');
  out.push('## 5. Scaling: 1 core vs 2 cores', '', scalingTable(res), '');
  out.push('## 6. Fuzz and soak', '');
  if (res.sections.soak) out.push(soakSection(res.sections.soak), '');
  else out.push(`_not measured_ ${res.errors.soak ?? ''}`, '');
  out.push('## 7. Fleet (PostgreSQL policy and registry, docs/fleet.md)', '');
  if (res.sections.fleet) out.push(fleetTables(res.sections.fleet), '');
  else out.push(`_not measured_ ${res.errors.fleet ?? ''}`, '');
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
    'sudo npm run bench             # full run, ≈ 20 min; writes BENCHMARKS.md and bench/results/latest.json',
    'sudo npm run bench -- --quick  # short pass, a few minutes',
    'sudo npm run bench -- --only datapath   # or admission, enforcement, policy-scale, memory, soak, profile, fuzz, fleet (comma-separated)',
    '```',
    '',
    'Needs root, iperf3, openvpn, openssl, nft, ip, taskset (scripts/install-system-deps.sh). Everything runs in network namespaces named `sg-bn-<pid>-<n>` that the run creates and deletes (also on Ctrl-C). Method and caveats: [docs/bench.md](docs/bench.md).',
    '',
  );
  return out.join('\n');
}
