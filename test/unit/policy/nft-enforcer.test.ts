import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NftEnforcer, type ElementWriter, type NftRunner } from '../../../src/enforce/nft.js';
import type { ChainCreation, SetElementChange } from '../../../src/enforce/nft-netlink.js';
import { parsePolicy } from '../../../src/policy/parse.js';
import { compilePolicy } from '../../../src/policy/compile.js';
import { parseIpv4 } from '../../../src/util/ipv4.js';
import type { EnclaveRegistration } from '../../../src/enforce/types.js';

const A = 'a'.repeat(64);
const policy = compilePolicy(
  parsePolicy(
    `version: 1\nrules:\n  - {name: r1, chain: input, action: accept, src-app: ${A}}\n  - {name: r2, chain: input, action: drop, src-cat: Web}\n  - {name: r3, chain: input, action: drop, src-host: '!10.0.0.0/8'}\n`,
  ),
);

class FakeWriter implements ElementWriter {
  batches: SetElementChange[][] = [];
  /** The profile chains each batch created. */
  chains: ChainCreation[][] = [];
  async apply(changes: SetElementChange[], chains: ChainCreation[] = []): Promise<void> {
    this.chains.push(chains);
    this.batches.push(
      changes.map((c) => ({
        set: c.set,
        add: [...c.add].sort(),
        remove: [...c.remove].sort(),
        ...(c.gotoChains && { gotoChains: [...c.gotoChains] }),
        ...(c.jump && { jump: true }),
      })),
    );
  }
  close(): void {}
}

class FakeNft implements NftRunner {
  docs: unknown[] = [];
  sets: { name: string; elements: string[] }[] = [{ name: 'enclaves', elements: ['192.168.28.9'] }];
  async run(doc: { nftables: Record<string, unknown>[] }): Promise<void> {
    this.docs.push(doc);
  }
  async listTable(): Promise<{ sets: { name: string; elements: string[] }[] }> {
    return { sets: this.sets };
  }
}

function reg(ip: string, app: string, cats: string[], host: string): EnclaveRegistration {
  return {
    enclaveIp: parseIpv4(ip),
    mrEnclave: Buffer.from(app, 'hex'),
    mrSigner: Buffer.alloc(32),
    hostIp: parseIpv4(host),
    categories: cats,
  };
}

test('start installs the policy and flushes stale elements in the same transaction', async () => {
  const nft = new FakeNft();
  const e = new NftEnforcer({ policy, nft, elements: new FakeWriter(), purge: async () => 0 });
  await e.start();
  assert.equal(nft.docs.length, 1);
  const cmds = (nft.docs[0] as { nftables: Record<string, unknown>[] }).nftables;
  assert.ok(
    cmds.some(
      (c) =>
        JSON.stringify(c) ===
        JSON.stringify({ flush: { set: { family: 'ip', table: 'seng', name: 'enclaves' } } }),
    ),
  );
  assert.deepEqual(
    e.sets().map((s) => s.name),
    // No app_A: only a src-app condition names A, and the dispatch map decides that.
    ['enclaves', 'cat_Web', 'host_10_0_0_0_8'],
  );
});

test('joins in one event-loop turn become one batch; leave removes, then the purge runs', async () => {
  const w = new FakeWriter();
  const purged: number[] = [];
  const e = new NftEnforcer({
    policy,
    nft: new FakeNft(),
    elements: w,
    purge: async (ip) => (purged.push(ip), 1),
  });
  await e.start();
  const r1 = reg('192.168.28.2', A, ['Web'], '10.1.1.1');
  const r2 = reg('192.168.28.3', 'b'.repeat(64), [], '192.0.2.1');
  await Promise.all([e.join(r1), e.join(r2)]);
  assert.equal(w.batches.length, 1);
  const byset = Object.fromEntries((w.batches[0] ?? []).map((c) => [c.set, c]));
  assert.deepEqual(byset.enclaves?.add, [r1.enclaveIp, r2.enclaveIp].sort());
  assert.equal(byset[`app_${A}`], undefined);
  assert.deepEqual(byset.cat_Web?.add, [r1.enclaveIp]);
  assert.deepEqual(byset.host_10_0_0_0_8?.add, [r1.enclaveIp]);
  // The dispatch map sends app A's enclave to its chain, in the same batch; app B is named nowhere.
  assert.deepEqual(byset.dispatch_input?.add, [r1.enclaveIp]);
  assert.deepEqual(byset.dispatch_input?.gotoChains, [`input_app_${A}`]);
  // r2 (the app no rule names) reaches the src-cat rule through its segment: the category map
  // jumps r1 (in Web) to the profile chain of {Web}, created in the same batch.
  assert.equal(byset.catmap_input_0?.jump, true);
  assert.deepEqual(byset.catmap_input_0?.add, [r1.enclaveIp]);
  const profile = byset.catmap_input_0?.gotoChains?.[0] ?? '';
  assert.match(profile, /^input_cp_0_[0-9a-f]{16}$/);
  assert.deepEqual(w.chains[0], [
    { name: profile, jumps: [`input_cb_0_0_${Buffer.from('Web').toString('hex')}`] },
  ]);
  await e.leave(r1);
  assert.equal(w.batches.length, 2);
  assert.deepEqual(
    (w.batches[1] ?? []).map((c) => c.set).sort(),
    ['cat_Web', 'catmap_input_0', 'dispatch_input', 'enclaves', 'host_10_0_0_0_8'].sort(),
  );
  assert.deepEqual(w.chains[1], [], 'the profile chain stays until the next policy apply');
  assert.ok((w.batches[1] ?? []).every((c) => c.add.length === 0 && c.remove[0] === r1.enclaveIp));
  await e.purged(r1.enclaveIp);
  assert.deepEqual(purged, [r1.enclaveIp]);
});

test('a join and leave of the same IP in one turn coalesce to the final state', async () => {
  const w = new FakeWriter();
  const e = new NftEnforcer({ policy, nft: new FakeNft(), elements: w, purge: async () => 0 });
  await e.start();
  const r = reg('192.168.28.7', A, [], '10.0.0.1');
  await Promise.all([e.join(r), e.leave(r)]);
  assert.equal(w.batches.length, 1);
  assert.ok((w.batches[0] ?? []).every((c) => c.add.length === 0));
});

test('category updates move enclaves between category sets; reload fills new sets from live sessions', async () => {
  const w = new FakeWriter();
  const nft = new FakeNft();
  const e = new NftEnforcer({ policy, nft, elements: w, purge: async () => 0 });
  await e.start();
  const r = reg('192.168.28.4', A, [], '10.0.0.1');
  await e.join(r);
  await e.updateCategories(r.mrEnclave, ['Web'], [r]);
  const profile = w.chains.at(-1)?.[0]?.name ?? '';
  assert.match(profile, /^input_cp_0_/, 'the profile chain of {Web} comes with the change');
  assert.deepEqual(w.batches.at(-1), [
    { set: 'cat_Web', add: [r.enclaveIp], remove: [] },
    { set: 'catmap_input_0', add: [r.enclaveIp], remove: [], gotoChains: [profile], jump: true },
  ]);
  await e.updateCategories(r.mrEnclave, [], [r]);
  assert.deepEqual(w.batches.at(-1), [
    { set: 'cat_Web', add: [], remove: [r.enclaveIp] },
    { set: 'catmap_input_0', add: [], remove: [r.enclaveIp], jump: true },
  ]);
  await e.updateCategories(r.mrEnclave, ['Web'], [r]);
  assert.deepEqual(w.chains.at(-1), [], 'an existing profile chain is not created again');
  nft.sets = policy.sets.map((s) => ({ name: s.name, elements: [] }));
  const next = compilePolicy(
    parsePolicy(
      'version: 1\nrules:\n  - {name: n, chain: forward, action: accept, src-cat: Web, dst-host: 10.0.0.0/8}\n',
    ),
  );
  await e.applyPolicy(next);
  const doc = JSON.stringify(nft.docs.at(-1));
  assert.match(doc, /"delete":\{"set":\{"family":"ip","table":"seng","name":"app_a+"\}\}/);
  const elements = (
    nft.docs.at(-1) as { nftables: Record<string, { element?: { name: string } }>[] }
  ).nftables
    .map((c) => c.add?.element?.name)
    .filter((n) => n !== undefined);
  // Existing sets keep their elements (no re-adding); the new run's map is derived from the
  // live enclaves, with its profile chain in the same document.
  assert.deepEqual(elements, ['catmap_forward_0']);
  assert.match(doc, /"add":\{"chain":\{"family":"ip","table":"seng","name":"forward_cp_0_[0-9a-f]{16}"\}\}/);
  await e.stop();
  assert.deepEqual((w.batches.at(-1) ?? []).map((c) => c.set).sort(), [
    'cat_Web',
    'catmap_forward_0',
    'enclaves',
    'host_10_0_0_0_8',
  ]);
});

test('join before start is refused', async () => {
  const e = new NftEnforcer({ policy, nft: new FakeNft(), elements: new FakeWriter(), purge: async () => 0 });
  await assert.rejects(e.join(reg('192.168.28.2', A, [], '10.0.0.1')), /not started/);
});

test('a policy change with confirmWithinMs is rolled back unless confirmed', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'seng-enf-'));
  try {
    const v2 = join(dir, 'v2.yaml');
    writeFileSync(
      v2,
      'version: 1\nrules:\n  - {name: only-ssh, chain: input, action: accept, protocol: tcp, dport: 22}\n',
    );
    const nft = new FakeNft();
    const e = new NftEnforcer({ policy, nft, elements: new FakeWriter(), purge: async () => 0 });
    await e.start();
    // Not confirmed: the previous policy comes back.
    await e.usePolicyFile(v2, { confirmWithinMs: 5 });
    assert.equal(e.currentPolicy()?.rules[0]?.name, 'only-ssh');
    assert.equal(e.pendingConfirmation(), true);
    await assert.rejects(e.usePolicyFile(v2, { confirmWithinMs: 5 }), /already|waiting for confirmation/);
    while (e.pendingConfirmation()) await new Promise((r) => setTimeout(r, 5));
    await e.rollbackDone();
    assert.deepEqual(
      e.currentPolicy()?.rules.map((r) => r.name),
      policy.rules.map((r) => r.name),
    );
    assert.equal(e.confirmPolicy(), false, 'nothing waits any more');
    // Confirmed in time: the new policy stays.
    await e.usePolicyFile(v2, { confirmWithinMs: 60_000 });
    assert.equal(e.confirmPolicy(), true);
    assert.equal(e.pendingConfirmation(), false);
    assert.equal(e.currentPolicy()?.rules[0]?.name, 'only-ssh');
    // Declined (rules apply --confirm through a gateway, answered n): back at once.
    const v3 = join(dir, 'v3.yaml');
    writeFileSync(
      v3,
      'version: 1\nrules:\n  - {name: only-web, chain: input, action: accept, protocol: tcp, dport: 80}\n',
    );
    await e.usePolicyFile(v3, { confirmWithinMs: 60_000 });
    assert.equal(e.currentPolicy()?.rules[0]?.name, 'only-web');
    assert.equal(await e.rollbackPolicy(), true);
    assert.equal(e.pendingConfirmation(), false);
    assert.equal(e.currentPolicy()?.rules[0]?.name, 'only-ssh');
    assert.equal(await e.rollbackPolicy(), false, 'nothing waits any more');
    await e.stop();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
