// What an established server association keeps (docs/dtls.md, "Memory per session"): no cipher
// context until a direction carries more than a few records (those are sealed / opened with
// temporary contexts), so a close_notify or an alert is sealed on a session whose seal context
// was never created; the final flight kept until the client's first authenticated application
// record (a forged one does not drop it). Step by step over DatagramTap.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
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
/** RecordLayer::kTransientRecords (record_layer.h). */
const TRANSIENT_RECORDS = 8;

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
  flight: Buffer[];
}

/** A handshake up to release(); with deliverFlight false the final flight is lost on the wire. */
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
  server.input(null, slab, 0, lens);
  for (let round = 0; server.info().state !== 'held'; round++) {
    assert.ok(round < 10, 'handshake reaches the verdict');
    for (const d of toClient.take(1)) client.input(d, slab, 0, lens);
    for (const d of toServer.take(1)) server.input(d, slab, 0, lens);
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

function fromClient(p: Pair, text: string): Buffer {
  assert.equal(p.client.send(Buffer.from(text)), 1);
  return toServer.take(1)[0]!;
}

/** Server input of one datagram: the records it delivered, as text. */
function feed(server: NativeConn, d: Buffer): string[] {
  const r = server.input(d, slab, 0, lens);
  const out: string[] = [];
  let off = 0;
  for (let i = 0; i < Math.floor(r / 256); i++) {
    out.push(slab.toString('utf8', off, off + lens[i]!));
    off += lens[i]!;
  }
  return out;
}

/** Client input of the server's datagrams: the records OpenSSL delivered, as text. */
function toClientRecords(p: Pair, count: number): string[] {
  const out: string[] = [];
  for (const d of toClient.take(count)) {
    const r = p.client.input(d, slab, 0, lens);
    let off = 0;
    for (let i = 0; i < Math.floor(r / 256); i++) {
      out.push(slab.toString('utf8', off, off + lens[i]!));
      off += lens[i]!;
    }
  }
  return out;
}

describe('dtls native record layer: memory per session', () => {
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
    it(`${SUITES[kind]}: no cipher context after the handoff; close_notify is sealed without one and reaches OpenSSL`, () => {
      const p = establish(kind);
      assert.deepEqual(p.server.info().cipherContexts, { seal: false, open: false });
      assert.deepEqual(feed(p.server, fromClient(p, 'ack')), ['ack'], 'opened with a temporary context');
      assert.deepEqual(p.server.info().cipherContexts, { seal: false, open: false });
      assert.equal(p.server.shutdown(), 0);
      const f = p.client.input(toClient.take(1)[0]!, slab, 0, lens);
      assert.ok(f & F_PEER_CLOSED, 'OpenSSL authenticated our close_notify');
      assert.deepEqual(p.client.info().alertReceived, { level: 'warning', code: 0, name: 'close notify' });
      free(p);
    });
  }

  it('a direction gets its persistent context after the transient records; records interoperate all along', () => {
    const p = establish('ec');
    for (let i = 0; i < TRANSIENT_RECORDS; i++)
      assert.deepEqual(feed(p.server, fromClient(p, `up ${i}`)), [`up ${i}`]);
    assert.deepEqual(p.server.info().cipherContexts, { seal: false, open: false });
    assert.deepEqual(feed(p.server, fromClient(p, 'up more')), ['up more']);
    assert.deepEqual(p.server.info().cipherContexts, { seal: false, open: true });
    const sent: string[] = [];
    for (let i = 0; i <= TRANSIENT_RECORDS; i++) {
      sent.push(`down ${i}`);
      assert.equal(p.server.send(Buffer.from(`down ${i}`)), 1);
      assert.equal(p.server.info().cipherContexts?.seal, i === TRANSIENT_RECORDS);
    }
    assert.deepEqual(
      toClientRecords(p, sent.length),
      sent,
      'sequence numbers continue across the context change',
    );
    assert.deepEqual(feed(p.server, fromClient(p, 'still')), ['still']);
    free(p);
  });

  it('a close_notify from the client is answered on a session that never sealed', () => {
    const p = establish('rsa');
    assert.equal(p.client.shutdown(), 0);
    const r = p.server.input(toServer.take(1)[0]!, slab, 0, lens);
    assert.ok(r & F_PEER_CLOSED);
    assert.equal(p.server.info().state, 'closed');
    const reply = toClient.take(1);
    assert.equal(reply.length, 1, 'our close_notify in reply');
    assert.equal(reply[0]![0], 21, 'an alert record');
    free(p);
  });

  it('the final flight is kept until an authenticated application record; a forged one does not drop it', async () => {
    const p = establish('ec', false);
    const kept = p.server.info().finalFlightBytes ?? 0;
    assert.equal(
      kept,
      p.flight.reduce((n, d) => n + d.length, 0),
      'the copy is the flight as sent',
    );
    // An application record in epoch 1 with a fresh sequence number and a bad tag proves nothing.
    const forged = Buffer.alloc(13 + 8 + 16 + 16, 0x5a);
    forged.set([23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 40]);
    forged.writeUInt16BE(8 + 16 + 16, 11);
    assert.deepEqual(feed(p.server, forged), []);
    assert.equal(p.server.info().discarded.forged, 1);
    assert.equal(p.server.info().finalFlightBytes, kept);
    // The client's retransmission timer fires: its last flight again, and ours is still resent.
    await new Promise((r) => setTimeout(r, p.client.nextTimeout() + 20));
    p.client.timeout();
    for (const d of toServer.take(1)) feed(p.server, d);
    const resent = toClient.take(p.flight.length);
    assert.deepEqual(resent, p.flight);
    let f = 0;
    for (const d of resent) f |= p.client.input(d, slab, 0, lens);
    assert.ok(f & F_HANDSHAKE_DONE);
    // The client's first genuine record: it has our Finished, and the copy is freed.
    assert.deepEqual(feed(p.server, fromClient(p, 'first')), ['first']);
    assert.equal(p.server.info().finalFlightBytes, 0);
    free(p);
  });
});
