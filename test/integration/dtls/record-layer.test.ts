// The server's native record layer over real sockets: a relay drops the server's first final
// flight (ChangeCipherSpec + Finished), so the client — ours or `openssl s_client` — retransmits
// its Finished after the server already handed the session off; the server must answer with the
// same flight from its copy, and the session must then carry data both ways.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DtlsServer, dtlsConnect, nativeStats, type DtlsSession } from '../../../src/dtls/index.js';
import { CertDir, Proc, type TestIdentity } from '../../fixtures/dtls/certs.js';
import { UdpRelay } from '../../fixtures/dtls/relay.js';

const SUITES = { rsa: 'ECDHE-RSA-AES256-GCM-SHA384', ec: 'ECDHE-ECDSA-AES128-GCM-SHA256' } as const;

let certs: CertDir;
const ids: Record<string, TestIdentity> = {};

/** Whether a datagram carries a ChangeCipherSpec or an epoch-1 record (the final flight). */
function isFinalFlight(d: Buffer): boolean {
  for (let off = 0; off + 13 <= d.length; off += 13 + d.readUInt16BE(off + 11)) {
    if (d[off] === 20 || d.readUInt16BE(off + 3) === 1) return true;
  }
  return false;
}

/** A relay that loses the server's first final flight (every datagram of it, once). */
async function lossyRelay(serverPort: number): Promise<{ relay: UdpRelay; dropped: Buffer[] }> {
  const relay = new UdpRelay(serverPort);
  const dropped: Buffer[] = [];
  let dropping = true;
  relay.policy = (dir, d) => {
    if (dir === 'toServer' && dropped.length > 0) dropping = false; // the client's retransmission
    if (dir === 'toClient' && dropping && isFinalFlight(d)) {
      dropped.push(Buffer.from(d));
      return 'drop';
    }
    return 'pass';
  };
  await relay.start();
  return { relay, dropped };
}

async function until(cond: () => boolean, what: string, ms = 8000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('dtls native record layer over sockets', { timeout: 60_000 }, () => {
  before(() => {
    certs = new CertDir();
    for (const kind of ['rsa', 'ec'] as const) {
      ids[`srv-${kind}`] = certs.make(`srv-${kind}`, kind);
      ids[`cli-${kind}`] = certs.make(`cli-${kind}`, kind);
    }
  });
  after(() => certs.cleanup());

  async function startServer(): Promise<{ server: DtlsServer; sessions: DtlsSession[] }> {
    const server = await DtlsServer.listen({
      host: '127.0.0.1',
      port: 0,
      identities: (['srv-rsa', 'srv-ec'] as const).map((n) => ({
        certPem: ids[n]!.certPem,
        keyPem: ids[n]!.keyPem,
      })),
      verifyPeer: () => Promise.resolve({ accept: true }),
    });
    const sessions: DtlsSession[] = [];
    server.on('session', (s) => {
      sessions.push(s);
      s.on('message', (m) => s.send(Buffer.concat([Buffer.from('echo: '), m])));
    });
    return { server, sessions };
  }

  it('our client: the lost final flight is resent from the copy and the session works', async () => {
    const { server, sessions } = await startServer();
    const { relay, dropped } = await lossyRelay(server.address.port);
    try {
      const client = await dtlsConnect({
        host: '127.0.0.1',
        port: relay.port,
        certPem: ids['cli-ec']!.certPem,
        keyPem: ids['cli-ec']!.keyPem,
        caPem: ids['srv-ec']!.certPem,
        cipherList: SUITES.ec,
      });
      assert.ok(dropped.length >= 1, 'the relay dropped the first final flight');
      const resent = relay.seen.toClient.filter((d) => dropped.some((x) => x.equals(d)));
      assert.equal(resent.length, 2 * dropped.length, 'every dropped datagram went out again, byte for byte');
      const echo = new Promise<string>((r) => client.once('message', (m) => r(m.toString())));
      assert.equal(client.send(Buffer.from('after the loss')), true);
      assert.equal(await echo, 'echo: after the loss');
      assert.equal(sessions.length, 1);
      const closed = new Promise<string>((r) => sessions[0]!.once('close', (why) => r(why)));
      client.close();
      assert.equal(await closed, 'close_notify');
    } finally {
      await relay.close();
      await server.close();
    }
  });

  for (const kind of ['rsa', 'ec'] as const) {
    it(`${kind}: every sealed record's explicit nonce is its epoch and sequence number, across the context switch`, async () => {
      // The seal context generates the explicit nonce from a counter it keeps (TLS AEAD mode):
      // the first records use temporary contexts, later ones the persistent context, and both
      // must write epoch || seq — the nonce the header promises — and consecutive sequence numbers.
      const { server } = await startServer();
      const relay = new UdpRelay(server.address.port);
      await relay.start();
      try {
        const client = await dtlsConnect({
          host: '127.0.0.1',
          port: relay.port,
          certPem: ids[`cli-${kind}`]!.certPem,
          keyPem: ids[`cli-${kind}`]!.keyPem,
          caPem: ids[`srv-${kind}`]!.certPem,
          cipherList: SUITES[kind],
        });
        const echoes: string[] = [];
        client.on('message', (m) => echoes.push(m.toString()));
        const count = 3 * 8 + 5; // well past the temporary contexts
        for (let i = 0; i < count; i++) assert.equal(client.send(Buffer.from(`m${i}`)), true);
        await until(() => echoes.length === count, 'every echo');
        assert.deepEqual(
          echoes,
          Array.from({ length: count }, (_, i) => `echo: m${i}`),
        );
        const records: Buffer[] = [];
        for (const d of relay.seen.toClient)
          for (let off = 0; off + 13 <= d.length; off += 13 + d.readUInt16BE(off + 11))
            if (d[off] === 23) records.push(d.subarray(off, off + 13 + d.readUInt16BE(off + 11)));
        assert.ok(records.length >= count, 'the echoes went through the relay');
        let prev = -1;
        for (const r of records) {
          assert.ok(r.subarray(13, 21).equals(r.subarray(3, 11)), 'explicit nonce = epoch || seq');
          const seq = r.readUIntBE(5, 6);
          if (prev >= 0) assert.equal(seq, prev + 1, 'consecutive sequence numbers');
          prev = seq;
        }
        client.close();
      } finally {
        await relay.close();
        await server.close();
      }
    });
  }

  for (const kind of ['rsa', 'ec'] as const) {
    it(`openssl s_client (${SUITES[kind]}) with the final flight lost: resent, data both ways, close`, async () => {
      const { server, sessions } = await startServer();
      const { relay, dropped } = await lossyRelay(server.address.port);
      const proc = new Proc('openssl', [
        's_client',
        '-dtls1_2',
        '-connect',
        `127.0.0.1:${relay.port}`,
        '-cert',
        ids[`cli-${kind}`]!.certFile,
        '-key',
        ids[`cli-${kind}`]!.keyFile,
        '-CAfile',
        ids[`srv-${kind}`]!.certFile,
        '-verify_return_error',
        '-cipher',
        SUITES[kind],
        '-mtu',
        '1472',
      ]);
      try {
        await proc.waitFor(new RegExp(`Cipher is ${SUITES[kind]}`), 15_000, 'stdout');
        assert.ok(dropped.length >= 1, 'the relay dropped the first final flight');
        assert.equal(sessions.length, 1);
        // The session holds no SSL object: only the server's stateless listener is left.
        assert.equal(nativeStats().liveSsl, 1);
        proc.write('from s_client\n');
        await proc.waitFor(/echo: from s_client/, 5000, 'stdout');
        assert.equal(sessions[0]!.send(Buffer.from('from seng\n')), true);
        await proc.waitFor(/from seng/, 5000, 'stdout');
        const closed = new Promise<string>((r) => sessions[0]!.once('close', (why) => r(why)));
        proc.endInput(); // s_client sends close_notify
        assert.equal(await closed, 'close_notify');
        assert.equal(await proc.exited, 0);
        await until(() => server.stats().sessions === 0, 'session gone');
      } finally {
        await proc.kill();
        await relay.close();
        await server.close();
      }
    });
  }
});
