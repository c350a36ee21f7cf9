// The native forwarding fast path of a session (gateway receive tunnel): valid IPv4 packets
// from the expected source go straight to an fd inside the addon; everything else still
// arrives as 'message' for the gateway's checks (spoofed, malformed, oversized).
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { DtlsServer, dtlsConnect, type DtlsSession } from '../../../src/dtls/index.js';
import { CertDir, type TestIdentity } from '../../fixtures/dtls/certs.js';

let certs: CertDir;
let srv: TestIdentity;
let cli: TestIdentity;

before(() => {
  certs = new CertDir();
  srv = certs.make('fwd-srv', 'ec');
  cli = certs.make('fwd-cli', 'ec');
});
after(() => rmSync(certs.dir, { recursive: true, force: true }));

function packet(src: number[], len: number, fill: number): Buffer {
  const p = Buffer.alloc(len, fill);
  p[0] = 0x45;
  p.writeUInt16BE(len, 2);
  Buffer.from(src).copy(p, 12);
  Buffer.from([10, 99, 0, 2]).copy(p, 16);
  return p;
}

it('forwards only well-formed packets from the enclave address, counts them, and hands the rest to JS', async () => {
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
  const out = join(certs.dir, 'forwarded.bin');
  const fd = openSync(out, 'w');
  try {
    session.forwardTo(fd, 0xc0a81c02 /* 192.168.28.2 */, 1432);
    const messages: Buffer[] = [];
    session.on('message', (m: Buffer) => messages.push(Buffer.from(m)));
    const good1 = packet([192, 168, 28, 2], 60, 0x11);
    const good2 = packet([192, 168, 28, 2], 1432, 0x22);
    const spoofed = packet([192, 168, 28, 9], 60, 0x33);
    const tooBig = packet([192, 168, 28, 2], 1433, 0x44);
    const badLength = packet([192, 168, 28, 2], 80, 0x55);
    badLength.writeUInt16BE(70, 2);
    const notIpv4 = Buffer.alloc(40, 0x66);
    for (const p of [good1, spoofed, good2, tooBig, badLength, notIpv4]) client.send(p);
    const deadline = Date.now() + 5000;
    while (messages.length < 4 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(
      messages.map((m) => m.readUInt8(m.length - 1)),
      [0x33, 0x44, 0x55, 0x66],
      'every record the fast path does not take reaches JS, in order',
    );
    assert.deepEqual(session.forwardStats(), {
      packets: 2,
      bytes: 60 + 1432,
      dropped: 0,
      oversize: 0,
      malformed: 0,
      spoofed: 0,
      lastSpoofedSource: 0,
    });
    assert.deepEqual(readFileSync(out), Buffer.concat([good1, good2]));
    // Off again: a valid packet surfaces as a message.
    session.forwardTo(-1, 0, 1432);
    client.send(good1);
    while (messages.length < 5 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(messages[4], good1);
    client.close();
    await new Promise((r) => session.once('close', r));
    assert.deepEqual(
      { ...session.forwardStats() },
      { packets: 2, bytes: 1492, dropped: 0, oversize: 0, malformed: 0, spoofed: 0, lastSpoofedSource: 0 },
      'kept after the session ended',
    );
  } finally {
    closeSync(fd);
    await server.close();
  }
});

it('with dropInvalid, invalid records are dropped natively by reason in the gateway rule order; none reach JS', async () => {
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
  const out = join(certs.dir, 'forwarded-strict.bin');
  const fd = openSync(out, 'w');
  try {
    session.forwardTo(fd, 0xc0a81c02, 1432, { dropInvalid: true });
    const messages: Buffer[] = [];
    session.on('message', (m: Buffer) => messages.push(Buffer.from(m)));
    const good = packet([192, 168, 28, 2], 60, 0x11);
    const spoofed = packet([10, 1, 2, 3], 60, 0x33);
    const tooBig = packet([192, 168, 28, 2], 1433, 0x44); // also spoofed-looking: oversize comes first
    tooBig.writeUInt32BE(0x0a010203, 12);
    const badLength = packet([192, 168, 28, 2], 80, 0x55);
    badLength.writeUInt16BE(70, 2);
    const headerBeyond = packet([192, 168, 28, 2], 24, 0x66);
    headerBeyond[0] = 0x47; // IHL 7 = 28 bytes > 24
    const ihlTooSmall = packet([192, 168, 28, 2], 40, 0x77);
    ihlTooSmall[0] = 0x44;
    const ipv6 = packet([192, 168, 28, 2], 40, 0x88);
    ipv6[0] = 0x65;
    const short = Buffer.from([0x45, 0, 0, 19]);
    for (const p of [spoofed, tooBig, badLength, headerBeyond, ihlTooSmall, ipv6, short, good])
      client.send(p);
    const deadline = Date.now() + 5000;
    while (session.forwardStats().packets < 1 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(session.forwardStats(), {
      packets: 1,
      bytes: 60,
      dropped: 0,
      oversize: 1,
      malformed: 5,
      spoofed: 1,
      lastSpoofedSource: 0x0a010203,
    });
    assert.deepEqual(messages, [], 'nothing reached JS');
    assert.deepEqual(readFileSync(out), good);
    client.close();
    await new Promise((r) => session.once('close', r));
  } finally {
    closeSync(fd);
    await server.close();
  }
});
