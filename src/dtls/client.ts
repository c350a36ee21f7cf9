/**
 * DTLS 1.2 client (the enclave simulator's and the tests' side): one UDP socket per session,
 * the server certificate pinned.
 */
import dgram from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { errorMessage, InputError } from '../util/errors.js';
import { silentLogger } from '../util/log.js';
import { F_FATAL, F_HANDSHAKE_DONE, F_OUTPUT, loadAddon, type NativeConn } from './native.js';
import { nativeError } from './server.js';
import { DtlsSession } from './session.js';
import { DEFAULT_CIPHERS, DtlsError, type DtlsConnectOptions } from './types.js';

/** Connects, completes the handshake (client certificate, pinned server certificate) and resolves the session. */
export async function dtlsConnect(opts: DtlsConnectOptions): Promise<DtlsSession> {
  if (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535) {
    throw new InputError(`DTLS server port must be 1..65535, got ${opts.port}`);
  }
  const logger = opts.logger ?? silentLogger;
  let host = opts.host;
  if (isIP(host) === 0) {
    try {
      host = (await lookup(host)).address;
    } catch (err) {
      throw new DtlsError('EDTLS_RESOLVE', `cannot resolve ${opts.host}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
  }
  const family = isIP(host);
  const addon = loadAddon();
  let ctx;
  try {
    ctx = new addon.Context({
      server: false,
      identities: [{ certPem: opts.certPem, keyPem: opts.keyPem }],
      cipherList: opts.cipherList ?? DEFAULT_CIPHERS,
      caPem: opts.caPem,
      mtu: opts.mtu ?? 1500,
    });
  } catch (err) {
    throw nativeError(err, 'cannot set up the DTLS client');
  }
  let bound: { fd: number; port: number };
  try {
    bound = addon.openUdp(
      opts.localAddress ?? (family === 6 ? '::' : '0.0.0.0'),
      0,
      opts.socketBufferBytes ?? 1 << 20,
    );
  } catch (err) {
    ctx.free();
    throw nativeError(err, 'cannot open a UDP socket');
  }
  const socket = dgram.createSocket({ type: family === 6 ? 'udp6' : 'udp4' });
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind({ fd: bound.fd }, () => {
        socket.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    ctx.free();
    addon.closeFd(bound.fd);
    throw new DtlsError('EDTLS_SOCKET', `cannot use the UDP socket: ${errorMessage(err)}`, { cause: err });
  }
  let conn: NativeConn;
  try {
    conn = ctx.connect(host, opts.port, bound.fd);
  } catch (err) {
    socket.close();
    throw nativeError(err, 'cannot start the DTLS handshake');
  } finally {
    ctx.free(); // the connection keeps what it needs
  }
  const port = opts.port;
  let socketClosed = false;
  socket.once('close', () => (socketClosed = true));
  const sendRaw = (d: Buffer): void => {
    if (socketClosed) return;
    socket.send(d, port, host, (err) => {
      if (err) logger.debug({ err: errorMessage(err) }, 'dtls send failed');
    });
  };
  const flush = (): void => {
    const out = conn.takeOutput();
    if (out) for (const d of out) sendRaw(d);
  };
  const slab = Buffer.alloc(0);
  const lens = new Uint32Array(1);

  return new Promise<DtlsSession>((resolve, reject) => {
    let rtx: NodeJS.Timeout | undefined;
    let session: DtlsSession | undefined;
    let settled = false;
    const fail = (err: DtlsError): void => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      if (rtx) clearTimeout(rtx);
      flush();
      conn.free();
      socket.close();
      reject(err);
    };
    const deadline = setTimeout(
      () =>
        fail(
          new DtlsError(
            'EDTLS_TIMEOUT',
            `DTLS handshake with ${host}:${port} did not finish in ${opts.handshakeTimeoutMs ?? 5000} ms`,
            {
              hint: 'is the gateway running on that address and port, and reachable over UDP?',
            },
          ),
        ),
      opts.handshakeTimeoutMs ?? 5000,
    );
    const step = (flags: number): void => {
      if (flags & F_OUTPUT) flush();
      if (flags & F_FATAL) {
        const info = conn.info();
        const alert = info.alertReceived?.level === 'fatal' ? info.alertReceived.name : undefined;
        fail(
          new DtlsError(
            'EDTLS_HANDSHAKE',
            alert
              ? `DTLS handshake with ${host}:${port} failed: the server sent alert '${alert}'`
              : `DTLS handshake with ${host}:${port} failed: ${info.error || 'protocol error'}`,
            alert ? { alert } : {},
          ),
        );
        return;
      }
      if (flags & F_HANDSHAKE_DONE) {
        settled = true;
        clearTimeout(deadline);
        if (rtx) clearTimeout(rtx);
        session = new DtlsSession({
          conn,
          sink: { send: sendRaw },
          remoteAddress: host,
          remotePort: port,
          localPort: bound.port,
          peerChain: conn.peerChain(),
          idleTimeoutMs: opts.idleTimeoutMs ?? 120_000,
          logger,
          onEnd: () => socket.close(),
        });
        session.input(null); // records that arrived with the server's Finished
        resolve(session);
        return;
      }
      if (rtx) clearTimeout(rtx);
      rtx = undefined;
      const ms = conn.nextTimeout();
      if (ms >= 0) {
        rtx = setTimeout(() => {
          rtx = undefined;
          if (!settled) step(conn.timeout() & 0xff);
        }, ms);
      }
    };
    socket.on('message', (msg, rinfo) => {
      if (rinfo.port !== port || rinfo.address !== host || msg.length === 0) return;
      if (session) session.input(msg);
      else if (!settled) step(conn.input(msg, slab, 0, lens) & 0xff);
    });
    socket.on('error', (err) => {
      if (session) session.end('error', errorMessage(err));
      else fail(new DtlsError('EDTLS_SOCKET', `UDP socket error: ${errorMessage(err)}`, { cause: err }));
    });
    step(conn.input(null, slab, 0, lens) & 0xff);
  });
}
