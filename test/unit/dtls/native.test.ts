// The addon driven step by step: a client Conn and a server Context/Conn exchange datagrams over
// two loopback sockets the test reads synchronously (DatagramTap, the test fake of the wire),
// which exercises the stateless listener, the held final flight, release / reject, records into
// the slab, close_notify, and the argument checks.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  F_CLOSED,
  F_FATAL,
  F_HANDSHAKE_DONE,
  F_PEER_CLOSED,
  loadAddon,
  type NativeConn,
  type NativeContext,
  type NativeContextOptions,
} from '../../../src/dtls/native.js';
import { CertDir, type TestIdentity } from '../../fixtures/dtls/certs.js';
import { DatagramTap } from '../../fixtures/dtls/datagram-tap.js';

const addon = loadAddon();
const SUITE = 'ECDHE-ECDSA-AES128-GCM-SHA256';

let certs: CertDir;
let srv: TestIdentity;
let cli: TestIdentity;
/** What the client sends arrives here (the server's socket) ... */
let toServer: DatagramTap;
/** ... and what the server sends, here (the client's socket). */
let toClient: DatagramTap;

const slab = Buffer.alloc(256 * 1024);
const lens = new Uint32Array(64);

function serverCtx(): NativeContext {
  const ctx = new addon.Context({
    server: true,
    identities: [{ certPem: srv.certPem, keyPem: srv.keyPem }],
    cipherList: SUITE,
    mtu: 1500,
  });
  ctx.setFd(toServer.fd);
  return ctx;
}

function clientConn(): NativeConn {
  const ctx = new addon.Context({
    server: false,
    identities: [{ certPem: cli.certPem, keyPem: cli.keyPem }],
    cipherList: SUITE,
    caPem: srv.certPem,
    mtu: 1500,
  });
  const conn = ctx.connect(toServer.address, toServer.port, toClient.fd);
  ctx.free();
  return conn;
}

/** The server side's listen() for a datagram from the client's socket. */
function listen(ctx: NativeContext, d: Buffer): NativeConn | number {
  return ctx.listen(d, toClient.address, toClient.port);
}

/** Runs the handshake up to the server's verdict; returns both ends. */
function handshakeToVerdict(ctx: NativeContext): { client: NativeConn; server: NativeConn } {
  const client = clientConn();
  client.input(null, slab, 0, lens);
  const hello = toServer.take(1);
  assert.equal(hello.length, 1);
  // First ClientHello: no cookie → HelloVerifyRequest, no connection.
  assert.equal(listen(ctx, hello[0]!), 1);
  const hvr = toClient.take(1);
  assert.equal(hvr.length, 1);
  assert.equal(hvr[0]![13], 3, 'HelloVerifyRequest');
  client.input(hvr[0]!, slab, 0, lens);
  const hello2 = toServer.take(1);
  const server = listen(ctx, hello2[0]!);
  assert.equal(typeof server, 'object', 'a ClientHello with a valid cookie makes a connection');
  const srvConn = server as NativeConn;
  srvConn.input(null, slab, 0, lens);
  let fromServer = toClient.take(1);
  for (let round = 0; round < 10; round++) {
    for (const d of fromServer) client.input(d, slab, 0, lens);
    let done = false;
    for (const d of toServer.take(1)) {
      const f = srvConn.input(d, slab, 0, lens);
      assert.equal(f & F_FATAL, 0, srvConn.info().error);
      if (f & F_HANDSHAKE_DONE) done = true;
    }
    if (done) return { client, server: srvConn };
    fromServer = toClient.take(1);
  }
  throw new Error('handshake did not reach the verdict');
}

describe('dtls addon (step by step over loopback)', () => {
  before(() => {
    certs = new CertDir();
    srv = certs.make('srv-ec', 'ec');
    cli = certs.make('cli-ec', 'ec');
    toServer = DatagramTap.open();
    toClient = DatagramTap.open();
  });
  after(() => {
    toServer.close();
    toClient.close();
    certs.cleanup();
  });

  it('handshake holds the final flight until release, then records and close_notify flow', () => {
    const ctx = serverCtx();
    const { client, server } = handshakeToVerdict(ctx);
    assert.equal(server.info().state, 'held');
    assert.deepEqual(toClient.take(0, 50), [], 'nothing leaves before the verdict');
    assert.equal(client.info().state, 'handshaking');
    const chain = server.peerChain();
    assert.equal(chain.length, 1);
    assert.ok(chain[0]!.length > 100);
    // Input while held is ignored.
    assert.equal(server.input(Buffer.from([1, 2, 3]), slab, 0, lens) & 0xff, 0);

    assert.equal(server.release(), 0);
    let f = 0;
    for (const d of toClient.take(1)) f |= client.input(d, slab, 0, lens);
    assert.ok(f & F_HANDSHAKE_DONE);
    assert.equal(client.info().state, 'open');
    assert.equal(client.info().cipher, SUITE);
    assert.equal(server.info().state, 'open');
    assert.ok(client.peerChain().length >= 1);

    // Three records in a row from the client, read into the slab at an offset.
    for (const text of ['one', 'two', 'three']) assert.equal(client.send(Buffer.from(text)), 1);
    const datagrams = toServer.take(3);
    assert.equal(datagrams.length, 3);
    const got: string[] = [];
    let off = 100;
    for (const d of datagrams) {
      const r = server.input(d, slab, off, lens);
      const n = Math.floor(r / 256);
      for (let i = 0; i < n; i++) {
        got.push(slab.toString('utf8', off, off + lens[i]!));
        off += lens[i]!;
      }
    }
    assert.deepEqual(got, ['one', 'two', 'three']);

    // Limits of send().
    const max = server.info().maxRecord;
    assert.ok(max > 1400 && max < 1472);
    assert.equal(server.send(Buffer.alloc(max + 1)), -1);
    assert.equal(server.send(Buffer.alloc(0)), -1);
    assert.equal(server.send(Buffer.alloc(max)), 1);
    const big = toClient.take(1);
    assert.equal(big.length, 1);
    assert.ok(big[0]!.length <= 1500 - 28);

    // close_notify from the server; the client answers with its own.
    assert.equal(server.shutdown(), 0);
    f = 0;
    for (const d of toClient.take(1)) f |= client.input(d, slab, 0, lens);
    assert.ok(f & F_PEER_CLOSED);
    assert.equal(client.info().state, 'closed');
    assert.equal(toServer.take(1).length, 1, 'close_notify in reply');
    assert.equal(client.send(Buffer.from('late')), 0);
    assert.equal(client.input(Buffer.from('x'), slab, 0, lens), F_CLOSED);
    client.free();
    server.free();
    ctx.free();
  });

  it('reject sends a fatal alert the client understands', () => {
    const ctx = serverCtx();
    const { client, server } = handshakeToVerdict(ctx);
    assert.equal(server.reject(42), 0);
    const out = toClient.take(1);
    assert.equal(out.length, 1);
    assert.equal(out[0]!.length, 15);
    assert.deepEqual([...out[0]!.subarray(13)], [2, 42]);
    const f = client.input(out[0]!, slab, 0, lens);
    assert.ok(f & F_FATAL);
    assert.deepEqual(client.info().alertReceived, { level: 'fatal', code: 42, name: 'bad certificate' });
    assert.equal(server.info().state, 'closed');
    assert.equal(server.release(), F_CLOSED);
    client.free();
    server.free();
    ctx.free();
  });

  it('the listener keeps no state for garbage and cookie-less hellos', () => {
    const ctx = serverCtx();
    const before = addon.nativeStats().liveSsl;
    assert.equal(listen(ctx, Buffer.alloc(5)), 0);
    assert.equal(listen(ctx, Buffer.alloc(40)), 0);
    const afterFirst = addon.nativeStats().liveSsl; // the shared listener
    let hvrs = 0;
    let parsed = 0;
    for (let i = 0; i < 2000; i++) {
      const d = Buffer.alloc(20 + (i % 300), i & 0xff);
      d[0] = 22;
      d[1] = 0xfe;
      d[2] = 0xfd;
      // Never a connection; at most a HelloVerifyRequest for what parses as a ClientHello.
      const r = listen(ctx, d);
      assert.equal(typeof r, 'number');
      if (r === 1) {
        parsed++;
        hvrs += toClient.take(1).length;
      }
    }
    assert.equal(hvrs, parsed, 'one HelloVerifyRequest for each datagram listen() answered');
    assert.deepEqual(toClient.take(0, 50), [], 'nothing but HelloVerifyRequests went out');
    const client = clientConn();
    client.input(null, slab, 0, lens);
    const hello = toServer.take(1)[0]!;
    // 500 peers (ports) each get a HelloVerifyRequest and leave nothing behind.
    for (let port = 1; port <= 500; port++) assert.equal(ctx.listen(hello, '127.0.0.1', port), 1);
    assert.equal(
      addon.nativeStats().liveSsl,
      afterFirst + 1,
      'the listener and the client, nothing per peer',
    );
    assert.ok(afterFirst - before <= 1);
    assert.throws(() => ctx.listen(hello, 'not-an-ip', 1), /bad peer address/);
    client.free();
    ctx.free();
    assert.throws(() => listen(ctx, hello), /context is freed/);
  });

  it('rotating the secret keeps the previous cookie valid once, not twice', () => {
    const ctx = serverCtx();
    const cookieHello = (): Buffer => {
      const client = clientConn();
      client.input(null, slab, 0, lens);
      assert.equal(listen(ctx, toServer.take(1)[0]!), 1);
      client.input(toClient.take(1)[0]!, slab, 0, lens);
      const d = toServer.take(1)[0]!;
      client.free();
      return d;
    };
    const hello = cookieHello();
    ctx.rotateCookieSecret();
    const conn = listen(ctx, hello);
    assert.equal(typeof conn, 'object', 'previous secret still accepted');
    (conn as NativeConn).free();
    ctx.rotateCookieSecret();
    assert.equal(listen(ctx, hello), 1, 'two rotations later the cookie is stale');
    toClient.take(1);
    ctx.free();
  });

  it('rejects bad identities, ciphers, CA and options with codes', () => {
    const mk = (o: Partial<NativeContextOptions>) => () =>
      new addon.Context({
        server: true,
        identities: [{ certPem: srv.certPem, keyPem: srv.keyPem }],
        cipherList: SUITE,
        mtu: 1500,
        ...o,
      });
    assert.throws(mk({ identities: [{ certPem: 'nope', keyPem: srv.keyPem }] }), { code: 'EDTLS_IDENTITY' });
    assert.throws(mk({ identities: [{ certPem: srv.certPem, keyPem: cli.keyPem }] }), {
      code: 'EDTLS_IDENTITY',
      message: /does not match/,
    });
    assert.throws(mk({ identities: [] }), { code: 'EDTLS_IDENTITY' });
    assert.throws(mk({ cipherList: 'BOGUS' }), { code: 'EDTLS_CIPHERS' });
    assert.throws(mk({ mtu: 100 }), { code: 'EDTLS_USAGE' });
    assert.throws(mk({ server: false }), { code: 'EDTLS_CA' });
    assert.throws(mk({ server: false, caPem: 'not a certificate' }), { code: 'EDTLS_CA' });
    const Conn = (addon as unknown as { Conn: new (x: unknown) => unknown }).Conn;
    assert.throws(() => new Conn({}), { code: 'EDTLS_USAGE' });
    const c = clientConn();
    assert.throws(() => c.input(null, Buffer.alloc(10), 11, lens), { code: 'EDTLS_USAGE' });
    assert.throws(() => c.input(null, slab, 0, new Uint8Array(4) as unknown as Uint32Array), {
      code: 'EDTLS_USAGE',
    });
    assert.throws(() => c.reject(300), { code: 'EDTLS_USAGE' });
    c.free();
    c.free(); // idempotent
    assert.equal(c.send(Buffer.from('x')), 0);
  });

  it('openUdp binds, reports the port and refuses a port in use', () => {
    const a = addon.openUdp('127.0.0.1', 0, 0);
    assert.ok(a.fd >= 0 && a.port > 0);
    assert.throws(() => addon.openUdp('127.0.0.1', a.port, 0), { code: 'EADDRINUSE' });
    assert.throws(() => addon.openUdp('localhost', 0, 0), { code: 'EDTLS_ADDRESS' });
    addon.closeFd(a.fd);
  });
});
