/**
 * `seng rules apply --confirm SECONDS` and `seng rules confirm`: a rules change waits for
 * the admin's confirmation, as iptables-apply does, and is rolled back when none comes in
 * time (the admin may have locked themselves out).
 *
 * The waiting apply owns a pending file `<run dir>/rules-<table>.pending`; confirming
 * means deleting it (`seng rules confirm` from another shell, or `y` at the prompt on a
 * terminal). At the deadline the apply deletes it itself and rolls back. Whoever deletes
 * the file first wins, so a confirmation racing the deadline is either fully honoured or
 * reported as too late, never half of each.
 */
import { mkdirSync, unlinkSync, writeFileSync, existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { SengError } from '../util/errors.js';

export function runDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.SENG_RUN_DIR || '/run/seng';
}

export function pendingPath(table: string, dir = runDir()): string {
  return join(dir, `rules-${table}.pending`);
}

/** Creates the pending file; refuses when another change of the table is still waiting. */
export function createPending(table: string, info: Record<string, unknown>, dir = runDir()): string {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const path = pendingPath(table, dir);
  try {
    writeFileSync(path, `${JSON.stringify({ pid: process.pid, table, ...info })}\n`, {
      flag: 'wx',
      mode: 0o600,
    });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new SengError(
        'EPENDING',
        `another rules change of table ip ${table} is waiting for confirmation (${path})`,
        {
          hint: 'confirm it with `seng rules confirm`, or wait until it is rolled back',
        },
      );
    }
    throw e;
  }
  return path;
}

/** Deletes the pending file; true when this call did it (and so decided the outcome). */
export function takePending(path: string): boolean {
  try {
    unlinkSync(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

export type ConfirmationOutcome = 'confirmed' | 'declined' | 'timeout' | 'interrupted';

/**
 * Waits until the change is confirmed, or must be rolled back: the deadline passed, the
 * admin answered no at the prompt, or SIGINT/SIGTERM arrived.
 */
export async function waitForConfirmation(
  path: string,
  seconds: number,
  prompt: (question: string) => void,
): Promise<ConfirmationOutcome> {
  const deadline = Date.now() + seconds * 1000;
  let answer: boolean | undefined;
  let rl: ReturnType<typeof createInterface> | undefined;
  if (process.stdin.isTTY) {
    rl = createInterface({ input: process.stdin, output: process.stderr });
    rl.question(`keep these rules? [y/N] (rolled back in ${seconds} s) `, (a) => {
      answer = /^y(es)?$/i.test(a.trim());
    });
  } else {
    prompt(`waiting ${seconds} s for \`seng rules confirm\`; the previous rules come back without it`);
  }
  let interrupted = false;
  const onSignal = (): void => {
    interrupted = true;
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    for (;;) {
      if (!existsSync(path)) return 'confirmed'; // from another shell
      if (answer !== undefined || interrupted || Date.now() >= deadline) {
        // Taking the file decides: if a confirmation deleted it first, it stands.
        if (!takePending(path) || answer === true) return 'confirmed';
        return answer === false ? 'declined' : interrupted ? 'interrupted' : 'timeout';
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    rl?.close();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
