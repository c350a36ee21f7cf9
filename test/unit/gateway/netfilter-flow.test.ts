/**
 * `seng serve -n -d DB` in process: the gateway's session logic (in-memory DTLS peers) with
 * the real KmodEnforcer and SengKmodClient on a recording fake kernel at the netlink socket
 * boundary, a real netfilter database, and category edits made while serving (hot reload).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSimCa, createSimCertificate, loadAttestationPolicy } from '../../../src/attestation/index.js';
import { Gateway } from '../../../src/gateway/gateway.js';
import { EnclaveIndex } from '../../../src/gateway/enclave-index.js';
import type { ChannelListener, EnclaveChannel, VerifyPeer } from '../../../src/gateway/types.js';
import { KmodEnforcer } from '../../../src/enforce/kmod.js';
import { SengKmodClient } from '../../../kmod-bridge/index.js';
import { Store } from '../../../src/store/index.js';
import { decodeIpAssignment, encodeIpAssignAck } from '../../../src/proto/messages.js';
import { formatIpv4 } from '../../../src/util/ipv4.js';
import { FakeKernel, describeSeng } from '../kmod/fake-kernel.js';

class Peer extends EventEmitter implements EnclaveChannel {
  readonly sent: Buffer[] = [];
  closed = false;
  constructor(
    readonly remoteAddress: string,
    readonly remotePort: number,
    readonly verifyContext: unknown,
  ) {
    super();
  }
  send(r: Buffer): boolean {
    this.sent.push(r);
    return true;
  }
  close(reason = 'local'): void {
    if (this.closed) return;
    this.closed = true;
    this.emit('close', reason);
  }
  setIdleTimeout(): void {}
}

const tick = () => new Promise((r) => setTimeout(r, 5));

test('flush → register → categories (first enclave of an app) → unregister → purge → flush, with hot category edits', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'seng-nf-'));
  try {
    const dbPath = join(dir, 'nf.db');
    const admin = Store.create(dbPath, 'netfilter');
    const A = 'aa'.repeat(32);
    const B = 'bb'.repeat(32);
    admin.addApp({ name: 'browser', mrEnclave: Buffer.from(A, 'hex'), mrSigner: Buffer.alloc(32, 1) });
    admin.addApp({ name: 'server', mrEnclave: Buffer.from(B, 'hex'), mrSigner: Buffer.alloc(32, 1) });
    admin.addCategory('browser', 'Browser');
    admin.addCategory('browser', 'Web');
    admin.addCategory('server', 'Server');

    const kernel = new FakeKernel();
    const events: string[] = [];
    kernel.verdict = (m) => {
      events.push(describeSeng(m.payload));
      return 0;
    };
    const enforcer = new KmodEnforcer({
      client: new SengKmodClient({ transport: kernel, timeoutMs: 5000, retries: 1, retryDelayMs: 1 }),
      purge: async (ip) => {
        events.push(`purge ${formatIpv4(ip)}`);
        return 0;
      },
    });
    const ca = createSimCa();
    const certs = {
      a1: createSimCertificate(ca, { kind: 'epid', mrEnclave: A, mrSigner: '01'.repeat(32) }),
      a2: createSimCertificate(ca, { kind: 'dcap', mrEnclave: A, mrSigner: '01'.repeat(32) }),
      b1: createSimCertificate(ca, { kind: 'dcap', mrEnclave: B, mrSigner: '01'.repeat(32) }),
    };
    const verify = new Map<number, VerifyPeer>();
    const listeners = new Map<number, EventEmitter>();
    const store = Store.open(dbPath, { readonly: true });
    const gateway = new Gateway({
      port: 5000,
      listen: async (port, v) => {
        verify.set(port, v);
        const l = new EventEmitter() as EventEmitter & ChannelListener;
        l.close = async () => {};
        listeners.set(port, l);
        return l;
      },
      attestation: loadAttestationPolicy({ iasRootPem: ca.iasRoot.pem, sgxRootPem: ca.sgxRoot.pem }),
      index: new EnclaveIndex(store),
      device: { write: () => true, onPackets: () => {}, close: () => {} },
      enforcer,
    });
    const connect = async (der: Buffer, host: string): Promise<Peer> => {
      const open = async (port: number) => {
        const v = await verify.get(port)!([der], { address: host, port: 7000 });
        assert.ok(v.accept, !v.accept ? v.reason : '');
        const p = new Peer(host, 7000, v.context);
        listeners.get(port)!.emit('session', p);
        return p;
      };
      const recv = await open(5000);
      recv.emit('message', encodeIpAssignAck(decodeIpAssignment(recv.sent[0]!).ip));
      await open(5001);
      await tick();
      return recv;
    };

    await gateway.start();
    const a1 = await connect(certs.a1.certDer, '10.1.0.1');
    const a2 = await connect(certs.a2.certDer, '10.1.0.2');
    const b1 = await connect(certs.b1.certDer, '10.1.0.1');
    assert.deepEqual(events, [
      'flush',
      'register 192.168.28.2 app=aaaaaaaa host=10.1.0.1',
      'cat-add aaaaaaaa Browser',
      'cat-add aaaaaaaa Web',
      'register 192.168.28.3 app=aaaaaaaa host=10.1.0.2',
      'register 192.168.28.4 app=bbbbbbbb host=10.1.0.1',
      'cat-add bbbbbbbb Server',
    ]);
    events.length = 0;

    // An admin edits categories while serving: active apps follow without a restart.
    const writer = Store.open(dbPath);
    writer.removeCategory('browser', 'Web');
    writer.addCategory('browser', 'Social');
    writer.close();
    assert.deepEqual(await gateway.reloadIndex(), { changedApps: 1, ended: [] });
    assert.deepEqual(events.sort(), ['cat-add aaaaaaaa Social', 'cat-remove aaaaaaaa Web']);
    events.length = 0;

    a1.close('close_notify');
    await tick();
    a2.close('close_notify');
    await tick();
    b1.close('close_notify');
    await tick();
    assert.deepEqual(events, [
      'unregister 192.168.28.2',
      'purge 192.168.28.2',
      'unregister 192.168.28.3',
      'purge 192.168.28.3',
      'unregister 192.168.28.4',
      'purge 192.168.28.4',
    ]);
    events.length = 0;
    await gateway.stop();
    assert.deepEqual(events, ['flush']);
    store.close();
    admin.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
