// The native record layer a server session is handed off to after release(): records sealed by it
// open in OpenSSL (the client side keeps its SSL object) and the other way round; replayed,
// reordered, duplicated, forged, wrong-epoch and truncated records; close_notify both ways; the
// final flight resent when the client retransmits its Finished. Step by step over DatagramTap.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  F_FATAL,
  F_HANDSHAKE_DONE,
  F_PEER_CLOSED,
  loadAddon,
  type NativeConn,
  type NativeContext,
} from '../../../src/dtls/native.js';
import { CertDir, type TestIdentity } from '../../fixtures/dtls/certs.js';
import { DatagramTap } from '../../fixtures/dtls/datagram-tap.js';

const addon = loadAddon();
const SUITES = { rsa: 'ECDHE-RSA-AES256-GCM-SHA384', ec: 'ECDHE-ECDSA-AES128-GCM-SHA256' } as const;

let certs: CertDir;
const ids: Record<string, TestIdentity> = {};
let toServer: DatagramTap;
let toClient: DatagramTap;
const slab = Buffer.alloc(256 * 1024);
const lens = new Uint32Array(64);

interface Pair {
  ctx: NativeContext;
  client: NativeConn;
  server: NativeConn;
  /** The server's final flight as it went out on release(). */
  flight: Buffer[];
}

function records(r: number, off = 0): string[] {
  const out: string[] = [];
  for (let i = 0; i < Math.floor(r / 256); i++) {
    out.push(slab.toString('utf8', off, off + lens[i]!));
    off += lens[i]!;
  }
  return out;
}

/** Server input of one datagram; returns [flags, records as text]. */
function feed(server: NativeConn, d: Buffer): [number, string[]] {
  const r = server.input(d, slab, 0, lens);
  return [r & 0xff, records(r)];
}

/**
 * A handshake up to release(); with deliverFlight false the server's final flight is not given
 * to the client (lost on the wire).
 */
function establish(kind: 'rsa' | 'ec', deliverFlight = true): Pair {
  toServer.take();
  toClient.take();
  const ctx = new addon.Context({
    server: true,
    identities: [{ certPem: ids[`srv-${kind}`]!.certPem, keyPem: ids[`srv-${kind}`]!.keyPem }],
    cipherList: SUITES[kind],
    mtu: 1500,
  });
  ctx.setFd(toServer.fd);
  const cctx = new addon.Context({
    server: false,
    identities: [{ certPem: ids[`cli-${kind}`]!.certPem, keyPem: ids[`cli-${kind}`]!.keyPem }],
    cipherList: SUITES[kind],
    caPem: ids[`srv-${kind}`]!.certPem,
    mtu: 1500,
  });
  const client = cctx.connect(toServer.address, toServer.port, toClient.fd);
  cctx.free();
  client.input(null, slab, 0, lens);
  assert.equal(ctx.listen(toServer.take(1)[0]!, toClient.address, toClient.port), 1);
  client.input(toClient.take(1)[0]!, slab, 0, lens);
  const server = ctx.listen(toServer.take(1)[0]!, toClient.address, toClient.port) as NativeConn;
  assert.equal(typeof server, 'object');
  server.input(null, slab, 0, lens);
  for (let round = 0; server.info().state !== 'held'; round++) {
    assert.ok(round < 10, 'handshake reaches the verdict');
    for (const d of toClient.take(1)) client.input(d, slab, 0, lens);
    for (const d of toServer.take(1)) assert.equal(server.input(d, slab, 0, lens) & F_FATAL, 0);
  }
  assert.equal(server.release(), 0);
  const flight = toClient.take(1);
  if (deliverFlight) {
    let f = 0;
    for (const d of flight) f |= client.input(d, slab, 0, lens);
    assert.ok(f & F_HANDSHAKE_DONE, 'client done');
  }
  return { ctx, client, server, flight };
}

function free(p: Pair): void {
  p.client.free();
  p.server.free();
  p.ctx.free();
}

/** One record from the client, as its datagram. */
function fromClient(p: Pair, text: string): Buffer {
  assert.equal(p.client.send(Buffer.from(text)), 1);
  const d = toServer.take(1);
  assert.equal(d.length, 1);
  return d[0]!;
}

describe('dtls native record layer', () => {
  before(() => {
    certs = new CertDir();
    for (const kind of ['rsa', 'ec'] as const) {
      ids[`srv-${kind}`] = certs.make(`srv-${kind}`, kind);
      ids[`cli-${kind}`] = certs.make(`cli-${kind}`, kind);
    }
    toServer = DatagramTap.open();
    toClient = DatagramTap.open();
  });
  after(() => {
    toServer.close();
    toClient.close();
    certs.cleanup();
  });

  for (const kind of ['rsa', 'ec'] as const) {
    it(`${SUITES[kind]}: the server frees its SSL object on release, records interoperate with OpenSSL both ways`, () => {
      const base = addon.nativeStats();
      const p = establish(kind);
      assert.equal(p.server.info().recordLayer, 'native');
      assert.equal(p.server.info().cipher, SUITES[kind]);
      assert.equal(p.client.info().recordLayer, 'openssl');
      // Listener + client only: the server connection holds no SSL object any more.
      assert.equal(addon.nativeStats().liveSsl, base.liveSsl + 2);
      assert.equal(addon.nativeStats().liveRecordLayer, base.liveRecordLayer + 1);
      assert.deepEqual(p.server.peerChain(), [], 'the chain is read before the verdict');
      for (let i = 0; i < 5; i++) assert.deepEqual(feed(p.server, fromClient(p, `up ${i}`))[1], [`up ${i}`]);
      const max = p.server.info().maxRecord;
      for (const size of [1, 100, max]) {
        assert.equal(p.server.send(Buffer.alloc(size, size & 0xff)), 1);
        const d = toClient.take(1);
        assert.equal(d.length, 1);
        assert.ok(d[0]!.length <= 1500 - 28);
        const r = p.client.input(d[0]!, slab, 0, lens);
        assert.equal(Math.floor(r / 256), 1);
        assert.deepEqual(slab.subarray(0, lens[0]!), Buffer.alloc(size, size & 0xff));
      }
      assert.equal(p.server.send(Buffer.alloc(max + 1)), -1);
      free(p);
      assert.equal(addon.nativeStats().liveRecordLayer, base.liveRecordLayer);
      assert.equal(addon.nativeStats().liveSsl, base.liveSsl);
    });
  }

  it('replayed, duplicated and too old records are discarded; reordered ones within the window are delivered', () => {
    const p = establish('ec');
    const a = fromClient(p, 'a');
    const b = fromClient(p, 'b');
    const c = fromClient(p, 'c');
    assert.deepEqual(feed(p.server, c)[1], ['c']);
    assert.deepEqual(feed(p.server, a)[1], ['a'], 'older but within the window');
    assert.deepEqual(feed(p.server, a)[1], [], 'replayed');
    assert.deepEqual(feed(p.server, Buffer.concat([b, b]))[1], ['b'], 'duplicated within one datagram');
    assert.deepEqual(p.server.info().discarded, { replayed: 2, forged: 0, other: 0 });
    // 70 records later, the first of them is older than the 64-record window.
    const old = fromClient(p, 'old');
    const later = Array.from({ length: 70 }, (_, i) => fromClient(p, `n${i}`));
    assert.deepEqual(feed(p.server, later[69]!)[1], ['n69']);
    assert.deepEqual(feed(p.server, old)[1], [], 'outside the window');
    assert.deepEqual(feed(p.server, later[5]!)[1], [], 'also outside (69 - 5 = 64)');
    assert.deepEqual(feed(p.server, later[6]!)[1], ['n6'], 'the oldest inside (69 - 6 = 63)');
    assert.equal(p.server.info().discarded.replayed, 4);
    free(p);
  });

  it('a forged tag, another epoch, another version and truncated records are discarded; the session survives', () => {
    const p = establish('rsa');
    const good = fromClient(p, 'good');
    const forged = Buffer.from(good);
    forged[forged.length - 1]! ^= 1;
    assert.deepEqual(feed(p.server, forged), [0, []]);
    const flipped = Buffer.from(good);
    flipped[13 + 8]! ^= 0x80; // ciphertext
    assert.deepEqual(feed(p.server, flipped), [0, []]);
    assert.equal(p.server.info().discarded.forged, 2);
    const epoch2 = Buffer.from(good);
    epoch2[4] = 2;
    const epoch0 = Buffer.from(good);
    epoch0[4] = 0;
    const version = Buffer.from(good);
    version[2] = 0xff;
    for (const d of [epoch2, epoch0, version]) assert.deepEqual(feed(p.server, d), [0, []]);
    // A header that claims more bytes than the datagram has; a header cut short; an empty body.
    const long = Buffer.from(good);
    long.writeUInt16BE(good.length, 11);
    assert.deepEqual(feed(p.server, long), [0, []]);
    assert.deepEqual(feed(p.server, good.subarray(0, 10)), [0, []]);
    const empty = Buffer.from(good.subarray(0, 13));
    empty.writeUInt16BE(0, 11);
    assert.deepEqual(feed(p.server, empty), [0, []]);
    assert.deepEqual(p.server.info().discarded, { replayed: 0, forged: 2, other: 6 });
    // The forged copies did not mark the sequence number: the genuine record still opens.
    assert.deepEqual(feed(p.server, good)[1], ['good']);
    assert.equal(p.server.info().state, 'open');
    free(p);
  });

  it('close_notify from the client ends the session and is answered; records before it are delivered', () => {
    const p = establish('ec');
    const last = fromClient(p, 'last words');
    assert.equal(p.client.shutdown(), 0);
    const notify = toServer.take(1)[0]!;
    const [flags, got] = feed(p.server, Buffer.concat([last, notify]));
    assert.ok(flags & F_PEER_CLOSED);
    assert.deepEqual(got, ['last words']);
    assert.equal(p.server.info().state, 'closed');
    assert.deepEqual(p.server.info().alertReceived, { level: 'warning', code: 0, name: 'close notify' });
    const reply = toClient.take(1);
    assert.equal(reply.length, 1, 'our close_notify in reply');
    assert.equal(reply[0]![0], 21);
    assert.equal(p.server.send(Buffer.from('x')), 0);
    free(p);
  });

  it('close_notify from the server reaches OpenSSL', () => {
    const p = establish('rsa');
    assert.equal(p.server.shutdown(), 0);
    const f = p.client.input(toClient.take(1)[0]!, slab, 0, lens);
    assert.ok(f & F_PEER_CLOSED);
    assert.deepEqual(p.client.info().alertReceived, { level: 'warning', code: 0, name: 'close notify' });
    free(p);
  });

  it('a lost final flight is resent, byte for byte, when the client retransmits its Finished', async () => {
    const p = establish('ec', false);
    assert.ok(p.flight.length >= 1);
    assert.equal(p.client.info().state, 'handshaking');
    // The client's retransmission timer (1 s) fires: it sends its whole last flight again.
    await new Promise((r) => setTimeout(r, p.client.nextTimeout() + 20));
    p.client.timeout();
    const retransmitted = toServer.take(1);
    assert.ok(retransmitted.length >= 1);
    for (const d of retransmitted) assert.deepEqual(feed(p.server, d), [0, []]);
    const resent = toClient.take(p.flight.length);
    assert.deepEqual(resent, p.flight);
    let f = 0;
    for (const d of resent) f |= p.client.input(d, slab, 0, lens);
    assert.ok(f & F_HANDSHAKE_DONE);
    // The client's first record proves it has our Finished: the copy is dropped, and a replay of
    // the retransmitted flight gets nothing back.
    assert.deepEqual(feed(p.server, fromClient(p, 'hello'))[1], ['hello']);
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal(p.client.timeout(), 0);
    assert.deepEqual(toServer.take(0, 50), [], 'the client is done and retransmits nothing');
    for (const d of retransmitted) feed(p.server, d);
    assert.deepEqual(toClient.take(0, 50), []);
    assert.equal(p.server.info().state, 'open');
    free(p);
  });
});
