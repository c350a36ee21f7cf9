/**
 * `seng agent` start with the nftables backend: the live leases are read first and go into
 * the backend's start transaction, so the sets are never left empty in between; an
 * unreachable registry at start leaves the sets as they are. The nft runner and the netlink
 * element writer are fakes over one model of the table; the registry is a real PostgreSQL.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import { NftEnforcer, type ElementWriter, type NftRunner } from '../../../src/enforce/nft.js';
import type { SetElementChange } from '../../../src/enforce/nft-netlink.js';
import type { NftCommand } from '../../../src/policy/nft.js';
import { FleetAgent } from '../../../src/fleet/agent.js';
import { Registry, type LeaseClaim } from '../../../src/fleet/registry.js';
import { formatIpv4, parseIpv4 } from '../../../src/util/ipv4.js';
import { silentLogger } from '../../../src/util/log.js';
import { postgresAvailable, startPostgres, type PostgresServer } from '../../helpers/postgres.js';

const skip = postgresAvailable() ? false : 'PostgreSQL is not installed';
let server: PostgresServer;
before(async () => {
  if (!skip) server = await startPostgres();
});
after(() => server?.stop());

const MR = 'aa'.repeat(32);

/** The table as the kernel holds it, and every transaction made on it. */
class FakeTable implements NftRunner, ElementWriter {
  readonly sets = new Map<string, Set<string>>();
  /** 'run' for an nft document, 'apply' for a netlink element batch. */
  readonly transactions: string[] = [];

  constructor(initial: Record<string, string[]>) {
    for (const [name, elems] of Object.entries(initial)) this.sets.set(name, new Set(elems));
  }

  run(doc: { nftables: NftCommand[] }): Promise<void> {
    this.transactions.push('run');
    for (const cmd of doc.nftables) {
      const add = cmd.add as Record<string, { name: string; elem?: unknown[] }> | undefined;
      const flush = cmd.flush as Record<string, { name: string }> | undefined;
      if (add?.set && !this.sets.has(add.set.name)) this.sets.set(add.set.name, new Set());
      if (add?.element) {
        const set = this.sets.get(add.element.name) ?? new Set<string>();
        for (const e of add.element.elem ?? []) set.add(typeof e === 'string' ? e : JSON.stringify(e));
        this.sets.set(add.element.name, set);
      }
      if (flush?.set) this.sets.get(flush.set.name)?.clear();
    }
    return Promise.resolve();
  }

  listTable(): ReturnType<NftRunner['listTable']> {
    return Promise.resolve({
      sets: [...this.sets].map(([name, s]) => ({ name, elements: [...s] })),
      maps: [],
      chains: [],
    });
  }

  apply(changes: SetElementChange[]): Promise<void> {
    this.transactions.push('apply');
    for (const c of changes) {
      const set = this.sets.get(c.set) ?? new Set<string>();
      for (const ip of c.remove) set.delete(formatIpv4(ip));
      for (const ip of c.add) set.add(formatIpv4(ip));
      this.sets.set(c.set, set);
    }
    return Promise.resolve();
  }

  close(): void {}

  elements(name: string): string[] {
    return [...(this.sets.get(name) ?? [])].sort();
  }
}

function enforcerOn(table: FakeTable): NftEnforcer {
  return new NftEnforcer({ nft: table, elements: table, purge: () => Promise.resolve(0) });
}

function lease(ip: string, sessionId: string): LeaseClaim {
  return {
    ip: parseIpv4(ip),
    subnet: '192.168.28.0/24',
    sessionId,
    gatewayId: 'gw',
    app: 'web',
    mrEnclave: MR,
    mrSigner: 'bb'.repeat(32),
    hostIp: '10.50.0.2',
    categories: ['web'],
  };
}

test(
  'the agent starts the nftables backend in ONE transaction that leaves the sets equal to the live leases',
  { skip },
  async () => {
    const url = await server.createDatabase();
    const registry = await Registry.open(url);
    await registry.registerGateway({ id: 'gw', address: 'x', leaseTtlMs: 60_000 });
    assert.ok(await registry.claim(lease('192.168.28.2', 's2')));
    assert.ok(await registry.claim(lease('192.168.28.3', 's3')));
    // Left by the previous agent: one still live, one whose enclave ended meanwhile.
    const table = new FakeTable({
      enclaves: ['192.168.28.2', '192.168.28.9'],
      cat_web: ['192.168.28.9'],
      [`app_${MR}`]: [],
    });
    const agent = new FleetAgent({ url, enforcer: enforcerOn(table), log: silentLogger });
    try {
      await agent.start();
      // The resync of the first LISTEN connection has run too, and found nothing to change.
      while (agent.stats.resyncs === 0) await sleep(10);
      await agent.settled();
      assert.deepEqual(table.transactions, ['run'], 'one transaction: reconcile and fill together');
      const live = ['192.168.28.2', '192.168.28.3'];
      assert.deepEqual(table.elements('enclaves'), live);
      assert.deepEqual(table.elements('cat_web'), live);
      assert.deepEqual(table.elements(`app_${MR}`), live);
      assert.deepEqual(agent.appliedIps(), live);

      // Followed afterwards as before.
      await registry.release([{ ip: parseIpv4('192.168.28.2'), sessionId: 's2', reason: 'end' }]);
      const deadline = Date.now() + 5_000;
      while (table.elements('enclaves').length !== 1 && Date.now() < deadline) await sleep(25);
      assert.deepEqual(table.elements('enclaves'), ['192.168.28.3']);
    } finally {
      await agent.stop();
      await registry.close();
    }
  },
);

test('an unreachable registry at start leaves the sets as they are', async () => {
  const table = new FakeTable({ enclaves: ['192.168.28.2'], cat_web: ['192.168.28.2'] });
  let attempts = 0;
  const log = pino(
    { level: 'error' },
    {
      write: (line: string) => {
        if (line.includes('"registry-unreachable"')) attempts++;
      },
    },
  );
  // Nothing listens on port 1 of loopback: every connection attempt is refused.
  const agent = new FleetAgent({
    url: 'postgres://seng@127.0.0.1:1/seng',
    enforcer: enforcerOn(table),
    log,
  });
  const started = agent.start();
  const deadline = Date.now() + 10_000;
  while (attempts < 2 && Date.now() < deadline) await sleep(20);
  assert.ok(attempts >= 2, 'the agent keeps retrying');
  await agent.stop();
  await started;
  assert.deepEqual(table.transactions, [], 'no nft transaction while the registry is unreachable');
  assert.deepEqual(table.elements('enclaves'), ['192.168.28.2']);
  assert.deepEqual(table.elements('cat_web'), ['192.168.28.2']);
});
