// The addon without sockets: two in-memory endpoints exchange the datagrams the addon queues
// (fd -1), which exercises the stateless listener, the held final flight, release / reject,
// records into the slab, close_notify, and the argument checks.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  F_CLOSED,
  F_FATAL,
  F_HANDSHAKE_DONE,
  F_OUTPUT,
  F_PEER_CLOSED,
  loadAddon,
  type NativeConn,
  type NativeContext,
  type NativeContextOptions,
} from '../../../src/dtls/native.js';
import { CertDir, type TestIdentity } from '../../fixtures/dtls/certs.js';

const addon = loadAddon();
const SUITE = 'ECDHE-ECDSA-AES128-GCM-SHA256';
const CLIENT_ADDR = '127.0.0.1';
const CLIENT_PORT = 40000;

let certs: CertDir;
let srv: TestIdentity;
let cli: TestIdentity;

const slab = Buffer.alloc(256 * 1024);
const lens = new Uint32Array(64);

function serverCtx(): NativeContext {
  return new addon.Context({
    server: true,
    identities: [{ certPem: srv.certPem, keyPem: srv.keyPem }],
    cipherList: SUITE,
    mtu: 1500,
  });
}

function clientConn(): NativeConn {
  const ctx = new addon.Context({
    server: false,
    identities: [{ certPem: cli.certPem, keyPem: cli.keyPem }],
    cipherList: SUITE,
    caPem: srv.certPem,
    mtu: 1500,
  });
  const conn = ctx.connect('127.0.0.1', 4433, -1);
  ctx.free();
  return conn;
}

function take(conn: NativeConn | NativeContext): Buffer[] {
  return conn.takeOutput() ?? [];
}

/** Runs the handshake up to the server's verdict; returns both ends. */
function handshakeToVerdict(ctx: NativeContext): { client: NativeConn; server: NativeConn } {
  const client = clientConn();
  assert.ok(client.input(null, slab, 0, lens) & F_OUTPUT);
  const hello = take(client);
  assert.equal(hello.length, 1);
  // First ClientHello: no cookie → HelloVerifyRequest queued on the context, no connection.
  assert.equal(ctx.listen(hello[0]!, CLIENT_ADDR, CLIENT_PORT), 2);
  const hvr = take(ctx);
  assert.equal(hvr.length, 1);
  assert.equal(hvr[0]![13], 3, 'HelloVerifyRequest');
  client.input(hvr[0]!, slab, 0, lens);
  const hello2 = take(client);
  const server = ctx.listen(hello2[0]!, CLIENT_ADDR, CLIENT_PORT);
  assert.equal(typeof server, 'object', 'a ClientHello with a valid cookie makes a connection');
  const srvConn = server as NativeConn;
  let toClient = srvConn.input(null, slab, 0, lens) & F_OUTPUT ? take(srvConn) : [];
  for (let round = 0; round < 10; round++) {
    for (const d of toClient) client.input(d, slab, 0, lens);
    toClient = [];
    const toServer = take(client);
    let done = false;
    for (const d of toServer) {
      const f = srvConn.input(d, slab, 0, lens);
      assert.equal(f & F_FATAL, 0, srvConn.info().error);
      if (f & F_HANDSHAKE_DONE) done = true;
    }
    if (done) return { client, server: srvConn };
    toClient = take(srvConn);
  }
  throw new Error('handshake did not reach the verdict');
}

describe('dtls addon (in memory)', () => {
  before(() => {
    certs = new CertDir();
    srv = certs.make('srv-ec', 'ec');
    cli = certs.make('cli-ec', 'ec');
  });
  after(() => certs.cleanup());

  it('handshake holds the final flight until release, then records and close_notify flow', () => {
    const ctx = serverCtx();
    const { client, server } = handshakeToVerdict(ctx);
    assert.equal(server.info().state, 'held');
    assert.equal(server.takeOutput(), undefined, 'nothing leaves before the verdict');
    assert.equal(client.info().state, 'handshaking');
    const chain = server.peerChain();
    assert.equal(chain.length, 1);
    assert.ok(chain[0]!.length > 100);
    // Input while held is ignored.
    assert.equal(server.input(Buffer.from([1, 2, 3]), slab, 0, lens) & 0xff, 0);

    assert.ok(server.release() & F_OUTPUT);
    let f = 0;
    for (const d of take(server)) f |= client.input(d, slab, 0, lens);
    assert.ok(f & F_HANDSHAKE_DONE);
    assert.equal(client.info().state, 'open');
    assert.equal(client.info().cipher, SUITE);
    assert.equal(server.info().state, 'open');
    assert.ok(client.peerChain().length >= 1);

    // Three records in a row from the client, read into the slab at an offset.
    for (const text of ['one', 'two', 'three']) assert.ok(client.send(Buffer.from(text)) > 0);
    const datagrams = take(client);
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
    assert.ok(server.send(Buffer.alloc(max)) > 0);
    const big = take(server);
    assert.equal(big.length, 1);
    assert.ok(big[0]!.length <= 1500 - 28);

    // close_notify from the server; the client answers with its own.
    assert.ok(server.shutdown() & F_OUTPUT);
    f = 0;
    for (const d of take(server)) f |= client.input(d, slab, 0, lens);
    assert.ok(f & F_PEER_CLOSED);
    assert.equal(client.info().state, 'closed');
    assert.equal(take(client).length, 1, 'close_notify in reply');
    assert.equal(client.send(Buffer.from('late')), 0);
    assert.equal(client.input(Buffer.from('x'), slab, 0, lens), F_CLOSED);
    client.free();
    server.free();
    ctx.free();
  });

  it('reject sends a fatal alert the client understands', () => {
    const ctx = serverCtx();
    const { client, server } = handshakeToVerdict(ctx);
    assert.ok(server.reject(42) & F_OUTPUT);
    const out = take(server);
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
    assert.equal(ctx.listen(Buffer.alloc(5), CLIENT_ADDR, 1), 0);
    assert.equal(ctx.listen(Buffer.alloc(40), CLIENT_ADDR, 1), 0);
    const afterFirst = addon.nativeStats().liveSsl; // the shared listener
    let hvrs = 0;
    for (let i = 0; i < 2000; i++) {
      const d = Buffer.alloc(20 + (i % 300), i & 0xff);
      d[0] = 22;
      d[1] = 0xfe;
      d[2] = 0xfd;
      // Never a connection; at most a HelloVerifyRequest for what parses as a ClientHello.
      const r = ctx.listen(d, CLIENT_ADDR, 1000 + (i % 50));
      assert.equal(typeof r, 'number');
      if (r === 2) hvrs++;
    }
    assert.equal(take(ctx).length, hvrs);
    const client = clientConn();
    client.input(null, slab, 0, lens);
    const hello = take(client)[0]!;
    for (let port = 1; port <= 500; port++) assert.equal(ctx.listen(hello, CLIENT_ADDR, port), 2);
    assert.equal(take(ctx).length, 500);
    assert.equal(
      addon.nativeStats().liveSsl,
      afterFirst + 1,
      'the listener and the client, nothing per peer',
    );
    assert.ok(afterFirst - before <= 1);
    assert.throws(() => ctx.listen(hello, 'not-an-ip', 1), /bad peer address/);
    client.free();
    ctx.free();
    assert.throws(() => ctx.listen(hello, CLIENT_ADDR, 1), /context is freed/);
  });

  it('rotating the secret keeps the previous cookie valid once, not twice', () => {
    const ctx = serverCtx();
    const cookieHello = (): Buffer => {
      const client = clientConn();
      client.input(null, slab, 0, lens);
      assert.equal(ctx.listen(take(client)[0]!, CLIENT_ADDR, CLIENT_PORT), 2);
      client.input(take(ctx)[0]!, slab, 0, lens);
      const d = take(client)[0]!;
      client.free();
      return d;
    };
    const hello = cookieHello();
    ctx.rotateCookieSecret();
    const conn = ctx.listen(hello, CLIENT_ADDR, CLIENT_PORT);
    assert.equal(typeof conn, 'object', 'previous secret still accepted');
    (conn as NativeConn).free();
    ctx.rotateCookieSecret();
    assert.equal(ctx.listen(hello, CLIENT_ADDR, CLIENT_PORT), 2, 'two rotations later the cookie is stale');
    take(ctx);
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
