/**
 * Section `fleet` (issue 15): a fleet on one PostgreSQL server (policy and enclave registry in
 * one database, docs/fleet.md), started by the section itself (test/helpers/postgres.ts).
 *
 * (a) Policy-change propagation: two gateways (`seng serve -d URL --nft`, each in its own
 *     namespace) and one agent (`seng agent -d URL --nft`, a third). Each change is one
 *     autocommit INSERT or DELETE of a category row; its latency per follower runs from the
 *     moment the statement is sent to the arrival, in this process, of the follower's log line
 *     saying it is in force (`policy-applied` from a gateway, `resynced` from the agent).
 * (b) Admissions per gateway CPU-second, PostgreSQL (policy + registry, no local lease file)
 *     vs SQLite (policy + local lease history): the admission section's client run (ECDSA
 *     suite, 16 concurrent clients) against the same policy copied with `seng db copy`.
 *     The PostgreSQL gateway writes its claims and session ends in batches (one statement per
 *     ≤ 20 ms, docs/fleet.md "What a claim costs"). SENG_BENCH_FLEET_PROFILE=DIR writes V8 CPU
 *     profiles of the gateways (wall-clock samples: time a loaded host takes the CPU away
 *     inside a syscall counts too, unlike the CPU seconds this section reports).
 * (c) Agent burst: N leases inserted into the registry in one transaction, then deleted in
 *     one: time until the agent's backend holds all N / none (its `applied` debug lines, then
 *     the nft set checked), and the kernel transactions its nftables backend made.
 */
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { startPostgres, type PostgresServer } from '../test/helpers/postgres.js';
import {
  MR_ENCLAVE,
  MR_SIGNER,
  createNetns,
  sengBin,
  sengCli,
  startGateway,
  stop,
  waitForLine,
  type Lab,
  type Netns,
} from './lib/lab.js';
import { errorText, log, quantile, round, type BenchOptions } from './lib/util.js';
import { certPool, oneRun, type AdmissionRun } from './admission.js';

export interface PropagationResult {
  changes: number;
  /** Per follower (gateway-a, gateway-b, agent): latency in ms. */
  followers: { name: string; p50: number; p99: number; max: number }[];
  /** Per change, until the slowest of the three had applied it. */
  allApplied: { p50: number; p99: number; max: number };
  /** Changes some follower did not apply within the bound. */
  missed: number;
  error?: string;
}

export interface FleetAdmission {
  sqlite?: AdmissionRun;
  postgres?: AdmissionRun;
  /** postgres.perGatewayCpuSecond / sqlite.perGatewayCpuSecond. */
  ratio: number;
  error?: string;
}

export interface AgentBurst {
  enclaves: number;
  /** From the INSERT being sent until the agent's backend held every lease. */
  joinSeconds: number;
  /** Kernel (netlink) transactions the agent's nftables backend made for the joins. */
  joinTransactions: number;
  leaveSeconds: number;
  leaveTransactions: number;
  /** Elements of the agent's `enclaves` set after the joins (should equal `enclaves`). */
  setAfterJoin: number;
  setAfterLeave: number;
  error?: string;
}

export interface FleetResult {
  propagation: PropagationResult;
  admission: FleetAdmission;
  burst: AgentBurst;
}

/** A child's stderr lines with their arrival time in this process. */
class Lines {
  readonly lines: { t: number; line: string }[] = [];
  private waiters: (() => void)[] = [];

  constructor(readonly child: ChildProcess) {
    let buf = '';
    child.stderr?.on('data', (d: Buffer) => {
      const t = performance.now();
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        this.lines.push({ t, line: buf.slice(0, nl) });
        buf = buf.slice(nl + 1);
      }
      for (const w of this.waiters.splice(0)) w();
    });
  }

  /** The first line from index `from` on that `ok` accepts, or undefined after `ms`. */
  async next(
    from: number,
    ok: (line: string) => boolean,
    ms: number,
  ): Promise<{ t: number; line: string; index: number } | undefined> {
    const deadline = performance.now() + ms;
    for (let i = from; ;) {
      for (; i < this.lines.length; i++) {
        const l = this.lines[i]!;
        if (ok(l.line)) return { ...l, index: i };
      }
      const left = deadline - performance.now();
      if (left <= 0 || this.child.exitCode !== null) return undefined;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}

const event = (name: string) => (line: string) => line.includes(`"event":"${name}"`);

interface Follower {
  name: string;
  lines: Lines;
  applied: (line: string) => boolean;
}

function spawnGateway(lab: Lab, ns: Netns, url: string, id: string): ChildProcess {
  const k = lab.gwKeys.ec;
  return ns.spawn(process.execPath, [
    sengBin,
    'serve',
    '--cert',
    k.cert,
    '--key',
    k.key,
    '--ias-root',
    join(lab.dir, 'ca', 'ias-root.pem'),
    '--sgx-root',
    join(lab.dir, 'ca', 'sgx-root.pem'),
    '-d',
    url,
    '--nft',
    '--gateway-id',
    id,
    '--lease-db',
    'none',
    '--control',
    join(lab.dir, `fleet-${id}.sock`),
    '--tun',
    `bf${process.pid.toString(36)}`,
    '--log-format',
    'json',
    '127.0.0.1',
    '12345',
  ]);
}

function spawnAgent(ns: Netns, url: string): ChildProcess {
  return ns.spawn(process.execPath, [
    sengBin,
    'agent',
    '-d',
    url,
    '--nft',
    '--log-format',
    'json',
    '--log-level',
    'debug',
  ]);
}

export async function runFleet(lab: Lab, opts: BenchOptions): Promise<FleetResult> {
  const server = await startPostgres();
  const children: ChildProcess[] = [];
  try {
    const url = await server.createDatabase();
    sengCli(['db', 'init', '-d', url, '--schema', 'netfilter']);
    sengCli(['db', 'app', 'add', '-d', url, 'bench-app', '--mrenclave', MR_ENCLAVE, '--mrsigner', MR_SIGNER]);
    const [nsA, nsB, nsC] = [await createNetns('bn'), await createNetns('bn'), await createNetns('bn')];
    const gwA = spawnGateway(lab, nsA, url, 'bench-a');
    const gwB = spawnGateway(lab, nsB, url, 'bench-b');
    const agent = spawnAgent(nsC, url);
    children.push(gwA, gwB, agent);
    const followers: Follower[] = [
      { name: 'gateway-a', lines: new Lines(gwA), applied: event('policy-applied') },
      { name: 'gateway-b', lines: new Lines(gwB), applied: event('policy-applied') },
      { name: 'agent', lines: new Lines(agent), applied: event('resynced') },
    ];
    await Promise.all([
      waitForLine(gwA, /"event":"listening"/, 30_000, { stream: 'stderr' }),
      waitForLine(gwB, /"event":"listening"/, 30_000, { stream: 'stderr' }),
      waitForLine(agent, /"event":"resynced"/, 30_000, { stream: 'stderr' }),
    ]);
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      const propagation = await measurePropagation(client, followers, opts.quick ? 20 : 50).catch(
        (err: unknown): PropagationResult => ({
          changes: 0,
          followers: [],
          allApplied: { p50: NaN, p99: NaN, max: NaN },
          missed: 0,
          error: errorText(err),
        }),
      );
      // The gateways would only add noise to what follows.
      await Promise.all([stop(gwA, 8000), stop(gwB, 8000)]);
      const burst = await measureBurst(client, nsC, followers[2]!.lines, opts.quick ? 2000 : 10_000).catch(
        (err: unknown): AgentBurst => ({
          enclaves: 0,
          joinSeconds: NaN,
          joinTransactions: NaN,
          leaveSeconds: NaN,
          leaveTransactions: NaN,
          setAfterJoin: NaN,
          setAfterLeave: NaN,
          error: errorText(err),
        }),
      );
      await stop(agent, 15_000);
      const admission = await compareAdmission(lab, server, opts).catch((err: unknown): FleetAdmission => ({
        ratio: NaN,
        error: errorText(err),
      }));
      return { propagation, admission, burst };
    } finally {
      await client.end().catch(() => {});
    }
  } finally {
    for (const c of children) await stop(c, 8000).catch(() => {});
    server.stop();
  }
}

async function measurePropagation(
  client: pg.Client,
  followers: Follower[],
  changes: number,
): Promise<PropagationResult> {
  const per = followers.map(() => [] as number[]);
  const all: number[] = [];
  let missed = 0;
  for (let i = 0; i < changes; i++) {
    const from = followers.map((f) => f.lines.lines.length);
    const t0 = performance.now();
    await client.query(
      i % 2 === 0
        ? `INSERT INTO categories (name, apps_id) SELECT 'BenchCat', id FROM apps WHERE name = 'bench-app'`
        : `DELETE FROM categories WHERE name = 'BenchCat'`,
    );
    const seen = await Promise.all(followers.map((f, j) => f.lines.next(from[j]!, f.applied, 5_000)));
    if (seen.some((s) => s === undefined)) {
      missed++;
      continue;
    }
    const ms = seen.map((s) => s!.t - t0);
    ms.forEach((x, j) => per[j]!.push(x));
    all.push(Math.max(...ms));
    // Let every follower finish (e.g. a second resync) before the next change.
    await new Promise((r) => setTimeout(r, 100));
  }
  const stats = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    return {
      p50: round(quantile(s, 0.5), 1),
      p99: round(quantile(s, 0.99), 1),
      max: round(s.at(-1) ?? NaN, 1),
    };
  };
  const result: PropagationResult = {
    changes,
    followers: followers.map((f, j) => ({ name: f.name, ...stats(per[j]!) })),
    allApplied: stats(all),
    missed,
  };
  log(
    `  propagation: ${changes} changes, all three applied p50 ${result.allApplied.p50} ms, p99 ${result.allApplied.p99} ms (${missed} missed)`,
  );
  return result;
}

/** 10.200.0.0/16 as a host-order number: the burst's enclave IPs. */
const BURST_BASE = (10 * 2 ** 24) | (200 << 16);

async function measureBurst(client: pg.Client, ns: Netns, agent: Lines, n: number): Promise<AgentBurst> {
  await client.query(
    `INSERT INTO seng_gateways (id, address, pid, lease_ttl_ms) VALUES ('bench-burst', 'bench', 0, 3600000)
     ON CONFLICT (id) DO UPDATE SET heartbeat_at = clock_timestamp()`,
  );
  const batchesBefore = (from: number): number => lastBatches(agent, from);
  const phase = async (sql: string, params: unknown[], want: number) => {
    const from = agent.lines.length;
    const before = batchesBefore(from);
    const t0 = performance.now();
    await client.query(sql, params);
    const done = await agent.next(
      from,
      (l) => event('applied')(l) && (JSON.parse(l) as { enclaves?: number }).enclaves === want,
      120_000,
    );
    if (!done) throw new Error(`the agent did not reach ${want} enclaves within 120 s`);
    return {
      seconds: round((done.t - t0) / 1000, 2),
      transactions: lastBatches(agent, done.index + 1) - before,
    };
  };
  const join = await phase(
    `INSERT INTO seng_leases (ip, subnet, session_id, gateway_id, app, mr_enclave, mr_signer, host_ip)
     SELECT $1::bigint + g, '10.200.0.0/16', 'burst-' || g, 'bench-burst', 'bench-app', $2, $3, '10.52.0.2'
       FROM generate_series(1, $4::int) AS g`,
    [BURST_BASE, MR_ENCLAVE, MR_SIGNER, n],
    n,
  );
  const setAfterJoin = setSize(ns);
  log(`  agent burst: ${n} joins in ${join.seconds} s, ${join.transactions} kernel transactions`);
  const leave = await phase(`DELETE FROM seng_leases WHERE gateway_id = 'bench-burst'`, [], 0);
  const setAfterLeave = setSize(ns);
  log(`  agent burst: ${n} leaves in ${leave.seconds} s, ${leave.transactions} kernel transactions`);
  await client.query(`DELETE FROM seng_gateways WHERE id = 'bench-burst'`);
  return {
    enclaves: n,
    joinSeconds: join.seconds,
    joinTransactions: join.transactions,
    leaveSeconds: leave.seconds,
    leaveTransactions: leave.transactions,
    setAfterJoin,
    setAfterLeave,
  };
}

/** backendBatches of the agent's last log line before index `end` that carries it. */
function lastBatches(agent: Lines, end: number): number {
  for (let i = Math.min(end, agent.lines.length) - 1; i >= 0; i--) {
    const m = /"backendBatches":(\d+)/.exec(agent.lines[i]!.line);
    if (m) return Number(m[1]);
  }
  return 0;
}

function setSize(ns: Netns): number {
  const r = ns.execSync('nft', ['-j', 'list', 'set', 'ip', 'seng', 'enclaves'], { check: false });
  if (r.code !== 0) return NaN;
  const doc = JSON.parse(r.stdout) as { nftables: { set?: { elem?: unknown[] } }[] };
  return doc.nftables.find((x) => x.set)?.set?.elem?.length ?? 0;
}

async function compareAdmission(
  lab: Lab,
  server: PostgresServer,
  opts: BenchOptions,
): Promise<FleetAdmission> {
  const seconds = opts.quick ? 4 : 6;
  const concurrency = 16;
  const url = await server.createDatabase();
  sengCli(['db', 'copy', lab.db, url]);
  const certs = await certPool(lab, 'ec', concurrency);
  const stores = {
    sqlite: { db: undefined, args: ['--lease-db', join(lab.dir, 'fleet-leases.db')] },
    postgres: { db: url, args: ['--lease-db', 'none', '--gateway-id', 'bench-admission'] },
  } as const;
  const runs: Record<keyof typeof stores, AdmissionRun[]> = { sqlite: [], postgres: [] };
  // SENG_BENCH_FLEET_PROFILE=DIR: V8 CPU profiles of the gateways (DIR/sqlite, DIR/postgres),
  // to see where the registry's CPU goes; the profiler's own cost skews the ratio a little.
  const profileDir = process.env.SENG_BENCH_FLEET_PROFILE;
  // S P P S P S S P (full run): the shared machine's load drifts; both stores see it alike.
  const order: (keyof typeof stores)[] = opts.quick
    ? ['sqlite', 'postgres']
    : ['sqlite', 'postgres', 'postgres', 'sqlite', 'postgres', 'sqlite', 'sqlite', 'postgres'];
  for (const name of order) {
    const { db, args } = stores[name];
    const gw = await startGateway(lab, {
      suite: 'ec',
      ...(db ? { db } : {}),
      extraArgs: [...args],
      ...(profileDir ? { nodeArgs: ['--cpu-prof', '--cpu-prof-dir', join(profileDir, name)] } : {}),
    });
    try {
      runs[name].push(await oneRun(lab, 'ec', concurrency, seconds, certs, gw, 2, undefined));
    } finally {
      await gw.stop();
    }
  }
  const sqlite = pooled(runs.sqlite);
  const postgres = pooled(runs.postgres);
  const ratio = round(postgres.perGatewayCpuSecond / sqlite.perGatewayCpuSecond, 3);
  log(
    `  admissions per gateway CPU-s: SQLite ${sqlite.perGatewayCpuSecond}, PostgreSQL ${postgres.perGatewayCpuSecond} (${ratio}×); failures ${sqlite.failures} / ${postgres.failures}`,
  );
  return { sqlite, postgres, ratio };
}

/** Several runs of one store as one: setups and CPU summed, the worst p99 kept. */
function pooled(runs: AdmissionRun[]): AdmissionRun {
  const first = runs[0]!;
  const setups = runs.reduce((a, r) => a + r.setups, 0);
  const cpu = runs.reduce((a, r) => a + r.gatewayCpuSeconds, 0);
  const wall = runs.reduce((a, r) => a + r.setups / r.perSecond, 0);
  return {
    ...first,
    setups,
    failures: runs.reduce((a, r) => a + r.failures, 0),
    perSecond: round(setups / wall, 1),
    latencyMs: {
      median: Math.max(...runs.map((r) => r.latencyMs.median)),
      p90: Math.max(...runs.map((r) => r.latencyMs.p90)),
      p99: Math.max(...runs.map((r) => r.latencyMs.p99)),
    },
    gatewayCpuSeconds: round(cpu, 2),
    gatewayUtilization: round(cpu / wall, 2),
    perGatewayCpuSecond: round(setups / cpu, 1),
  };
}
