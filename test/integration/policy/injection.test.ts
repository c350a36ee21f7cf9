/**
 * Names that reach nft are checked on every path (issue #17): an nftables table name
 * carrying a second nft command must be refused by every `seng rules` command, by
 * `seng serve --nft-table`, and by the library functions that build nft input, and
 * nothing else in the (fresh) network namespace may change.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNetns, cleanupAll, type Netns } from '../../helpers/netns.js';
import { sengBin } from '../../helpers/cli.js';
import { NftCli } from '../../../src/nft/cli.js';
import { parsePolicy } from '../../../src/policy/parse.js';
import { compilePolicy } from '../../../src/policy/compile.js';
import { nftApplyDocument, nftText } from '../../../src/policy/nft.js';
import { diffPolicy } from '../../../src/policy/diff.js';
import { NftEnforcer } from '../../../src/enforce/nft.js';

const dir = mkdtempSync(join(tmpdir(), 'seng-inj-'));
after(async () => {
  await cleanupAll();
  rmSync(dir, { recursive: true, force: true });
});

const INJECTION = 'seng; delete table inet other';
const POLICY = `version: 1\nrules:\n  - { name: ssh, chain: input, action: accept, protocol: tcp, dport: 22 }\n`;

async function tables(ns: Netns): Promise<string> {
  return (await ns.exec('nft', ['list', 'ruleset'])).stdout;
}

/** A namespace with a table seng must never touch, and a seng table. */
async function victim(): Promise<{ ns: Netns; before: string }> {
  const ns = await createNetns('inj');
  await ns.exec('nft', [
    'add table inet other; add chain inet other c { type filter hook input priority 0; }; ' +
      'add table ip seng; add set ip seng enclaves { type ipv4_addr; }; ' +
      'add element ip seng enclaves { 192.168.28.2 }',
  ]);
  const before = await tables(ns);
  assert.match(before, /table inet other/);
  return { ns, before };
}

test(
  'every rules command and serve refuse an injected --table; nothing changes',
  { timeout: 180_000 },
  async () => {
    const { ns, before } = await victim();
    const policy = join(dir, 'p.yaml');
    writeFileSync(policy, POLICY);
    const commands: string[][] = [
      ['rules', 'check', policy, '--table', INJECTION],
      ['rules', 'render', policy, '--format', 'nft', '--table', INJECTION],
      ['rules', 'render', policy, '--format', 'json', '--table', INJECTION],
      ['rules', 'render', policy, '--format', 'iptables', '--table', INJECTION],
      ['rules', 'diff', policy, '--table', INJECTION],
      ['rules', 'apply', policy, '--dry-run', '--table', INJECTION],
      ['rules', 'apply', policy, '--direct', '--table', INJECTION],
      ['rules', 'apply', policy, '--table', INJECTION],
      ['serve', '--nft', '--nft-table', INJECTION, '10.0.0.1', '4433'],
    ];
    for (const args of commands) {
      const r = await ns.exec(process.execPath, [sengBin, ...args], { check: false, timeoutMs: 60_000 });
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /table name .* is not allowed/, args.join(' '));
      assert.equal(await tables(ns), before, `${args.join(' ')} changed the ruleset`);
    }
    // The policy file's `table:` key is checked too.
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, `version: 1\ntable: "${INJECTION}"\nrules: []\n`);
    const r = await ns.exec(process.execPath, [sengBin, 'rules', 'diff', bad], { check: false });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /table name/);
    assert.equal(await tables(ns), before);
  },
);

test('the library refuses unchecked names before nft sees them', { timeout: 60_000 }, async () => {
  const { ns, before } = await victim();
  const nft = new NftCli(['ip', 'netns', 'exec', ns.name, 'nft']);
  const compiled = { ...compilePolicy(parsePolicy(POLICY)), table: INJECTION };
  await assert.rejects(nft.listTableJson(INJECTION), /table name .* is not allowed/);
  await assert.rejects(nft.listTable(INJECTION), /table name .* is not allowed/);
  await assert.rejects(nft.listTableText(INJECTION), /table name .* is not allowed/);
  await assert.rejects(diffPolicy(compiled, nft), /table name .* is not allowed/);
  assert.throws(() => nftApplyDocument(compiled), /table name .* is not allowed/);
  assert.throws(() => nftText(compiled), /table name .* is not allowed/);
  const badSet = compilePolicy(parsePolicy(POLICY));
  badSet.sets.push({ kind: 'enclaves', name: 'x; flush ruleset' });
  assert.throws(() => nftApplyDocument(badSet), /set name .* is not allowed/);
  assert.throws(() => new NftEnforcer({ tableName: INJECTION, nft }), /table name .* is not allowed/);
  // A checked name still works through the JSON listing.
  const live = await nft.listTable('seng');
  assert.deepEqual(live?.sets, [{ name: 'enclaves', elements: ['192.168.28.2'] }]);
  assert.equal(await nft.listTable('absent'), null);
  assert.equal(await tables(ns), before);
});
