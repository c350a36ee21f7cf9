/**
 * `seng kmod …`, `seng conntrack purge` and `seng demo`: numeric flags are bounded, so a huge
 * value is a usage error (exit 2) instead of a timer overflow (before: a 1 ms timeout, or an
 * abort of the whole process in conntrack purge). Nothing reaches the kernel: parsing fails first.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { seng } from '../../helpers/cli.js';

const APP = 'ab'.repeat(32);

test('--timeout beyond what a timer holds is a usage error for every kmod/conntrack command', () => {
  const commands: string[][] = [
    ['kmod', 'status'],
    ['kmod', 'flush'],
    ['kmod', 'add', '--enclave', '192.168.28.2', '--app', APP, '--host', '10.0.0.7'],
    ['kmod', 'remove', '--enclave', '192.168.28.2'],
    ['kmod', 'category', 'add', '--app', APP, '--category', 'Web'],
    ['kmod', 'category', 'remove', '--app', APP, '--category', 'Web'],
    ['conntrack', 'purge', '192.0.2.1'],
  ];
  for (const cmd of commands) {
    const r = seng([...cmd, '--timeout', '99999999999999']);
    assert.equal(r.code, 2, `${cmd.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /--timeout/);
    assert.doesNotMatch(r.stderr, /TimeoutOverflowWarning|terminate called|Internal error/);
  }
});

test('demo --interval is bounded', () => {
  for (const v of ['0', '99999999']) {
    const r = seng(['demo', '--interval', v]);
    assert.equal(r.code, 2, r.stderr);
  }
});
