/**
 * In-memory stand-ins for the DTLS layer, the TUN device and the enforcer, and a harness
 * that drives a Gateway through the SPEC §1.2 setup with them (shared by the gateway unit tests).
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { createSimCa, createSimCertificate, loadAttestationPolicy } from '../../../src/attestation/index.js';
import { Gateway, type GatewayOptions } from '../../../src/gateway/gateway.js';
import { EnclaveIndex } from '../../../src/gateway/enclave-index.js';
import type {
  PacketDevice,
  PeerVerdict,
  ChannelListener,
  EnclaveChannel,
  VerifyPeer,
} from '../../../src/gateway/types.js';
import type { EnclaveRegistration, Enforcer } from '../../../src/enforce/types.js';
import { decodeIpAssignment, encodeIpAssignAck } from '../../../src/proto/messages.js';
import { formatIpv4, fromWire } from '../../../src/util/ipv4.js';

export const ca = createSimCa();
export const policy = loadAttestationPolicy({ iasRootPem: ca.iasRoot.pem, sgxRootPem: ca.sgxRoot.pem });
export const cert = createSimCertificate(ca, {
  kind: 'dcap',
  mrEnclave: '11'.repeat(32),
  mrSigner: '22'.repeat(32),
});
export const otherCert = createSimCertificate(ca, {
  kind: 'dcap',
  mrEnclave: '11'.repeat(32),
  mrSigner: '22'.repeat(32),
});

export class FakeSession extends EventEmitter implements EnclaveChannel {
  readonly sent: Buffer[] = [];
  closedWith: string | undefined;
  idle = -1;
  constructor(
    readonly remoteAddress: string,
    readonly remotePort: number,
    readonly verifyContext: unknown,
  ) {
    super();
  }
  send(record: Buffer): boolean {
    if (this.closedWith !== undefined) return false;
    this.sent.push(Buffer.from(record));
    return true;
  }
  close(reason = 'local'): void {
    if (this.closedWith !== undefined) return;
    this.closedWith = reason;
    this.emit('close', reason);
  }
  setIdleTimeout(ms: number): void {
    this.idle = ms;
  }
}

export class FakeListener extends EventEmitter implements ChannelListener {
  async close(): Promise<void> {}
}

export function harness(
  enforcer?: Enforcer,
  timeouts = { ackIntervalMs: 20, ackTries: 3, sendSessionMs: 200, idleMs: 1000 },
  overrides: Partial<GatewayOptions> = {},
) {
  const verify = new Map<number, VerifyPeer>();
  const listeners = new Map<number, FakeListener>();
  const written: Buffer[] = [];
  let deliver: (p: Buffer[]) => void = () => {};
  const device: PacketDevice = {
    write: (p) => (written.push(p), true),
    onPackets: (h) => (deliver = h),
    close: () => {},
  };
  const gateway = new Gateway({
    port: 12345,
    listen: async (port, v) => {
      verify.set(port, v);
      const l = new FakeListener();
      listeners.set(port, l);
      return l;
    },
    attestation: policy,
    index: new EnclaveIndex(undefined),
    device,
    ...(enforcer ? { enforcer } : {}),
    timeouts,
    ...overrides,
  });
  async function handshake(
    port: number,
    der: Buffer,
    address = '10.0.0.7',
  ): Promise<FakeSession | PeerVerdict> {
    const verdict = await verify.get(port)!([der], { address, port: 40000 + port });
    if (!verdict.accept) return verdict;
    const s = new FakeSession(address, 40000 + port, verdict.context);
    listeners.get(port)!.emit('session', s);
    return s;
  }
  async function connect(
    der = cert.certDer,
    address = '10.0.0.7',
  ): Promise<{ recv: FakeSession; send: FakeSession; ip: number }> {
    const recv = (await handshake(12345, der, address)) as FakeSession;
    assert.ok(recv instanceof FakeSession, 'first session accepted');
    const a = decodeIpAssignment(recv.sent[0]!);
    recv.emit('message', encodeIpAssignAck(a.ip));
    const send = (await handshake(12346, der, address)) as FakeSession;
    assert.ok(send instanceof FakeSession, 'second session accepted');
    await new Promise((r) => setImmediate(r));
    return { recv, send, ip: fromWire(a.ip) };
  }
  return { gateway, handshake, connect, written, deliver: (p: Buffer[]) => deliver(p) };
}

export function ipv4Packet(src: number, dst: number, len = 60): Buffer {
  const p = Buffer.alloc(len);
  p[0] = 0x45;
  p.writeUInt16BE(len, 2);
  p.writeUInt32BE(src, 12);
  p.writeUInt32BE(dst, 16);
  return p;
}

export class RecordingEnforcer implements Enforcer {
  readonly name = 'recording';
  readonly calls: string[] = [];
  failLeave = false;
  failJoin = false;
  async start() {
    this.calls.push('start');
  }
  async join(r: EnclaveRegistration) {
    this.calls.push(`join ${formatIpv4(r.enclaveIp)} host ${formatIpv4(r.hostIp)}`);
    if (this.failJoin) throw new Error('join refused');
  }
  async leave(r: EnclaveRegistration) {
    this.calls.push(`leave ${formatIpv4(r.enclaveIp)}`);
    if (this.failLeave) throw new Error('module disagrees');
  }
  async updateCategories() {}
  async stop() {
    this.calls.push('stop');
  }
}
