/**
 * DTLS benchmark (not a test): handshakes per second for both SPEC cipher suites, application
 * records per second with 1400-byte payloads (over loopback sockets and in memory), and the ratio
 * to `openssl speed -evp aes-256-gcm` for 1400-byte blocks on the same machine, which shows what
 * our layering (N-API, BIO, records, sockets) costs. Client and server run in this one process, so
 * socket figures include both ends' work. Prints one JSON object to stdout.
 *
 *   node dist/bench/dtls.js [--seconds 3] [--parallel 4]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DtlsServer, dtlsConnect, opensslVersion, type DtlsSession } from '../src/dtls/index.js';
import { loadAddon, type NativeConn } from '../src/dtls/native.js';
import { DatagramTap } from '../test/fixtures/dtls/datagram-tap.js';

const SUITES = { rsa: 'ECDHE-RSA-AES256-GCM-SHA384', ec: 'ECDHE-ECDSA-AES128-GCM-SHA256' } as const;
type Kind = keyof typeof SUITES;
const PAYLOAD = 1400;

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? Number(process.argv[i + 1]) : def;
  return Number.isFinite(v) && v > 0 ? v : def;
}

const seconds = arg('seconds', 3);
const parallel = arg('parallel', 4);
const dir = mkdtempSync(join(tmpdir(), `seng-dtls-bench-${process.pid}-`));

interface Id {
  certPem: string;
  keyPem: string;
}

function makeId(name: string, kind: Kind): Id {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  const alg =
    kind === 'rsa' ? ['-newkey', 'rsa:3072'] : ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'];
  execFileSync(
    'openssl',
    ['req', '-x509', '-nodes', '-days', '2', '-subj', `/CN=${name}`, ...alg, '-keyout', key, '-out', cert],
    {
      stdio: 'ignore',
    },
  );
  return { certPem: readFileSync(cert, 'utf8'), keyPem: readFileSync(key, 'utf8') };
}

function opensslSpeed(): { recordsPerSec: number; bytesPerSec: number } {
  const out = execFileSync(
    'openssl',
    [
      'speed',
      '-evp',
      'aes-256-gcm',
      '-bytes',
      String(PAYLOAD),
      '-seconds',
      String(Math.max(1, Math.round(seconds))),
    ],
    {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    },
  );
  // Last table line: "AES-256-GCM   123456.78k"  (1000s of bytes per second)
  const line = out
    .split('\n')
    .reverse()
    .find((l) => /^aes-256-gcm\s/i.test(l.trim()));
  const m = line?.trim().match(/([\d.]+)k\s*$/);
  if (!m?.[1]) throw new Error(`cannot parse openssl speed output:\n${out}`);
  const bytesPerSec = Number(m[1]) * 1000;
  return { bytesPerSec, recordsPerSec: bytesPerSec / PAYLOAD };
}

async function handshakes(server: DtlsServer, kind: Kind, cli: Id, srvCert: string) {
  let n = 0;
  const end = performance.now() + seconds * 1000;
  const t0 = performance.now();
  const worker = async (): Promise<void> => {
    while (performance.now() < end) {
      const s = await dtlsConnect({
        host: '127.0.0.1',
        port: server.address.port,
        certPem: cli.certPem,
        keyPem: cli.keyPem,
        caPem: srvCert,
        cipherList: SUITES[kind],
      });
      s.close();
      n++;
    }
  };
  await Promise.all(Array.from({ length: parallel }, () => worker()));
  const elapsed = (performance.now() - t0) / 1000;
  return {
    suite: SUITES[kind],
    handshakes: n,
    seconds: round(elapsed),
    perSec: round(n / elapsed),
    parallel,
  };
}

async function socketRecords(server: DtlsServer, cli: Id, srvCert: string) {
  const serverSide = new Promise<DtlsSession>((r) => server.once('session', r));
  const c = await dtlsConnect({
    host: '127.0.0.1',
    port: server.address.port,
    certPem: cli.certPem,
    keyPem: cli.keyPem,
    caPem: srvCert,
    cipherList: SUITES.rsa,
  });
  const s = await serverSide;
  let received = 0;
  s.on('message', () => received++);
  const payload = Buffer.alloc(PAYLOAD, 0x5a);
  let sent = 0;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  // Bursts of 32 records per event-loop turn, so the receiving side gets to run in between.
  await new Promise<void>((resolve) => {
    const burst = (): void => {
      for (let i = 0; i < 32; i++) if (c.send(payload)) sent++;
      if (performance.now() < end) setImmediate(burst);
      else resolve();
    };
    burst();
  });
  const sendElapsed = (performance.now() - t0) / 1000;
  await new Promise((r) => setTimeout(r, 200));
  c.close();
  return {
    suite: SUITES.rsa,
    payloadBytes: PAYLOAD,
    sent,
    received,
    lossPercent: round((100 * (sent - received)) / Math.max(1, sent)),
    sentPerSec: round(sent / sendElapsed),
    receivedPerSec: round(received / sendElapsed),
  };
}

/**
 * Encrypt and decrypt through the addon step by step, without the event loop: the datagrams go
 * over two loopback sockets that are read synchronously (so the figures include sendto and read).
 */
function memoryRecords(srv: Id, cli: Id) {
  const addon = loadAddon();
  const toServer = DatagramTap.open();
  const toClient = DatagramTap.open();
  const sctx = new addon.Context({ server: true, identities: [srv], cipherList: SUITES.rsa, mtu: 1500 });
  sctx.setFd(toServer.fd);
  const cctx = new addon.Context({
    server: false,
    identities: [cli],
    cipherList: SUITES.rsa,
    caPem: srv.certPem,
    mtu: 1500,
  });
  const slab = Buffer.alloc(1 << 20);
  const lens = new Uint32Array(256);
  const client = cctx.connect('127.0.0.1', toServer.port, toClient.fd);
  cctx.free();
  client.input(null, slab, 0, lens);
  sctx.listen(toServer.take(1)[0]!, '127.0.0.1', toClient.port);
  for (const d of toClient.take(1)) client.input(d, slab, 0, lens);
  const conn = sctx.listen(toServer.take(1)[0]!, '127.0.0.1', toClient.port) as NativeConn;
  conn.input(null, slab, 0, lens);
  for (let i = 0; i < 10 && conn.info().state !== 'held'; i++) {
    for (const d of toClient.take(1)) client.input(d, slab, 0, lens);
    for (const d of toServer.take(1)) conn.input(d, slab, 0, lens);
  }
  conn.release();
  for (const d of toClient.take(1)) client.input(d, slab, 0, lens);
  const payload = Buffer.alloc(PAYLOAD, 0x33);
  const batch = 256;
  let n = 0;
  let encNs = 0;
  let decNs = 0;
  const end = performance.now() + seconds * 1000;
  while (performance.now() < end) {
    const e0 = process.hrtime.bigint();
    for (let i = 0; i < batch; i++) client.send(payload);
    const out = toServer.take(batch);
    const e1 = process.hrtime.bigint();
    for (const d of out) conn.input(d, slab, 0, lens);
    const e2 = process.hrtime.bigint();
    encNs += Number(e1 - e0);
    decNs += Number(e2 - e1);
    n += batch;
  }
  client.free();
  conn.free();
  sctx.free();
  toServer.close();
  toClient.close();
  return {
    suite: SUITES.rsa,
    payloadBytes: PAYLOAD,
    records: n,
    encryptPerSec: round(n / (encNs / 1e9)),
    decryptPerSec: round(n / (decNs / 1e9)),
  };
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}

async function main(): Promise<void> {
  const srvRsa = makeId('srv-rsa', 'rsa');
  const srvEc = makeId('srv-ec', 'ec');
  const cliRsa = makeId('cli-rsa', 'rsa');
  const cliEc = makeId('cli-ec', 'ec');
  const server = await DtlsServer.listen({
    host: '127.0.0.1',
    port: 0,
    identities: [srvRsa, srvEc],
    verifyPeer: () => Promise.resolve({ accept: true }),
    maxHandshakes: 1024,
  });
  try {
    const speed = opensslSpeed();
    const hsRsa = await handshakes(server, 'rsa', cliRsa, srvRsa.certPem);
    const hsEc = await handshakes(server, 'ec', cliEc, srvEc.certPem);
    const sock = await socketRecords(server, cliRsa, srvRsa.certPem);
    const mem = memoryRecords(srvRsa, cliRsa);
    const result = {
      bench: 'dtls',
      node: process.versions.node,
      openssl: opensslVersion(),
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? '',
      seconds,
      note: 'client and server run in one process: handshake and socket figures include both ends',
      handshakes: { rsa3072: hsRsa, p256: hsEc },
      records: { sockets: sock, memory: mem },
      opensslSpeedAes256Gcm: { blockBytes: PAYLOAD, ...speed },
      ratios: {
        memoryEncryptToOpensslSpeed: round(mem.encryptPerSec / speed.recordsPerSec),
        memoryDecryptToOpensslSpeed: round(mem.decryptPerSec / speed.recordsPerSec),
        socketReceivedToOpensslSpeed: round(sock.receivedPerSec / speed.recordsPerSec),
      },
    };
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(
    `dtls bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  rmSync(dir, { recursive: true, force: true });
  process.exitCode = 1;
});
