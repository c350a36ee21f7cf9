/**
 * The gateway's side of the ShadowServer integration, with in-memory sessions: the lookup
 * of an active enclave by IP, and the teardown hook that must finish before the enclave IP
 * is released (and quarantines the IP if it fails).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { createSimCa, createSimCertificate, loadAttestationPolicy } from '../../../src/attestation/index.js';
import { Gateway } from '../../../src/gateway/gateway.js';
import { EnclaveIndex } from '../../../src/gateway/enclave-index.js';
import type {
  ChannelListener as TunnelListener,
  EnclaveChannel as TunnelSession,
  VerifyPeer,
} from '../../../src/gateway/types.js';
import type { ShadowHooks } from '../../../src/shadow/types.js';
import { decodeIpAssignment, encodeIpAssignAck } from '../../../src/proto/messages.js';
import { formatIpv4, fromWire, parseIpv4 } from '../../../src/util/ipv4.js';

const ca = createSimCa();
const policy = loadAttestationPolicy({ iasRootPem: ca.iasRoot.pem, sgxRootPem: ca.sgxRoot.pem });
const cert = createSimCertificate(ca, {
  kind: 'dcap',
  mrEnclave: '31'.repeat(32),
  mrSigner: '42'.repeat(32),
});

class FakeSession extends EventEmitter implements TunnelSession {
  readonly sent: Buffer[] = [];
  private closed = false;
  constructor(
    readonly remoteAddress: string,
    readonly remotePort: number,
    readonly verifyContext: unknown,
  ) {
    super();
  }
  send(record: Buffer): boolean {
    this.sent.push(Buffer.from(record));
    return true;
  }
  close(reason = 'local'): void {
    if (this.closed) return;
    this.closed = true;
    this.emit('close', reason);
  }
  setIdleTimeout(): void {}
}

class FakeListener extends EventEmitter implements TunnelListener {
  async close(): Promise<void> {}
}

async function admitted(hooks: ShadowHooks) {
  const verify = new Map<number, VerifyPeer>();
  const listeners = new Map<number, FakeListener>();
  const index = new EnclaveIndex(undefined);
  const gateway = new Gateway({
    port: 12345,
    listen: async (port, v) => {
      verify.set(port, v);
      const l = new FakeListener();
      listeners.set(port, l);
      return l;
    },
    attestation: policy,
    index,
    device: { write: () => true, onPackets: () => undefined, close: () => undefined },
    shadowHooks: hooks,
    timeouts: { ackIntervalMs: 50, ackTries: 3, sendSessionMs: 500, idleMs: 5000 },
  });
  await gateway.start();
  const session = async (port: number): Promise<FakeSession> => {
    const verdict = await verify.get(port)!([cert.certDer], { address: '10.0.0.7', port: 40000 + port });
    assert.ok(verdict.accept);
    const s = new FakeSession('10.0.0.7', 40000 + port, verdict.context);
    listeners.get(port)!.emit('session', s);
    return s;
  };
  const recv = await session(12345);
  const a = decodeIpAssignment(recv.sent[0]!);
  recv.emit('message', encodeIpAssignAck(a.ip));
  await session(12346);
  await new Promise((r) => setImmediate(r));
  const pool = index.subnets()[0]!;
  return { gateway, recv, ip: fromWire(a.ip), pool };
}

test('activeEnclave: host IP, measurements and subnet gateway of an established enclave', async () => {
  const { gateway, ip } = await admitted({ enclaveEnding: async () => undefined });
  const e = gateway.activeEnclave(ip);
  assert.ok(e);
  assert.equal(formatIpv4(e.hostIp), '10.0.0.7');
  assert.equal(formatIpv4(e.gatewayIp), '192.168.28.1');
  assert.equal(e.mrEnclave.toString('hex'), '31'.repeat(32));
  assert.equal(e.mrSigner.toString('hex'), '42'.repeat(32));
  assert.equal(gateway.activeEnclave(parseIpv4('192.168.28.200')), undefined);
  await gateway.stop();
  assert.equal(gateway.activeEnclave(ip), undefined);
});

test('the enclave IP is released only after enclaveEnding resolved', async () => {
  let finish!: () => void;
  const calls: string[] = [];
  const { gateway, ip, pool } = await admitted({
    enclaveEnding: (x) => {
      calls.push(formatIpv4(x));
      return new Promise<void>((r) => (finish = r));
    },
  });
  assert.equal(pool.inUse, 1);
  const kicked = gateway.kick({ ip });
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(calls, [formatIpv4(ip)]);
  assert.equal(pool.inUse, 1, 'IP released while its shadows were still being removed');
  assert.equal(gateway.activeEnclave(ip), undefined, 'no new shadow requests for an ending enclave');
  finish();
  await kicked;
  assert.equal(pool.inUse, 0);
  await gateway.stop();
});

test('a failed shadow teardown quarantines the IP instead of handing it out again', async () => {
  const { gateway, ip, pool } = await admitted({
    enclaveEnding: async () => {
      throw new Error('nft says no');
    },
  });
  await gateway.kick({ ip });
  assert.equal(pool.inUse, 1);
  assert.equal(gateway.stats.quarantined, 1);
  await gateway.stop();
});
