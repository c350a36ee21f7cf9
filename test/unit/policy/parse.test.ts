import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parsePolicy } from '../../../src/policy/parse.js';
import { PolicyError } from '../../../src/policy/errors.js';

function issues(text: string): { line: number; col: number; path: string; message: string }[] {
  try {
    parsePolicy(text, 'p.yaml');
  } catch (e) {
    assert.ok(e instanceof PolicyError, `expected PolicyError, got ${String(e)}`);
    return e.issues;
  }
  assert.fail('policy unexpectedly valid');
}

test('a valid policy parses with defaults and negations', () => {
  const p = parsePolicy(
    [
      'version: 1',
      'rules:',
      '  - name: r1',
      '    chain: forward',
      '    action: drop',
      '    src-host: { not: 10.0.0.0/8 }',
      '    dst-cat: "!Browser"',
      '    protocol: tcp',
      '    dport: "80, 8000-8080"',
      '    dst-addr: 1.2.3.4',
    ].join('\n'),
  );
  assert.equal(p.table, 'seng');
  assert.deepEqual(p.defaults, { input: 'accept', forward: 'accept', output: 'accept' });
  const r = p.rules[0];
  assert.ok(r);
  assert.equal(r.srcHost?.negate, true);
  assert.equal(r.srcHost?.value.prefix, 8);
  assert.deepEqual(r.dstCat, { negate: true, value: 'Browser' });
  assert.deepEqual(r.dport?.value, [
    { from: 80, to: 80 },
    { from: 8000, to: 8080 },
  ]);
  assert.equal(r.dstAddr?.value[0]?.prefix, 32);
  assert.equal(r.counter, false);
  assert.equal(r.pos.line, 3);
});

test('every problem is reported with its line and column', () => {
  const text = [
    'version: 1', // 1
    'rules:', // 2
    '  - name: ok', // 3
    '    chain: inptu', // 4
    '    action: accept', // 5
    '    dport: 99999', // 6
    '    src-ap: abc', // 7
    '  - name: ok', // 8
    '    chain: output', // 9
    '    action: drop', // 10
    '    in-iface: eth0', // 11
    '    src-host: 10.0.0.1/8', // 12
  ].join('\n');
  const got = issues(text);
  const at = (line: number): string[] => got.filter((i) => i.line === line).map((i) => i.message);
  assert.match(at(4).join(), /expected one of input, forward, output/);
  assert.match(at(6).join(), /not a port/);
  assert.match(at(7).join(), /unknown key "src-ap" \(did you mean "src-app"\?\)/);
  assert.match(at(11).join(), /output chain has no input interface/);
  assert.match(at(12).join(), /host bits set/);
  assert.match(got.map((i) => i.message).join(), /duplicate rule name "ok" \(first used on line 3\)/);
  assert.equal(got.find((i) => i.line === 4)?.col, 12);
});

test('an unquoted ! (a YAML tag) is an error, never a silently dropped negation', () => {
  const got = issues(
    'version: 1\nrules:\n  - name: a\n    chain: input\n    action: drop\n    src-host: ! 10.0.0.0/8\n',
  );
  assert.equal(got.length, 1);
  assert.equal(got[0]?.line, 6);
  assert.match(got[0]?.message ?? '', /unquoted "!" is a YAML tag/);
});

test('ports need tcp or udp; missing keys and bad versions are reported', () => {
  assert.match(
    issues('version: 1\nrules:\n  - name: a\n    chain: input\n    action: drop\n    dport: 80\n')[0]
      ?.message ?? '',
    /ports need `protocol: tcp`/,
  );
  const got = issues('version: 2\nrules:\n  - chain: input\n');
  assert.deepEqual(
    got.map((i) => i.line),
    [1, 3, 3],
  );
  assert.match(issues('version: 1\nrules: [\n')[0]?.message ?? '', /./);
  assert.match(
    issues(
      'version: 1\nrules:\n  - name: a\n    chain: input\n    action: drop\n    src-cat: "a very long category name"\n',
    )[0]?.message ?? '',
    /not a category name/,
  );
});

test('YAML syntax errors carry positions', () => {
  const got = issues('version: 1\nrules:\n  - name: a\n   chain: input\n');
  assert.ok(got.length >= 1);
  assert.ok(got.every((i) => i.line > 0));
});

test('lint warns about unreachable rules, local enclave conditions and unknown measurements', async () => {
  const { lintPolicy } = await import('../../../src/policy/lint.js');
  const { appDirectoryFromList } = await import('../../../src/policy/apps.js');
  const hex = 'e'.repeat(64);
  const p = parsePolicy(
    [
      'version: 1',
      'rules:',
      '  - { name: all, chain: forward, action: drop }',
      '  - { name: later, chain: forward, action: accept, src-cat: Web }',
      '  - { name: in, chain: input, action: accept, dst-cat: Web }',
      `  - { name: known, chain: forward, action: accept, src-app: ${hex} }`,
    ].join('\n'),
    'p.yaml',
  );
  const w = lintPolicy(
    p,
    appDirectoryFromList([{ name: 'other', mrEnclave: 'f'.repeat(64) }], 'database x.db'),
  );
  assert.deepEqual(
    w.map((x) => [x.line, x.path]),
    [
      [4, 'rules[1]'],
      [5, 'rules[2].dst-cat'],
      [6, 'rules[3]'],
      [6, 'rules[3].src-app'],
    ],
  );
  assert.match(w[0]?.message ?? '', /never reached: rule "all"/);
  assert.match(w[3]?.message ?? '', /not in database x\.db/);
});
