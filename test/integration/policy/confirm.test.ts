/**
 * `seng rules apply --confirm SECONDS` (issue #17): without a confirmation the table comes
 * back exactly as it was; `seng rules confirm` from another shell keeps the new rules.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNetns, cleanupAll, type Netns } from '../../helpers/netns.js';
import { sengBin } from '../../helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'seng-confirm-'));
const env = { SENG_RUN_DIR: join(dir, 'run') };
after(async () => {
  await cleanupAll();
  rmSync(dir, { recursive: true, force: true });
});

const V1 = join(dir, 'v1.yaml');
const V2 = join(dir, 'v2.yaml');
writeFileSync(
  V1,
  'version: 1\nrules:\n  - { name: ssh, chain: input, action: accept, protocol: tcp, dport: 22 }\n',
);
writeFileSync(
  V2,
  'version: 1\ndefaults: { input: drop }\nrules:\n  - { name: web, chain: forward, action: accept, src-cat: Web }\n',
);

function sengIn(ns: Netns, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return ns.exec(process.execPath, [sengBin, ...args], { check: false, timeoutMs: 60_000, env });
}

async function table(ns: Netns): Promise<string> {
  return (await ns.exec('nft', ['list', 'ruleset'])).stdout;
}

test('an unconfirmed apply is rolled back to the exact previous table', { timeout: 60_000 }, async () => {
  const ns = await createNetns('cfm');
  assert.equal((await sengIn(ns, ['rules', 'apply', V1])).code, 0);
  await ns.exec('nft', ['add element ip seng enclaves { 192.168.28.7 }']);
  const before = await table(ns);
  const r = await sengIn(ns, ['rules', 'apply', '--force', V2, '--confirm', '1']);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stdout, /pending confirmation/);
  assert.match(r.stderr, /not confirmed within 1 s: table ip seng is back to the rules it had before/);
  assert.equal(await table(ns), before, 'rules, chains, sets and elements as before');
  assert.equal(existsSync(join(env.SENG_RUN_DIR, 'rules-seng.pending')), false);
  // A table that did not exist before is removed again.
  const ns2 = await createNetns('cfm');
  const r2 = await sengIn(ns2, ['rules', 'apply', V1, '--confirm', '1']);
  assert.equal(r2.code, 1, r2.stderr);
  assert.equal(await table(ns2), '');
});

test('seng rules confirm from another shell keeps the new rules', { timeout: 60_000 }, async () => {
  const ns = await createNetns('cfm');
  assert.equal((await sengIn(ns, ['rules', 'apply', V1])).code, 0);
  const waiting = sengIn(ns, ['rules', 'apply', '--force', V2, '--confirm', '30']);
  const pending = join(env.SENG_RUN_DIR, 'rules-seng.pending');
  for (let i = 0; i < 300 && !existsSync(pending); i += 1) await new Promise((r) => setTimeout(r, 100));
  assert.ok(existsSync(pending), 'apply waits for confirmation');
  const c = await sengIn(ns, ['rules', 'confirm']);
  assert.equal(c.code, 0, c.stderr);
  const r = await waiting;
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /confirmed: the new rules of table ip seng stay/);
  assert.match(await table(ns), /comment "web"/);
  const again = await sengIn(ns, ['rules', 'confirm']);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /no rules change of table ip seng is waiting/);
});

test(
  'on a terminal, y at the prompt keeps the rules and n rolls them back',
  { timeout: 60_000 },
  async () => {
    const ns = await createNetns('cfm');
    assert.equal((await sengIn(ns, ['rules', 'apply', V1])).code, 0);
    const before = await table(ns);
    // `script` gives the command a pseudo-terminal; the answer is already typed.
    const onTty = (answer: string, file: string): Promise<{ code: number | null; stdout: string }> =>
      ns.exec(
        'script',
        ['-qec', `${process.execPath} ${sengBin} rules apply --force ${file} --confirm 30`, '/dev/null'],
        { check: false, timeoutMs: 60_000, env, input: `${answer}\n` },
      );
    let r = await onTty('n', V2);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stdout, /keep these rules\? \[y\/N\]/);
    assert.match(r.stdout, /not kept \(answered no\): table ip seng is back to the rules it had before/);
    assert.equal(await table(ns), before);
    r = await onTty('y', V2);
    assert.equal(r.code, 0, r.stdout);
    assert.match(r.stdout, /confirmed: the new rules of table ip seng stay/);
    assert.match(await table(ns), /comment "web"/);
  },
);
