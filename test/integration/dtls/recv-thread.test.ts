// The server's native receive thread (native/dtls/src/recv_thread.h): application data of a
// session that forwards natively is opened and written on the thread, so forwarding goes on while
// the JavaScript thread is busy; everything else still reaches JavaScript through the queue.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DtlsServer, dtlsConnect, nativeStats, type DtlsSession } from '../../../src/dtls/index.js';
import { CertDir, type TestIdentity } from '../../fixtures/dtls/certs.js';
import { UdpRelay } from '../../fixtures/dtls/relay.js';

const ENCLAVE = 0xc0a81c02; // 192.168.28.2
let certs: CertDir;
let srv: TestIdentity;
let cli: TestIdentity;

function packet(src: number, len: number, fill: number): Buffer {
  const p = Buffer.alloc(len, fill);
  p[0] = 0x45;
  p.writeUInt16BE(len, 2);
  p.writeUInt32BE(src, 12);
  p.writeUInt32BE(0x0a630002, 16);
  return p;
}

async function until(cond: () => boolean, what: string, ms = 8000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Busy-waits the JavaScript thread (no event loop turn) for `ms`, calling `step` meanwhile. */
function blockJs(ms: number, step: () => void): void {
  const end = Date.now() + ms;
  while (Date.now() < end) step();
}

interface Pair {
  server: DtlsServer;
  client: DtlsSession;
  session: DtlsSession;
  relay?: UdpRelay;
}

async function pair(
  opts: { idleTimeoutMs?: number; relay?: boolean; receiveThread?: boolean } = {},
): Promise<Pair> {
  const server = await DtlsServer.listen({
    host: '127.0.0.1',
    port: 0,
    identities: [{ certPem: srv.certPem, keyPem: srv.keyPem }],
    verifyPeer: () => Promise.resolve({ accept: true }),
    idleTimeoutMs: opts.idleTimeoutMs,
    receiveThread: opts.receiveThread ?? true,
  });
  let relay: UdpRelay | undefined;
  if (opts.relay) {
    relay = new UdpRelay(server.address.port);
    await relay.start();
  }
  const sessionP = new Promise<DtlsSession>((resolve) => server.once('session', resolve));
  const client = await dtlsConnect({
    host: '127.0.0.1',
    port: relay ? relay.port : server.address.port,
    certPem: cli.certPem,
    keyPem: cli.keyPem,
    caPem: srv.certPem,
  });
  return { server, client, session: await sessionP, relay };
}

async function teardown(p: Pair): Promise<void> {
  p.client.close();
  await p.server.close();
  await p.relay?.close();
}

describe('dtls receive thread', { timeout: 60_000 }, () => {
  before(() => {
    certs = new CertDir();
    srv = certs.make('rt-srv', 'ec');
    cli = certs.make('rt-cli', 'ec');
  });
  after(() => certs.cleanup());

  it('is on by default and off with receiveThread: false', async () => {
    const on = await pair();
    try {
      assert.equal(on.server.receiveThreadStats()?.reading, true);
    } finally {
      await teardown(on);
    }
    const off = await pair({ receiveThread: false });
    try {
      assert.equal(off.server.receiveThreadStats(), undefined);
      // The JavaScript path still forwards.
      const out = join(certs.dir, 'off.bin');
      const fd = openSync(out, 'w');
      try {
        off.session.forwardTo(fd, ENCLAVE, 1432);
        off.client.send(packet(ENCLAVE, 100, 1));
        await until(() => off.session.forwardStats().packets === 1, 'the packet forwarded');
      } finally {
        off.session.forwardTo(-1, 0, 1432);
        closeSync(fd);
      }
    } finally {
      await teardown(off);
    }
  });

  it('forwards while the JavaScript thread is blocked', async () => {
    const p = await pair();
    const out = join(certs.dir, 'blocked.bin');
    const fd = openSync(out, 'w');
    try {
      p.session.forwardTo(fd, ENCLAVE, 1432);
      let sent = 0;
      let grewWhileBlocked = false;
      // Neither the server's nor the client's JavaScript runs an event-loop turn in here: the
      // client's send() is a synchronous sendto(2), and only the receive thread can write the file.
      blockJs(1000, () => {
        if (sent < 50) p.client.send(packet(ENCLAVE, 200, sent++ & 0xff));
        if (!grewWhileBlocked && statSync(out).size > 0) grewWhileBlocked = true;
      });
      assert.ok(grewWhileBlocked, 'packets reached the device while the JavaScript thread was blocked');
      await until(() => p.session.forwardStats().packets === sent, 'every packet forwarded');
      assert.equal(statSync(out).size, sent * 200);
      const st = p.server.receiveStats(p.session);
      assert.equal(st?.packets, sent);
      assert.ok((st?.lastRxMs ?? 0) > 0, 'the thread stamps the last receive time');
    } finally {
      p.session.forwardTo(-1, 0, 1432);
      closeSync(fd);
      await teardown(p);
    }
  });

  it('drops spoofed packets on the thread (dropInvalid) or hands them to JavaScript', async () => {
    const p = await pair();
    const out = join(certs.dir, 'spoof.bin');
    const fd = openSync(out, 'w');
    try {
      const spoofed = packet(0xc0a81c09, 60, 0x33);
      const good = packet(ENCLAVE, 60, 0x11);
      p.session.forwardTo(fd, ENCLAVE, 1432, { dropInvalid: true });
      p.client.send(spoofed);
      p.client.send(good);
      await until(() => p.session.forwardStats().packets === 1, 'the valid packet');
      await until(() => p.session.forwardStats().spoofed === 1, 'the spoofed one counted');
      assert.equal(p.session.forwardStats().lastSpoofedSource, 0xc0a81c09);
      assert.deepEqual(readFileSync(out), good, 'only the valid packet reached the device');
      // Without dropInvalid the gateway's JavaScript sees it (to count and log it).
      const messages: Buffer[] = [];
      p.session.on('message', (m: Buffer) => messages.push(m));
      p.session.forwardTo(fd, ENCLAVE, 1432);
      p.client.send(spoofed);
      await until(() => messages.length === 1, 'the spoofed record as a message');
      assert.deepEqual(messages[0], spoofed);
      assert.deepEqual(readFileSync(out), good);
      assert.equal(p.server.receiveThreadStats()?.plainToJs, 1);
    } finally {
      p.session.forwardTo(-1, 0, 1432);
      closeSync(fd);
      await teardown(p);
    }
  });

  it("keeps a session's order: packets after one left to JavaScript wait for it", async () => {
    const p = await pair();
    const out = join(certs.dir, 'order.bin');
    const fd = openSync(out, 'w');
    try {
      p.session.forwardTo(fd, ENCLAVE, 1432);
      const order: string[] = [];
      p.session.on('message', () => order.push(`message, ${statSync(out).size} bytes written`));
      const spoofed = packet(0xc0a81c09, 60, 0x33);
      const good = packet(ENCLAVE, 60, 0x11);
      let sent = false;
      blockJs(300, () => {
        if (sent) return;
        p.client.send(spoofed);
        p.client.send(good);
        sent = true;
      });
      // The valid packet followed the spoofed one through the queue: nothing written while blocked.
      assert.equal(statSync(out).size, 0);
      await until(() => p.session.forwardStats().packets === 1, 'the valid packet, after the message');
      assert.deepEqual(order, ['message, 0 bytes written']);
      assert.deepEqual(readFileSync(out), good);
      // Once the queue is drained, the session's packets are forwarded on the thread again.
      const before = p.server.receiveStats(p.session)!.packets;
      p.client.send(good);
      await until(() => p.session.forwardStats().packets === 2, 'the next packet');
      assert.equal(p.server.receiveStats(p.session)!.packets, before + 1);
    } finally {
      p.session.forwardTo(-1, 0, 1432);
      closeSync(fd);
      await teardown(p);
    }
  });

  it('drops replayed datagrams', async () => {
    const p = await pair({ relay: true });
    const relay = p.relay!;
    const out = join(certs.dir, 'replay.bin');
    const fd = openSync(out, 'w');
    try {
      p.session.forwardTo(fd, ENCLAVE, 1432);
      const first = packet(ENCLAVE, 80, 0x01);
      p.client.send(first);
      await until(() => p.session.forwardStats().packets === 1, 'the first packet');
      const captured = relay.seen.toServer[relay.seen.toServer.length - 1]!;
      for (let i = 0; i < 3; i++) relay.inject(captured);
      const second = packet(ENCLAVE, 80, 0x02);
      p.client.send(second);
      await until(() => p.session.forwardStats().packets === 2, 'the second packet');
      await until(() => p.server.receiveStats(p.session)?.replayed === 3, 'the replays counted');
      assert.deepEqual(readFileSync(out), Buffer.concat([first, second]), 'each packet once');
    } finally {
      p.session.forwardTo(-1, 0, 1432);
      closeSync(fd);
      await teardown(p);
    }
  });

  it("ends the session on the peer's close_notify", async () => {
    const p = await pair();
    const out = join(certs.dir, 'close.bin');
    const fd = openSync(out, 'w');
    try {
      p.session.forwardTo(fd, ENCLAVE, 1432);
      p.client.send(packet(ENCLAVE, 60, 1));
      await until(() => p.session.forwardStats().packets === 1, 'a forwarded packet');
      const closed = new Promise<string>((resolve) => p.session.once('close', (reason) => resolve(reason)));
      p.client.close();
      assert.equal(await closed, 'close_notify');
      assert.equal(p.server.sessions().length, 0);
      assert.equal(p.session.forwardStats().packets, 1, 'counters kept after the end');
    } finally {
      closeSync(fd);
      await p.server.close();
    }
  });

  it('survives a session ending while records for it are queued', async () => {
    const p = await pair();
    const out = join(certs.dir, 'queued.bin');
    const fd = openSync(out, 'w');
    const liveBefore = nativeStats().liveRecordLayer;
    try {
      p.session.forwardTo(fd, ENCLAVE, 1432);
      const messages: Buffer[] = [];
      p.session.on('message', (m: Buffer) => messages.push(m));
      // Records the rule leaves to JavaScript (spoofed) are queued decrypted, raw datagrams of the
      // session too (a handshake record); then the session ends before JavaScript drains them.
      blockJs(300, () => {
        if (messages.length === 0 && p.server.receiveThreadStats()!.queued < 40) {
          p.client.send(packet(0xc0a81c09, 100, 0x44));
          p.client.send(packet(ENCLAVE, 100, 0x55));
        }
      });
      const queued = p.server.receiveThreadStats()!.queued;
      assert.ok(queued > 0, 'items were queued while JavaScript was blocked');
      p.session.close();
      await new Promise((r) => setTimeout(r, 100)); // the queue drains into a closed session
      assert.equal(messages.length, 0, 'nothing delivered after the end');
      assert.equal(p.server.sessions().length, 0);
      // The server still serves: a new client forwards through the thread.
      p.client.close();
      const sessionP = new Promise<DtlsSession>((resolve) => p.server.once('session', resolve));
      const client2 = await dtlsConnect({
        host: '127.0.0.1',
        port: p.server.address.port,
        certPem: cli.certPem,
        keyPem: cli.keyPem,
        caPem: srv.certPem,
      });
      const session2 = await sessionP;
      session2.forwardTo(fd, ENCLAVE, 1432);
      client2.send(packet(ENCLAVE, 60, 7));
      await until(() => session2.forwardStats().packets === 1, 'the new session forwards');
      client2.close();
      assert.ok(nativeStats().liveRecordLayer <= liveBefore + 1);
    } finally {
      closeSync(fd);
      await p.server.close();
    }
  });

  it('keeps a session whose traffic only the thread sees from going idle', async () => {
    const p = await pair({ idleTimeoutMs: 1500 });
    const out = join(certs.dir, 'idle.bin');
    const fd = openSync(out, 'w');
    try {
      p.session.forwardTo(fd, ENCLAVE, 1432);
      let reason: string | undefined;
      p.session.once('close', (r) => (reason = r));
      for (let i = 0; i < 35 && reason === undefined; i++) {
        p.client.send(packet(ENCLAVE, 60, i));
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(reason, undefined, 'still open after more than two idle periods of traffic');
      assert.ok(p.session.forwardStats().packets > 0);
      assert.ok(p.session.stats().recordsIn === 0, 'JavaScript saw none of those records');
      await until(() => reason === 'idle', 'the idle end once the traffic stops', 10_000);
    } finally {
      closeSync(fd);
      await teardown(p);
    }
  });
});
