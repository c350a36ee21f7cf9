// DtlsServer + dtlsConnect over loopback: both cipher suites, data, close_notify both ways, the
// verification hook (accept, reject, throw, slow), timeouts, limits, MTU and loss.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import {
  DtlsError,
  DtlsServer,
  dtlsConnect,
  type DtlsServerOptions,
  type DtlsSession,
} from '../../../src/dtls/index.js';
import { CertDir, type TestIdentity } from '../../fixtures/dtls/certs.js';
import { UdpRelay } from '../../fixtures/dtls/relay.js';

const RSA_SUITE = 'ECDHE-RSA-AES256-GCM-SHA384';
const EC_SUITE = 'ECDHE-ECDSA-AES128-GCM-SHA256';

let certs: CertDir;
let srvRsa: TestIdentity;
let srvEc: TestIdentity;
let cliRsa: TestIdentity;
let cliEc: TestIdentity;
let cliBig: TestIdentity;

function der(id: TestIdentity): Buffer {
  return new X509Certificate(id.certPem).raw;
}

async function startServer(extra: Partial<DtlsServerOptions> = {}): Promise<DtlsServer> {
  return DtlsServer.listen({
    host: '127.0.0.1',
    port: 0,
    identities: [
      { certPem: srvRsa.certPem, keyPem: srvRsa.keyPem },
      { certPem: srvEc.certPem, keyPem: srvEc.keyPem },
    ],
    verifyPeer: () => Promise.resolve({ accept: true, context: { ok: 1 } }),
    ...extra,
  });
}

function connect(
  server: DtlsServer,
  cli: TestIdentity,
  extra: Partial<Parameters<typeof dtlsConnect>[0]> = {},
) {
  return dtlsConnect({
    host: '127.0.0.1',
    port: server.address.port,
    certPem: cli.certPem,
    keyPem: cli.keyPem,
    caPem: cli.kind === 'rsa' ? srvRsa.certPem : srvEc.certPem,
    cipherList: cli.kind === 'rsa' ? RSA_SUITE : EC_SUITE,
    ...extra,
  });
}

function nextSession(server: DtlsServer): Promise<DtlsSession> {
  return new Promise((resolve) => server.once('session', resolve));
}

function nextMessage(s: DtlsSession): Promise<Buffer> {
  return new Promise((resolve) => s.once('message', (m) => resolve(Buffer.from(m))));
}

function closed(s: DtlsSession): Promise<[string, string]> {
  return new Promise((resolve) => s.once('close', (reason, detail) => resolve([reason, detail])));
}

async function waitUntil(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('dtls sessions over loopback', { timeout: 120_000 }, () => {
  before(() => {
    certs = new CertDir();
    srvRsa = certs.make('srv-rsa', 'rsa');
    srvEc = certs.make('srv-ec', 'ec');
    cliRsa = certs.make('cli-rsa', 'rsa');
    cliEc = certs.make('cli-ec', 'ec');
    cliBig = certs.make('cli-big', 'ec', { padBytes: 5000 });
  });
  after(() => certs.cleanup());

  it('retainPeerChain: false gives verifyPeer the chain but keeps no DER on the session', async () => {
    const seen: Buffer[][] = [];
    const server = await startServer({
      retainPeerChain: false,
      verifyPeer: (chain) => (seen.push(chain), Promise.resolve({ accept: true, context: 7 })),
    });
    try {
      const sess = nextSession(server);
      const c = await connect(server, cliEc);
      const s = await sess;
      assert.deepEqual(seen[0]?.[0], der(cliEc));
      assert.equal(s.peerCertificate.length, 0);
      assert.deepEqual(s.peerChain, []);
      assert.equal(s.verifyContext, 7);
      c.close();
    } finally {
      await server.close();
    }
  });

  for (const kind of ['rsa', 'ec'] as const) {
    it(`${kind}: handshake, records both ways, close_notify both ways`, async () => {
      const seenChains: Buffer[][] = [];
      const server = await startServer({
        verifyPeer: (chain, peer) => {
          seenChains.push(chain);
          assert.equal(peer.address, '127.0.0.1');
          return Promise.resolve({ accept: true, context: { peer: peer.port } });
        },
      });
      try {
        const cli = kind === 'rsa' ? cliRsa : cliEc;
        for (const closer of ['client', 'server'] as const) {
          const [srvSession, client] = await Promise.all([nextSession(server), connect(server, cli)]);
          assert.equal(client.cipher, kind === 'rsa' ? RSA_SUITE : EC_SUITE);
          assert.equal(srvSession.cipher, client.cipher);
          assert.deepEqual(srvSession.peerCertificate, der(cli));
          assert.deepEqual(client.peerCertificate, der(kind === 'rsa' ? srvRsa : srvEc));
          assert.deepEqual(srvSession.verifyContext, { peer: srvSession.remotePort });
          assert.ok(srvSession.maxRecordSize >= 1400 && srvSession.maxRecordSize <= 1472 - 13);
          assert.deepEqual(seenChains.at(-1)?.[0], der(cli));

          const payload = Buffer.alloc(1400, 0xab);
          const atServer = nextMessage(srvSession);
          assert.equal(client.send(payload), true);
          assert.deepEqual(await atServer, payload);
          const atClient = nextMessage(client);
          assert.equal(srvSession.send(Buffer.from('pong')), true);
          assert.equal((await atClient).toString(), 'pong');

          const [a, b] = closer === 'client' ? [client, srvSession] : [srvSession, client];
          const peerClosed = closed(b);
          const selfClosed = closed(a);
          a.close();
          assert.deepEqual(await selfClosed, ['local', '']);
          assert.equal((await peerClosed)[0], 'close_notify');
          assert.equal(a.send(Buffer.from('x')), false);
          assert.equal(b.send(Buffer.from('x')), false);
        }
        await waitUntil(() => server.stats().sessions === 0, 2000, 'sessions to end');
        const st = server.stats();
        assert.equal(st.accepted, 2);
        assert.equal(st.handshakes, 0);
        assert.ok(st.cookiesSent >= 2, 'every handshake had a cookie exchange');
      } finally {
        await server.close();
      }
    });
  }

  it('a rejecting hook ends the handshake with the requested alert, seen by the client', async () => {
    let calls = 0;
    const server = await startServer({
      verifyPeer: () => {
        calls++;
        return Promise.resolve(
          calls === 1
            ? { accept: false, reason: 'not on the allowlist' }
            : { accept: false, reason: 'bad quote', alert: 'bad_certificate' },
        );
      },
    });
    try {
      await assert.rejects(connect(server, cliRsa), (err: unknown) => {
        assert.ok(err instanceof DtlsError);
        assert.equal(err.code, 'EDTLS_HANDSHAKE');
        assert.equal(err.alert, 'access denied');
        return true;
      });
      await assert.rejects(connect(server, cliEc), (err: unknown) => {
        assert.ok(err instanceof DtlsError);
        assert.equal(err.alert, 'bad certificate');
        return true;
      });
      const st = server.stats();
      assert.equal(st.rejected, 2);
      assert.equal(st.sessions, 0);
      assert.equal(st.handshakes, 0);
    } finally {
      await server.close();
    }
  });

  it('a throwing hook rejects with internal_error; a too slow hook hits the deadline', async () => {
    const server = await startServer({
      handshakeTimeoutMs: 800,
      verifyPeer: (chain) =>
        chain[0]?.equals(der(cliRsa))
          ? Promise.reject(new Error('database is gone'))
          : new Promise((resolve) => setTimeout(() => resolve({ accept: true }), 2000)),
    });
    try {
      await assert.rejects(connect(server, cliRsa), (err: unknown) => {
        assert.ok(err instanceof DtlsError);
        assert.equal(err.alert, 'internal error');
        return true;
      });
      await assert.rejects(connect(server, cliEc, { handshakeTimeoutMs: 3000 }), (err: unknown) => {
        assert.ok(err instanceof DtlsError);
        assert.equal(err.alert, 'handshake failure');
        return true;
      });
      assert.equal(server.stats().timedOut, 1);
      assert.equal(server.stats().handshakes, 0);
    } finally {
      await server.close();
    }
  });

  it('a hook slower than the client retransmission timer still completes the handshake', async () => {
    const server = await startServer({
      verifyPeer: () => new Promise((resolve) => setTimeout(() => resolve({ accept: true }), 1600)),
    });
    try {
      const [s, c] = await Promise.all([nextSession(server), connect(server, cliEc)]);
      const got = nextMessage(s);
      c.send(Buffer.from('after a slow verdict'));
      assert.equal((await got).toString(), 'after a slow verdict');
      c.close();
    } finally {
      await server.close();
    }
  });

  it('the client refuses a server whose certificate is not the pinned one', async () => {
    const server = await startServer();
    try {
      await assert.rejects(connect(server, cliRsa, { caPem: srvEc.certPem }), (err: unknown) => {
        assert.ok(err instanceof DtlsError);
        assert.equal(err.code, 'EDTLS_HANDSHAKE');
        assert.match(err.message, /certificate verify failed/);
        return true;
      });
      await waitUntil(() => server.stats().failed === 1, 2000, 'server to see the failed handshake');
      assert.equal(server.stats().handshakes, 0);
    } finally {
      await server.close();
    }
  });

  it('no common cipher suite and bad identities fail with typed errors', async () => {
    const server = await startServer({ cipherList: EC_SUITE });
    try {
      await assert.rejects(
        connect(server, cliRsa),
        (err: unknown) => err instanceof DtlsError && err.code === 'EDTLS_HANDSHAKE',
      );
      await assert.rejects(
        startServer({ identities: [{ certPem: srvRsa.certPem, keyPem: srvEc.keyPem }] }),
        (err: unknown) => err instanceof DtlsError && err.code === 'EDTLS_IDENTITY' && err.hint !== undefined,
      );
      await assert.rejects(startServer({ maxHandshakes: 0 }), { code: 'EINPUT', message: /maxHandshakes/ });
      await assert.rejects(startServer({ mtu: 100 }), { code: 'EINPUT', message: /mtu/ });
      await assert.rejects(startServer({ host: '::1' }), { code: 'EINPUT', message: /IPv4/ });
      await assert.rejects(
        startServer({ cipherList: 'NO-SUCH-CIPHER' }),
        (err: unknown) => err instanceof DtlsError && err.code === 'EDTLS_CIPHERS',
      );
      await assert.rejects(
        startServer({ port: server.address.port }),
        (err: unknown) => err instanceof DtlsError && err.code === 'EADDRINUSE',
      );
    } finally {
      await server.close();
    }
  });

  it('idle sessions end with reason idle and the peer gets close_notify', async () => {
    const server = await startServer({ idleTimeoutMs: 300 });
    try {
      const [s, c] = await Promise.all([nextSession(server), connect(server, cliEc)]);
      const sClosed = closed(s);
      const cClosed = closed(c);
      const t0 = Date.now();
      assert.equal((await sClosed)[0], 'idle');
      assert.ok(Date.now() - t0 >= 250);
      assert.equal((await cClosed)[0], 'close_notify');
    } finally {
      await server.close();
    }
  });

  it('traffic keeps a session alive; setIdleTimeout changes the limit', async () => {
    const server = await startServer({ idleTimeoutMs: 1500 });
    try {
      const [s, c] = await Promise.all([nextSession(server), connect(server, cliEc)]);
      let ended = '';
      s.on('close', (r) => (ended = r));
      for (let i = 0; i < 8; i++) {
        c.send(Buffer.from(`keepalive ${i}`));
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(ended, '');
      s.setIdleTimeout(100);
      await waitUntil(() => ended === 'idle', 2000, 'idle close');
      c.close();
    } finally {
      await server.close();
    }
  });

  it('server.close() sends close_notify to every session', async () => {
    const server = await startServer();
    const pairs = await Promise.all(
      [cliRsa, cliEc, cliEc].map(async (id) => {
        const sess = nextSession(server);
        const c = await connect(server, id);
        return { c, s: await sess };
      }),
    );
    assert.equal(server.stats().sessions, 3);
    const reasons = Promise.all(pairs.map((p) => Promise.all([closed(p.s), closed(p.c)])));
    await server.close();
    for (const [[sr], [cr]] of await reasons) {
      assert.equal(sr, 'server-shutdown');
      assert.equal(cr, 'close_notify');
    }
  });

  it('fragments a large client certificate within a small MTU and survives loss', async () => {
    const mtu = 600;
    const server = await startServer({ mtu });
    const relay = new UdpRelay(server.address.port);
    await relay.start();
    try {
      // Lose the first copy of the server's second flight's first datagram and of its final flight.
      let droppedHello = false;
      let droppedFinal = false;
      relay.policy = (dir, d) => {
        if (dir === 'toClient' && !droppedHello && d[0] === 22 && d[13] === 2) {
          droppedHello = true;
          return 'drop';
        }
        if (dir === 'toClient' && !droppedFinal && d[0] === 20) {
          droppedFinal = true;
          return 'drop';
        }
        return 'pass';
      };
      const sess = nextSession(server);
      const c = await dtlsConnect({
        host: '127.0.0.1',
        port: relay.port,
        certPem: cliBig.certPem,
        keyPem: cliBig.keyPem,
        caPem: srvEc.certPem,
        cipherList: EC_SUITE,
        mtu,
        handshakeTimeoutMs: 10_000,
      });
      const s = await sess;
      assert.ok(droppedHello && droppedFinal, 'the relay dropped both flights once');
      assert.deepEqual(s.peerCertificate, der(cliBig));
      assert.ok(der(cliBig).length > 3 * mtu, 'the certificate needs several fragments');
      const limit = mtu - 28;
      assert.ok(
        Math.max(...relay.sizes.toServer) <= limit,
        `client datagrams ${Math.max(...relay.sizes.toServer)} > ${limit}`,
      );
      assert.ok(
        Math.max(...relay.sizes.toClient) <= limit,
        `server datagrams ${Math.max(...relay.sizes.toClient)} > ${limit}`,
      );
      assert.equal(s.maxRecordSize, limit - 13 - 8 - 16);
      assert.equal(c.send(Buffer.alloc(s.maxRecordSize + 1)), false);
      const got = nextMessage(s);
      assert.equal(c.send(Buffer.alloc(c.maxRecordSize, 7)), true);
      assert.equal((await got).length, c.maxRecordSize);
      assert.equal(c.stats().oversize, 1);
      c.close();
    } finally {
      await relay.close();
      await server.close();
    }
  });

  it('a burst larger than maxHandshakes is admitted from the queue, without ClientHello retransmissions', async () => {
    // Every client's ClientHello retransmissions are lost (only its first hello and the first
    // with the cookie pass), so a client that could not start at once is served only if the
    // server keeps its hello and starts it when a slot frees.
    const clients = 8;
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => (release = r));
    const server = await startServer({
      maxHandshakes: 2,
      handshakeQueueSize: 32,
      handshakeTimeoutMs: 60_000,
      verifyPeer: async () => {
        await gate;
        return { accept: true };
      },
    });
    const relays: UdpRelay[] = [];
    try {
      for (let i = 0; i < clients; i++) {
        const relay = new UdpRelay(server.address.port);
        await relay.start();
        let hellos = 0;
        relay.policy = (dir, d) => {
          if (dir !== 'toServer' || d[0] !== 22 || d[3] !== 0 || d[4] !== 0 || d[13] !== 1) return 'pass';
          if (++hellos <= 2) return 'pass';
          return 'drop';
        };
        relays.push(relay);
      }
      const sessions: DtlsSession[] = [];
      server.on('session', (s) => sessions.push(s));
      const pending = relays.map((relay) =>
        dtlsConnect({
          host: '127.0.0.1',
          port: relay.port,
          certPem: cliEc.certPem,
          keyPem: cliEc.keyPem,
          caPem: srvEc.certPem,
          cipherList: EC_SUITE,
          handshakeTimeoutMs: 60_000,
        }),
      );
      await waitUntil(() => server.stats().queued === clients - 2, 20_000, 'the rest to be queued');
      assert.equal(server.stats().handshakes, 2);
      release();
      const conns = await Promise.all(pending);
      assert.equal(sessions.length, clients);
      const st = server.stats();
      assert.equal(st.queueStarted, clients - 2, 'every other client started from the queue');
      assert.equal(st.queuedTotal, clients - 2);
      assert.equal(st.queued, 0);
      assert.equal(st.queueExpired, 0);
      assert.equal(st.busy, 0);
      for (const c of conns) c.close();
    } finally {
      await server.close();
      for (const r of relays) await r.close();
    }
  });

  it('limits: handshakes beyond maxHandshakes wait in the queue, then are served', async () => {
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => (release = r));
    const server = await startServer({
      maxHandshakes: 1,
      handshakeQueueSize: 4,
      maxSessions: 2,
      handshakeTimeoutMs: 10_000,
      verifyPeer: async () => {
        await gate;
        return { accept: true };
      },
    });
    try {
      const first = connect(server, cliEc, { handshakeTimeoutMs: 8000 });
      await waitUntil(() => server.stats().handshakes === 1, 3000, 'first handshake');
      const second = connect(server, cliEc, { handshakeTimeoutMs: 8000 });
      await waitUntil(() => server.stats().queued === 1, 3000, 'second to be queued');
      assert.equal(server.stats().handshakes, 1);
      assert.equal(server.stats().busy, 0);
      release();
      const [c1, c2] = await Promise.all([first, second]);
      assert.equal(server.stats().sessions, 2);
      assert.equal(server.stats().queueStarted, 1);
      // maxSessions reached: a third peer is turned away until a session ends.
      const busyBefore = server.stats().busy;
      await assert.rejects(connect(server, cliEc, { handshakeTimeoutMs: 600 }), (err: unknown) => {
        assert.ok(err instanceof DtlsError);
        assert.equal(err.code, 'EDTLS_TIMEOUT');
        return true;
      });
      assert.ok(server.stats().busy > busyBefore);
      c1.close();
      await waitUntil(() => server.stats().sessions === 1, 2000, 'a session to end');
      const c3 = await connect(server, cliEc);
      c2.close();
      c3.close();
    } finally {
      await server.close();
    }
  });
});
