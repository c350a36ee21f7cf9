/**
 * Benchmark worker: many simulated enclaves (no TUN) in one process, run inside the enclave
 * host namespace by bench/admission.ts and bench/memory.ts. Configuration is a JSON file
 * (argv[2]); results are JSON lines on stdout.
 *
 *   admission: `concurrency` slots, each doing full setups (two handshakes, attestation,
 *              IpAssignment/ACK) followed by close, until `seconds` have passed; slot i uses
 *              certificate i (distinct keys and quotes, so the gateway never has two
 *              enclaves with one quote waiting for their send tunnels at once).
 *   hold:      opens `count` sessions with bounded concurrency and keeps them idle; prints
 *              {"event":"reached"} and then waits for "exit" on stdin.
 *   burst:     `count` enclaves reconnecting at once: prints {"event":"armed"}, waits for "go" on
 *              stdin, then starts every setup at the same moment; a failed setup is retried
 *              (as a real enclave would) until `seconds` have passed. Reports the time from the
 *              burst's start to each enclave's admission, and when each setup attempt timed out.
 */
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { SimEnclave } from '../../src/sim/enclave.js';

interface Config {
  mode: 'admission' | 'hold' | 'burst';
  gateway: string;
  port: number;
  gatewayCertPem: string;
  certs: { certPem: string; keyPem: string }[];
  concurrency: number;
  seconds?: number;
  count?: number;
}

const cfg = JSON.parse(readFileSync(process.argv[2] as string, 'utf8')) as Config;

function emit(o: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(o)}\n`);
}

function sim(slot: number): SimEnclave {
  const c = cfg.certs[slot % cfg.certs.length]!;
  return new SimEnclave({
    gateway: cfg.gateway,
    port: cfg.port,
    certPem: c.certPem,
    keyPem: c.keyPem,
    gatewayCertPem: cfg.gatewayCertPem,
    handshakeTimeoutMs: 20_000,
    assignmentTimeoutMs: 20_000,
  });
}

async function admission(): Promise<void> {
  const deadline = performance.now() + (cfg.seconds ?? 5) * 1000;
  const latencies: number[] = [];
  const errors = new Map<string, number>();
  let failures = 0;
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  let lastEnd = t0;
  await Promise.all(
    Array.from({ length: cfg.concurrency }, async (_, slot) => {
      while (performance.now() < deadline) {
        const s = sim(slot);
        const start = performance.now();
        try {
          await s.connect();
          latencies.push(performance.now() - start);
          lastEnd = performance.now();
        } catch (err) {
          failures++;
          const m = err instanceof Error ? err.message.slice(0, 120) : String(err);
          errors.set(m, (errors.get(m) ?? 0) + 1);
        }
        await s.close('benchmark done');
      }
    }),
  );
  const elapsed = (lastEnd - t0) / 1000;
  latencies.sort((a, b) => a - b);
  const q = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN;
  emit({
    event: 'result',
    setups: latencies.length,
    failures,
    errors: Object.fromEntries(errors),
    elapsedSeconds: elapsed,
    perSecond: latencies.length / elapsed,
    latencyMs: { median: q(0.5), p90: q(0.9), p99: q(0.99) },
    latencies: latencies.map((x) => Math.round(x * 10) / 10),
    cpuSeconds: (() => {
      const c = process.cpuUsage(cpu0);
      return (c.user + c.system) / 1e6;
    })(),
  });
}

async function hold(): Promise<void> {
  const target = cfg.count ?? 0;
  const live: SimEnclave[] = [];
  let failures = 0;
  let next = 0;
  const t0 = performance.now();
  let lastReport = t0;
  await Promise.all(
    Array.from({ length: Math.min(cfg.concurrency, target) }, async (_, slot) => {
      while (next < target) {
        next++;
        const s = sim(slot);
        try {
          await s.connect();
          live.push(s);
        } catch {
          failures++;
          next--;
          await s.close();
          if (failures > target) return;
        }
        if (performance.now() - lastReport > 5000) {
          lastReport = performance.now();
          emit({ event: 'progress', live: live.length, failures });
        }
      }
    }),
  );
  const closed = live.filter((s) => s.closed).length;
  emit({
    event: 'reached',
    live: live.length - closed,
    failures,
    seconds: (performance.now() - t0) / 1000,
  });
  const rl = createInterface({ input: process.stdin });
  for await (const line of rl) if (line.trim() === 'exit') break;
  for (const s of live) void s.close('benchmark done');
  setTimeout(() => process.exit(0), 500).unref();
}

const isTimeout = (m: string) => /did not finish|timed out|timeout|within \d+/i.test(m);

async function burst(): Promise<void> {
  const count = cfg.count ?? 0;
  const rl = createInterface({ input: process.stdin });
  emit({ event: 'armed' });
  for await (const line of rl) if (line.trim() === 'go') break;
  const t0 = performance.now();
  const deadline = t0 + (cfg.seconds ?? 60) * 1000;
  const cpu0 = process.cpuUsage();
  const latencies: number[] = [];
  const timeoutsAt: number[] = [];
  const errors = new Map<string, number>();
  let attempts = 0;
  let failures = 0;
  const live: SimEnclave[] = [];
  await Promise.all(
    Array.from({ length: count }, async (_, slot) => {
      while (performance.now() < deadline) {
        const s = sim(slot);
        attempts++;
        try {
          await s.connect();
          latencies.push(performance.now() - t0);
          live.push(s);
          return;
        } catch (err) {
          failures++;
          const m = err instanceof Error ? err.message.slice(0, 120) : String(err);
          errors.set(m, (errors.get(m) ?? 0) + 1);
          if (isTimeout(m)) timeoutsAt.push(Date.now());
          await s.close();
        }
      }
    }),
  );
  const elapsed = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(cpu0);
  emit({
    event: 'result',
    admitted: latencies.length,
    attempts,
    failures,
    errors: Object.fromEntries(errors),
    timeoutsAt,
    latencies: latencies.map((x) => Math.round(x)),
    elapsedSeconds: elapsed,
    cpuSeconds: (c.user + c.system) / 1e6,
  });
  await Promise.all(live.map((s) => s.close('benchmark done')));
  setTimeout(() => process.exit(0), 300).unref();
}

(cfg.mode === 'admission' ? admission() : cfg.mode === 'burst' ? burst() : hold()).catch((err: unknown) => {
  emit({ event: 'error', error: err instanceof Error ? err.message : String(err) });
  process.exit(1);
});
