/** Runs a bench worker (bench/workers/*.js) inside a namespace and talks to it over JSON lines. */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { distBench, drained, type Netns, type Proc } from './lab.js';

export interface ClientsWorker {
  proc: Proc;
  /** Next JSON line with one of these events (rejects on exit/timeout or an "error" event). */
  next(events: string[], timeoutMs: number): Promise<Record<string, unknown>>;
  send(line: string): void;
}

let n = 0;
/** bench/workers/clients.js (many simulated enclaves: admission loops, idle sessions). */
export function startClients(
  ns: Netns,
  dir: string,
  config: Record<string, unknown>,
  wrap: string[] = [],
): ClientsWorker {
  return startWorker(ns, dir, 'clients.js', config, wrap);
}

/** Any worker script of dist/bench/workers, with its configuration written to a JSON file. */
export function startWorker(
  ns: Netns,
  dir: string,
  script: string,
  config: Record<string, unknown>,
  wrap: string[] = [],
): ClientsWorker {
  const file = join(dir, `clients-${process.pid}-${n++}.json`);
  writeFileSync(file, JSON.stringify(config));
  const child = ns.spawn(
    'sh',
    ['-c', 'exec "$@"', 'sh', ...wrap, process.execPath, join(distBench, 'workers', script), file],
    {
      stdio: ['pipe', 'pipe', 'pipe'],
    },
  );
  const proc = drained(child);
  const queue: Record<string, unknown>[] = [];
  const waiters: (() => void)[] = [];
  let exited = false;
  if (child.stdout) {
    createInterface({ input: child.stdout }).on('line', (line) => {
      try {
        queue.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        return;
      }
      for (const w of waiters.splice(0)) w();
    });
  }
  child.once('exit', () => {
    exited = true;
    for (const w of waiters.splice(0)) w();
  });
  return {
    proc,
    send: (line) => child.stdin?.write(`${line}\n`),
    async next(events, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const i = queue.findIndex((m) => events.includes(String(m.event)) || m.event === 'error');
        if (i >= 0) {
          const m = queue.splice(i, 1)[0] as Record<string, unknown>;
          if (m.event === 'error') throw new Error(`clients worker: ${String(m.error)}`);
          return m;
        }
        if (exited) throw new Error(`clients worker exited: ${proc.tail()}`);
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`clients worker: no ${events.join('/')} within ${timeoutMs} ms`);
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, Math.min(left, 1000));
          waiters.push(() => {
            clearTimeout(t);
            resolve();
          });
        });
      }
    },
  };
}
