/**
 * Crash recovery with the kernel module (-n): module state outlives a gateway killed with
 * SIGKILL (it never unregisters). The next gateway's KmodEnforcer.start() — which serve runs
 * before the first admission — empties the module, and a failing flush stops the start.
 * The module is modelled by its state behind the recording fake kernel.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KmodEnforcer } from '../../../src/enforce/kmod.js';
import { SengKmodClient } from '../../../kmod-bridge/index.js';
import { parseIpv4 } from '../../../src/util/ipv4.js';
import { FakeKernel, describeSeng } from '../kmod/fake-kernel.js';

/** The seng module's tables, changed by what the fake kernel receives. */
class ModuleState {
  readonly enclaves = new Set<string>();
  readonly categories = new Set<string>();
  failFlush = 0;
  apply(event: string): number {
    const [op, a, b] = event.split(' ');
    if (op === 'register') this.enclaves.add(a!);
    else if (op === 'unregister') this.enclaves.delete(a!);
    else if (op === 'cat-add') this.categories.add(`${a} ${b}`);
    else if (op === 'cat-remove') this.categories.delete(`${a} ${b}`);
    else if (op === 'flush') {
      if (this.failFlush) return this.failFlush;
      this.enclaves.clear();
      this.categories.clear();
    }
    return 0;
  }
}

/** A gateway process: its own netlink socket on the shared module. */
function gatewayProcess(state: ModuleState): KmodEnforcer {
  const kernel = new FakeKernel();
  kernel.verdict = (m) => state.apply(describeSeng(m.payload));
  return new KmodEnforcer({
    client: new SengKmodClient({ transport: kernel, timeoutMs: 2000, retries: 0, retryDelayMs: 1 }),
    purge: async () => 0,
  });
}

const reg = (ip: string) => ({
  enclaveIp: parseIpv4(ip),
  mrEnclave: Buffer.alloc(32, 0xaa),
  mrSigner: Buffer.alloc(32, 1),
  hostIp: parseIpv4('10.50.0.2'),
  categories: ['Web'],
});

test('entries of a killed gateway are flushed by the next start, before any admission', async () => {
  const state = new ModuleState();
  const first = gatewayProcess(state);
  await first.start();
  await first.join(reg('192.168.28.2'));
  await first.join(reg('192.168.28.3'));
  assert.deepEqual([...state.enclaves].sort(), ['192.168.28.2', '192.168.28.3']);
  // SIGKILL: `first` never leaves or stops; the module keeps its entries.
  const second = gatewayProcess(state);
  await second.start();
  assert.deepEqual([...state.enclaves], []);
  assert.deepEqual([...state.categories], []);
  assert.deepEqual(second.snapshot().enclaves, []);
  await second.join(reg('192.168.28.2'));
  assert.deepEqual([...state.enclaves], ['192.168.28.2']);
});

test('a flush the module refuses fails the start (the gateway then admits nobody)', async () => {
  const state = new ModuleState();
  const first = gatewayProcess(state);
  await first.start();
  await first.join(reg('192.168.28.9'));
  state.failFlush = 1; // EPERM
  await assert.rejects(gatewayProcess(state).start());
  assert.deepEqual([...state.enclaves], ['192.168.28.9']);
});
