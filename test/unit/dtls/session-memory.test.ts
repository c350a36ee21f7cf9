// What a DtlsSession keeps per session (docs/dtls.md, "Memory per session"), over loopback: no
// 'newListener' hook unless records arrive before the first 'message' listener (then they are
// handed to it, in order, and the hook goes away); counters and forwarding counters after the end.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DtlsServer, dtlsConnect, type DtlsSession } from '../../../src/dtls/index.js';
import { CertDir, type TestIdentity } from '../../fixtures/dtls/certs.js';

const EC_SUITE = 'ECDHE-ECDSA-AES128-GCM-SHA256';

let certs: CertDir;
let srv: TestIdentity;
let cli: TestIdentity;

async function waitUntil(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function pair(): Promise<{ server: DtlsServer; s: DtlsSession; c: DtlsSession }> {
  const server = await DtlsServer.listen({
    host: '127.0.0.1',
    port: 0,
    identities: [{ certPem: srv.certPem, keyPem: srv.keyPem }],
    verifyPeer: () => Promise.resolve({ accept: true }),
  });
  const accepted = new Promise<DtlsSession>((resolve) => server.once('session', resolve));
  const c = await dtlsConnect({
    host: '127.0.0.1',
    port: server.address.port,
    certPem: cli.certPem,
    keyPem: cli.keyPem,
    caPem: srv.certPem,
    cipherList: EC_SUITE,
  });
  return { server, s: await accepted, c };
}

describe('dtls session: memory per session', { timeout: 60_000 }, () => {
  before(() => {
    certs = new CertDir();
    srv = certs.make('srv', 'ec');
    cli = certs.make('cli', 'ec');
  });
  after(() => certs.cleanup());

  it('records before the first message listener are handed to it in order; no newListener hook is kept', async () => {
    const { server, s, c } = await pair();
    try {
      assert.equal(s.listenerCount('newListener'), 0, 'an established session holds no hook');
      for (const t of ['one', 'two', 'three']) assert.ok(c.send(Buffer.from(t)));
      await waitUntil(() => s.stats().recordsIn === 3, 'three records in');
      assert.equal(s.listenerCount('newListener'), 1, 'the hook exists while records wait');
      const got: string[] = [];
      s.on('message', (m) => got.push(m.toString()));
      assert.equal(s.listenerCount('newListener'), 0, 'and is gone once they are handed over');
      await waitUntil(() => got.length === 3, 'early records delivered');
      assert.ok(c.send(Buffer.from('four')));
      await waitUntil(() => got.length === 4, 'a later record');
      assert.deepEqual(got, ['one', 'two', 'three', 'four']);
    } finally {
      c.close();
      await server.close();
    }
  });

  it('counters are kept after the end; forwardStats() returns a fresh object', async () => {
    const { server, s, c } = await pair();
    try {
      s.on('message', () => undefined);
      assert.ok(c.send(Buffer.from('abc')));
      await waitUntil(() => s.stats().recordsIn === 1, 'a record in');
      assert.ok(s.send(Buffer.from('de')));
      assert.equal(s.send(Buffer.alloc(s.maxRecordSize + 1)), false);
      const closed = new Promise((resolve) => s.once('close', resolve));
      c.close();
      await closed;
      assert.deepEqual(s.stats(), { recordsIn: 1, recordsOut: 1, bytesIn: 3, bytesOut: 2, oversize: 1 });
      const f = s.forwardStats();
      assert.equal(f.packets, 0);
      f.packets = 5;
      assert.equal(s.forwardStats().packets, 0, 'a copy, not the kept object');
    } finally {
      await server.close();
    }
  });
});
