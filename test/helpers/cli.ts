/**
 * Runs the built `seng` CLI (bin/run.js) as a child process, the way an admin or a
 * script would, and returns its exit code and output.
 */
import { spawnSync, spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { join, dirname } from 'node:path';

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
/** The `seng` entry point the tests start (scripts/run-tests.js refreshes its command manifest). */
export const sengBin = join(repoRoot, 'bin', 'run.js');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function seng(
  args: string[],
  opts: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): CliResult {
  const r = spawnSync(process.execPath, [sengBin, ...args], {
    input: opts.input ?? '',
    encoding: 'utf8',
    env: { ...process.env, ...opts.env },
    timeout: opts.timeoutMs ?? 60_000,
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Runs seng with --json and parses stdout. */
export function sengJson<T = unknown>(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv } = {},
): { code: number; json: T; stderr: string } {
  const r = seng([...args, '--json'], opts);
  let json: T;
  try {
    json = JSON.parse(r.stdout) as T;
  } catch {
    throw new Error(
      `seng ${args.join(' ')} --json printed no JSON (exit ${r.code}):\n${r.stdout}\n${r.stderr}`,
    );
  }
  return { code: r.code, json, stderr: r.stderr };
}

/** Starts a long-running seng command (e.g. `serve`) in the background. */
export function sengSpawn(args: string[], opts: { env?: NodeJS.ProcessEnv } = {}): ChildProcess {
  return spawn(process.execPath, [sengBin, ...args], {
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}
