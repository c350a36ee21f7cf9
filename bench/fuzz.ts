/**
 * Bench section `fuzz`: runs the libFuzzer harness of native/common (fuzz/run.js, ASan + UBSan)
 * for a fixed number of executions and records what it did. A crash is an error of this section.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from './lib/lab.js';
import type { BenchOptions } from './lib/util.js';

export interface FuzzResult {
  harness: string;
  runs: number;
  executions: number;
  newUnits: number;
  coverage: number | null;
  seconds: number;
  crashed: boolean;
}

export const FUZZ_RUNS = { quick: 50_000, full: 500_000 };

export function runFuzz(opts: BenchOptions): Promise<FuzzResult> {
  const runs = opts.quick ? FUZZ_RUNS.quick : FUZZ_RUNS.full;
  const r = spawnSync(
    process.execPath,
    [join(repoRoot, 'fuzz', 'run.js'), '--runs', String(runs), '--json'],
    {
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
    },
  );
  const last = r.stdout.trim().split('\n').pop() ?? '';
  if (r.status !== 0 || !last.startsWith('{')) {
    return Promise.reject(new Error(`fuzz/run.js failed (exit ${r.status}): ${r.stderr.slice(-2000)}`));
  }
  return Promise.resolve(JSON.parse(last) as FuzzResult);
}
