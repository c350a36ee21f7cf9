/**
 * Gateway probe, preloaded into `seng serve` with `node --import dist/bench/lib/probe.js` by
 * the benchmark and the fuzz/soak test (the gateway's control socket does not expose these):
 * on SIGUSR2 it writes, atomically, /tmp/seng-probe-<pid>.json with
 *   native   the DTLS addon's object counters (nativeStats(): live SSL objects, endpoints, …),
 *   dtls     stats() of every DtlsServer of the process (handshake slots in use, sessions, …),
 *   memory   process.memoryUsage() (JS heap used/total, external, array buffers, RSS),
 * after two full GCs (with a turn of the event loop between, so N-API finalizers have run)
 * when the process runs with --expose-gc. Only observation: it patches the
 * static DtlsServer.listen to remember the servers, nothing else.
 */
import { renameSync, writeFileSync } from 'node:fs';

/** Where the snapshot goes (bench/lib/gateway-state.ts reads it from the same path). */
const probePath = (pid: number): string => `/tmp/seng-probe-${pid}.json`;

// Imported dynamically and defensively: the probe must never keep the gateway from starting,
// even when the data plane it observes changes shape (then the snapshot says what is missing).
interface Server {
  stats(): Record<string, unknown>;
}
const servers: Server[] = [];
let nativeStats: (() => unknown) | undefined;
const probeErrors: string[] = [];
try {
  const dtls = (await import('../../src/dtls/index.js')) as unknown as {
    DtlsServer?: { listen?: (...args: unknown[]) => Promise<Server> };
  };
  const cls = dtls.DtlsServer;
  if (cls && typeof cls.listen === 'function') {
    const listen = cls.listen.bind(cls);
    cls.listen = async (...args: unknown[]) => {
      const s = await listen(...args);
      servers.push(s);
      return s;
    };
  } else probeErrors.push('DtlsServer.listen not found');
} catch (err) {
  probeErrors.push(`dtls: ${String(err)}`);
}
try {
  const native = (await import('../../src/dtls/native.js')) as unknown as {
    loadAddon?: () => { nativeStats?: () => unknown };
  };
  nativeStats = () => native.loadAddon?.().nativeStats?.() ?? {};
} catch (err) {
  probeErrors.push(`native: ${String(err)}`);
}

/** Full GC, twice with a turn of the event loop between, so N-API finalizers have run. */
async function collect(): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) return;
  for (let i = 0; i < 2; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setTimeout(r, 20));
  }
}

process.on('SIGUSR2', () => {
  void collect().then(() => {
    let native: unknown = {};
    try {
      native = nativeStats?.() ?? {};
    } catch (err) {
      native = { error: String(err) };
    }
    const snapshot = {
      at: Date.now(),
      native,
      ...(probeErrors.length ? { errors: probeErrors } : {}),
      dtls: servers.map((s) => s.stats()),
      memory: process.memoryUsage(),
    };
    const file = probePath(process.pid);
    writeFileSync(`${file}.tmp`, JSON.stringify(snapshot));
    renameSync(`${file}.tmp`, file);
  });
});
