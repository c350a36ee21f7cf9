/** `seng demo` end to end: the whole deployment in namespaces, per-app verdicts, and a clean exit. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { seng } from '../../helpers/cli.js';

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
