/**
 * Small helpers shared by the benchmark sections: options, progress output, process CPU
 * time and memory from /proc, statistics, machine description and `openssl speed`.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, totalmem, release } from 'node:os';

export interface BenchOptions {
  quick: boolean;
  /** Sections to run (all when empty). */
  only: Set<string>;
  /** Directory for the report and raw JSON. */
  outDir: string;
}

export function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Rejects after `ms` with a message naming `what`. */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

let clkTck: number | undefined;
function ticksPerSecond(): number {
  if (clkTck === undefined) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

/** utime + stime of a process (all its threads) in seconds, or NaN when it is gone. */
export function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) / ticksPerSecond();
  } catch {
    return NaN;
  }
}

/** Machine-wide busy CPU seconds (all CPUs, everything but idle and iowait) from /proc/stat. */
export function machineBusySeconds(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  return (total - idle) / ticksPerSecond();
}

/** Resident set size of a process in KiB (VmRSS), NaN when unknown. */
export function rssKiB(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

/** CPU time of several processes over an interval. */
export class CpuMeter {
  private readonly start: Map<string, number>;
  private readonly t0 = performance.now();
  private readonly busy0 = machineBusySeconds();
  constructor(private readonly pids: Record<string, number | undefined>) {
    this.start = new Map(Object.entries(pids).map(([k, pid]) => [k, cpuSeconds(pid)]));
  }
  /** CPU seconds per process since construction, plus wall time and machine busy time. */
  read(): { wallSeconds: number; machineBusySeconds: number; cpu: Record<string, number> } {
    const cpu: Record<string, number> = {};
    for (const [k, pid] of Object.entries(this.pids))
      cpu[k] = round(cpuSeconds(pid) - (this.start.get(k) ?? NaN), 3);
    return {
      wallSeconds: round((performance.now() - this.t0) / 1000, 3),
      machineBusySeconds: round(machineBusySeconds() - this.busy0, 3),
      cpu,
    };
  }
}

export function round(x: number, digits = 2): number {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

export function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.round(q * (sorted.length - 1))));
  return sorted[i] as number;
}

export function summarize(
  values: number[],
  digits = 3,
): { n: number; median: number; p90: number; p99: number; max: number } {
  const s = [...values].sort((a, b) => a - b);
  return {
    n: s.length,
    median: round(quantile(s, 0.5), digits),
    p90: round(quantile(s, 0.9), digits),
    p99: round(quantile(s, 0.99), digits),
    max: round(s[s.length - 1] ?? NaN, digits),
  };
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export interface MachineInfo {
  date: string;
  cpuModel: string;
  cpus: number;
  memoryGiB: number;
  kernel: string;
  node: string;
  openssl: string;
  iperf3: string;
  openvpn: string;
  commit: string;
  /** /proc/loadavg when the run started: other work on a shared machine skews absolute numbers. */
  loadAverage: string;
}

function firstLine(cmd: string, args: string[]): string {
  try {
    return (
      execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
        .split('\n')[0]
        ?.trim() ?? ''
    );
  } catch (err) {
    // iperf3/openvpn --version may exit non-zero but still print.
    const out = (err as { stdout?: string }).stdout;
    return out?.split('\n')[0]?.trim() || 'unavailable';
  }
}

export function machineInfo(): MachineInfo {
  return {
    date: new Date().toISOString(),
    cpuModel: cpus()[0]?.model ?? 'unknown',
    cpus: cpus().length,
    memoryGiB: round(totalmem() / 2 ** 30, 1),
    kernel: release(),
    node: process.version,
    openssl: firstLine('openssl', ['version']),
    iperf3: firstLine('iperf3', ['--version']),
    openvpn: firstLine('openvpn', ['--version']),
    commit: firstLine('git', ['rev-parse', '--short', 'HEAD']),
    loadAverage: readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' '),
  };
}

export interface OpensslSpeed {
  seconds: number;
  rsa2048: { sign: number; verify: number };
  rsa3072: { sign: number; verify: number };
  ecdsaP256: { sign: number; verify: number };
  ecdhP256: { op: number };
}

/** Public-key operations per second on one core, from `openssl speed`. */
export function opensslSpeed(seconds: number): OpensslSpeed {
  const out = execFileSync(
    'openssl',
    ['speed', '-seconds', String(seconds), 'rsa2048', 'rsa3072', 'ecdsap256', 'ecdhp256'],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: (seconds * 12 + 30) * 1000 },
  );
  const rsa = (bits: number) => {
    // "rsa 3072 bits 0.001234s 0.000056s    810.4  17857.1" (sign/s verify/s last, OpenSSL 3.0)
    const line = out.split('\n').find((l) => new RegExp(`^rsa\\s+${bits} bits`).test(l.trim()));
    const n = line?.trim().split(/\s+/).map(Number).filter(Number.isFinite);
    if (!n || n.length < 3) throw new Error(`cannot parse openssl speed rsa${bits}:\n${out}`);
    return { sign: n[n.length - 2] as number, verify: n[n.length - 1] as number };
  };
  const ec = (what: 'ecdsa' | 'ecdh') => {
    const line = out
      .split('\n')
      .find((l) => new RegExp(`^256 bits ${what}\\s+\\(nistp256\\)`).test(l.trim()));
    const n = line
      ?.replace(/\(nistp256\)/, '')
      .trim()
      .split(/\s+/)
      .map(Number)
      .filter(Number.isFinite);
    if (!n || n.length < 2) throw new Error(`cannot parse openssl speed ${what}p256:\n${out}`);
    return n;
  };
  const ecdsa = ec('ecdsa');
  const ecdh = ec('ecdh');
  return {
    seconds,
    rsa2048: rsa(2048),
    rsa3072: rsa(3072),
    ecdsaP256: { sign: ecdsa[ecdsa.length - 2] as number, verify: ecdsa[ecdsa.length - 1] as number },
    ecdhP256: { op: ecdh[ecdh.length - 1] as number },
  };
}
