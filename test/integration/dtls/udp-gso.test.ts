// UDP GSO sends and UDP GRO reads on the native data path (udp_send_batch.h, recv_thread.h):
// records of one dispatch batch to one peer with one size leave as a GSO run, and the receiving
// side still sees one record per datagram — split by the receive thread from a UDP GRO read, or
// cut by the kernel for a socket without UDP_GRO (the JavaScript loop path, OpenSSL's client).
// A UDP socket stands in for the TUN device (one read(2) = one packet); the packets are queued
// on it before the dispatch starts, so its first batch holds all of them.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import dgram from 'node:dgram';
import {
  DtlsServer,
  dispatchFromTunToSession,
  dtlsConnect,
  handOffClientSession,
  nativeStats,
  type DtlsSession,
  type TunDispatch,
} from '../../../src/dtls/index.js';
import { loadAddon } from '../../../src/dtls/native.js';
import { CertDir, type TestIdentity } from '../../fixtures/dtls/certs.js';
import { cleanupAll, createNetns, runIn } from '../../helpers/netns.js';

const fallbackScript = join(
  dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  'fixtures',
  'dtls',
  'gso-fallback.js',
);

let certs: CertDir;
let srv: TestIdentity;
let cli: TestIdentity;

const ENCLAVE_IP = 0xc0a81c02; // 192.168.28.2
const PEER_IP = 0xc0a81c03;

function packet(src: number, dst: number, len: number, fill: number): Buffer {
  const p = Buffer.alloc(len, fill);
  p[0] = 0x45;
  p.writeUInt16BE(len, 2);
  p.writeUInt32BE(src, 12);
  p.writeUInt32BE(dst, 16);
  return p;
}

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function pair(
  receiveThread: boolean,
): Promise<{ server: DtlsServer; client: DtlsSession; session: DtlsSession }> {
  const server = await DtlsServer.listen({
    host: '127.0.0.1',
    port: 0,
    identities: [{ certPem: srv.certPem, keyPem: srv.keyPem }],
    verifyPeer: () => Promise.resolve({ accept: true }),
    receiveThread,
  });
  const sessionP = new Promise<DtlsSession>((resolve) => server.once('session', resolve));
  const client = await dtlsConnect({
    host: '127.0.0.1',
    port: server.address.port,
    certPem: cli.certPem,
    keyPem: cli.keyPem,
    caPem: srv.certPem,
  });
  return { server, client, session: await sessionP };
}

/** Sizes that make GSO runs: 5 × 1000 + a short 600, 3 × 1000, 2 × 1200 + 64, 64 × 2, then 1432 alone. */
const SIZES = [1000, 1000, 1000, 1000, 1000, 600, 1000, 1000, 1000, 1200, 1200, 64, 64, 64, 1432];

/** The dispatch's first batch: the packets are in the device socket before it starts. */
async function dispatchQueued(
  client: DtlsSession,
  sent: Buffer[],
): Promise<{ dispatch: TunDispatch; done: () => void }> {
  const device = loadAddon().openUdp('127.0.0.1', 0, 1 << 20);
  const writer = dgram.createSocket('udp4');
  await new Promise<void>((r) => writer.bind(0, '127.0.0.1', () => r()));
  for (const p of sent)
    await new Promise<void>((r, j) => writer.send(p, device.port, '127.0.0.1', (e) => (e ? j(e) : r())));
  assert.equal(handOffClientSession(client), true);
  const dispatch = dispatchFromTunToSession(client, device.fd, 1432, { batch: 64 });
  return {
    dispatch,
    done: () => {
      writer.close();
      dispatch.close();
      loadAddon().closeFd(device.fd);
    },
  };
}

describe('dtls UDP GSO sends and GRO reads', { timeout: 60_000 }, () => {
  before(() => {
    certs = new CertDir();
    srv = certs.make('gso-srv', 'ec');
    cli = certs.make('gso-cli', 'ec');
  });
  after(async () => {
    rmSync(certs.dir, { recursive: true, force: true });
    await cleanupAll();
  });

  for (const receiveThread of [true, false]) {
    const how = receiveThread
      ? 'the receive thread splits the GRO reads'
      : 'the kernel cuts them for a plain socket';
    it(`one batch of mixed sizes leaves as GSO runs; ${how}; every packet arrives once, in order`, async () => {
      const { server, client, session } = await pair(receiveThread);
      const before = nativeStats();
      const sent = SIZES.map((n, i) => packet(ENCLAVE_IP, 0x0a630002, n, i + 1));
      const got: Buffer[] = [];
      session.on('message', (m) => got.push(Buffer.from(m)));
      const { dispatch, done } = await dispatchQueued(client, sent);
      try {
        await until(() => got.length === sent.length, 'every packet at the server');
        assert.deepEqual(got, sent, 'each record its own datagram, in order');
        const st = dispatch.stats();
        assert.equal(st.packets, sent.length);
        assert.equal(st.sendFailed, 0);
        assert.equal(st.udpGso, true);
        // Runs: 5×1000+600, 3×1000, 2×1200+64, 2×64; the last 1432 alone — one sendmmsg(2).
        assert.equal(st.udpGsoSends, 4);
        assert.equal(st.udpGsoRecords, 14);
        assert.equal(st.sendCalls, 1);
        const now = nativeStats();
        assert.equal(now.gsoSends - before.gsoSends, 4);
        assert.equal(now.groMalformed, before.groMalformed);
        if (receiveThread) {
          assert.ok(now.groReads > before.groReads, 'at least one read held several records');
          assert.ok(
            (server.receiveThreadStats()?.datagrams ?? 0) >= sent.length,
            'datagrams counted after the split',
          );
        } else {
          assert.equal(now.groReads, before.groReads, 'no GRO on the loop path');
        }
        assert.equal(session.nativeConn()?.info().discarded.forged, 0);
      } finally {
        done();
        await server.close();
        client.close();
      }
    });
  }

  it('the gateway role: a burst for one enclave reaches an OpenSSL client as separate records', async () => {
    const { server, client, session } = await pair(true);
    const device = loadAddon().openUdp('127.0.0.1', 0, 1 << 20);
    const writer = dgram.createSocket('udp4');
    await new Promise<void>((r) => writer.bind(0, '127.0.0.1', () => r()));
    const dispatch = server.dispatchFromTun(device.fd, 1432, 64);
    try {
      assert.equal(dispatch.route(PEER_IP, session), true);
      const got: Buffer[] = [];
      client.on('message', (m) => got.push(Buffer.from(m)));
      // Same-size packets sent as fast as possible: batches of several make GSO runs.
      const sent = Array.from({ length: 300 }, (_, i) =>
        packet(0x0a630002, PEER_IP, i === 299 ? 77 : 1400, i & 0xff),
      );
      for (const p of sent)
        await new Promise<void>((r, j) => writer.send(p, device.port, '127.0.0.1', (e) => (e ? j(e) : r())));
      await until(() => dispatch.stats().reads === sent.length, 'every packet read');
      const st = dispatch.stats();
      await until(() => got.length === st.packets - st.sendFailed, 'the records at the client');
      // The client (OpenSSL) reads one record per datagram: what arrived is what was sent, in order.
      assert.equal(st.sendFailed, 0);
      assert.deepEqual(got, sent);
      assert.ok(st.udpGsoRecords <= sent.length && st.sendCalls >= 1);
    } finally {
      writer.close();
      dispatch.close();
      loadAddon().closeFd(device.fd);
      await server.close();
      client.close();
    }
  });

  it('a GSO message the kernel refuses (segment above the path MTU) goes out as single datagrams, and GSO stays off', async () => {
    const ns = await createNetns('gsofb');
    await ns.ip('link', 'set', 'lo', 'mtu', '1200');
    const r = await runIn(ns, fallbackScript, [], { timeoutMs: 30_000 });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    const res = JSON.parse(line) as {
      received: number;
      same: boolean;
      udpGso: boolean;
      udpGsoSends: number;
      sendFailed: number;
      packets: number;
    };
    assert.deepEqual(res, {
      received: 10,
      same: true,
      udpGso: false,
      udpGsoSends: 0,
      sendFailed: 0,
      packets: 10,
    });
  });
});
