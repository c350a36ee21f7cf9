// The client role on the native record layer (the enclave simulator's data path): a client session
// handed off after its handshake (handOffClientSession) exchanges records with a server on the
// native record layer in both directions, sends and reads close_notify and fatal alerts, can be
// the default route of a TunDispatch (every packet of the device, whatever its destination), and
// forwards records to an fd with the client's check (destination = the enclave IP).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
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

let certs: CertDir;
let srv: TestIdentity;
let cli: TestIdentity;

const ENCLAVE_IP = 0xc0a81c02; // 192.168.28.2

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

/** A server and one client session, both on the native record layer. */
async function pair(): Promise<{ server: DtlsServer; client: DtlsSession; session: DtlsSession }> {
  const server = await DtlsServer.listen({
    host: '127.0.0.1',
    port: 0,
    identities: [{ certPem: srv.certPem, keyPem: srv.keyPem }],
    verifyPeer: () => Promise.resolve({ accept: true }),
  });
  const sessionP = new Promise<DtlsSession>((resolve) => server.once('session', resolve));
  const client = await dtlsConnect({
    host: '127.0.0.1',
    port: server.address.port,
    certPem: cli.certPem,
    keyPem: cli.keyPem,
    caPem: srv.certPem,
  });
  const session = await sessionP;
  return { server, client, session };
}

function closed(s: DtlsSession): Promise<[string, string]> {
  return new Promise((resolve) => s.once('close', (reason, detail) => resolve([reason, detail])));
}

describe('dtls client handoff to the native record layer', { timeout: 60_000 }, () => {
  before(() => {
    certs = new CertDir();
    srv = certs.make('cho-srv', 'ec');
    cli = certs.make('cho-cli', 'ec');
  });
  after(() => rmSync(certs.dir, { recursive: true, force: true }));

  it('records flow both ways after the handoff, continuing the sequence numbers', async () => {
    const { server, client, session } = await pair();
    try {
      // Records on OpenSSL first, so the native layer must continue after them.
      const early: Buffer[] = [];
      session.on('message', (m) => early.push(Buffer.from(m)));
      assert.equal(client.send(Buffer.from('before')), true);
      await until(() => early.length === 1, 'the record sent before the handoff');
      assert.equal(client.nativeConn()?.info().recordLayer, 'openssl');
      assert.equal(handOffClientSession(client), true);
      assert.equal(client.nativeConn()?.info().recordLayer, 'native');
      assert.equal(handOffClientSession(client), false, 'only once');
      const got: Buffer[] = [];
      client.on('message', (m) => got.push(Buffer.from(m)));
      const down = [1, 200, 1432, client.maxRecordSize].map((n, i) => Buffer.alloc(n, i + 1));
      for (const r of down) assert.equal(session.send(r), true);
      const up = [1, 1432, session.maxRecordSize].map((n, i) => Buffer.alloc(n, 0x40 + i));
      for (const r of up) assert.equal(client.send(r), true);
      await until(() => got.length === down.length && early.length === 1 + up.length, 'records both ways');
      assert.deepEqual(got, down);
      assert.deepEqual(early.slice(1), up);
      assert.equal(client.nativeConn()?.info().discarded.forged, 0);
      assert.equal(session.nativeConn()?.info().discarded.replayed, 0);
    } finally {
      await server.close();
      client.close();
    }
  });

  it('close_notify from the handed-off client ends the server session, and vice versa', async () => {
    const baseline = nativeStats();
    const one = await pair();
    const two = await pair();
    try {
      assert.equal(handOffClientSession(one.client), true);
      assert.equal(handOffClientSession(two.client), true);
      const serverEnd = closed(one.session);
      one.client.close();
      assert.deepEqual(await serverEnd, ['close_notify', '']);
      const clientEnd = closed(two.client);
      two.session.close();
      assert.deepEqual(await clientEnd, ['close_notify', '']);
    } finally {
      await one.server.close();
      await two.server.close();
    }
    // Four record layers (two per pair) and no SSL object were left: all freed with the sessions.
    const end = nativeStats();
    assert.equal(end.liveRecordLayer, baseline.liveRecordLayer, 'native record layers');
    assert.equal(end.liveSsl, baseline.liveSsl, 'SSL objects');
  });

  it('a dispatch with a default route sends every device packet on the client session', async () => {
    const { server, client, session } = await pair();
    // A UDP socket stands in for the TUN device (one read(2) = one packet).
    const device = loadAddon().openUdp('127.0.0.1', 0, 1 << 20);
    const writer = dgram.createSocket('udp4');
    await new Promise<void>((r) => writer.bind(0, '127.0.0.1', () => r()));
    let dispatch: TunDispatch | undefined;
    try {
      assert.throws(
        () => dispatchFromTunToSession(client, device.fd, 1432),
        /not on the native record layer/,
        'OpenSSL sessions cannot be routed',
      );
      assert.equal(handOffClientSession(client), true);
      const d = dispatchFromTunToSession(client, device.fd, 1432, { batch: 8 });
      dispatch = d;
      const got: Buffer[] = [];
      session.on('message', (m) => got.push(Buffer.from(m)));
      // Any destination, sizes up to exactly the MTU; then one too large and one not IPv4.
      const sent = [60, 1432, 576, 1432, 20].map((n, i) =>
        packet(ENCLAVE_IP, 0x0a630002 + i * 0x01000000, n, i),
      );
      for (const p of sent) writer.send(p, device.port, '127.0.0.1');
      await until(() => got.length === sent.length, 'the packets at the server');
      assert.deepEqual(got, sent);
      writer.send(packet(ENCLAVE_IP, 1, 1433, 9), device.port, '127.0.0.1');
      writer.send(Buffer.alloc(40, 0x66), device.port, '127.0.0.1');
      await until(() => d.stats().reads === sent.length + 2, 'the invalid packets read');
      const st = d.stats();
      assert.equal(st.defaultRoute, true);
      assert.equal(st.packets, sent.length);
      assert.equal(st.oversize, 1);
      assert.equal(st.malformed, 1);
      assert.equal(st.unknownDestination, 0);
      assert.deepEqual(d.unrouteDefault(), {
        packets: sent.length,
        bytes: sent.reduce((n, p) => n + p.length, 0),
        oversize: 1,
      });
      writer.send(packet(ENCLAVE_IP, 1, 60, 1), device.port, '127.0.0.1');
      await until(() => d.stats().unknownDestination === 1, 'a packet without a route');
      // Routed again, then the session ends: the route expires with it.
      assert.equal(d.routeDefault(client), true);
      client.close();
      writer.send(packet(ENCLAVE_IP, 1, 60, 1), device.port, '127.0.0.1');
      await until(() => d.stats().unknownDestination === 2, 'a packet after the session ended');
      assert.equal(d.stats().defaultRoute, false);
    } finally {
      writer.close();
      dispatch?.close();
      loadAddon().closeFd(device.fd);
      await server.close();
      client.close();
    }
  });

  it("forwardTo with checkDestination writes the gateway's packets for the enclave IP, whatever their source", async () => {
    const { server, client, session } = await pair();
    const out = join(certs.dir, 'client-forwarded.bin');
    const fd = openSync(out, 'w');
    try {
      assert.equal(handOffClientSession(client), true);
      client.forwardTo(fd, ENCLAVE_IP, 1432, { checkDestination: true });
      const messages: Buffer[] = [];
      client.on('message', (m) => messages.push(Buffer.from(m)));
      const good1 = packet(0x08080808, ENCLAVE_IP, 60, 0x11);
      const good2 = packet(0x0a630002, ENCLAVE_IP, 1432, 0x22);
      const elsewhere = packet(0x08080808, ENCLAVE_IP + 1, 60, 0x33);
      const tooBig = packet(0x08080808, ENCLAVE_IP, 1433, 0x44);
      for (const p of [good1, elsewhere, good2, tooBig]) assert.equal(session.send(p), true);
      await until(() => messages.length === 2, 'the records left to JS');
      assert.deepEqual(messages, [elsewhere, tooBig]);
      assert.deepEqual(readFileSync(out), Buffer.concat([good1, good2]));
      const st = client.forwardStats();
      assert.equal(st.packets, 2);
      assert.equal(st.bytes, 60 + 1432);
      // With dropInvalid the mismatch is counted natively (as `spoofed`, with its destination).
      client.forwardTo(fd, ENCLAVE_IP, 1432, { checkDestination: true, dropInvalid: true });
      assert.equal(session.send(elsewhere), true);
      await until(() => client.forwardStats().spoofed === 1, 'the mismatch counted');
      assert.equal(client.forwardStats().lastSpoofedSource, ENCLAVE_IP + 1);
      assert.equal(messages.length, 2);
    } finally {
      closeSync(fd);
      await server.close();
      client.close();
    }
  });
});
