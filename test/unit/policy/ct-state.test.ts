/** Connection state in policies (issue #17): `established: accept` and per-rule `state:`. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../../helpers/cli.js';
import { parsePolicy } from '../../../src/policy/parse.js';
import { compilePolicy } from '../../../src/policy/compile.js';
import { nftApplyDocument, nftText, ruleExpressions } from '../../../src/policy/nft.js';
import { iptablesText } from '../../../src/policy/iptables.js';
import { evaluate, type Registration } from '../../../src/policy/evaluate.js';
import { parseIpv4, type Ipv4 } from '../../../src/util/ipv4.js';

const fixtures = join(repoRoot, 'test', 'fixtures', 'policy');
const fixture = join(fixtures, 'established.yaml');

/** Compares with a golden file (reviewed, and checked by nft in test/integration/policy/apply.test.ts); SENG_UPDATE_GOLDEN=1 rewrites it. */
function golden(name: string, actual: string): void {
  const path = join(fixtures, name);
  if (process.env.SENG_UPDATE_GOLDEN === '1' || !existsSync(path)) writeFileSync(path, actual);
  assert.equal(actual, readFileSync(path, 'utf8'), `output differs from golden file ${name}`);
}

test('golden: established: accept and state: → nft text, nft JSON, iptables', () => {
  const c = compilePolicy(
    parsePolicy(readFileSync(fixture, 'utf8'), 'test/fixtures/policy/established.yaml'),
  );
  golden('established.nft', nftText(c));
  golden('established.nft.json', `${JSON.stringify(nftApplyDocument(c), null, 2)}\n`);
  golden('established.iptables', iptablesText(c));
});

test('established: accept puts one reply rule first in every chain', () => {
  const p = parsePolicy(readFileSync(fixture, 'utf8'));
  assert.deepEqual(
    p.rules.slice(0, 3).map((r) => [r.name, r.chain, r.action, r.state]),
    [
      ['established-input', 'input', 'accept', ['established', 'related']],
      ['established-forward', 'forward', 'accept', ['established', 'related']],
      ['established-output', 'output', 'accept', ['established', 'related']],
    ],
  );
  const c = compilePolicy(p);
  const first = c.rules[0];
  assert.ok(first);
  assert.deepEqual(ruleExpressions(first), [
    { match: { op: 'in', left: { ct: { key: 'state' } }, right: ['established', 'related'] } },
    { accept: null },
  ]);
  assert.match(
    iptablesText(c),
    /^-A SENG_FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -m comment --comment "established-forward" -j ACCEPT$/m,
  );
});

test('state: accepts a list or a comma-separated string, in a canonical order', () => {
  const p = parsePolicy(
    'version: 1\nrules:\n  - { name: a, chain: input, action: accept, state: "related, established" }\n  - { name: b, chain: input, action: drop, state: [invalid] }\n',
  );
  assert.deepEqual(p.rules[0]?.state, ['established', 'related']);
  assert.deepEqual(p.rules[1]?.state, ['invalid']);
});

test('bad state values are errors with positions', () => {
  assert.throws(
    () => parsePolicy('version: 1\nrules:\n  - { name: a, chain: input, action: accept, state: open }\n'),
    /:3:\d+: rules\[0\]\.state: unknown connection state "open": expected one of new, established, related, invalid/,
  );
  assert.throws(
    () =>
      parsePolicy('version: 1\nrules:\n  - { name: a, chain: input, action: accept, state: { not: new } }\n'),
    /cannot be negated/,
  );
  assert.throws(
    () => parsePolicy('version: 1\nestablished: drop\nrules: []\n'),
    /established: expected `accept`/,
  );
  assert.throws(
    () =>
      parsePolicy(
        'version: 1\nestablished: accept\nrules:\n  - { name: established-input, chain: input, action: drop }\n',
      ),
    /duplicate rule name "established-input"/,
  );
});

test('the reference evaluator models the connection state', () => {
  const p = parsePolicy(readFileSync(fixture, 'utf8'));
  const regs = new Map<Ipv4, Registration>([
    [
      parseIpv4('192.168.28.2'),
      { mrEnclave: 'a'.repeat(64), categories: ['Web'], hostIp: parseIpv4('10.0.0.5') },
    ],
  ]);
  const reply = {
    chain: 'forward' as const,
    src: parseIpv4('1.2.3.4'),
    dst: parseIpv4('192.168.28.2'),
    protocol: 'tcp' as const,
    sport: 443,
    dport: 40000,
  };
  assert.deepEqual(
    evaluate(p, reply, regs),
    { action: 'drop' },
    'a new connection from outside: default drop',
  );
  assert.deepEqual(evaluate(p, { ...reply, ctState: 'established' }, regs), {
    action: 'accept',
    rule: 'established-forward',
  });
  assert.deepEqual(evaluate(p, { ...reply, ctState: 'invalid' }, regs), {
    action: 'drop',
    rule: 'drop-invalid',
  });
  const dns = {
    chain: 'output' as const,
    src: parseIpv4('10.0.0.1'),
    dst: parseIpv4('10.0.0.53'),
    protocol: 'udp' as const,
    sport: 5000,
    dport: 53,
  };
  assert.deepEqual(evaluate(p, dns, regs), { action: 'accept', rule: 'new-dns' });
  assert.deepEqual(evaluate(p, { ...dns, ctState: 'related' }, regs), {
    action: 'accept',
    rule: 'established-output',
  });
});
