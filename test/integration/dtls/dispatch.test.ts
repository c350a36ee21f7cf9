// The native gateway → enclave path (TunDispatch): packets read from a device fd are routed by
// destination IP to the registered sessions, sealed by their native record layers and sent with
// sendmmsg; drops are counted by reason in the gateway's rule order. A UDP socket stands in for
// the TUN device here (one read(2) = one packet, as on a TUN fd without a packet-info header);
// the gateway tests run it on a real TUN device.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import dgram from 'node:dgram';
import { DtlsServer, dtlsConnect, type DtlsSession } from '../../../src/dtls/index.js';
import { loadAddon } from '../../../src/dtls/native.js';
import { CertDir, type TestIdentity } from '../../fixtures/dtls/certs.js';

let certs: CertDir;
let srv: TestIdentity;
let cli: TestIdentity;

const IP_A = 0xc0a81c02; // 192.168.28.2
const IP_B = 0xc0a81c03;
const IP_UNKNOWN = 0xc0a81c09;

function packet(dst: number, len: number, fill: number): Buffer {
  const p = Buffer.alloc(len, fill);
  p[0] = 0x45;
  p.writeUInt16BE(len, 2);
  p.writeUInt32BE(0x08080808, 12);
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

describe('dtls native TUN dispatch', { timeout: 60_000 }, () => {
  before(() => {
    certs = new CertDir();
    srv = certs.make('disp-srv', 'ec');
    cli = certs.make('disp-cli', 'ec');
  });
  after(() => certs.cleanup());

  it('routes by destination, seals per session, counts drops by reason, and stops with the session', async () => {
    const server = await DtlsServer.listen({
      host: '127.0.0.1',
      port: 0,
      identities: [{ certPem: srv.certPem, keyPem: srv.keyPem }],
      verifyPeer: () => Promise.resolve({ accept: true }),
    });
    const device = loadAddon().openUdp('127.0.0.1', 0, 1 << 20);
    const writer = dgram.createSocket('udp4');
    await new Promise<void>((r) => writer.bind(0, '127.0.0.1', () => r()));
    const inject = (p: Buffer): void => void writer.send(p, device.port, '127.0.0.1');
    const sessions: DtlsSession[] = [];
    server.on('session', (s) => sessions.push(s));
    const connect = () =>
      dtlsConnect({
        host: '127.0.0.1',
        port: server.address.port,
        certPem: cli.certPem,
        keyPem: cli.keyPem,
        caPem: srv.certPem,
      });
    const a = await connect();
    const b = await connect();
    await until(() => sessions.length === 2, 'two server sessions');
    const dispatch = server.dispatchFromTun(device.fd, 1432, 16);
    try {
      const got: Record<string, Buffer[]> = { a: [], b: [] };
      a.on('message', (m) => got.a!.push(Buffer.from(m)));
      b.on('message', (m) => got.b!.push(Buffer.from(m)));
      const byPort = (c: DtlsSession) => sessions.find((s) => s.remotePort === c.localPort)!;
      assert.equal(dispatch.route(IP_A, byPort(a)), true);
      assert.equal(dispatch.route(IP_B, byPort(b)), true);
      assert.equal(dispatch.route(IP_B + 1, b), false, 'a client session has no native record layer');

      const forA = [packet(IP_A, 60, 1), packet(IP_A, 1432, 2)];
      const forB = Array.from({ length: 40 }, (_, i) => packet(IP_B, 100 + i, i));
      inject(forA[0]!);
      for (const p of forB) inject(p);
      inject(forA[1]!);
      inject(packet(IP_UNKNOWN, 60, 3)); // unknown destination
      inject(packet(IP_A, 1433, 4)); // oversize (after the route lookup, as the gateway's rule)
      inject(packet(IP_UNKNOWN, 1500, 5)); // unknown destination comes before oversize
      inject(Buffer.from([0x45, 0, 0, 10, 1, 2, 3, 4, 5, 6])); // malformed: shorter than 20
      const v6 = packet(IP_A, 60, 6);
      v6[0] = 0x60; // malformed: not IPv4
      inject(v6);
      await until(() => got.a!.length === 2 && got.b!.length === 40, 'the routed packets');
      assert.deepEqual(got.a, forA);
      assert.deepEqual(got.b, forB, 'in order, each sealed with its own sequence number');
      await until(() => dispatch.stats().reads === 47, 'every packet read');
      const st = dispatch.stats();
      assert.equal(st.packets, 42);
      assert.equal(st.bytes, 60 + 1432 + forB.reduce((n, p) => n + p.length, 0));
      assert.equal(st.unknownDestination, 2);
      assert.equal(st.oversize, 1);
      assert.equal(st.malformed, 2);
      assert.equal(st.sendFailed, 0);
      assert.equal(st.routes, 2);
      assert.ok(st.wakeups >= 1 && st.wakeups <= st.reads, 'batches of one or more reads');
      const routes = dispatch.routeStats();
      assert.deepEqual(routes.get(IP_A), { packets: 2, bytes: 60 + 1432, oversize: 1 });
      assert.equal(routes.get(IP_B)?.packets, 40);

      // JS sends on the same session interleave with the native path (shared sequence numbers).
      assert.equal(byPort(a).send(Buffer.from('from js')), true);
      inject(packet(IP_A, 70, 7));
      await until(() => got.a!.length === 4, 'both');
      assert.deepEqual(
        got
          .a!.slice(2)
          .map((m) => m.length)
          .sort(),
        [7, 70],
      );

      // The session ends: its route expires at once, even before JS unroutes it.
      const closed = new Promise((r) => byPort(a).once('close', r));
      a.close();
      await closed;
      inject(packet(IP_A, 60, 8));
      await until(() => dispatch.stats().unknownDestination === 3, 'a packet for the ended session');
      assert.equal(dispatch.unroute(IP_A), undefined, 'already gone');
      assert.deepEqual(dispatch.unroute(IP_B), {
        packets: 40,
        bytes: forB.reduce((n, p) => n + p.length, 0),
        oversize: 0,
      });
      inject(packet(IP_B, 60, 9));
      await until(() => dispatch.stats().unknownDestination === 4, 'a packet after unroute');
      assert.equal(got.b!.length, 40);

      dispatch.close();
      assert.equal(dispatch.stats().reading, false);
      inject(packet(IP_B, 60, 10));
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(dispatch.stats().reads, 50, 'nothing read after close()');
    } finally {
      dispatch.close();
      b.close();
      writer.close();
      await server.close();
      loadAddon().closeFd(device.fd);
    }
  });

  it('forwards on its own thread while the JavaScript thread never yields', async () => {
    const server = await DtlsServer.listen({
      host: '127.0.0.1',
      port: 0,
      identities: [{ certPem: srv.certPem, keyPem: srv.keyPem }],
      verifyPeer: () => Promise.resolve({ accept: true }),
    });
    const device = loadAddon().openUdp('127.0.0.1', 0, 1 << 20);
    const sessionP = new Promise<DtlsSession>((r) => server.once('session', r));
    const client = await dtlsConnect({
      host: '127.0.0.1',
      port: server.address.port,
      certPem: cli.certPem,
      keyPem: cli.keyPem,
      caPem: srv.certPem,
    });
    const dispatch = server.dispatchFromTun(device.fd, 1432);
    try {
      assert.equal(dispatch.route(IP_A, await sessionP), true);
      const got: Buffer[] = [];
      client.on('message', (m) => got.push(Buffer.from(m)));
      // Another process writes 20 packets to the device while this thread is blocked in
      // execFileSync and then spins: no event-loop turn happens until all are forwarded.
      const sender = `const d = require('dgram').createSocket('udp4'); let n = 0;
        for (let i = 0; i < 20; i++) { const p = Buffer.alloc(100, i); p[0] = 0x45; p.writeUInt16BE(100, 2);
          p.writeUInt32BE(${IP_A}, 16); d.send(p, ${device.port}, '127.0.0.1', () => { if (++n === 20) d.close(); }); }`;
      execFileSync(process.execPath, ['-e', sender]);
      const end = Date.now() + 5000;
      while (dispatch.stats().packets < 20 && Date.now() < end) {
        // busy: the dispatch thread does the work
      }
      assert.equal(dispatch.stats().packets, 20, 'sealed and sent without the event loop');
      await until(() => got.length === 20, 'the client to read them');
      assert.deepEqual(
        got.map((m) => m[1]),
        Array.from({ length: 20 }, (_, i) => i),
      );
    } finally {
      dispatch.close();
      client.close();
      await server.close();
      loadAddon().closeFd(device.fd);
    }
  });

  it('refuses a second dispatch of one device, and bad arguments', async () => {
    const server = await DtlsServer.listen({
      host: '127.0.0.1',
      port: 0,
      identities: [{ certPem: srv.certPem, keyPem: srv.keyPem }],
      verifyPeer: () => Promise.resolve({ accept: true }),
    });
    const device = loadAddon().openUdp('127.0.0.1', 0, 0);
    try {
      const first = server.dispatchFromTun(device.fd, 1432);
      assert.throws(() => server.dispatchFromTun(device.fd, 1432), { code: 'EDTLS_BUSY' });
      first.close();
      server.dispatchFromTun(device.fd, 1432).close(); // free again once closed
      assert.throws(() => server.dispatchFromTun(device.fd, 10), { code: 'EDTLS_USAGE' });
      assert.throws(() => server.dispatchFromTun(-1, 1432), { code: 'EDTLS_USAGE' });
      const native = new (loadAddon().TunDispatch)(device.fd, 0, 1432);
      assert.throws(() => native.route(1, {} as never), { code: 'EDTLS_USAGE' });
    } finally {
      await server.close();
      loadAddon().closeFd(device.fd);
    }
  });
});
