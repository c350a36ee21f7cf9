// A thousand sessions opened and closed in-process (both ends ours, over loopback), plus rejected
// and abandoned handshakes: the counts of live native objects must return to where they started.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import v8 from 'node:v8';
import vm from 'node:vm';
import { X509Certificate } from 'node:crypto';
import {
  DtlsError,
  DtlsServer,
  dtlsConnect,
  nativeStats,
  type DtlsSession,
} from '../../../src/dtls/index.js';
import { loadAddon } from '../../../src/dtls/native.js';
import { CertDir, type TestIdentity } from '../../fixtures/dtls/certs.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

const EC_SUITE = 'ECDHE-ECDSA-AES128-GCM-SHA256';
const SESSIONS = 1000;
const PARALLEL = 8;

let certs: CertDir;
let srv: TestIdentity;
let cli: TestIdentity;
let bad: TestIdentity;
let slow: TestIdentity;

async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('dtls native objects do not leak', { timeout: 240_000 }, () => {
  before(() => {
    certs = new CertDir();
    srv = certs.make('srv-ec', 'ec');
    cli = certs.make('cli-ec', 'ec');
    bad = certs.make('bad-ec', 'ec');
    slow = certs.make('slow-ec', 'ec');
  });
  after(() => certs.cleanup());

  it(`${SESSIONS} sessions, rejected and abandoned handshakes: live counts return to baseline`, async () => {
    await settle();
    const baseline = nativeStats();
    const badDer = new X509Certificate(bad.certPem).raw;
    const slowDer = new X509Certificate(slow.certPem).raw;
    const server = await DtlsServer.listen({
      host: '127.0.0.1',
      port: 0,
      identities: [{ certPem: srv.certPem, keyPem: srv.keyPem }],
      verifyPeer: async (chain) => {
        if (chain[0]?.equals(badDer)) return { accept: false, reason: 'bad' };
        if (chain[0]?.equals(slowDer)) await new Promise((r) => setTimeout(r, 1500));
        return { accept: true };
      },
      handshakeTimeoutMs: 1000,
    });
    const serverSessions = new Map<number, DtlsSession>();
    server.on('session', (s) => {
      serverSessions.set(s.remotePort, s);
      s.on('message', (m) => s.send(m));
      s.on('close', () => serverSessions.delete(s.remotePort));
    });
    const connect = (id: TestIdentity) =>
      dtlsConnect({
        host: '127.0.0.1',
        port: server.address.port,
        certPem: id.certPem,
        keyPem: id.keyPem,
        caPem: srv.certPem,
        cipherList: EC_SUITE,
        handshakeTimeoutMs: 5000,
      });
    let done = 0;
    let peak = 0;
    let peakRecordLayers = 0;
    const worker = async (w: number): Promise<void> => {
      for (let i = w; i < SESSIONS; i += PARALLEL) {
        const c = await connect(cli);
        const echo = new Promise<Buffer>((r) => c.once('message', r));
        assert.equal(c.send(Buffer.alloc(200, i & 0xff)), true);
        assert.equal((await echo).length, 200);
        peak = Math.max(peak, nativeStats().liveSsl);
        peakRecordLayers = Math.max(peakRecordLayers, nativeStats().liveRecordLayer);
        const closed = new Promise<string>((r) => c.once('close', (why) => r(why)));
        if (i % 2 === 0) {
          c.close();
          assert.equal(await closed, 'local');
        } else {
          const s = serverSessions.get(c.localPort);
          assert.ok(s, 'server side of the session');
          s.close();
          assert.equal(await closed, 'close_notify');
        }
        done++;
      }
    };
    await Promise.all(Array.from({ length: PARALLEL }, (_, w) => worker(w)));
    assert.equal(done, SESSIONS);

    // Rejected by the hook, and abandoned by the server's deadline while the hook still runs.
    await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        assert.rejects(connect(i % 2 === 0 ? bad : slow), (err: unknown) => {
          assert.ok(err instanceof DtlsError);
          assert.equal(err.alert, i % 2 === 0 ? 'access denied' : 'handshake failure');
          return true;
        }),
      ),
    );

    // TUN dispatches started and closed, left to the garbage collector.
    const device = loadAddon().openUdp('127.0.0.1', 0, 0);
    for (let i = 0; i < 50; i++) {
      server.dispatchFromTun(device.fd, 1432).close();
      await new Promise((r) => setImmediate(r));
    }
    loadAddon().closeFd(device.fd);

    await new Promise((r) => setTimeout(r, 200));
    const st = server.stats();
    assert.equal(st.sessions, 0);
    assert.equal(st.handshakes, 0);
    assert.equal(st.accepted, SESSIONS);
    assert.equal(st.rejected, 20);
    assert.equal(st.timedOut, 20);
    // Server sessions hold no SSL object (only record layers): the listener, the clients' SSL
    // objects and handshakes in progress.
    assert.ok(peak <= 1 + 2 * PARALLEL, `peak live SSL objects ${peak}`);
    assert.ok(
      peakRecordLayers >= 1 && peakRecordLayers <= PARALLEL,
      `peak record layers ${peakRecordLayers}`,
    );
    await server.close();
    // Let the slow hooks finish (their verdicts find nothing to act on any more).
    await new Promise((r) => setTimeout(r, 600));
    await settle();
    const end = nativeStats();
    assert.equal(end.liveSsl, baseline.liveSsl, 'SSL objects');
    assert.equal(end.livePipe, baseline.livePipe, 'BIO states');
    assert.equal(end.liveCtx, baseline.liveCtx, 'SSL_CTX objects');
    assert.equal(end.liveConn, baseline.liveConn, 'Conn wrappers (after GC)');
    assert.equal(end.liveEndpoint, baseline.liveEndpoint, 'open UDP endpoints');
    assert.equal(end.liveRecordLayer, baseline.liveRecordLayer, 'native record layers');
    assert.equal(end.liveDispatch, baseline.liveDispatch, 'TUN dispatches');
  });
});
