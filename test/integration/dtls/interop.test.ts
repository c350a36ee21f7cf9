// Interop with OpenSSL's own DTLS 1.2 peers: `openssl s_client -dtls1_2` against our server and
// `openssl s_server -dtls1_2` against our client, with both cipher suites of SPEC §1.1.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import {
  DtlsError,
  DtlsServer,
  dtlsConnect,
  handOffClientSession,
  type DtlsSession,
} from '../../../src/dtls/index.js';
import { CertDir, Proc, freeUdpPort, type TestIdentity } from '../../fixtures/dtls/certs.js';

const SUITES = {
  rsa: 'ECDHE-RSA-AES256-GCM-SHA384',
  ec: 'ECDHE-ECDSA-AES128-GCM-SHA256',
} as const;

let certs: CertDir;
const ids: Record<string, TestIdentity> = {};

function messages(s: DtlsSession): { text: () => string } {
  let text = '';
  s.on('message', (m) => (text += m.toString()));
  return { text: () => text };
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    t = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

async function waitUntil(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('dtls interop with openssl', { timeout: 120_000 }, () => {
  before(() => {
    certs = new CertDir();
    for (const kind of ['rsa', 'ec'] as const) {
      ids[`srv-${kind}`] = certs.make(`srv-${kind}`, kind);
      ids[`cli-${kind}`] = certs.make(`cli-${kind}`, kind);
    }
  });
  after(() => certs.cleanup());

  async function startServer(
    verdict: 'accept' | 'reject',
  ): Promise<{ server: DtlsServer; chains: Buffer[][] }> {
    const chains: Buffer[][] = [];
    const server = await DtlsServer.listen({
      host: '127.0.0.1',
      port: 0,
      identities: (['srv-rsa', 'srv-ec'] as const).map((n) => ({
        certPem: ids[n]!.certPem,
        keyPem: ids[n]!.keyPem,
      })),
      verifyPeer: (chain) => {
        chains.push(chain);
        return Promise.resolve(
          verdict === 'accept' ? { accept: true } : { accept: false, reason: 'test says no' },
        );
      },
    });
    return { server, chains };
  }

  function sClient(kind: 'rsa' | 'ec', port: number): Proc {
    const cli = ids[`cli-${kind}`]!;
    return new Proc('openssl', [
      's_client',
      '-dtls1_2',
      '-connect',
      `127.0.0.1:${port}`,
      '-cert',
      cli.certFile,
      '-key',
      cli.keyFile,
      '-CAfile',
      ids[`srv-${kind}`]!.certFile,
      '-verify_return_error',
      '-cipher',
      SUITES[kind],
      '-mtu',
      '1472',
    ]);
  }

  for (const kind of ['rsa', 'ec'] as const) {
    it(`s_client (${kind === 'rsa' ? 'RSA-3072' : 'P-256'}, ${SUITES[kind]}) → our server: handshake, data both ways, close`, async () => {
      const { server, chains } = await startServer('accept');
      const proc = sClient(kind, server.address.port);
      try {
        const session = await new Promise<DtlsSession>((resolve, reject) => {
          server.once('session', resolve);
          proc.exited.then((code) => reject(new Error(`s_client exited (${code}): ${proc.stderr}`)), reject);
        });
        assert.equal(session.cipher, SUITES[kind]);
        assert.deepEqual(session.peerCertificate, new X509Certificate(ids[`cli-${kind}`]!.certPem).raw);
        assert.equal(chains.length, 1);
        const got = messages(session);
        const closedP = new Promise<string>((resolve) => session.once('close', (r) => resolve(r)));

        assert.equal(session.send(Buffer.from('hello from seng\n')), true);
        await proc.waitFor(/hello from seng/, 5000, 'stdout');
        await proc.waitFor(new RegExp(`Cipher is ${SUITES[kind]}`), 5000, 'stdout');
        proc.write('hello from s_client\n');
        await waitUntil(() => got.text().includes('hello from s_client\n'), 5000, 'data from s_client');

        if (kind === 'rsa') {
          // s_client closes: end of its stdin → close_notify.
          proc.endInput();
          assert.equal(await within(closedP, 5000, 'close'), 'close_notify');
          assert.equal(await within(proc.exited, 5000, 's_client exit'), 0);
        } else {
          // We close: s_client reads our close_notify and exits.
          session.close();
          assert.equal(await within(closedP, 5000, 'close'), 'local');
          assert.equal(await within(proc.exited, 5000, 's_client exit'), 0);
          assert.match(proc.stdout + proc.stderr, /closed|DONE/);
        }
        await waitUntil(() => server.stats().sessions === 0, 2000, 'session to be gone');
      } finally {
        await proc.kill();
        await server.close();
      }
    });
  }

  it('s_client with a certificate the hook rejects gets a fatal access_denied alert', async () => {
    const { server, chains } = await startServer('reject');
    const proc = sClient('ec', server.address.port);
    try {
      const code = await Promise.race([
        proc.exited,
        new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 8000)),
      ]);
      assert.notEqual(code, 'timeout');
      assert.notEqual(code, 0);
      assert.match(proc.stderr, /alert access denied/);
      assert.match(proc.stderr, /SSL alert number 49/);
      assert.equal(chains.length, 1);
      assert.equal(server.stats().rejected, 1);
      assert.equal(server.stats().sessions, 0);
      assert.equal(server.stats().handshakes, 0);
    } finally {
      await proc.kill();
      await server.close();
    }
  });

  it('renegotiation is refused; the fatal alert s_client answers with ends the session as "alert"', async () => {
    const { server } = await startServer('accept');
    const proc = sClient('rsa', server.address.port);
    try {
      const session = await new Promise<DtlsSession>((resolve, reject) => {
        server.once('session', resolve);
        proc.exited.then((code) => reject(new Error(`s_client exited (${code}): ${proc.stderr}`)), reject);
      });
      const got = messages(session);
      const closedP = new Promise<[string, string]>((resolve) =>
        session.once('close', (r, d) => resolve([r, d])),
      );
      proc.write('before\n');
      await waitUntil(() => got.text() === 'before\n', 5000, 'data before renegotiation');
      proc.write('R\n'); // s_client: renegotiate
      const [reason, detail] = await within(closedP, 5000, 'session end');
      assert.equal(reason, 'alert');
      assert.equal(detail, 'handshake failure');
      await within(proc.exited, 5000, 's_client exit');
      assert.match(proc.stderr, /no renegotiation/);
      assert.equal(server.stats().sessions, 0);
    } finally {
      await proc.kill();
      await server.close();
    }
  });

  function sServer(kind: 'rsa' | 'ec', port: number, clientCa: TestIdentity): Proc {
    const srv = ids[`srv-${kind}`]!;
    return new Proc('openssl', [
      's_server',
      '-dtls1_2',
      '-accept',
      `127.0.0.1:${port}`,
      '-cert',
      srv.certFile,
      '-key',
      srv.keyFile,
      '-Verify',
      '1',
      '-CAfile',
      clientCa.certFile,
      '-verify_return_error',
      '-cipher',
      SUITES[kind],
      '-naccept',
      '1',
    ]);
  }

  for (const kind of ['rsa', 'ec'] as const) {
    it(`our client handed off to the native record layer → s_server (${SUITES[kind]}): data both ways, close`, async () => {
      const port = await freeUdpPort();
      const proc = sServer(kind, port, ids[`cli-${kind}`]!);
      try {
        await proc.waitFor(/ACCEPT/, 10_000, 'stdout');
        const session = await dtlsConnect({
          host: '127.0.0.1',
          port,
          certPem: ids[`cli-${kind}`]!.certPem,
          keyPem: ids[`cli-${kind}`]!.keyPem,
          caPem: ids[`srv-${kind}`]!.certPem,
          cipherList: SUITES[kind],
        });
        const got = messages(session);
        const closedP = new Promise<string>((resolve) => session.once('close', (r) => resolve(r)));
        // One record each way on OpenSSL, then the rest on the native record layer: OpenSSL's
        // s_server checks our keys (client direction) and sequence numbers.
        assert.equal(session.send(Buffer.from('before the handoff\n')), true);
        await proc.waitFor(/before the handoff/, 5000, 'stdout');
        proc.write('first from s_server\n');
        await waitUntil(() => got.text().includes('first from s_server\n'), 5000, 'data from s_server');
        assert.equal(handOffClientSession(session), true);
        assert.equal(session.nativeConn()?.info().recordLayer, 'native');
        assert.equal(session.send(Buffer.from('after the handoff\n')), true);
        await proc.waitFor(/after the handoff/, 5000, 'stdout');
        proc.write('second from s_server\n');
        await waitUntil(() => got.text().includes('second from s_server\n'), 5000, 'data after the handoff');
        session.close(); // our close_notify, sealed natively
        assert.equal(await within(closedP, 5000, 'close'), 'local');
        await proc.waitFor(/DONE|CONNECTION CLOSED/, 5000);
        assert.equal(await within(proc.exited, 5000, 's_server exit'), 0);
      } finally {
        await proc.kill();
      }
    });

    it(`our client → s_server -verify (${SUITES[kind]}): handshake, data both ways, close`, async () => {
      const port = await freeUdpPort();
      const proc = sServer(kind, port, ids[`cli-${kind}`]!);
      try {
        await proc.waitFor(/ACCEPT/, 10_000, 'stdout');
        const session = await dtlsConnect({
          host: '127.0.0.1',
          port,
          certPem: ids[`cli-${kind}`]!.certPem,
          keyPem: ids[`cli-${kind}`]!.keyPem,
          caPem: ids[`srv-${kind}`]!.certPem,
          cipherList: SUITES[kind],
        });
        assert.equal(session.cipher, SUITES[kind]);
        assert.deepEqual(session.peerCertificate, new X509Certificate(ids[`srv-${kind}`]!.certPem).raw);
        const got = messages(session);
        const closedP = new Promise<string>((resolve) => session.once('close', (r) => resolve(r)));
        assert.equal(session.send(Buffer.from('hello from seng client\n')), true);
        await proc.waitFor(/hello from seng client/, 5000, 'stdout');
        proc.write('hello from s_server\n');
        await waitUntil(() => got.text().includes('hello from s_server\n'), 5000, 'data from s_server');
        // (s_server 3.0 sends no close_notify of its own on 'q'/'Q' over DTLS, so only we close here;
        // the other direction is tested with s_client above.)
        session.close();
        assert.equal(await within(closedP, 5000, 'close'), 'local');
        await proc.waitFor(/DONE|CONNECTION CLOSED/, 5000);
        assert.equal(await within(proc.exited, 5000, 's_server exit'), 0);
      } finally {
        await proc.kill();
      }
    });
  }

  it('our client sees the alert of an s_server that rejects its certificate', async () => {
    const port = await freeUdpPort();
    // s_server trusts a different CA than our client's self-signed certificate.
    const proc = sServer('ec', port, ids['cli-rsa']!);
    try {
      await proc.waitFor(/ACCEPT/, 10_000, 'stdout');
      await assert.rejects(
        dtlsConnect({
          host: '127.0.0.1',
          port,
          certPem: ids['cli-ec']!.certPem,
          keyPem: ids['cli-ec']!.keyPem,
          caPem: ids['srv-ec']!.certPem,
          cipherList: SUITES.ec,
        }),
        (err: unknown) => {
          assert.ok(err instanceof DtlsError);
          assert.equal(err.code, 'EDTLS_HANDSHAKE');
          assert.equal(err.alert, 'unknown CA');
          return true;
        },
      );
    } finally {
      await proc.kill();
    }
  });
});
