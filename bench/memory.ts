/**
 * Section 4 (memory): the gateway's resident set (VmRSS) with 0, 1,000 and 10,000 idle
 * sessions (each a full setup: two DTLS sessions, an enclave IP). The simulated enclaves run
 * without TUN in a few worker processes in the enclave host namespace (a process holds at
 * most 3,500 enclaves = 7,000 UDP sockets, below this machine's open-file limit); connects are
 * paced by bounded concurrency. The gateway runs with a long idle timeout so nothing expires.
 */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { GW_SENG, SENG_PORT, startGateway, type Lab, type Proc } from './lib/lab.js';
import { log, round, rssKiB, sleep, type BenchOptions } from './lib/util.js';
import { certPool } from './admission.js';
import { startClients, type ClientsWorker } from './lib/workers.js';
import { probe, probeNodeArgs } from './lib/gateway-state.js';

export interface MemoryPoint {
  sessions: number;
  /** Sessions the workers reported established and open. */
  live: number;
  rssKiB: number;
  /** (RSS − RSS with 0 sessions) / sessions. */
  kibPerSession?: number;
  connectSeconds?: number;
  failures?: number;
  /**
   * The gateway's JS heap after its last major GC (node --trace-gc: "Mark-Compact A (B) -> C (D) MB",
   * C = used, D = committed), MiB: the rest of VmRSS is native (OpenSSL, libuv, addons, code).
   */
  jsHeapMiB?: { used: number; committed: number; line: string };
  /** From the gateway probe after a full GC (process.memoryUsage()), KiB. */
  heapKiB?: { used: number; total: number; external: number };
  /** Growth per enclave since 0 enclaves, KiB: JS heap (committed) and the rest of RSS (native). */
  jsHeapKiBPerSession?: number;
  nativeKiBPerSession?: number;
}

export interface MemoryResult {
  suite: 'ec';
  points: MemoryPoint[];
  error?: string;
}

const PER_WORKER = 3500;

/**
 * SENG_BENCH_HEAP_SNAPSHOTS=DIR: the gateway writes a V8 heap snapshot into DIR at every point
 * (0, 1,000, 10,000 enclaves), to attribute the JS heap per enclave (e.g. in Chrome DevTools'
 * comparison view). Off by default: a snapshot pauses the gateway for seconds and leaves its RSS
 * higher, so the RSS figures of such a run are not comparable.
 */
const SNAPSHOT_DIR = process.env.SENG_BENCH_HEAP_SNAPSHOTS;
const SNAPSHOT_SIGNAL = 'SIGWINCH';

function snapshotArgs(): string[] {
  return SNAPSHOT_DIR ? [`--heapsnapshot-signal=${SNAPSHOT_SIGNAL}`, `--diagnostic-dir=${SNAPSHOT_DIR}`] : [];
}

/** Asks the gateway for a heap snapshot and waits until the file is complete. */
async function heapSnapshot(pid: number | undefined): Promise<void> {
  if (!SNAPSHOT_DIR || pid === undefined) return;
  const before = new Set(readdirSync(SNAPSHOT_DIR));
  process.kill(pid, SNAPSHOT_SIGNAL);
  for (let i = 0; i < 600; i++) {
    await sleep(1000);
    const fresh = readdirSync(SNAPSHOT_DIR).filter((f) => f.endsWith('.heapsnapshot') && !before.has(f));
    const file = fresh[0];
    if (file === undefined) continue;
    // V8 writes the snapshot in one go; it is complete once its size stops changing.
    const size = statSync(join(SNAPSHOT_DIR, file)).size;
    await sleep(2000);
    if (statSync(join(SNAPSHOT_DIR, file)).size === size && size > 0) {
      log(`memory: heap snapshot ${join(SNAPSHOT_DIR, file)}`);
      return;
    }
  }
  log('memory: the heap snapshot did not appear');
}

export async function runMemory(lab: Lab, opts: BenchOptions): Promise<MemoryResult> {
  const targets = opts.quick ? [1000] : [1000, 10000];
  const result: MemoryResult = { suite: 'ec', points: [] };
  const max = Math.max(...targets);
  const certs = await certPool(lab, 'ec', 64);
  let gw: Proc | undefined;
  const workers: ClientsWorker[] = [];
  try {
    gw = await startGateway(lab, {
      suite: 'ec',
      idleTimeoutS: 7200,
      maxSessions: max + 1000,
      maxHandshakes: 256,
      nodeArgs: ['--trace-gc', ...probeNodeArgs(), ...snapshotArgs()],
    });
    await sleep(3000);
    const baseHeap = await probeHeap(gw.pid);
    const base = rssKiB(gw.pid);
    await heapSnapshot(gw.pid);
    result.points.push({
      sessions: 0,
      live: 0,
      rssKiB: base,
      ...heap(gw),
      ...(baseHeap ? { heapKiB: baseHeap } : {}),
    });
    log(`memory: 0 sessions: ${base} KiB`);
    let have = 0;
    for (const target of targets) {
      const t0 = Date.now();
      const batch: ClientsWorker[] = [];
      let need = target - have;
      let slot = workers.length;
      while (need > 0) {
        const count = Math.min(PER_WORKER, need);
        need -= count;
        const offset = (slot++ * 16) % certs.length;
        batch.push(
          startClients(lab.sh, lab.dir, {
            mode: 'hold',
            gateway: GW_SENG,
            port: SENG_PORT,
            gatewayCertPem: lab.gwKeys.ec.certPem,
            // Each worker its own certificates: no two enclaves with one quote await a send tunnel at once.
            certs: certs.slice(offset, offset + 16),
            concurrency: 16,
            count,
          }),
        );
      }
      workers.push(...batch);
      let live = 0;
      let failures = 0;
      for (const w of batch) {
        const r = await w.next(['reached'], (opts.quick ? 120 : 400) * 1000);
        live += Number(r.live);
        failures += Number(r.failures);
      }
      have = target;
      const seconds = (Date.now() - t0) / 1000;
      await sleep(3000);
      const h = await probeHeap(gw.pid);
      const rss = rssKiB(gw.pid);
      await heapSnapshot(gw.pid);
      const perJs = h && baseHeap ? round((h.total - baseHeap.total) / target, 2) : undefined;
      const total =
        result.points.length > 1 ? live + (result.points[result.points.length - 1]?.live ?? 0) : live;
      result.points.push({
        sessions: target,
        live: total,
        rssKiB: rss,
        kibPerSession: round((rss - base) / target, 2),
        connectSeconds: round(seconds, 1),
        failures,
        ...heap(gw),
        ...(h ? { heapKiB: h } : {}),
        ...(perJs !== undefined
          ? { jsHeapKiBPerSession: perJs, nativeKiBPerSession: round((rss - base) / target - perJs, 2) }
          : {}),
      });
      log(
        `memory: ${target} sessions (${total} live): ${rss} KiB, ${round((rss - base) / target, 2)} KiB/session`,
      );
    }
  } finally {
    for (const w of workers) w.send('exit');
    await Promise.all(workers.map((w) => w.proc.stop()));
    await gw?.stop();
  }
  return result;
}

async function probeHeap(pid: number | undefined): Promise<MemoryPoint['heapKiB'] | undefined> {
  if (pid === undefined) return undefined;
  try {
    const m = (await probe(pid)).memory;
    return {
      used: Math.round(m.heapUsed / 1024),
      total: Math.round(m.heapTotal / 1024),
      external: Math.round(m.external / 1024),
    };
  } catch {
    return undefined;
  }
}

function heap(gw: Proc): Pick<MemoryPoint, 'jsHeapMiB'> {
  const line = gw.lastMajorGc();
  const m = line ? /Mark-Compact[^>]*->\s*([\d.]+)\s*\(([\d.]+)\)\s*MB/.exec(line) : null;
  if (!line || !m) return {};
  return { jsHeapMiB: { used: Number(m[1]), committed: Number(m[2]), line: line.trim().slice(0, 200) } };
}
