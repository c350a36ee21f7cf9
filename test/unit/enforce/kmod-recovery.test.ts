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

/** Like gatewayProcess, but records the module requests in order and can refuse the n-th register. */
function recordingProcess(state: ModuleState, events: string[], refuseRegister?: string): KmodEnforcer {
  const kernel = new FakeKernel();
  kernel.verdict = (m) => {
    const e = describeSeng(m.payload);
    events.push(e.split(' ').slice(0, 2).join(' '));
    if (refuseRegister && e.startsWith(`register ${refuseRegister} `)) return 22; // EINVAL
    return state.apply(e);
  };
  return new KmodEnforcer({
    client: new SengKmodClient({ transport: kernel, timeoutMs: 2000, retries: 0, retryDelayMs: 1 }),
    purge: async () => 0,
  });
}

test('start with initial enclaves registers them right after the flush (a restarted agent)', async () => {
  const state = new ModuleState();
  state.enclaves.add('192.168.28.7'); // left by a killed agent, no longer leased
  const events: string[] = [];
  const agent = recordingProcess(state, events);
  const other = { ...reg('192.168.28.4'), mrEnclave: Buffer.alloc(32, 0xbb), categories: ['Db', 'Db'] };
  await agent.start({ initial: [reg('192.168.28.2'), reg('192.168.28.3'), other] });
  assert.deepEqual(events, [
    'flush',
    'register 192.168.28.2',
    `cat-add ${'aa'.repeat(4)}`,
    'register 192.168.28.3',
    'register 192.168.28.4',
    `cat-add ${'bb'.repeat(4)}`,
  ]);
  assert.deepEqual([...state.enclaves].sort(), ['192.168.28.2', '192.168.28.3', '192.168.28.4']);
  assert.deepEqual([...state.categories].sort(), [`${'aa'.repeat(4)} Web`, `${'bb'.repeat(4)} Db`]);
  assert.deepEqual(
    agent
      .snapshot()
      .apps.map((a) => [a.enclaves, a.categories])
      .sort(),
    [
      [1, ['Db']],
      [2, ['Web']],
    ],
  );
  // The state it started with is the one later calls build on: leaving the app's first
  // enclave keeps the app's categories for the second.
  await agent.leave(reg('192.168.28.2'));
  assert.deepEqual([...state.enclaves].sort(), ['192.168.28.3', '192.168.28.4']);
  assert.equal(agent.snapshot().apps.find((a) => a.categories[0] === 'Web')?.enclaves, 1);
});

test('a registration refused during start with initial enclaves flushes again and fails the start', async () => {
  const state = new ModuleState();
  const events: string[] = [];
  const agent = recordingProcess(state, events, '192.168.28.3');
  await assert.rejects(agent.start({ initial: [reg('192.168.28.2'), reg('192.168.28.3')] }));
  assert.deepEqual(events.at(-1), 'flush', 'nothing half-registered stays in the module');
  assert.deepEqual([...state.enclaves], []);
  assert.deepEqual(agent.snapshot().enclaves, []);
});
