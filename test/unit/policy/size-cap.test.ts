/** Policy files are capped before they are read (issue #17: 100 MB took 11.6 s and 574 MB). */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadPolicyFile, policyMaxBytes, DEFAULT_POLICY_MAX_BYTES } from '../../../src/policy/parse.js';
import { seng } from '../../helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'seng-cap-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const SMALL = 'version: 1\nrules:\n  - { name: r, chain: input, action: accept }\n';

test('a policy file over the cap is refused before it is read', () => {
  const big = join(dir, 'big.yaml');
  writeFileSync(big, SMALL);
  truncateSync(big, 100 * 1024 * 1024); // sparse: costs no disk
  assert.throws(() => loadPolicyFile(big), {
    code: 'EINPUT',
    message: `policy file ${big} is larger than ${DEFAULT_POLICY_MAX_BYTES} bytes`,
  });
  const r = seng(['rules', 'check', big]);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /^Error: policy file .* is larger than 1048576 bytes\nHint: .*SENG_POLICY_MAX_BYTES/m,
  );
});

test('a device without a size is cut off at the cap too', () => {
  assert.throws(() => loadPolicyFile('/dev/zero', { maxBytes: 4096 }), /larger than 4096 bytes/);
});

test('files up to the cap load; the cap is configurable', () => {
  const exact = join(dir, 'exact.yaml');
  writeFileSync(exact, SMALL + '#'.repeat(100 - SMALL.length - 1) + '\n');
  assert.equal(loadPolicyFile(exact, { maxBytes: 100 }).rules.length, 1);
  assert.throws(() => loadPolicyFile(exact, { maxBytes: 99 }), /larger than 99 bytes/);
  assert.equal(policyMaxBytes({}), 1024 * 1024);
  assert.equal(policyMaxBytes({ SENG_POLICY_MAX_BYTES: '2048' }), 2048);
  assert.throws(() => policyMaxBytes({ SENG_POLICY_MAX_BYTES: 'lots' }), /positive number of bytes/);
  const r = seng(['rules', 'check', exact], { env: { SENG_POLICY_MAX_BYTES: '50' } });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /larger than 50 bytes/);
});
