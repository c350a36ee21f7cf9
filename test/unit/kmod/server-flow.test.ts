/**
 * The server flow of `seng serve -n` through KmodEnforcer, with a recording fake kernel
 * injected at the netlink socket boundary (below SengKmodClient: real encoders, real
 * channel, real retries) and a recording conntrack purge. Asserts the exact sequence
 * flush → register → categories (first enclave of an app only) → unregister → purge → flush
 * across several enclaves and apps, and the recovery paths.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  KmodFamilyMissingError,
  KmodRejectedError,
  KmodTimeoutError,
  SengKmodClient,
} from '../../../kmod-bridge/index.js';
import { KmodEnforcer, KmodInconsistentError } from '../../../src/enforce/kmod.js';
import type { EnclaveRegistration } from '../../../src/enforce/types.js';
import { InputError } from '../../../src/util/errors.js';
import { formatIpv4, parseIpv4 } from '../../../src/util/ipv4.js';
import { FakeKernel, describeSeng, type SentMessage, type Verdict } from './fake-kernel.js';

const APP_A = Buffer.alloc(32, 0xaa);
const APP_B = Buffer.alloc(32, 0xbb);
const APP_C = Buffer.alloc(32, 0xcc);

function reg(ip: string, app: Buffer, categories: string[], host = '127.0.0.1'): EnclaveRegistration {
  return {
    enclaveIp: parseIpv4(ip),
    mrEnclave: app,
    mrSigner: Buffer.alloc(32, 0x11),
    hostIp: parseIpv4(host),
    categories,
  };
}

function setup(verdict: (line: string, m: SentMessage) => Verdict = () => 0): {
  kernel: FakeKernel;
  events: string[];
  enforcer: KmodEnforcer;
} {
  const kernel = new FakeKernel();
  const events: string[] = [];
  kernel.verdict = (m) => {
    assert.equal(m.type, 0x1c, 'addressed to the resolved family id');
    assert.equal(m.flags, 5, 'NLM_F_REQUEST | NLM_F_ACK');
    const line = describeSeng(m.payload);
    const v = verdict(line, m);
    events.push(v === 0 ? line : `${line} -> ${v}`);
    return v;
  };
  const client = new SengKmodClient({ transport: kernel, timeoutMs: 30, retries: 1, retryDelayMs: 1 });
  const enforcer = new KmodEnforcer({
    client,
    purge: (ip) => {
      events.push(`purge ${formatIpv4(ip)}`);
      return Promise.resolve(1);
    },
  });
  return { kernel, events, enforcer };
}

describe('KmodEnforcer server flow', () => {
  it('flush, register, first-enclave categories, unregister + purge, hot category updates, flush', async () => {
    const { kernel, events, enforcer } = setup();
    const a1 = reg('192.168.28.2', APP_A, ['Demo', 'Web', 'Demo']);
    const a2 = reg('192.168.28.3', APP_A, ['Demo', 'Web'], '10.0.0.5');
    const b1 = reg('192.168.28.4', APP_B, ['Server']);
    const c1 = reg('192.168.28.5', APP_C, []);
    await enforcer.start();
    // Concurrent admissions are serialized in call order.
    await Promise.all([enforcer.join(a1), enforcer.join(a2), enforcer.join(b1), enforcer.join(c1)]);
    assert.deepEqual(enforcer.snapshot().apps, [
      { app: 'aa'.repeat(32), enclaves: 2, categories: ['Demo', 'Web'] },
      { app: 'bb'.repeat(32), enclaves: 1, categories: ['Server'] },
      { app: 'cc'.repeat(32), enclaves: 1, categories: [] },
    ]);
    await enforcer.leave(a1);
    await enforcer.leave(a2);
    // App A has no live enclave now; its next enclave is the first again.
    const a3 = reg('192.168.28.2', APP_A, ['Demo', 'Web']);
    await enforcer.join(a3);
    await enforcer.updateCategories(APP_B, ['Server', 'Browser'], [b1]);
    await enforcer.updateCategories(APP_A, ['Web'], [a3]);
    await enforcer.updateCategories(Buffer.alloc(32, 0xdd), ['Ignored'], []);
    await enforcer.updateCategories(APP_C, [], [c1]);
    await Promise.all([enforcer.leave(b1), enforcer.leave(c1), enforcer.leave(a3)]);
    assert.deepEqual(enforcer.snapshot(), { enclaves: [], apps: [] });
    await enforcer.stop();

    const A = 'aaaaaaaa';
    const B = 'bbbbbbbb';
    assert.deepEqual(events, [
      'flush',
      `register 192.168.28.2 app=${A} host=127.0.0.1`,
      `cat-add ${A} Demo`,
      `cat-add ${A} Web`,
      `register 192.168.28.3 app=${A} host=10.0.0.5`,
      `register 192.168.28.4 app=${B} host=127.0.0.1`,
      `cat-add ${B} Server`,
      'register 192.168.28.5 app=cccccccc host=127.0.0.1',
      'unregister 192.168.28.2',
      'purge 192.168.28.2',
      'unregister 192.168.28.3',
      'purge 192.168.28.3',
      `register 192.168.28.2 app=${A} host=127.0.0.1`,
      `cat-add ${A} Demo`,
      `cat-add ${A} Web`,
      `cat-add ${B} Browser`,
      `cat-remove ${A} Demo`,
      'unregister 192.168.28.4',
      'purge 192.168.28.4',
      'unregister 192.168.28.5',
      'purge 192.168.28.5',
      'unregister 192.168.28.2',
      'purge 192.168.28.2',
      'flush',
    ]);
    assert.equal(kernel.sent.filter((m) => m.type === 16).length, 1, 'family resolved once');
    assert.equal(kernel.closed, true, 'stop closes the socket');
  });

  it('a failed category push unregisters the enclave and rejects the admission', async () => {
    const { events, enforcer } = setup((line) => (line === 'cat-add aaaaaaaa Web' ? 22 : 0));
    await enforcer.start();
    await assert.rejects(enforcer.join(reg('192.168.28.2', APP_A, ['Demo', 'Web'])), KmodRejectedError);
    assert.deepEqual(enforcer.snapshot(), { enclaves: [], apps: [] });
    assert.deepEqual(events, [
      'flush',
      'register 192.168.28.2 app=aaaaaaaa host=127.0.0.1',
      'cat-add aaaaaaaa Demo',
      'cat-add aaaaaaaa Web -> 22',
      'unregister 192.168.28.2',
    ]);
  });

  it('when unregister fails, the module is resynchronized from the live sessions before the purge', async () => {
    let failUnregister = false;
    const { events, enforcer } = setup((line) =>
      failUnregister && line.startsWith('unregister') ? 'drop' : 0,
    );
    await enforcer.start();
    const a1 = reg('192.168.28.2', APP_A, ['Demo']);
    await enforcer.join(a1);
    await enforcer.join(reg('192.168.28.3', APP_B, ['Server']));
    events.length = 0;
    failUnregister = true;
    await enforcer.leave(a1);
    assert.deepEqual(events, [
      'unregister 192.168.28.2 -> drop',
      'unregister 192.168.28.2 -> drop', // one retry after the ack timeout
      'flush',
      'register 192.168.28.3 app=bbbbbbbb host=127.0.0.1',
      'cat-add bbbbbbbb Server',
      'purge 192.168.28.2',
    ]);
    assert.deepEqual(enforcer.snapshot().enclaves, ['192.168.28.3']);
  });

  it('when even the resync fails, leave still purges and then rejects with KmodInconsistentError', async () => {
    let broken = false;
    const { events, enforcer } = setup(() => (broken ? 22 : 0));
    await enforcer.start();
    const a1 = reg('192.168.28.2', APP_A, []);
    await enforcer.join(a1);
    broken = true;
    await assert.rejects(enforcer.leave(a1), (e: unknown) => {
      assert.ok(e instanceof KmodInconsistentError);
      assert.match(e.hint ?? '', /do not reuse/);
      return true;
    });
    assert.deepEqual(events.slice(-3), [
      'unregister 192.168.28.2 -> 22',
      'flush -> 22',
      'purge 192.168.28.2',
    ]);
  });

  it('an invalid category in the database rejects the admission before any kernel call', async () => {
    const { events, enforcer } = setup();
    await enforcer.start();
    await assert.rejects(
      enforcer.join(reg('192.168.28.2', APP_A, ['this-name-is-far-too-long'])),
      InputError,
    );
    await assert.rejects(enforcer.join(reg('192.168.28.2', APP_A, ['has space'])), InputError);
    assert.deepEqual(events, ['flush']);
  });

  it('a second join of a live IP is refused without touching the module', async () => {
    const { events, enforcer } = setup();
    await enforcer.start();
    await enforcer.join(reg('192.168.28.2', APP_A, []));
    await assert.rejects(enforcer.join(reg('192.168.28.2', APP_B, [])), /already registered/);
    assert.deepEqual(events, ['flush', 'register 192.168.28.2 app=aaaaaaaa host=127.0.0.1']);
  });

  it('a failed category update resynchronizes the module with the database categories', async () => {
    const { events, enforcer } = setup();
    await enforcer.start();
    await enforcer.join(reg('192.168.28.2', APP_A, ['Demo']));
    events.length = 0;
    // Not failing: plain diff.
    await enforcer.updateCategories(APP_A, ['Demo', 'Web'], []);
    assert.deepEqual(events, ['cat-add aaaaaaaa Web']);

    let calls = 0;
    // Fail once, then let the resync's push through.
    const { events: ev2, enforcer: e2 } = setup((line) =>
      line === 'cat-add aaaaaaaa Browser' && calls++ === 0 ? 22 : 0,
    );
    await e2.start();
    await e2.join(reg('192.168.28.2', APP_A, ['Demo']));
    await e2.join(reg('192.168.28.3', APP_B, []));
    ev2.length = 0;
    await e2.updateCategories(APP_A, ['Browser'], []);
    assert.deepEqual(ev2, [
      'cat-remove aaaaaaaa Demo',
      'cat-add aaaaaaaa Browser -> 22',
      'flush',
      'register 192.168.28.2 app=aaaaaaaa host=127.0.0.1',
      'cat-add aaaaaaaa Browser',
      'register 192.168.28.3 app=bbbbbbbb host=127.0.0.1',
    ]);
    assert.deepEqual(e2.snapshot().apps[0]?.categories, ['Browser']);
  });

  it('a later enclave of a live app brings changed database categories along', async () => {
    const { events, enforcer } = setup();
    await enforcer.start();
    await enforcer.join(reg('192.168.28.2', APP_A, ['Demo', 'Old']));
    await enforcer.join(reg('192.168.28.3', APP_A, ['Demo', 'New']));
    assert.deepEqual(events.slice(-3), [
      'register 192.168.28.3 app=aaaaaaaa host=127.0.0.1',
      'cat-remove aaaaaaaa Old',
      'cat-add aaaaaaaa New',
    ]);
  });

  it('a register that is never acknowledged is undone before the admission is rejected', async () => {
    const { events, enforcer } = setup((line) => (line.startsWith('register') ? 'drop' : 0));
    await enforcer.start();
    await assert.rejects(enforcer.join(reg('192.168.28.2', APP_A, ['Demo'])), KmodTimeoutError);
    assert.deepEqual(events, [
      'flush',
      'register 192.168.28.2 app=aaaaaaaa host=127.0.0.1 -> drop',
      'register 192.168.28.2 app=aaaaaaaa host=127.0.0.1 -> drop',
      'unregister 192.168.28.2',
    ]);
    // The IP can be admitted again once the module answers.
    assert.deepEqual(enforcer.snapshot(), { enclaves: [], apps: [] });
  });

  it('leave of an enclave that never joined only purges its conntrack entries', async () => {
    const { events, enforcer } = setup();
    await enforcer.start();
    await enforcer.leave(reg('192.168.28.9', APP_A, []));
    assert.deepEqual(events, ['flush', 'purge 192.168.28.9']);
  });

  it('start fails fast when the module is not loaded', async () => {
    const { kernel, events, enforcer } = setup();
    kernel.family = null;
    await assert.rejects(enforcer.start(), (e: unknown) => {
      assert.ok(e instanceof KmodFamilyMissingError);
      assert.match(e.message, /family seng_family not found: is the seng kernel module loaded\?/);
      return true;
    });
    assert.deepEqual(events, []);
  });
});
