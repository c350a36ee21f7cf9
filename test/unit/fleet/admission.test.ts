/** Admission with a fleet registry: IPs come from the LeaseAuthority, asynchronously. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as tick } from 'node:timers/promises';
import { decodeIpAssignment, encodeIpAssignAck } from '../../../src/proto/messages.js';
import { formatIpv4, fromWire, type Ipv4 } from '../../../src/util/ipv4.js';
import type {
  LeaseAuthority,
  LeaseClaimResult,
  LeaseRequest,
  Rejection,
} from '../../../src/gateway/context.js';
import type { IpPool } from '../../../src/gateway/ip-pool.js';
import { FakeSession, cert, harness } from '../gateway/fakes.js';

/** Claims resolve when the test says so; releases are recorded. */
class ControlledLeases implements LeaseAuthority {
  readonly released: { ip: string; sessionId: string; reason: string }[] = [];
  readonly requests: LeaseRequest[] = [];
  private pending: { pool: IpPool; resolve: (r: LeaseClaimResult) => void }[] = [];
  claim(pool: IpPool, req: LeaseRequest): Promise<LeaseClaimResult> {
    this.requests.push(req);
    return new Promise((resolve) => this.pending.push({ pool, resolve }));
  }
  /** Answers the oldest claim: with the pool's next IP, or with `refusal`. */
  answer(refusal?: LeaseClaimResult): Ipv4 | undefined {
    const p = this.pending.shift();
    assert.ok(p, 'a claim is pending');
    if (refusal) {
      p.resolve(refusal);
      return undefined;
    }
    const ip = p.pool.allocate()!;
    p.resolve({ ok: true, ip });
    return ip;
  }
  release(pool: IpPool, ip: Ipv4, sessionId: string, reason: string): void {
    this.released.push({ ip: formatIpv4(ip), sessionId, reason });
    pool.release(ip);
  }
}

function setup() {
  const leases = new ControlledLeases();
  const rejections: Rejection[] = [];
  const h = harness(undefined, undefined, { leases, observer: { rejected: (r) => rejections.push(r) } });
  return { h, leases, rejections };
}

test('the IP is assigned once the registry granted it, and its lease ends with the session', async () => {
  const { h, leases } = setup();
  await h.gateway.start();
  const recv = (await h.handshake(12345, cert.certDer)) as FakeSession;
  await tick();
  assert.equal(recv.sent.length, 0, 'nothing is sent before the claim is answered');
  assert.equal(leases.requests[0]?.hostIp, '10.0.0.7');
  assert.equal(leases.requests[0]?.mrEnclave, '11'.repeat(32));
  const ip = leases.answer()!;
  await tick();
  const a = decodeIpAssignment(recv.sent[0]!);
  assert.equal(fromWire(a.ip), ip);
  recv.emit('message', encodeIpAssignAck(a.ip));
  const send = (await h.handshake(12346, cert.certDer)) as FakeSession;
  assert.ok(send instanceof FakeSession);
  await tick();
  assert.equal(h.gateway.status()[0]?.state, 'active');
  await h.gateway.kick({ all: true }, 'test over');
  assert.deepEqual(
    leases.released.map((r) => [r.ip, r.reason]),
    [[formatIpv4(ip), 'test over']],
  );
  await h.gateway.stop();
});

test('a registry that cannot grant an IP rejects the attempt with its reason', async () => {
  const { h, leases, rejections } = setup();
  await h.gateway.start();
  const recv = (await h.handshake(12345, cert.certDer)) as FakeSession;
  leases.answer({ ok: false, check: 'registry', reason: 'the enclave registry is unreachable' });
  await tick();
  assert.equal(recv.closedWith, 'enclave registry unreachable');
  assert.deepEqual(
    rejections.map((r) => [r.check, r.reason]),
    [['registry', 'the enclave registry is unreachable']],
  );
  assert.equal(h.gateway.status().length, 0);
  await h.gateway.stop();
});

test('a channel that closes while its claim is in flight gives the lease back', async () => {
  const { h, leases } = setup();
  await h.gateway.start();
  const recv = (await h.handshake(12345, cert.certDer)) as FakeSession;
  recv.close('peer went away');
  const ip = leases.answer()!;
  await tick();
  assert.equal(recv.sent.length, 0);
  assert.deepEqual(leases.released, [
    {
      ip: formatIpv4(ip),
      sessionId: leases.requests[0]!.sessionId,
      reason: 'receive tunnel closed: peer went away',
    },
  ]);
  assert.equal(h.gateway.status().length, 0);
  await h.gateway.stop();
});
