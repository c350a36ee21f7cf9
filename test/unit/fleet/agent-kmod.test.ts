/**
 * `seng agent -n`: the agent drives the kernel-module backend (KmodEnforcer) like the nftables
 * one. The module cannot be loaded here, so it is modelled by its state behind the recording
 * fake kernel of test/unit/kmod; the registry is a real PostgreSQL server.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { KmodEnforcer } from '../../../src/enforce/kmod.js';
import { SengKmodClient } from '../../../kmod-bridge/index.js';
import { FleetAgent } from '../../../src/fleet/agent.js';
import { Registry, type LeaseClaim } from '../../../src/fleet/registry.js';
import { parseIpv4 } from '../../../src/util/ipv4.js';
import { silentLogger } from '../../../src/util/log.js';
import { FakeKernel, describeSeng } from '../kmod/fake-kernel.js';
import { postgresAvailable, startPostgres, type PostgresServer } from '../../helpers/postgres.js';

const skip = postgresAvailable() ? false : 'PostgreSQL is not installed';
let server: PostgresServer;
before(async () => {
  if (!skip) server = await startPostgres();
});
after(() => server?.stop());

class ModuleState {
  readonly enclaves = new Set<string>();
  readonly categories = new Set<string>();
  apply(event: string): number {
    const [op, a, b] = event.split(' ');
    if (op === 'register') this.enclaves.add(a!);
    else if (op === 'unregister') this.enclaves.delete(a!);
    else if (op === 'cat-add') this.categories.add(`${a} ${b}`);
    else if (op === 'cat-remove') this.categories.delete(`${a} ${b}`);
    else if (op === 'flush') {
      this.enclaves.clear();
      this.categories.clear();
    }
    return 0;
  }
}

function kmodBackend(state: ModuleState, purged: string[]): KmodEnforcer {
  const kernel = new FakeKernel();
  kernel.verdict = (m) => state.apply(describeSeng(m.payload));
  return new KmodEnforcer({
    client: new SengKmodClient({ transport: kernel, timeoutMs: 2000, retries: 0, retryDelayMs: 1 }),
    purge: async (ip) => {
      purged.push(String(ip));
      return 0;
    },
  });
}

function lease(ip: string, sessionId: string, categories: string[]): LeaseClaim {
  return {
    ip: parseIpv4(ip),
    subnet: '192.168.28.0/24',
    sessionId,
    gatewayId: 'gw',
    app: 'web',
    mrEnclave: 'aa'.repeat(32),
    mrSigner: 'bb'.repeat(32),
    hostIp: '10.50.0.2',
    categories,
  };
}

async function until(what: string, check: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

test(
  'agent -n keeps the module equal to the live leases, across an agent killed and restarted',
  { skip },
  async () => {
    const url = await server.createDatabase();
    const registry = await Registry.open(url);
    await registry.registerGateway({ id: 'gw', address: 'x', leaseTtlMs: 60_000 });
    const state = new ModuleState();
    const purged: string[] = [];
    const first = new FleetAgent({ url, enforcer: kmodBackend(state, purged), log: silentLogger });
    await first.start();
    try {
      assert.ok(await registry.claim(lease('192.168.28.2', 's2', ['Web'])));
      assert.ok(await registry.claim(lease('192.168.28.3', 's3', ['Web'])));
      await until('both registered', () => state.enclaves.size === 2);

      // The first agent dies: modelled as a stop whose module state is then put back to what a
      // SIGKILLed agent leaves behind (both entries). An enclave ends while no agent runs.
      await first.settled();
      await first.stop();
      state.enclaves.add('192.168.28.2').add('192.168.28.3');
      await registry.release([{ ip: parseIpv4('192.168.28.2'), sessionId: 's2', reason: 'end' }]);
      const second = new FleetAgent({ url, enforcer: kmodBackend(state, purged), log: silentLogger });
      await second.start();
      try {
        // The start itself registers the live leases (right after its flush), not a later resync.
        assert.deepEqual(
          [...state.enclaves],
          ['192.168.28.3'],
          'the module holds the live enclave when start resolves',
        );
        assert.deepEqual([...state.categories], [`${'aa'.repeat(4)} Web`]);
        assert.deepEqual(second.appliedIps(), ['192.168.28.3']);
        await second.settled();
        assert.deepEqual([...state.enclaves], ['192.168.28.3'], 'the first resync finds nothing to change');
        await registry.release([{ ip: parseIpv4('192.168.28.3'), sessionId: 's3', reason: 'end' }]);
        await until('unregistered on release', () => state.enclaves.size === 0);
        await second.settled(); // the leave purges conntrack after unregistering
        assert.ok(purged.includes(String(parseIpv4('192.168.28.3'))), 'conntrack of the left IP is purged');
      } finally {
        await second.stop();
      }
    } finally {
      await first.stop();
      await registry.close();
    }
  },
);
