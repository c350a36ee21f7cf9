/**
 * Section 2 (admission rate) and its scaling figure: full setups per second (two DTLS
 * handshakes with cookie exchange, RA-TLS attestation, IP assignment and ACK, then close)
 * with 1, 16 and 128 concurrent clients, per cipher suite, against the crypto-only limit.
 *
 * Crypto-only limit (gateway side, one core; the gateway's handshakes run on its one JS
 * thread): per full setup the gateway does, for each of its two handshakes, one server
 * signature (RSA-3072 or ECDSA P-256), one verification of the client's CertificateVerify
 * signature (same algorithm), one P-256 ECDHE key generation (counted as one ECDSA P-256
 * sign: both are a fixed-base scalar multiplication) and one ECDH derive; plus, once, the
 * RSA-2048 verification of the IAS report signature of the EPID evidence (the CA chain
 * checks are memoized by the gateway). The per-operation times come from `openssl speed`
 * in the same run; limit = 1 / Σ(time per operation).
 */
import { generateKeyPair, type KeyObject } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { createSimCertificate } from '../src/attestation/index.js';
import {
  GW_SENG,
  MR_ENCLAVE,
  MR_SIGNER,
  SENG_PORT,
  SUITE_NAMES,
  pin,
  startGateway,
  type Lab,
  type Proc,
  type Suite,
} from './lib/lab.js';
import {
  CpuMeter,
  cpuSeconds,
  errorText,
  log,
  machineBusySeconds,
  round,
  summarize,
  type BenchOptions,
  type OpensslSpeed,
} from './lib/util.js';
import { startClients } from './lib/workers.js';
import { probe, probeNodeArgs } from './lib/gateway-state.js';

export interface AdmissionRun {
  suite: Suite;
  concurrency: number;
  /** '2' = gateway free on both cores, '1' = gateway pinned to CPU 0. */
  gatewayCores: 1 | 2;
  setups: number;
  failures: number;
  errors?: Record<string, number>;
  /** Why the gateway rejected handshakes during the run (its log), by reason. */
  gatewayRejections?: Record<string, number>;
  perSecond: number;
  latencyMs: { median: number; p90: number; p99: number };
  gatewayCpuSeconds: number;
  /** Gateway CPU busy fraction (1.0 = one core saturated). */
  gatewayUtilization: number;
  /** CPU busy fraction of the simulated clients (all their processes). */
  clientUtilization?: number;
  /** Setups per gateway CPU-second: the admission capacity of one core. */
  perGatewayCpuSecond: number;
  ratioToCryptoLimit?: number;
  capacityRatioToCryptoLimit?: number;
  error?: string;
}

export interface CryptoLimit {
  suite: Suite;
  model: string;
  microsecondsPerSetup: number;
  setupsPerSecond: number;
}

export interface BurstResult {
  suite: Suite;
  enclaves: number;
  admitted: number;
  /** Setup attempts (a failed setup is retried until the burst's deadline). */
  attempts: number;
  failures: number;
  errors?: Record<string, number>;
  /** From the burst's start to each enclave's admission (including its retries). */
  latencyMs: { median: number; p90: number; p99: number; max: number };
  /** Until the last enclave was admitted (or the deadline). */
  seconds: number;
  gatewayCpuSeconds: number;
  gatewayUtilization: number;
  clientUtilization: number;
  /** Setup attempts the clients gave up on by a timeout. */
  timeouts: number;
  /** …of which while the gateway was below 90 % of a core in the second before. */
  timeoutsWithSpareCpu: number;
  /**
   * The gateway's DTLS listener counters over the burst, both ports summed (bench probe):
   * busy = ClientHellos dropped because the handshake slots (or the per-address share) were
   * full, deferred = ClientHellos left to retransmit because the handshakes in progress already
   * took the latency target's share (src/dtls/pacer.ts), timedOut = handshakes the gateway gave
   * up on, cookiesSent, accepted, failed, …
   */
  gatewayDtlsCounters?: Record<string, number>;
  error?: string;
}

export interface AdmissionResult {
  seconds: number;
  cryptoLimits: CryptoLimit[];
  runs: AdmissionRun[];
  bursts?: BurstResult[];
}

/**
 * `enclaves` enclaves reconnecting at once (two client processes, started together): every one
 * must be admitted; a client whose setup times out retries, and each timeout is matched with
 * the gateway's CPU use in the second before it (a timeout while the gateway idles is a defect
 * of pacing or of a limit, not of capacity).
 */
async function burst(
  lab: Lab,
  suite: Suite,
  enclaves: number,
  gateway: Proc,
  deadlineSeconds: number,
): Promise<BurstResult> {
  const certs = await certPool(lab, suite, enclaves);
  const half = Math.ceil(enclaves / 2);
  const workers = [0, 1].map((i) =>
    startClients(lab.sh, lab.dir, {
      mode: 'burst',
      gateway: GW_SENG,
      port: SENG_PORT,
      gatewayCertPem: lab.gwKeys[suite].certPem,
      certs: certs.slice(i * half, (i + 1) * half),
      concurrency: half,
      count: Math.min(half, enclaves - i * half),
      seconds: deadlineSeconds,
    }),
  );
  const samples: { t: number; cpu: number; machine: number }[] = [];
  let sampler: NodeJS.Timeout | undefined;
  const dtlsCounters = async (): Promise<Record<string, number> | undefined> => {
    try {
      const out: Record<string, number> = {};
      for (const d of (await probe(gateway.pid as number)).dtls)
        for (const [k, v] of Object.entries(d)) if (typeof v === 'number') out[k] = (out[k] ?? 0) + v;
      return out;
    } catch {
      return undefined;
    }
  };
  try {
    await Promise.all(workers.map((w) => w.next(['armed'], 120_000)));
    const counters0 = await dtlsCounters();
    const meter = new CpuMeter({ gateway: gateway.pid });
    sampler = setInterval(
      () => samples.push({ t: Date.now(), cpu: cpuSeconds(gateway.pid), machine: machineBusySeconds() }),
      250,
    );
    for (const w of workers) w.send('go');
    const rs = (await Promise.all(
      workers.map((w) => w.next(['result'], (deadlineSeconds + 120) * 1000)),
    )) as unknown as {
      admitted: number;
      attempts: number;
      failures: number;
      errors: Record<string, number>;
      timeoutsAt: number[];
      latencies: number[];
      elapsedSeconds: number;
      cpuSeconds: number;
    }[];
    const m = meter.read();
    const counters1 = await dtlsCounters();
    const counterDelta: Record<string, number> = {};
    if (counters0 && counters1)
      for (const [k, v] of Object.entries(counters1))
        if (k !== 'handshakes' && k !== 'sessions' && k !== 'handshakeLimit')
          counterDelta[k] = v - (counters0[k] ?? 0);
    const lat = rs.flatMap((r) => r.latencies);
    const errors: Record<string, number> = {};
    for (const r of rs) for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
    // The gateway had CPU to spare in the second before t if it used < 0.9 of a core (its
    // handshakes run on one thread) AND the machine had ≥ 0.25 of a core idle: when the
    // clients on the same machine take every CPU, the gateway has nothing to spare.
    const spareBefore = (t: number): boolean => {
      const end = samples.filter((x) => x.t <= t).pop();
      const start = samples.filter((x) => x.t <= t - 1000).pop() ?? samples[0];
      if (!end || !start || end.t <= start.t) return true; // unknown counts against us
      const wall = (end.t - start.t) / 1000;
      const gatewayCores = (end.cpu - start.cpu) / wall;
      const idleCores = availableParallelism() - (end.machine - start.machine) / wall;
      return !(gatewayCores >= 0.9) && idleCores >= 0.25;
    };
    const timeoutsAt = rs.flatMap((r) => r.timeoutsAt);
    const seconds = lat.length ? Math.max(...lat) / 1000 : Math.max(...rs.map((r) => r.elapsedSeconds));
    const gwCpu = m.cpu.gateway ?? NaN;
    const s = summarize(lat, 0);
    return {
      suite,
      enclaves,
      admitted: lat.length,
      attempts: rs.reduce((a, r) => a + r.attempts, 0),
      failures: rs.reduce((a, r) => a + r.failures, 0),
      ...(Object.keys(errors).length ? { errors } : {}),
      latencyMs: { median: s.median, p90: s.p90, p99: s.p99, max: s.max },
      seconds: round(seconds, 1),
      gatewayCpuSeconds: gwCpu,
      gatewayUtilization: round(gwCpu / seconds, 2),
      clientUtilization: round(rs.reduce((a, r) => a + r.cpuSeconds, 0) / seconds, 2),
      timeouts: timeoutsAt.length,
      timeoutsWithSpareCpu: timeoutsAt.filter(spareBefore).length,
      ...(Object.keys(counterDelta).length ? { gatewayDtlsCounters: counterDelta } : {}),
    };
  } finally {
    if (sampler) clearInterval(sampler);
    await Promise.all(workers.map((w) => w.proc.stop()));
  }
}

export function cryptoLimit(suite: Suite, s: OpensslSpeed): CryptoLimit {
  const sig = suite === 'rsa' ? s.rsa3072 : s.ecdsaP256;
  const perHandshake = 1 / sig.sign + 1 / sig.verify + 1 / s.ecdsaP256.sign + 1 / s.ecdhP256.op;
  const total = 2 * perHandshake + 1 / s.rsa2048.verify;
  const alg = suite === 'rsa' ? 'RSA-3072' : 'ECDSA P-256';
  return {
    suite,
    model: `2 × (${alg} sign + ${alg} verify + P-256 keygen + P-256 ECDH) + RSA-2048 verify`,
    microsecondsPerSetup: round(total * 1e6, 1),
    setupsPerSecond: round(1 / total, 1),
  };
}

function keyPair(suite: Suite): Promise<KeyObject> {
  return new Promise((resolve, reject) => {
    const cb = (err: Error | null, _pub: KeyObject, priv: KeyObject) => (err ? reject(err) : resolve(priv));
    if (suite === 'rsa') generateKeyPair('rsa', { modulusLength: 3072 }, cb);
    else generateKeyPair('ec', { namedCurve: 'prime256v1' }, cb);
  });
}

/**
 * `count` RA-TLS certificates with distinct quotes (the ISV product id differs), over a few
 * keys (RSA-3072 key generation is slow): no two concurrent clients share a quote, which is
 * what the gateway matches a send tunnel to its receive tunnel by.
 */
export async function certPool(
  lab: Lab,
  suite: Suite,
  count: number,
): Promise<{ certPem: string; keyPem: string }[]> {
  const keys = await Promise.all(
    Array.from({ length: Math.min(count, suite === 'rsa' ? 4 : 16) }, () => keyPair(suite)),
  );
  return Array.from({ length: count }, (_, i) => {
    const c = createSimCertificate(lab.ca, {
      kind: 'epid',
      mrEnclave: MR_ENCLAVE,
      mrSigner: MR_SIGNER,
      privateKey: keys[i % keys.length] as KeyObject,
      isvProdId: i,
    });
    return { certPem: c.certPem, keyPem: c.keyPem };
  });
}

/** One admission run of `concurrency` clients for `seconds` (also used by the fleet section). */
export async function oneRun(
  lab: Lab,
  suite: Suite,
  concurrency: number,
  seconds: number,
  certs: { certPem: string; keyPem: string }[],
  gateway: Proc,
  gatewayCores: 1 | 2,
  limit: CryptoLimit | undefined,
): Promise<AdmissionRun> {
  const gatewayPid = gateway.pid;
  gateway.takeRejections();
  const base = { suite, concurrency, gatewayCores };
  // Two client processes from 2 clients on: one simulator process cannot keep a gateway busy.
  const nWorkers = concurrency >= 2 ? 2 : 1;
  const workers = Array.from({ length: nWorkers }, (_, i) => {
    const share = Math.floor(concurrency / nWorkers) + (i < concurrency % nWorkers ? 1 : 0);
    const first = i * Math.ceil(concurrency / nWorkers);
    return startClients(lab.sh, lab.dir, {
      mode: 'admission',
      gateway: GW_SENG,
      port: SENG_PORT,
      gatewayCertPem: lab.gwKeys[suite].certPem,
      certs: certs.slice(first, first + share),
      concurrency: share,
      seconds,
    });
  });
  const meter = new CpuMeter({ gateway: gatewayPid });
  try {
    const rs = (await Promise.all(
      workers.map((w) => w.next(['result'], (seconds + 60) * 1000)),
    )) as unknown as {
      setups: number;
      failures: number;
      errors: Record<string, number>;
      elapsedSeconds: number;
      latencies: number[];
      cpuSeconds: number;
    }[];
    const m = meter.read();
    const gwCpu = m.cpu.gateway ?? NaN;
    const setups = rs.reduce((a, r) => a + r.setups, 0);
    const failures = rs.reduce((a, r) => a + r.failures, 0);
    const elapsed = Math.max(...rs.map((r) => r.elapsedSeconds));
    const errors: Record<string, number> = {};
    for (const r of rs) for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
    const lat = summarize(
      rs.flatMap((r) => r.latencies),
      1,
    );
    // Each client process reports its own CPU time (it has exited by now).
    const clientCpu = rs.reduce((a, r) => a + r.cpuSeconds, 0);
    const run: AdmissionRun = {
      ...base,
      setups,
      failures,
      ...(failures ? { errors } : {}),
      ...(() => {
        const r = gateway.takeRejections();
        return Object.keys(r).length ? { gatewayRejections: r } : {};
      })(),
      perSecond: round(setups / elapsed, 1),
      latencyMs: { median: lat.median, p90: lat.p90, p99: lat.p99 },
      gatewayCpuSeconds: gwCpu,
      gatewayUtilization: round(gwCpu / m.wallSeconds, 2),
      clientUtilization: round(clientCpu / m.wallSeconds, 2),
      perGatewayCpuSecond: round(setups / gwCpu, 1),
    };
    if (limit) {
      run.ratioToCryptoLimit = round(run.perSecond / limit.setupsPerSecond, 3);
      run.capacityRatioToCryptoLimit = round(run.perGatewayCpuSecond / limit.setupsPerSecond, 3);
    }
    return run;
  } finally {
    await Promise.all(workers.map((w) => w.proc.stop()));
  }
}

export async function runAdmission(
  lab: Lab,
  opts: BenchOptions,
  speed: OpensslSpeed | undefined,
): Promise<AdmissionResult> {
  const { suites, levels, bursts, runSeconds } = admissionSelection();
  const seconds = runSeconds ?? (opts.quick ? 3 : 6);
  const result: AdmissionResult = { seconds, cryptoLimits: [], runs: [] };
  for (const suite of suites) {
    const limit = speed ? cryptoLimit(suite, speed) : undefined;
    if (limit) result.cryptoLimits.push(limit);
    log(`admission: ${SUITE_NAMES[suite]}: ${Math.max(...levels)} client certificates`);
    let gw;
    try {
      const certs = await certPool(lab, suite, Math.max(...levels));
      gw = await startGateway(lab, { suite, maxHandshakes: 512, nodeArgs: probeNodeArgs() });
      for (const c of levels) {
        try {
          const run = await oneRun(lab, suite, c, seconds, certs, gw, 2, limit);
          result.runs.push(run);
          log(
            `  ${suite} c=${c}: ${run.perSecond}/s (gateway ${run.gatewayUtilization} busy, clients ${run.clientUtilization}, ${run.perGatewayCpuSecond}/CPU-s), failures ${run.failures}, ratio ${run.ratioToCryptoLimit}`,
          );
        } catch (err) {
          result.runs.push(failed(suite, c, 2, err));
        }
      }
      if (bursts)
        try {
          const b = await burst(lab, suite, opts.quick ? 300 : 2000, gw, opts.quick ? 60 : 120);
          (result.bursts ??= []).push(b);
          log(
            `  ${suite} burst of ${b.enclaves}: ${b.admitted} admitted in ${b.seconds} s, p99 ${b.latencyMs.p99} ms, ${b.timeouts} timeouts (${b.timeoutsWithSpareCpu} with CPU to spare)`,
          );
        } catch (err) {
          (result.bursts ??= []).push(failedBurst(suite, err));
          log(`  ${suite} burst failed: ${errorText(err)}`);
        }
      // Scaling: the gateway confined to one core (clients still free).
      try {
        pin([gw.pid], '0');
        const run = await oneRun(lab, suite, 16, seconds, certs, gw, 1, limit);
        result.runs.push(run);
        log(`  ${suite} c=16, gateway on one core: ${run.perSecond}/s`);
      } catch (err) {
        result.runs.push(failed(suite, 16, 1, err));
      } finally {
        pin([gw.pid], '0-1');
      }
    } catch (err) {
      result.runs.push(failed(suite, 0, 2, err));
      log(`  ${suite} failed: ${errorText(err)}`);
    } finally {
      await gw?.stop();
    }
  }
  return result;
}

/**
 * What to run; the environment narrows it for experiments (the report records the runs made):
 * SENG_BENCH_ADMISSION_SUITES=ec,rsa, SENG_BENCH_ADMISSION_LEVELS=1,16,128,
 * SENG_BENCH_ADMISSION_BURST=0 (no burst), SENG_BENCH_ADMISSION_SECONDS=N (per run).
 */
function admissionSelection(): {
  suites: Suite[];
  levels: number[];
  bursts: boolean;
  runSeconds: number | undefined;
} {
  const list = (name: string): string[] =>
    (process.env[name] ?? '')
      .split(',')
      .map((x) => x.trim())
      .filter(Boolean);
  const suites = list('SENG_BENCH_ADMISSION_SUITES').filter((x): x is Suite => x === 'ec' || x === 'rsa');
  const levels = list('SENG_BENCH_ADMISSION_LEVELS')
    .map(Number)
    .filter((n) => Number.isInteger(n) && n > 0);
  return {
    suites: suites.length ? suites : ['ec', 'rsa'],
    levels: levels.length ? levels : [1, 16, 128],
    bursts: process.env.SENG_BENCH_ADMISSION_BURST !== '0',
    runSeconds:
      Number(process.env.SENG_BENCH_ADMISSION_SECONDS) > 0
        ? Number(process.env.SENG_BENCH_ADMISSION_SECONDS)
        : undefined,
  };
}

function failedBurst(suite: Suite, err: unknown): BurstResult {
  const nan = { median: NaN, p90: NaN, p99: NaN, max: NaN };
  return {
    suite,
    enclaves: 0,
    admitted: 0,
    attempts: 0,
    failures: 0,
    latencyMs: nan,
    seconds: NaN,
    gatewayCpuSeconds: NaN,
    gatewayUtilization: NaN,
    clientUtilization: NaN,
    timeouts: 0,
    timeoutsWithSpareCpu: 0,
    error: errorText(err),
  };
}

function failed(suite: Suite, concurrency: number, gatewayCores: 1 | 2, err: unknown): AdmissionRun {
  return {
    suite,
    concurrency,
    gatewayCores,
    setups: 0,
    failures: 0,
    perSecond: NaN,
    latencyMs: { median: NaN, p90: NaN, p99: NaN },
    gatewayCpuSeconds: NaN,
    gatewayUtilization: NaN,
    perGatewayCpuSecond: NaN,
    error: errorText(err),
  };
}
