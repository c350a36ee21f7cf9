/**
 * The queue of cookie-verified ClientHellos waiting for a handshake slot: first in, first out;
 * one entry per peer (a retransmission keeps its place); bounded in entries, per address and in
 * age; the ClientHello parser that finds the cookie.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HelloQueue } from '../../../src/dtls/hello-queue.js';
import { parseClientHello } from '../../../src/dtls/server.js';

function queue(o: { max?: number; maxPerAddress?: number; maxAgeMs?: number } = {}) {
  let now = 0;
  const q = new HelloQueue({
    max: o.max ?? 100,
    maxPerAddress: o.maxPerAddress ?? 100,
    maxAgeMs: o.maxAgeMs ?? 1000,
    now: () => now,
  });
  return { q, advance: (ms: number) => (now += ms) };
}

const hello = (tag: number): Buffer => Buffer.from([22, tag, tag]);
const key = (ip: number, port: number): number => ip * 65536 + port;

test('first in, first out', () => {
  const { q } = queue();
  for (let port = 1; port <= 5; port++)
    assert.equal(q.offer(key(7, port), 7, port, hello(port), `r${port}`), 'queued');
  const order: number[] = [];
  for (let e = q.take(); e; e = q.take()) order.push(e.port);
  assert.deepEqual(order, [1, 2, 3, 4, 5]);
  assert.equal(q.size, 0);
});

test('a retransmission keeps its place and adds no entry; a restart replaces the bytes in place', () => {
  const { q } = queue();
  q.offer(key(1, 1), 1, 1, hello(1), 'a');
  q.offer(key(1, 2), 1, 2, hello(2), 'b');
  assert.equal(q.offer(key(1, 1), 1, 1, hello(9), 'a'), 'repeated');
  assert.equal(q.size, 2);
  assert.deepEqual(q.stats(), { queued: 2, enqueued: 2, repeated: 1, expired: 0, full: 0 });
  const first = q.take();
  assert.equal(first?.port, 1);
  assert.deepEqual(
    [...(first?.datagram ?? [])],
    [22, 1, 1],
    'the retransmission did not replace the first copy',
  );
  assert.equal(q.offer(key(1, 2), 1, 2, hello(3), 'c'), 'repeated', 'new random: the client restarted');
  const second = q.take();
  assert.equal(second?.random, 'c');
  assert.deepEqual([...(second?.datagram ?? [])], [22, 3, 3]);
});

test('the datagram is copied: the receive arena may be reused', () => {
  const { q } = queue();
  const arena = Buffer.from([22, 5, 5, 0]);
  q.offer(key(1, 1), 1, 1, arena.subarray(0, 3), 'a');
  arena.fill(0);
  assert.deepEqual([...(q.take()?.datagram ?? [])], [22, 5, 5]);
});

test('entries older than maxAgeMs are dropped, never taken', () => {
  const { q, advance } = queue({ maxAgeMs: 1000 });
  q.offer(key(1, 1), 1, 1, hello(1), 'a');
  advance(600);
  q.offer(key(1, 2), 1, 2, hello(2), 'b');
  advance(500); // the first is 1100 ms old, the second 500 ms
  assert.equal(q.take()?.port, 2);
  assert.equal(q.stats().expired, 1);
  q.offer(key(1, 3), 1, 3, hello(3), 'c');
  advance(1001);
  assert.equal(q.take(), undefined);
  assert.equal(q.size, 0);
  assert.equal(q.stats().expired, 2);
});

test('a retransmission does not make an entry younger', () => {
  const { q, advance } = queue({ maxAgeMs: 1000 });
  q.offer(key(1, 1), 1, 1, hello(1), 'a');
  advance(900);
  q.offer(key(1, 1), 1, 1, hello(1), 'a');
  advance(200);
  assert.equal(q.take(), undefined);
});

test('bounded in entries and per address; an expired entry makes room', () => {
  const { q, advance } = queue({ max: 3, maxPerAddress: 2, maxAgeMs: 1000 });
  assert.equal(q.offer(key(1, 1), 1, 1, hello(1), 'a'), 'queued');
  assert.equal(q.offer(key(1, 2), 1, 2, hello(2), 'b'), 'queued');
  assert.equal(q.offer(key(1, 3), 1, 3, hello(3), 'c'), 'full', 'address 1 has its share');
  assert.equal(q.offer(key(2, 1), 2, 1, hello(4), 'd'), 'queued');
  assert.equal(q.offer(key(3, 1), 3, 1, hello(5), 'e'), 'full', 'queue full');
  assert.equal(q.size, 3);
  assert.equal(q.stats().full, 2);
  advance(1001);
  assert.equal(q.offer(key(3, 1), 3, 1, hello(5), 'e'), 'queued');
  assert.equal(q.size, 1);
  assert.equal(q.stats().expired, 3);
});

test('max 0: nothing is queued', () => {
  const { q } = queue({ max: 0 });
  assert.equal(q.offer(key(1, 1), 1, 1, hello(1), 'a'), 'full');
  assert.equal(q.size, 0);
});

test('take skips entries that are not admissible now (their address at its limit), in order', () => {
  const { q } = queue();
  q.offer(key(1, 1), 1, 1, hello(1), 'a');
  q.offer(key(2, 1), 2, 1, hello(2), 'b');
  q.offer(key(1, 2), 1, 2, hello(3), 'c');
  q.offer(key(2, 2), 2, 2, hello(4), 'd');
  assert.equal(q.take((e) => e.ip === 2)?.datagram[1], 2);
  assert.equal(q.take((e) => e.ip === 2)?.datagram[1], 4);
  assert.equal(
    q.take((e) => e.ip === 2),
    undefined,
  );
  assert.equal(q.size, 2);
  assert.equal(
    q.take(() => true, 0),
    undefined,
    'scan bound',
  );
  assert.equal(q.take()?.datagram[1], 1);
});

test('randomOf tells a retransmission of the queued hello from anything else', () => {
  const { q } = queue();
  q.offer(key(1, 1), 1, 1, hello(1), 'a');
  assert.equal(q.randomOf(key(1, 1)), 'a');
  assert.equal(q.randomOf(key(1, 2)), undefined);
});

test('delete and clear free the per-address share', () => {
  const { q } = queue({ maxPerAddress: 1 });
  q.offer(key(1, 1), 1, 1, hello(1), 'a');
  q.delete(key(1, 1));
  assert.equal(q.has(key(1, 1)), false);
  assert.equal(q.offer(key(1, 2), 1, 2, hello(2), 'b'), 'queued');
  q.clear();
  assert.equal(q.offer(key(1, 3), 1, 3, hello(3), 'c'), 'queued');
});

/** A DTLS 1.2 ClientHello record with `cookie` (unfragmented unless told otherwise). */
function clientHello(cookie: Buffer, o: { sessionId?: number; fragmentLength?: number } = {}): Buffer {
  const sid = Buffer.alloc(o.sessionId ?? 0, 7);
  const body = Buffer.concat([
    Buffer.from([0xfe, 0xfd]),
    Buffer.alloc(32, 0xab), // random
    Buffer.from([sid.length]),
    sid,
    Buffer.from([cookie.length]),
    cookie,
    Buffer.from([0, 2, 0xc0, 0x2b, 1, 0]), // one suite, null compression
  ]);
  const hs = Buffer.alloc(12);
  hs[0] = 1;
  hs.writeUIntBE(body.length, 1, 3);
  hs.writeUInt16BE(1, 4);
  hs.writeUIntBE(0, 6, 3);
  hs.writeUIntBE(o.fragmentLength ?? body.length, 9, 3);
  const rec = Buffer.alloc(13);
  rec[0] = 22;
  rec.writeUInt16BE(0xfefd, 1);
  rec.writeUInt16BE(12 + body.length, 11);
  return Buffer.concat([rec, hs, body]);
}

test('parseClientHello finds the cookie and the random, in a larger arena', () => {
  const cookie = Buffer.alloc(32, 0x5a);
  const d = clientHello(cookie, { sessionId: 4 });
  const arena = Buffer.concat([Buffer.alloc(10), d, Buffer.alloc(5)]);
  const h = parseClientHello(arena, 10, d.length);
  assert.ok(h);
  assert.equal(h.random, 'ab'.repeat(32));
  assert.equal(h.cookieLength, 32);
  assert.deepEqual(arena.subarray(h.cookieOffset, h.cookieOffset + 32), cookie);
  assert.equal(
    parseClientHello(clientHello(Buffer.alloc(0)), 0, 80)?.cookieLength,
    undefined,
    'range beyond the datagram',
  );
  const none = clientHello(Buffer.alloc(0));
  assert.equal(parseClientHello(none, 0, none.length)?.cookieLength, 0);
});

test('parseClientHello refuses what is not an unfragmented ClientHello, and every truncation', () => {
  const d = clientHello(Buffer.alloc(32, 1));
  const fragmented = clientHello(Buffer.alloc(32, 1), { fragmentLength: 10 });
  assert.equal(parseClientHello(fragmented, 0, fragmented.length), undefined);
  const epoch1 = Buffer.from(d);
  epoch1[4] = 1;
  assert.equal(parseClientHello(epoch1, 0, epoch1.length), undefined);
  const serverHello = Buffer.from(d);
  serverHello[13] = 2;
  assert.equal(parseClientHello(serverHello, 0, serverHello.length), undefined);
  const longSid = Buffer.from(d);
  longSid[13 + 12 + 2 + 32] = 200;
  assert.equal(parseClientHello(longSid, 0, longSid.length), undefined);
  for (let len = 0; len < d.length; len++) {
    const h = parseClientHello(d.subarray(0, len), 0, len);
    assert.equal(h, undefined, `truncated to ${len}`);
  }
  assert.ok(parseClientHello(d, 0, d.length));
});
