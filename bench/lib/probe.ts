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
import { DtlsServer } from '../../src/dtls/index.js';
import { loadAddon } from '../../src/dtls/native.js';

export const probePath = (pid: number): string => `/tmp/seng-probe-${pid}.json`;

const servers: DtlsServer[] = [];
const listen = DtlsServer.listen.bind(DtlsServer);
DtlsServer.listen = async (...args: Parameters<typeof DtlsServer.listen>) => {
  const s = await listen(...args);
  servers.push(s);
  return s;
};

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
    let native: unknown;
    try {
      native = loadAddon().nativeStats();
    } catch (err) {
      native = { error: String(err) };
    }
    const snapshot = {
      at: Date.now(),
      native,
      dtls: servers.map((s) => s.stats()),
      memory: process.memoryUsage(),
    };
    const file = probePath(process.pid);
    writeFileSync(`${file}.tmp`, JSON.stringify(snapshot));
    renameSync(`${file}.tmp`, file);
  });
});
