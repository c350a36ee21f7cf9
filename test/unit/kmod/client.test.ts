/**
 * SengKmodClient against a fake kernel at the transport boundary:
 * family resolution, acks, typed errors, bounded retries on transient failures only.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  KmodFamilyMissingError,
  KmodRejectedError,
  KmodTimeoutError,
  SengKmodClient,
} from '../../../kmod-bridge/index.js';
import { parseIpv4 } from '../../../src/util/ipv4.js';
import { FakeKernel, describeSeng } from './fake-kernel.js';

const APP = Buffer.alloc(32, 0xab);

function client(
  k: FakeKernel,
  extra: Partial<ConstructorParameters<typeof SengKmodClient>[0]> = {},
): SengKmodClient {
  return new SengKmodClient({ transport: k, timeoutMs: 50, retryDelayMs: 1, ...extra });
}

describe('SengKmodClient', () => {
  it('resolves the family and sends REQUEST|ACK messages addressed to its id', async () => {
    const k = new FakeKernel();
    const c = client(k);
    await c.flush();
    await c.register({ enclaveIp: parseIpv4('192.168.28.2'), mrEnclave: APP, hostIp: parseIpv4('10.0.0.7') });
    await c.addCategory(APP, 'Demo');
    await c.removeCategory(APP, 'Demo');
    await c.unregister(parseIpv4('192.168.28.2'));
    assert.equal(k.sent.filter((m) => m.type === 16).length, 1, 'family resolved once');
    assert.deepEqual(
      k.requests.map((m) => [m.type, m.flags, m.port]),
      Array(5).fill([0x1c, 5, 0x4242]),
    );
    assert.deepEqual(
      k.requests.map((m) => describeSeng(m.payload)),
      [
        'flush',
        'register 192.168.28.2 app=abababab host=10.0.0.7',
        'cat-add abababab Demo',
        'cat-remove abababab Demo',
        'unregister 192.168.28.2',
      ],
    );
    assert.equal(new Set(k.requests.map((m) => m.seq)).size, 5, 'distinct sequence numbers');
    assert.equal(k.active, false, 'socket unreferenced when idle');
    c.close();
    assert.equal(k.closed, true);
  });

  it('status reports the family, its id, version and multicast group', async () => {
    const k = new FakeKernel();
    assert.deepEqual(await client(k).status(), {
      family: 'seng_family',
      present: true,
      id: 0x1c,
      version: 1,
      maxAttr: 0,
      multicastGroup: { name: 'seng_mcgrp', id: 0x20 },
    });
  });

  it('a missing family is KmodFamilyMissingError with the actionable message; status says present: false', async () => {
    const k = new FakeKernel();
    k.family = null;
    await assert.rejects(client(k).flush(), (e: unknown) => {
      assert.ok(e instanceof KmodFamilyMissingError);
      assert.equal(e.message, 'family seng_family not found: is the seng kernel module loaded?');
      assert.equal(e.code, 'EKMOD_MISSING');
      return true;
    });
    assert.equal(k.requests.length, 0);
    const s = await client(k).status();
    assert.equal(s.present, false);
    assert.match(s.message ?? '', /is the seng kernel module loaded\?/);
  });

  it('EINVAL is final (no retry) and, when nothing was ever acked, names the Linux >= 6.0 policy problem', async () => {
    const k = new FakeKernel();
    k.verdict = () => 22;
    const c = client(k);
    await assert.rejects(c.flush(), (e: unknown) => {
      assert.ok(e instanceof KmodRejectedError);
      assert.equal(e.errno, 22);
      assert.equal(e.request, 'flush');
      assert.match(e.hint ?? '', /Linux >= 6\.0/);
      assert.match(e.hint ?? '', /resv_start_op/);
      return true;
    });
    assert.equal(k.requests.length, 1);
    // Once a request was acked, a later EINVAL is an ordinary rejection.
    k.verdict = () => 0;
    await c.flush();
    k.verdict = () => 22;
    await assert.rejects(c.unregister(parseIpv4('192.168.28.9')), (e: unknown) => {
      assert.ok(e instanceof KmodRejectedError);
      assert.doesNotMatch(e.hint ?? '', /Linux >= 6\.0/);
      return true;
    });
  });

  it('retries transient kernel errors (ENOBUFS, EBUSY) and then succeeds', async () => {
    const k = new FakeKernel();
    const answers = [105, 16, 0];
    k.verdict = () => answers.shift() ?? 0;
    await client(k).flush();
    assert.equal(k.requests.length, 3);
  });

  it('gives up after the bounded number of retries', async () => {
    const k = new FakeKernel();
    k.verdict = () => 11; // EAGAIN forever
    await assert.rejects(
      client(k, { retries: 2 }).flush(),
      (e: unknown) => e instanceof KmodRejectedError && e.errno === 11,
    );
    assert.equal(k.requests.length, 3);
  });

  it('a request that is never acked is KmodTimeoutError after 1 + retries attempts', async () => {
    const k = new FakeKernel();
    k.verdict = () => 'drop';
    const t0 = Date.now();
    await assert.rejects(client(k, { retries: 1 }).flush(), (e: unknown) => {
      assert.ok(e instanceof KmodTimeoutError);
      assert.equal(e.code, 'EKMOD_TIMEOUT');
      assert.match(e.message, /2 attempts/);
      return true;
    });
    assert.equal(k.requests.length, 2);
    assert.ok(Date.now() - t0 < 2000);
    assert.equal(k.active, false);
  });

  it('ENOENT on a request means the module went away: KmodFamilyMissingError', async () => {
    const k = new FakeKernel();
    const c = client(k);
    await c.flush();
    k.family = null;
    k.verdict = () => 2;
    await assert.rejects(c.flush(), KmodFamilyMissingError);
  });
});
