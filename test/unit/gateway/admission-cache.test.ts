/**
 * Admission with the attestation cache and the per-enclave identity: a reconnecting enclave's
 * certificate is verified once, a reload forgets every verdict, the second handshake still
 * refuses other quotes and hosts, and per-setup detail is logged at debug while the audit
 * events stay at info.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import type { AttestationCache } from '../../../src/attestation/index.js';
import type { PeerVerdict } from '../../../src/gateway/types.js';
import { decodeIpAssignment, encodeIpAssignAck } from '../../../src/proto/messages.js';
import { cert, FakeSession, harness, otherCert } from './fakes.js';

function cacheOf(h: ReturnType<typeof harness>): AttestationCache {
  return (h.gateway as unknown as { ctx: { attestations: AttestationCache } }).ctx.attestations;
}

function capture(level: string) {
  const lines: { level: number; event?: string; msg: string }[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l));
      done();
    },
  });
  return { logger: pino({ level }, stream), lines };
}

test('a reconnecting enclave is attested from the cache; a reload clears it', async () => {
  const h = harness();
  await h.gateway.start();
  const first = await h.connect();
  const cache = cacheOf(h);
  assert.deepEqual({ hits: cache.stats.hits, misses: cache.stats.misses }, { hits: 0, misses: 1 });
  first.recv.close('close_notify');
  await new Promise((r) => setTimeout(r, 10));
  await h.connect();
  assert.equal(cache.stats.hits, 1);
  await h.gateway.reloadIndex(true);
  assert.equal(cache.size, 0);
  await h.gateway.stop();
});

test('the periodic database poll keeps the cache while nothing changed', async () => {
  const h = harness();
  await h.gateway.start();
  await h.connect();
  const cache = cacheOf(h);
  assert.equal(cache.size, 1);
  await h.gateway.reloadIndex(); // what the poll does each second
  assert.equal(cache.size, 1, 'an unchanged database must not forget the verdicts');
  await h.gateway.reloadIndex(true);
  assert.equal(cache.size, 0);
  await h.gateway.stop();
});

test('the enclave keeps its identity, not the parsed evidence or the certificate DER', async () => {
  const h = harness();
  await h.gateway.start();
  await h.connect();
  const [e] = [...(h.gateway as unknown as { ctx: { table: { all: Set<object> } } }).ctx.table.all];
  assert.ok(e);
  assert.equal('evidence' in e, false);
  assert.equal('certDer' in e, false);
  const st = h.gateway.status()[0]!;
  assert.equal(st.mrEnclave, '11'.repeat(32));
  await h.gateway.stop();
});

test('with a cached pass the second handshake still refuses another quote or host', async () => {
  const h = harness();
  await h.gateway.start();
  await h.connect(); // caches cert's verdict
  const recv = (await h.handshake(12345, cert.certDer)) as FakeSession;
  assert.ok(recv instanceof FakeSession);
  recv.emit('message', encodeIpAssignAck(decodeIpAssignment(recv.sent[0]!).ip));
  const otherQuote = (await h.handshake(12346, otherCert.certDer)) as PeerVerdict;
  assert.ok(!otherQuote.accept && /no receive tunnel awaits/.test(otherQuote.reason));
  const otherHost = (await h.handshake(12346, cert.certDer, '10.0.0.8')) as PeerVerdict;
  assert.ok(!otherHost.accept && /another IP/.test(otherHost.reason));
  const same = await h.handshake(12346, cert.certDer);
  assert.ok(same instanceof FakeSession);
  await h.gateway.stop();
});

test('per-setup lines are debug: at info only the audit events are logged', async () => {
  const info = capture('info');
  const h = harness(undefined, undefined, { logger: info.logger });
  await h.gateway.start();
  const { recv } = await h.connect();
  recv.close('close_notify');
  await new Promise((r) => setTimeout(r, 10));
  await h.handshake(12345, Buffer.from('not a certificate'));
  await h.gateway.stop();
  assert.ok(
    info.lines.every((l) => l.level >= 30),
    'nothing below info',
  );
  const events = info.lines.map((l) => l.event).filter(Boolean);
  for (const ev of ['admitted', 'session-end', 'rejected']) assert.ok(events.includes(ev), ev);
  assert.equal(events.includes('attested'), false);

  const debug = capture('debug');
  const d = harness(undefined, undefined, { logger: debug.logger });
  await d.gateway.start();
  await d.connect();
  await d.gateway.stop();
  assert.ok(debug.lines.some((l) => l.event === 'attested' && l.level === 20));
});
