// Hostile and broken input to the server: garbage, ClientHellos without (valid) cookies,
// truncated and replayed handshake messages, a restarted peer on the same address and port.
// The server must answer statelessly or not at all, keep no per-peer state and keep serving.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { DtlsServer, dtlsConnect, nativeStats, type DtlsSession } from '../../../src/dtls/index.js';
import { CertDir, type TestIdentity } from '../../fixtures/dtls/certs.js';
import { UdpRelay } from '../../fixtures/dtls/relay.js';

const EC_SUITE = 'ECDHE-ECDSA-AES128-GCM-SHA256';

let certs: CertDir;
let srv: TestIdentity;
let cli: TestIdentity;
let server: DtlsServer;

class RawPeer {
  readonly socket = dgram.createSocket('udp4');
  readonly replies: Buffer[] = [];
  async start(): Promise<void> {
    await new Promise<void>((r) => this.socket.bind(0, '127.0.0.1', () => r()));
    this.socket.on('message', (m) => this.replies.push(m));
  }
  send(d: Buffer): void {
    this.socket.send(d, server.address.port, '127.0.0.1');
  }
  close(): Promise<void> {
    return new Promise((r) => this.socket.close(() => r()));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits for a condition (bounded), so that a loaded machine does not make the test flaky. */
async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

function isHelloVerifyRequest(d: Buffer): boolean {
  return d.length > 25 && d[0] === 22 && d[13] === 3;
}

function isClientHello(d: Buffer): boolean {
  return d.length > 25 && d[0] === 22 && d[3] === 0 && d[4] === 0 && d[13] === 1;
}

/** The cookie length byte of a DTLS ClientHello (after version, random and session id). */
function cookieLength(d: Buffer): number {
  const sidLen = d[25 + 2 + 32] ?? 0;
  return d[25 + 2 + 32 + 1 + sidLen] ?? 0;
}

async function connectVia(relay: UdpRelay): Promise<DtlsSession> {
  return dtlsConnect({
    host: '127.0.0.1',
    port: relay.port,
    certPem: cli.certPem,
    keyPem: cli.keyPem,
    caPem: srv.certPem,
    cipherList: EC_SUITE,
  });
}

async function roundTrip(c: DtlsSession, s: DtlsSession, text: string): Promise<void> {
  const atServer = new Promise<string>((r) => s.once('message', (m) => r(m.toString())));
  assert.equal(c.send(Buffer.from(text)), true);
  assert.equal(await atServer, text);
  const atClient = new Promise<string>((r) => c.once('message', (m) => r(m.toString())));
  assert.equal(s.send(Buffer.from(`re: ${text}`)), true);
  assert.equal(await atClient, `re: ${text}`);
}

/** The ClientHello `hello` (which has no cookie) re-encoded with `cookie`, as message 1. */
function withCookie(hello: Buffer, cookie: Buffer): Buffer {
  const sidLen = hello.readUInt8(25 + 2 + 32);
  const at = 25 + 2 + 32 + 1 + sidLen; // cookie length byte
  assert.equal(hello.readUInt8(at), 0);
  const out = Buffer.concat([
    hello.subarray(0, at),
    Buffer.from([cookie.length]),
    cookie,
    hello.subarray(at + 1),
  ]);
  out.writeUInt16BE(out.length - 13, 11); // record length
  const bodyLen = out.length - 25;
  out.writeUIntBE(bodyLen, 14, 3); // handshake length
  out.writeUInt16BE(1, 17); // message_seq
  out.writeUIntBE(bodyLen, 22, 3); // fragment length
  return out;
}

/** The cookie of a HelloVerifyRequest datagram. */
function hvrCookie(d: Buffer): Buffer {
  const len = d.readUInt8(25 + 2);
  return d.subarray(25 + 3, 25 + 3 + len);
}

/** Captures one real handshake through a relay and returns the client's datagrams. */
async function captureHandshake(): Promise<{
  flights: Buffer[];
  relay: UdpRelay;
  c: DtlsSession;
  s: DtlsSession;
}> {
  const relay = new UdpRelay(server.address.port);
  await relay.start();
  const sess = new Promise<DtlsSession>((r) => server.once('session', r));
  const c = await connectVia(relay);
  const s = await sess;
  return { flights: relay.seen.toServer.map((d) => Buffer.from(d)), relay, c, s };
}

describe('dtls server robustness', { timeout: 120_000 }, () => {
  before(async () => {
    certs = new CertDir();
    srv = certs.make('srv-ec', 'ec');
    cli = certs.make('cli-ec', 'ec');
    server = await DtlsServer.listen({
      host: '127.0.0.1',
      port: 0,
      identities: [{ certPem: srv.certPem, keyPem: srv.keyPem }],
      verifyPeer: () => Promise.resolve({ accept: true }),
      handshakeTimeoutMs: 1500,
    });
  });
  after(async () => {
    await server.close();
    certs.cleanup();
  });

  it('garbage datagrams: no reply state, no crash, service continues', async () => {
    const peer = new RawPeer();
    await peer.start();
    try {
      const before = server.stats();
      for (let i = 0; i < 3000; i++) {
        const d = randomBytes(1 + (i % 1500));
        if (i % 3 === 0) {
          // Plausible record headers: handshake / CCS / alert / application data, epoch 0 or 1.
          d[0] = [22, 20, 21, 23][i % 4] ?? 22;
          if (d.length > 4) {
            d[1] = 0xfe;
            d[2] = 0xfd;
            d[3] = 0;
            d[4] = i % 2;
          }
          if (d.length > 13 && i % 2 === 0) d[13] = 1;
        }
        peer.send(d);
        if (i % 200 === 0) await sleep(5);
      }
      await until(() => server.stats().dropped - before.dropped > 2500, 'garbage to be processed');
      await sleep(100);
      const after = server.stats();
      assert.equal(after.handshakes, 0);
      assert.equal(after.sessions, 0);
      assert.ok(after.dropped - before.dropped > 2500, `dropped ${after.dropped - before.dropped}`);
      assert.ok(nativeStats().liveSsl <= 1, 'only the shared listener SSL exists');
      for (const r of peer.replies)
        assert.ok(isHelloVerifyRequest(r), 'the only possible answer is a HelloVerifyRequest');
    } finally {
      await peer.close();
    }
    const { relay, c, s } = await captureHandshake();
    await roundTrip(c, s, 'still serving');
    c.close();
    await relay.close();
  });

  it('ClientHellos without a valid cookie get a HelloVerifyRequest and leave no state', async () => {
    const { flights, relay, c, s } = await captureHandshake();
    try {
      const hellos = flights.filter(isClientHello);
      assert.equal(hellos.length, 2, 'one ClientHello without cookie, one with');
      const [first, second] = hellos as [Buffer, Buffer];
      assert.equal(cookieLength(first), 0);
      assert.equal(cookieLength(second), 32);

      const peer = new RawPeer();
      await peer.start();
      try {
        const base = nativeStats().liveSsl;
        const before = server.stats();
        // Without cookie, and with a cookie that was made for another address:port.
        const dropsBefore = nativeStats().droppedSends;
        for (let i = 0; i < 300; i++) {
          peer.send(i % 2 === 0 ? first : second);
          if (i % 50 === 49) await sleep(20); // let the raw peer's small receive buffer drain
        }
        await until(() => peer.replies.length >= 300, 'HelloVerifyRequests').catch(() => undefined);
        const after = server.stats();
        assert.equal(after.handshakes, 0);
        assert.equal(after.sessions, before.sessions);
        assert.ok(
          after.cookiesSent - before.cookiesSent >= 290,
          `cookies ${after.cookiesSent - before.cookiesSent}`,
        );
        assert.equal(nativeStats().droppedSends, dropsBefore, 'every HelloVerifyRequest left the server');
        assert.ok(peer.replies.length >= 290, `replies ${peer.replies.length}`);
        assert.ok(peer.replies.every(isHelloVerifyRequest));
        assert.equal(nativeStats().liveSsl, base, 'no SSL object for unverified peers');
      } finally {
        await peer.close();
      }
      await roundTrip(c, s, 'unaffected');
    } finally {
      c.close();
      await relay.close();
    }
  });

  it('the cookie binds address and port: valid from its owner only, forged or moved ones rejected', async () => {
    const { flights, relay, c } = await captureHandshake();
    c.close();
    await relay.close();
    const first = flights.find(isClientHello);
    assert.ok(first);
    const owner = new RawPeer();
    const other = new RawPeer();
    await owner.start();
    await other.start();
    try {
      owner.send(first);
      await until(() => owner.replies.some(isHelloVerifyRequest), 'HelloVerifyRequest');
      const hvr = owner.replies.find(isHelloVerifyRequest);
      assert.ok(hvr, 'HelloVerifyRequest for the raw ClientHello');
      const cookie = Buffer.from(hvrCookie(hvr));
      assert.equal(cookie.length, 32);
      const base = server.stats();
      const forged = Buffer.from(cookie);
      forged.writeUInt8(forged.readUInt8(5) ^ 0x10, 5);
      owner.send(withCookie(first, forged));
      other.send(withCookie(first, cookie)); // a cookie moved to another port
      await until(
        () => owner.replies.length >= 2 && other.replies.length >= 1,
        'answers to forged / moved cookies',
      );
      assert.equal(server.stats().handshakes, 0, 'forged / moved cookies start nothing');
      assert.equal(server.stats().cookiesSent - base.cookiesSent, 2);
      owner.send(withCookie(first, cookie));
      await until(() => server.stats().handshakes === 1, 'the handshake');
      assert.equal(server.stats().handshakes, 1, 'the genuine cookie starts a handshake');
      // The raw peer never finishes: the deadline removes the state again.
      const end = Date.now() + 5000;
      while (server.stats().handshakes !== 0 && Date.now() < end) await sleep(50);
      assert.equal(server.stats().handshakes, 0);
      assert.equal(server.stats().timedOut, 1);
    } finally {
      await owner.close();
      await other.close();
    }
  });

  async function flood(
    limits: { maxHandshakes: number; maxHandshakesPerAddress?: number; handshakeQueueSize?: number },
    cap: number,
    queueSize = 0,
  ): Promise<void> {
    const { flights, relay, c } = await captureHandshake();
    c.close();
    await relay.close();
    const first = flights.find(isClientHello);
    assert.ok(first);
    const capped = await DtlsServer.listen({
      host: '127.0.0.1',
      port: 0,
      identities: [{ certPem: srv.certPem, keyPem: srv.keyPem }],
      verifyPeer: () => Promise.resolve({ accept: true }),
      handshakeTimeoutMs: 2500,
      handshakeQueueSize: queueSize,
      handshakeQueueMs: 30_000, // the queued hellos wait for the first handshakes' deadline
      ...limits,
    });
    const peers: RawPeer[] = [];
    try {
      const base = nativeStats().liveSsl;
      for (let i = 0; i < 40; i++) {
        const p = new RawPeer();
        await p.start();
        peers.push(p);
        p.socket.send(first, capped.address.port, '127.0.0.1');
      }
      await until(() => peers.every((p) => p.replies.some(isHelloVerifyRequest)), 'cookies for all');
      let started = 0;
      for (const p of peers) {
        const hvr = p.replies.find(isHelloVerifyRequest);
        if (!hvr) continue;
        p.socket.send(withCookie(first, Buffer.from(hvrCookie(hvr))), capped.address.port, '127.0.0.1');
        started++;
      }
      assert.equal(started, 40, 'all got a cookie while no handshake was running');
      await until(
        () =>
          capped.stats().handshakes + capped.stats().busy + capped.stats().queued + capped.stats().timedOut >=
          40,
        'all hellos',
      );
      const st = capped.stats();
      assert.equal(st.handshakes, cap, 'capped');
      assert.equal(st.queued, queueSize, 'the queue is bounded');
      assert.equal(st.busy, 40 - cap - queueSize);
      // The cap plus this server's one shared listener: queued hellos hold no OpenSSL object.
      assert.equal(nativeStats().liveSsl - base, cap + 1, 'native state bounded by the cap');
      if (queueSize > 0) {
        // A new hello without a cookie from a queued peer's address:port (someone spoofing it)
        // gets a HelloVerifyRequest and does not replace the queued, cookie-verified hello.
        const last = peers[cap] as RawPeer; // sent its hello right after the first `cap`: queued
        const cookiesBefore = capped.stats().cookiesSent;
        const otherRandom = Buffer.from(first);
        otherRandom[13 + 12 + 2] = (otherRandom[13 + 12 + 2] ?? 0) ^ 0xff;
        last.socket.send(otherRandom, capped.address.port, '127.0.0.1');
        await until(() => capped.stats().cookiesSent > cookiesBefore, 'a HelloVerifyRequest');
        assert.equal(capped.stats().queued, queueSize);
      }
      // The queued hellos start as the first handshakes reach their deadline (these peers never
      // answer), each with no retransmission: every queued peer gets the server's flight.
      await until(() => capped.stats().handshakes === 0 && capped.stats().queued === 0, 'all to end', 20_000);
      assert.equal(capped.stats().timedOut, cap + queueSize);
      assert.equal(capped.stats().queueStarted, queueSize);
      const served = peers.filter((p) => p.replies.some((d) => d[0] === 22 && d[13] === 2)).length;
      assert.equal(served, cap + queueSize, 'a ServerHello for each started peer');
      assert.equal(nativeStats().liveSsl, base + 1);
    } finally {
      for (const p of peers) await p.close();
      await capped.close();
    }
  }

  it('a flood of cookie-verified handshakes is capped by maxHandshakes and drains by the deadline', async () => {
    await flood({ maxHandshakes: 10 }, 10);
  });

  it('one address cannot take more than maxHandshakesPerAddress handshakes', async () => {
    await flood({ maxHandshakes: 100, maxHandshakesPerAddress: 6 }, 6);
  });

  it('cookie-verified hellos beyond maxHandshakes queue (bounded) and start as slots free', async () => {
    await flood({ maxHandshakes: 10 }, 10, 5);
  });

  it('truncated and replayed handshake messages: no state from strangers, sessions survive', async () => {
    const { flights, relay, c, s } = await captureHandshake();
    try {
      const peer = new RawPeer();
      await peer.start();
      try {
        const base = nativeStats().liveSsl;
        for (const d of flights) {
          for (const cut of [1, 12, 13, 14, 25, 26, 40, Math.floor(d.length / 2), d.length - 1]) {
            if (cut < d.length) peer.send(d.subarray(0, cut));
          }
          peer.send(d); // whole replay from a stranger
        }
        await sleep(500);
        assert.equal(server.stats().handshakes, 0);
        assert.equal(nativeStats().liveSsl, base);
      } finally {
        await peer.close();
      }
      // The same datagrams, truncated and whole, from the session's own address.
      for (const d of flights) {
        relay.inject(d.subarray(0, Math.max(1, d.length - 7)));
        relay.inject(d);
        relay.inject(d);
      }
      relay.inject(randomBytes(100));
      await sleep(300);
      assert.equal(s.open, true);
      assert.equal(server.stats().handshakes, 0);
      await roundTrip(c, s, 'after replays');
    } finally {
      c.close();
      await relay.close();
    }
  });

  it('a peer that restarts on the same address and port replaces its session after a cookie exchange', async () => {
    const { relay, c, s } = await captureHandshake();
    try {
      const reason = new Promise<string>((r) => s.once('close', (why) => r(why)));
      const sess2 = new Promise<DtlsSession>((r) => server.once('session', r));
      // Through the same relay the server sees the same address and port: a new ClientHello.
      const c2 = await connectVia(relay);
      const s2 = await sess2;
      assert.equal(await reason, 'replaced');
      assert.equal(s2.remotePort, s.remotePort);
      await roundTrip(c2, s2, 'second life');
      c2.close();
      c.close();
    } finally {
      await relay.close();
    }
  });
});
