/**
 * DTLS 1.2 client (the enclave simulator's and the tests' side): one UDP socket per session,
 * the server certificate pinned. IPv4 (SPEC §1.1).
 */
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { errorMessage, InputError } from '../util/errors.js';
import { silentLogger } from '../util/log.js';
import { F_FATAL, F_HANDSHAKE_DONE, loadAddon, type NativeConn } from './native.js';
import { nativeError } from './errors.js';
import { UdpEndpoint, ipv4FromString } from './endpoint.js';
import { ReceiveRoute } from './recv-route.js';
import { DtlsSession } from './session.js';
import { DEFAULT_CIPHERS, DtlsError, type DtlsConnectOptions } from './types.js';

/** The UDP socket of each client session (for a TunDispatch that sends on it). */
const sessionSockets = new WeakMap<DtlsSession, number>();

/** The fd of a client session's own UDP socket while it is open; undefined for other sessions. */
export function clientSocketFd(session: DtlsSession): number | undefined {
  return session.open ? sessionSockets.get(session) : undefined;
}

/**
 * Client, established: continue on the native record layer (keys and sequence numbers taken from
 * OpenSSL, the SSL object freed; native/dtls/src/conn.cc), as the gateway's sessions do after the
 * verdict. Needed before the session can be a TunDispatch route. Call it outside a 'message'
 * listener of this session (then OpenSSL holds no unread record). False: the session stays on
 * OpenSSL (closed, a server session, or a suite the native layer does not implement).
 */
export function handOffClientSession(session: DtlsSession): boolean {
  if (!sessionSockets.has(session)) return false;
  return session.nativeConn()?.handOff() ?? false;
}

/** Connects, completes the handshake (client certificate, pinned server certificate) and resolves the session. */
export async function dtlsConnect(opts: DtlsConnectOptions): Promise<DtlsSession> {
  if (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535) {
    throw new InputError(`DTLS server port must be 1..65535, got ${opts.port}`);
  }
  const logger = opts.logger ?? silentLogger;
  let host = opts.host;
  if (isIP(host) === 0) {
    try {
      host = (await lookup(host, { family: 4 })).address;
    } catch (err) {
      throw new DtlsError('EDTLS_RESOLVE', `cannot resolve ${opts.host}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
  }
  if (isIP(host) !== 4) throw new InputError(`DTLS server address must be IPv4 (SPEC §1.1), got '${host}'`);
  const serverIp = ipv4FromString(host);
  const port = opts.port;
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
  // Datagrams from the server go to whichever stage is current (handshake, then session).
  let onServerDatagram: (arena: Buffer, off: number, len: number) => void = () => {};
  // Threaded: decrypted records of the routed session that the forwarder leaves to JavaScript.
  let onServerRecord: (record: Buffer) => void = () => {};
  let endpoint: UdpEndpoint;
  try {
    endpoint = UdpEndpoint.open(
      opts.localAddress ?? '0.0.0.0',
      0,
      opts.socketBufferBytes ?? 1 << 20,
      (arena, off, len, ip, p) => {
        if (ip === serverIp && p === port) onServerDatagram(arena, off, len);
      },
      opts.receiveBatch ?? 8, // one peer: a small arena (8 × 18 KiB) is plenty unless it streams
      opts.receiveThread
        ? {
            onRecord: (arena, off, len, ip, p) => {
              if (ip === serverIp && p === port) onServerRecord(Buffer.from(arena.subarray(off, off + len)));
            },
          }
        : undefined,
    );
  } catch (err) {
    ctx.free();
    throw err;
  }
  // The thread's entry for the server: set by the session's forwardTo, removed when it ends.
  const receiveRoute = opts.receiveThread ? new ReceiveRoute(endpoint, serverIp, port) : undefined;
  let conn: NativeConn;
  try {
    conn = ctx.connect(host, port, endpoint.fd);
  } catch (err) {
    void endpoint.close();
    throw nativeError(err, 'cannot start the DTLS handshake');
  } finally {
    ctx.free(); // the connection keeps what it needs
  }
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
      conn.free();
      void endpoint.close();
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
          remoteAddress: host,
          remotePort: port,
          localPort: endpoint.port,
          peerChain: conn.peerChain(),
          idleTimeoutMs: opts.idleTimeoutMs ?? 120_000,
          logger,
          onEnd: () => void endpoint.close(),
          receiveRoute,
        });
        const established = session;
        onServerRecord = (record) => established.receivedRecord(record);
        sessionSockets.set(session, endpoint.fd);
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
    onServerDatagram = (arena, off, len) => {
      if (session) session.input(arena, off, len);
      else if (!settled) step(conn.input(arena, slab, 0, lens, off, len) & 0xff);
    };
    step(conn.input(null, slab, 0, lens) & 0xff);
  });
}
