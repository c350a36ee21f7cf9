/**
 * DTLS 1.2 server over one UDP socket serving many peers, demultiplexed by address and port.
 *
 * Life of a peer:
 *   1. Unknown address:port → the datagram goes to the stateless listener (DTLSv1_listen with an
 *      HMAC cookie over address:port and a rotating secret): a HelloVerifyRequest goes back and
 *      nothing is remembered, or the cookie is valid and a handshake starts.
 *   2. Handshake: retransmission timer, deadline. After the client's final flight the addon holds
 *      our final flight back; the chain goes to the asynchronous verifyPeer hook.
 *   3. Accepted → our final flight is released, a DtlsSession is emitted ('session').
 *      Rejected → a fatal alert (default access_denied) in epoch 0 tells the client why.
 */
import { EventEmitter } from 'node:events';
import dgram from 'node:dgram';
import { isIP } from 'node:net';
import type { Logger } from 'pino';
import { errorMessage, InputError } from '../util/errors.js';
import { silentLogger } from '../util/log.js';
import {
  F_FATAL,
  F_HANDSHAKE_DONE,
  F_OUTPUT,
  loadAddon,
  type NativeConn,
  type NativeContext,
} from './native.js';
import { DtlsSession, type DatagramSink } from './session.js';
import {
  ALERT_CODES,
  DEFAULT_CIPHERS,
  DtlsError,
  type CloseReason,
  type DtlsServerOptions,
  type PeerAddress,
  type PeerVerdict,
} from './types.js';

export interface DtlsServerStats {
  /** Handshakes in progress (verification included). */
  handshakes: number;
  /** Established sessions. */
  sessions: number;
  /** HelloVerifyRequests sent. */
  cookiesSent: number;
  /** Peers the verification hook rejected (or that it failed for). */
  rejected: number;
  /** Sessions established since start. */
  accepted: number;
  /** Handshakes that failed in the protocol (bad messages, alerts, no certificate, ...). */
  failed: number;
  /** Handshakes that missed the deadline. */
  timedOut: number;
  /** Datagrams from unknown peers dropped without a reply (garbage, not a ClientHello, ...). */
  dropped: number;
  /** New peers turned away because a limit (maxHandshakes / maxSessions) was reached. */
  busy: number;
}

interface Handshake {
  conn: NativeConn;
  address: string;
  port: number;
  key: string;
  random: string;
  verifying: boolean;
  deadline: NodeJS.Timeout;
  rtx: NodeJS.Timeout | undefined;
}

type Entry =
  { hs: Handshake; session?: undefined } | { hs?: undefined; session: DtlsSession; random: string };

export interface DtlsServerEvents {
  session: [session: DtlsSession];
  error: [err: Error];
}

/** Offset of the 32-byte client random in an unfragmented ClientHello datagram. */
const RANDOM_OFF = 13 + 12 + 2;

/** An epoch-0 ClientHello (start of a new handshake), by its headers; its random as hex. */
function clientHelloRandom(d: Buffer): string | undefined {
  if (d.length < RANDOM_OFF + 32 || d[0] !== 22 || d[3] !== 0 || d[4] !== 0 || d[13] !== 1) return undefined;
  return d.toString('hex', RANDOM_OFF, RANDOM_OFF + 32);
}

export class DtlsServer extends EventEmitter<DtlsServerEvents> {
  readonly address: { address: string; port: number };

  private readonly ctx: NativeContext;
  private readonly socket: dgram.Socket;
  private readonly opts: Required<Omit<DtlsServerOptions, 'logger' | 'cipherList'>> & { cipherList: string };
  private readonly logger: Logger;
  private readonly peers = new Map<string, Entry>();
  private readonly cookieTimer: NodeJS.Timeout;
  private handshakeCount = 0;
  private sessionCount = 0;
  private closing: Promise<void> | undefined;
  private socketClosed = false;
  private readonly counters = {
    cookiesSent: 0,
    rejected: 0,
    accepted: 0,
    failed: 0,
    timedOut: 0,
    dropped: 0,
    busy: 0,
  };
  private readonly sink: (address: string, port: number) => DatagramSink;

  private constructor(
    ctx: NativeContext,
    socket: dgram.Socket,
    address: { address: string; port: number },
    opts: DtlsServer['opts'],
    logger: Logger,
  ) {
    super();
    this.ctx = ctx;
    this.socket = socket;
    this.address = address;
    this.opts = opts;
    this.logger = logger;
    this.sink = (addr, port) => ({ send: (d) => this.sendRaw(d, port, addr) });
    this.cookieTimer = setInterval(() => this.ctx.rotateCookieSecret(), opts.cookieRotationMs);
    this.cookieTimer.unref();
    socket.on('message', (msg, rinfo) => this.onDatagram(msg, rinfo.address, rinfo.port));
    // A socket error must not take the process down when nobody listens for 'error'.
    socket.on('error', (err) => {
      if (this.listenerCount('error') > 0) this.emit('error', err);
      else this.logger.error({ err: errorMessage(err) }, 'dtls server socket error');
    });
  }

  /** Binds host:port (port 0: any free port) and starts serving. */
  static async listen(options: DtlsServerOptions): Promise<DtlsServer> {
    if (isIP(options.host) === 0) {
      throw new InputError(`DTLS listen address must be an IP address, got '${options.host}'`);
    }
    if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
      throw new InputError(`DTLS port must be 0..65535, got ${options.port}`);
    }
    if (typeof options.verifyPeer !== 'function') throw new InputError('verifyPeer hook is required');
    const opts: DtlsServer['opts'] = {
      host: options.host,
      port: options.port,
      identities: options.identities,
      cipherList: options.cipherList ?? DEFAULT_CIPHERS,
      verifyPeer: options.verifyPeer,
      mtu: options.mtu ?? 1500,
      handshakeTimeoutMs: options.handshakeTimeoutMs ?? 5000,
      idleTimeoutMs: options.idleTimeoutMs ?? 120_000,
      maxHandshakes: options.maxHandshakes ?? 256,
      maxSessions: options.maxSessions ?? 10_000,
      cookieRotationMs: options.cookieRotationMs ?? 30_000,
      socketBufferBytes: options.socketBufferBytes ?? 4 * 1024 * 1024,
    };
    const logger = options.logger ?? silentLogger;
    const addon = loadAddon();
    let ctx: NativeContext;
    try {
      ctx = new addon.Context({
        server: true,
        identities: opts.identities,
        cipherList: opts.cipherList,
        mtu: opts.mtu,
      });
    } catch (err) {
      throw nativeError(err, 'cannot set up the DTLS server');
    }
    let bound: { fd: number; port: number };
    try {
      bound = addon.openUdp(opts.host, opts.port, opts.socketBufferBytes);
    } catch (err) {
      ctx.free();
      throw nativeError(err, `cannot listen on ${opts.host}:${opts.port}`);
    }
    const socket = dgram.createSocket({ type: isIP(opts.host) === 6 ? 'udp6' : 'udp4' });
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
    ctx.setFd(bound.fd);
    const server = new DtlsServer(ctx, socket, { address: opts.host, port: bound.port }, opts, logger);
    logger.debug({ address: opts.host, port: bound.port }, 'dtls server listening');
    return server;
  }

  stats(): DtlsServerStats {
    return { handshakes: this.handshakeCount, sessions: this.sessionCount, ...this.counters };
  }

  /** The established sessions. */
  sessions(): DtlsSession[] {
    const out: DtlsSession[] = [];
    for (const e of this.peers.values()) if (e.session) out.push(e.session);
    return out;
  }

  /** Sends close_notify to every session, drops handshakes, then closes the socket. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      clearInterval(this.cookieTimer);
      for (const [key, e] of [...this.peers]) {
        if (e.session) e.session.close('server-shutdown');
        else this.dropHandshake(e.hs, 'server-shutdown');
        this.peers.delete(key);
      }
      this.ctx.free();
      this.socketClosed = true;
      await new Promise<void>((resolve) => this.socket.close(() => resolve()));
      this.logger.debug({ port: this.address.port }, 'dtls server closed');
    })();
    return this.closing;
  }

  // -------------------------------------------------------------------------------------------

  private onDatagram(msg: Buffer, address: string, port: number): void {
    if (this.closing || msg.length === 0) return;
    const key = `${address}:${port}`;
    const entry = this.peers.get(key);
    if (entry) {
      const random = clientHelloRandom(msg);
      const current = entry.hs ? entry.hs.random : entry.random;
      if (random === undefined || random === current) {
        if (entry.session) entry.session.input(msg);
        else if (!entry.hs.verifying) this.drive(entry.hs, msg);
        return;
      }
      // A new ClientHello from a known address:port: the peer restarted. Only a valid cookie
      // (proof that it receives at this address) replaces the existing state.
    }
    if (!entry && this.handshakeCount >= this.opts.maxHandshakes) {
      this.counters.busy++;
      return;
    }
    if (!entry && this.handshakeCount + this.sessionCount >= this.opts.maxSessions) {
      this.counters.busy++;
      return;
    }
    let r: NativeConn | number;
    try {
      r = this.ctx.listen(msg, address, port);
    } catch (err) {
      this.logger.warn({ peer: key, err: errorMessage(err) }, 'dtls listen failed');
      return;
    }
    if (typeof r === 'number') {
      if (r === 0) this.counters.dropped++;
      else this.counters.cookiesSent++;
      if (r === 2) {
        const out = this.ctx.takeOutput();
        if (out) for (const d of out) this.sendRaw(d, port, address);
      }
      return;
    }
    if (entry) {
      if (entry.session) entry.session.end('replaced', 'new handshake from the same address and port');
      else this.dropHandshake(entry.hs, 'replaced');
    }
    const hs: Handshake = {
      conn: r,
      address,
      port,
      key,
      random: clientHelloRandom(msg) ?? '',
      verifying: false,
      rtx: undefined,
      deadline: setTimeout(() => this.onDeadline(hs), this.opts.handshakeTimeoutMs),
    };
    this.peers.set(key, { hs });
    this.handshakeCount++;
    this.drive(hs, null);
  }

  private drive(hs: Handshake, datagram: Buffer | null): void {
    const flags = hs.conn.input(datagram, EMPTY_SLAB, 0, EMPTY_LENS) & 0xff;
    this.afterStep(hs, flags);
  }

  private afterStep(hs: Handshake, flags: number): void {
    if (flags & F_OUTPUT) this.flushConn(hs);
    if (flags & F_FATAL) {
      const info = hs.conn.info();
      this.counters.failed++;
      this.logger.debug(
        {
          peer: hs.key,
          error: info.error,
          alertReceived: info.alertReceived?.name,
          alertSent: info.alertSent?.name,
        },
        'dtls handshake failed',
      );
      this.dropHandshake(hs, 'failed');
      return;
    }
    if (flags & F_HANDSHAKE_DONE) {
      hs.verifying = true;
      if (hs.rtx) clearTimeout(hs.rtx);
      hs.rtx = undefined;
      this.verify(hs);
      return;
    }
    this.armRetransmit(hs);
  }

  private armRetransmit(hs: Handshake): void {
    if (hs.rtx) clearTimeout(hs.rtx);
    hs.rtx = undefined;
    const ms = hs.conn.nextTimeout();
    if (ms < 0) return;
    hs.rtx = setTimeout(() => {
      hs.rtx = undefined;
      if (this.peers.get(hs.key)?.hs !== hs || hs.verifying) return;
      this.afterStep(hs, hs.conn.timeout() & 0xff);
    }, ms);
  }

  private verify(hs: Handshake): void {
    const chain = hs.conn.peerChain();
    const peer: PeerAddress = { address: hs.address, port: hs.port };
    let verdict: Promise<PeerVerdict>;
    try {
      verdict = Promise.resolve(this.opts.verifyPeer(chain, peer));
    } catch (err) {
      verdict = Promise.reject(err);
    }
    verdict.then(
      (v) => this.onVerdict(hs, chain, v),
      (err: unknown) => {
        this.logger.error(
          { peer: hs.key, err: errorMessage(err) },
          'dtls verifyPeer hook failed; rejecting the peer',
        );
        this.onVerdict(hs, chain, {
          accept: false,
          reason: `verification error: ${errorMessage(err)}`,
          alert: 'internal_error',
        });
      },
    );
  }

  private onVerdict(hs: Handshake, chain: Buffer[], v: PeerVerdict): void {
    if (this.peers.get(hs.key)?.hs !== hs) return; // timed out, replaced or shut down meanwhile
    if (!v || v.accept !== true) {
      const reason = v && v.accept === false ? v.reason : 'invalid verdict';
      const alert = (v && v.accept === false && v.alert) || 'access_denied';
      this.counters.rejected++;
      this.logger.info({ peer: hs.key, reason, alert }, 'dtls peer rejected');
      const flags = hs.conn.reject(ALERT_CODES[alert] ?? ALERT_CODES.access_denied);
      if (flags & F_OUTPUT) this.flushConn(hs);
      this.dropHandshake(hs, 'rejected');
      return;
    }
    const flags = hs.conn.release();
    if (flags & F_OUTPUT) this.flushConn(hs);
    clearTimeout(hs.deadline);
    this.handshakeCount--;
    const session = new DtlsSession({
      conn: hs.conn,
      sink: this.sink(hs.address, hs.port),
      remoteAddress: hs.address,
      remotePort: hs.port,
      localPort: this.address.port,
      peerChain: chain,
      verifyContext: v.context,
      idleTimeoutMs: this.opts.idleTimeoutMs,
      logger: this.logger,
      onEnd: (s, reason) => this.onSessionEnd(hs.key, s, reason),
    });
    this.peers.set(hs.key, { session, random: hs.random });
    this.sessionCount++;
    this.counters.accepted++;
    this.logger.debug({ peer: hs.key, cipher: session.cipher }, 'dtls session established');
    this.emit('session', session);
  }

  private onSessionEnd(key: string, s: DtlsSession, _reason: CloseReason): void {
    this.sessionCount--;
    if (this.peers.get(key)?.session === s) this.peers.delete(key);
  }

  private onDeadline(hs: Handshake): void {
    if (this.peers.get(hs.key)?.hs !== hs) return;
    this.counters.timedOut++;
    this.logger.info({ peer: hs.key, verifying: hs.verifying }, 'dtls handshake deadline passed');
    if (hs.verifying) {
      const flags = hs.conn.reject(ALERT_CODES.handshake_failure);
      if (flags & F_OUTPUT) this.flushConn(hs);
    }
    this.dropHandshake(hs, 'timeout');
  }

  private dropHandshake(hs: Handshake, _why: string): void {
    clearTimeout(hs.deadline);
    if (hs.rtx) clearTimeout(hs.rtx);
    hs.rtx = undefined;
    if (this.peers.get(hs.key)?.hs === hs) this.peers.delete(hs.key);
    this.flushConn(hs);
    hs.conn.free();
    this.handshakeCount--;
  }

  private flushConn(hs: Handshake): void {
    const out = hs.conn.takeOutput();
    if (out) for (const d of out) this.sendRaw(d, hs.port, hs.address);
  }

  /** Datagrams the addon could not send itself (EAGAIN): through node's socket, errors logged. */
  private sendRaw(d: Buffer, port: number, address: string): void {
    if (this.socketClosed) return;
    this.socket.send(d, port, address, (err) => {
      if (err) this.logger.debug({ peer: `${address}:${port}`, err: errorMessage(err) }, 'dtls send failed');
    });
  }
}

// The server side never reads application data during the handshake (it holds until the verdict).
const EMPTY_SLAB = Buffer.alloc(0);
const EMPTY_LENS = new Uint32Array(1);

export function nativeError(err: unknown, what: string): DtlsError {
  const code = (err as { code?: unknown }).code;
  const c = typeof code === 'string' ? code : 'EDTLS_NATIVE';
  const hints: Record<string, string> = {
    EDTLS_IDENTITY: 'check that each certPem/keyPem pair is PEM, unencrypted, and belongs together',
    EDTLS_CIPHERS: 'use OpenSSL cipher names such as ECDHE-RSA-AES256-GCM-SHA384',
    EDTLS_CA: 'give the gateway certificate (PEM) to pin',
    EADDRINUSE: 'another process uses this port; pick another one or stop it',
    EADDRNOTAVAIL: 'the address is not configured on this host',
    EACCES: 'binding this port needs privileges',
  };
  const hint = hints[c];
  return new DtlsError(c, `${what}: ${errorMessage(err)}`, { cause: err, ...(hint ? { hint } : {}) });
}
