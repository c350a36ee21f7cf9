/**
 * `seng blocker`'s server on loopback: TLS 1.2 only with mbedTLS-era suites and no client
 * certificate; reservations by binding; FAILED and CloseNotify release (keyed by proto and
 * port, unlike the original); garbage and oversize requests get no answer; peer allowlist.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import tls from 'node:tls';
import { BlockerServer } from '../../../src/shadow/blocker-server.js';
import { BlockerConnection, releaseAtBlocker } from '../../../src/shadow/blocker-client.js';
import { selfSignedIdentity } from '../../../src/shadow/tls-identity.js';
import { BlockerReply, FrameReader, frame } from '../../../src/shadow/protocol.js';
import { parseIpv4 } from '../../../src/util/ipv4.js';

const identity = selfSignedIdentity();
const LOOPBACK = parseIpv4('127.0.0.1');
const servers: BlockerServer[] = [];

after(async () => {
  await Promise.all(servers.map((s) => s.close()));
});

async function startBlocker(extra: { allowedPeers?: string[] } = {}): Promise<number> {
  const b = new BlockerServer({
    host: '127.0.0.1',
    port: 0,
    ...identity,
    reserveAddress: '127.0.0.1',
    ...extra,
  });
  servers.push(b);
  return (await b.listen()).port;
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

const bindTcp = (port: number): Promise<string> =>
  new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve('bound')));
  });

const mr = { mrEnclave: Buffer.alloc(32, 1), mrSigner: Buffer.alloc(32, 2) };

test('TLS 1.2 with an ECDHE-RSA-AES-GCM suite and no client certificate; TLS 1.3-only clients fail', async () => {
  const port = await startBlocker();
  const ok = tls.connect({
    host: '127.0.0.1',
    port,
    rejectUnauthorized: false,
    maxVersion: 'TLSv1.2',
    ciphers: 'ECDHE-RSA-AES256-GCM-SHA384',
  });
  await new Promise<void>((resolve, reject) => {
    ok.once('secureConnect', resolve);
    ok.once('error', reject);
  });
  assert.equal(ok.getProtocol(), 'TLSv1.2');
  assert.equal(ok.getCipher().name, 'ECDHE-RSA-AES256-GCM-SHA384');
  ok.destroy();
  const v13 = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, minVersion: 'TLSv1.3' });
  await assert.rejects(
    new Promise<void>((resolve, reject) => {
      v13.once('secureConnect', resolve);
      v13.once('error', reject);
    }),
  );
});

test('a reservation holds the port until the FAILED confirmation releases it', async () => {
  const bport = await startBlocker();
  const port = await freePort();
  const conn = await BlockerConnection.open(LOOPBACK, { port: bport, timeoutMs: 2000 });
  assert.equal(await conn.ask({ kind: 'block', port, proto: 6, ...mr }), BlockerReply.GRANTED);
  assert.equal(await bindTcp(port), 'EADDRINUSE');
  const again = await BlockerConnection.open(LOOPBACK, { port: bport, timeoutMs: 2000 });
  assert.equal(await again.ask({ kind: 'block', port, proto: 6, ...mr }), BlockerReply.IN_USE);
  again.close();
  conn.confirm(false);
  const deadline = Date.now() + 3000;
  while ((await bindTcp(port)) !== 'bound') {
    assert.ok(Date.now() < deadline, 'FAILED did not release the port');
    await new Promise((r) => setTimeout(r, 20));
  }
});

test('NOW_LISTENING keeps it; CloseNotify{port, proto} releases it (NOW_UNLBOCKED), then WAS_NOT_BLOCKED', async () => {
  const bport = await startBlocker();
  const port = await freePort();
  const conn = await BlockerConnection.open(LOOPBACK, { port: bport, timeoutMs: 2000 });
  assert.equal(await conn.ask({ kind: 'block', port, proto: 17, ...mr }), BlockerReply.GRANTED);
  conn.confirm(true);
  await new Promise((r) => setTimeout(r, 100));
  const udp = dgram.createSocket('udp4');
  const bindUdp = await new Promise<string>((resolve) => {
    udp.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
    udp.bind(port, '127.0.0.1', () => resolve('bound'));
  });
  udp.close();
  assert.equal(bindUdp, 'EADDRINUSE');
  const opts = { port: bport, timeoutMs: 2000 };
  assert.equal(
    await releaseAtBlocker(LOOPBACK, port, 6, opts),
    BlockerReply.WAS_NOT_BLOCKED,
    'TCP was never reserved',
  );
  assert.equal(await releaseAtBlocker(LOOPBACK, port, 17, opts), BlockerReply.NOW_UNLBOCKED);
  assert.equal(await releaseAtBlocker(LOOPBACK, port, 17, opts), BlockerReply.WAS_NOT_BLOCKED);
});

async function rawExchange(port: number, bytes: Buffer): Promise<string> {
  const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, maxVersion: 'TLSv1.2' });
  s.on('error', () => undefined);
  await new Promise<void>((r) => s.once('secureConnect', () => r()));
  s.write(bytes);
  const reader = new FrameReader(s);
  try {
    return (await reader.read(128, 3000, 'reply')).toString('hex');
  } catch (err) {
    return (err as Error).message;
  } finally {
    s.destroy();
  }
}

test('garbage, empty and oversize requests are closed without an answer', async () => {
  const port = await startBlocker();
  assert.match(await rawExchange(port, frame(Buffer.from('ffffffff', 'hex'))), /closed before/);
  assert.match(await rawExchange(port, Buffer.from('00000000', 'hex')), /closed before/);
  const big = Buffer.alloc(4 + 769);
  big.writeUInt32LE(769, 0);
  assert.match(await rawExchange(port, big), /closed before/);
});

test('--gateway: other peers are cut off before any exchange', async () => {
  const port = await startBlocker({ allowedPeers: ['10.0.0.1'] });
  await assert.rejects(BlockerConnection.open(LOOPBACK, { port, timeoutMs: 2000 }));
});
