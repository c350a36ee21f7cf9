/** `seng demo` end to end: the whole deployment in namespaces, per-app verdicts, and a clean exit. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { seng, sengBin } from '../../helpers/cli.js';

test('seng demo shows category and host rules at work and removes everything it built', () => {
  // Only the demo's own namespaces (sgd<pid>-…): other test runs may create theirs meanwhile.
  const demoNamespaces = () =>
    execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => /^sgd\d+-/.test(l));
  const before = demoNamespaces();
  const r = seng(['demo', '--rounds', '1', '--json', '--log-level', 'warn'], { timeoutMs: 180_000 });
  assert.equal(r.code, 0, r.stderr);
  const round = JSON.parse(r.stdout.trim().split('\n').at(-1) as string) as {
    results: {
      app: string;
      host: string;
      port: number;
      reached: boolean;
      rule: string | null;
      agrees: boolean;
    }[];
  };
  const outcome = (app: string, host: string, port: number) =>
    round.results.find((x) => x.app === app && x.host === host && x.port === port);
  assert.equal(round.results.length, 6);
  assert.ok(
    round.results.every((x) => x.agrees),
    'kernel verdicts equal the reference evaluator',
  );
  assert.deepEqual(
    [outcome('DemoEnclave', '10.50.0.2', 8080)?.reached, outcome('DemoEnclave', '10.50.0.2', 8443)?.reached],
    [true, true],
  );
  assert.equal(outcome('DemoEnclave', '10.51.0.2', 8080)?.rule, 'demo-apps-web');
  assert.equal(outcome('DemoEnclave', '10.51.0.2', 8443)?.reached, false, 'host outside 10.50.0.0/24');
  assert.equal(outcome('SENG-NGINX', '10.51.0.2', 8080)?.reached, false, 'not in category Demo');
  assert.deepEqual(demoNamespaces(), before, 'no namespace left behind');
});

/** Children of `pid` whose command line contains `needle` (from /proc; no process names guessed). */
function childrenRunning(pid: number, needle: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== pid) continue;
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(needle)) found.push(Number(entry));
    } catch {
      // the process ended meanwhile
    }
  }
  return found;
}

test('Ctrl-C during a probe stops the demo quietly: "stopped", exit 0, nothing left behind', async () => {
  const demoNamespaces = () =>
    execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => /^sgd\d+-/.test(l));
  const before = demoNamespaces();
  // Its own process group, like a shell job: Ctrl-C signals the whole group.
  const child = spawn(process.execPath, [sengBin, 'demo', '--log-level', 'warn'], {
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const guard = setTimeout(() => process.kill(-(child.pid as number), 'SIGKILL'), 240_000);
  try {
    // Wait for the first round, then for a probe of a later round to be running.
    const running = () => child.exitCode === null && child.signalCode === null;
    while (running() && !stdout.includes('round 1')) await sleep(100);
    while (running() && childrenRunning(child.pid as number, "require('net').connect").length === 0)
      await sleep(20);
    assert.ok(running(), `the demo ended before it was interrupted:\n${stderr}`);
    process.kill(-(child.pid as number), 'SIGINT');
    const code = await exited;
    assert.equal(code, 0, stderr);
    assert.equal(stderr.trim().split('\n').at(-1), 'stopped');
    assert.doesNotMatch(stderr, /require\(|Error|failed/, 'no error and no inline probe script');
    assert.deepEqual(demoNamespaces(), before, 'no namespace left behind');
  } finally {
    clearTimeout(guard);
  }
});
