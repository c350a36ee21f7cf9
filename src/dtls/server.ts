/**
 * DTLS 1.2 server over one UDP socket serving many peers, demultiplexed by address and port.
 *
 * Life of a peer:
 *   1. Unknown address:port → the datagram goes to the stateless listener (DTLSv1_listen with an
 *      HMAC cookie over address:port and a rotating secret): a HelloVerifyRequest goes back and
 *      nothing is remembered, or the cookie is valid and a handshake starts.
 *   2. Handshake: retransmission timer, deadline. After the client's final flight the addon holds
 *      our final flight back; the chain goes to the asynchronous verifyPeer hook.
 *   3. Accepted → our final flight is released (a copy is kept for the client's retransmissions),
 *      the session moves to the addon's native record layer (the SSL object is freed) and a
 *      DtlsSession is emitted ('session').
 *      Rejected → a fatal alert (default access_denied) in epoch 0 tells the client why.
 */
import { EventEmitter } from 'node:events';
import { isIP } from 'node:net';
import type { Logger } from 'pino';
import { errorMessage, InputError } from '../util/errors.js';
import { silentLogger } from '../util/log.js';
import {
  F_FATAL,
  F_HANDSHAKE_DONE,
  loadAddon,
  type NativeConn,
  type NativeContext,
  type NativeRecvThreadStats,
  type NativeTunDispatch,
} from './native.js';
import { HelloQueue, type QueuedHello } from './hello-queue.js';
import { HandshakePacer } from './pacer.js';
import { ReceiveRoute, type ReceiveRouteStats } from './recv-route.js';
import { TunDispatch } from './dispatch.js';
import { DtlsSession } from './session.js';
import { UdpEndpoint, ipv4ToString } from './endpoint.js';
import { nativeError } from './errors.js';
import {
  ALERT_CODES,
  DEFAULT_CIPHERS,
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
  /** New peers turned away: maxSessions reached, or the hello queue (or its share per address) full. */
  busy: number;
  /**
   * Cookie-verified ClientHellos (retransmissions included) that could not start at once — the
   * handshake slots, the pacer's limit (src/dtls/pacer.ts) or the per-address limit — and were
   * queued or found already queued (src/dtls/hello-queue.ts).
   */
  deferred: number;
  /** Handshakes the pacer lets run at once now. */
  handshakeLimit: number;
  /** ClientHellos waiting in the queue now. */
  queued: number;
  /** ClientHellos queued since start (one per waiting peer). */
  queuedTotal: number;
  /** Queued ClientHellos started when a slot freed. */
  queueStarted: number;
  /** Queued ClientHellos dropped because they waited longer than handshakeQueueMs. */
  queueExpired: number;
}

interface Handshake {
  conn: NativeConn;
  address: string;
  ip: number;
  port: number;
  key: number;
  random: string;
  /** performance.now() when the handshake started (valid cookie). */
  started: number;
  verifying: boolean;
  deadline: NodeJS.Timeout;
  rtx: NodeJS.Timeout | undefined;
}

type Entry =
  | { hs: Handshake; session?: undefined }
  | { hs?: undefined; session: DtlsSession; random: string; recv: ReceiveRoute | undefined };

export interface DtlsServerEvents {
  session: [session: DtlsSession];
  error: [err: Error];
}

/** Offset of the 32-byte client random in an unfragmented ClientHello datagram. */
const RANDOM_OFF = 13 + 12 + 2;

/** An epoch-0 ClientHello (start of a new handshake), by its headers; its random as hex. */
function clientHelloRandom(d: Buffer, off: number, len: number): string | undefined {
  if (len < RANDOM_OFF + 32 || d[off] !== 22 || d[off + 3] !== 0 || d[off + 4] !== 0 || d[off + 13] !== 1) {
    return undefined;
  }
  return d.toString('hex', off + RANDOM_OFF, off + RANDOM_OFF + 32);
}

/**
 * An unfragmented epoch-0 ClientHello: its random (hex) and where its cookie is in `d` (length 0:
 * no cookie). Everything is bounds-checked against the record and the handshake message.
 */
export function parseClientHello(
  d: Buffer,
  off: number,
  len: number,
): { random: string; cookieOffset: number; cookieLength: number } | undefined {
  if (off < 0 || len < 0 || off + len > d.length || len < RANDOM_OFF + 32 + 2) return undefined;
  if (d[off] !== 22 || d[off + 3] !== 0 || d[off + 4] !== 0) return undefined;
  const recordEnd = off + 13 + d.readUInt16BE(off + 11);
  if (recordEnd > off + len) return undefined;
  const h = off + 13;
  if (d[h] !== 1) return undefined;
  const msgLen = d.readUIntBE(h + 1, 3);
  if (d.readUIntBE(h + 6, 3) !== 0 || d.readUIntBE(h + 9, 3) !== msgLen) return undefined; // fragmented
  const bodyEnd = h + 12 + msgLen;
  if (bodyEnd > recordEnd) return undefined;
  let p = off + RANDOM_OFF + 32;
  if (p + 1 > bodyEnd) return undefined;
  const sessionIdLength = d.readUInt8(p);
  p += 1 + sessionIdLength;
  if (sessionIdLength > 32 || p + 1 > bodyEnd) return undefined;
  const cookieLength = d.readUInt8(p);
  p += 1;
  if (p + cookieLength > bodyEnd) return undefined;
  return {
    random: d.toString('hex', off + RANDOM_OFF, off + RANDOM_OFF + 32),
    cookieOffset: p,
    cookieLength,
  };
}

/** Peers are keyed by IPv4 address and port as one number (exact below 2^53). */
function peerKey(ip: number, port: number): number {
  return ip * 65536 + port;
}

export class DtlsServer extends EventEmitter<DtlsServerEvents> {
  readonly address: { address: string; port: number };

  private readonly ctx: NativeContext;
  private endpoint!: UdpEndpoint;
  private readonly pacer: HandshakePacer;
  private readonly queue: HelloQueue;
  private drainScheduled = false;
  private readonly opts: Required<Omit<DtlsServerOptions, 'logger' | 'cipherList' | 'receiveThread'>> & {
    cipherList: string;
    receiveThread: boolean;
  };
  private readonly logger: Logger;
  private readonly peers = new Map<number, Entry>();
  private readonly cookieTimer: NodeJS.Timeout;
  private handshakeCount = 0;
  /** Handshakes in progress per IPv4 address. */
  private readonly handshakesByIp = new Map<number, number>();
  private sessionCount = 0;
  private closing: Promise<void> | undefined;
  private readonly dispatches = new Set<TunDispatch>();
  private readonly counters = {
    cookiesSent: 0,
    rejected: 0,
    accepted: 0,
    failed: 0,
    timedOut: 0,
    dropped: 0,
    busy: 0,
    deferred: 0,
    queueStarted: 0,
  };

  private constructor(ctx: NativeContext, host: string, opts: DtlsServer['opts'], logger: Logger) {
    super();
    this.ctx = ctx;
    this.opts = opts;
    this.logger = logger;
    this.pacer = new HandshakePacer({
      max: opts.maxHandshakes,
      targetMs: opts.handshakeLatencyTargetMs,
      // SENG_HANDSHAKE_PACER=0: every slot up to maxHandshakes at once (A/B runs of the bench).
      ...(process.env.SENG_HANDSHAKE_PACER === '0' ? { floor: opts.maxHandshakes } : {}),
    });
    this.queue = new HelloQueue({
      // SENG_HELLO_QUEUE=0: no queue even where an option asks for one (A/B runs of the bench).
      max: process.env.SENG_HELLO_QUEUE === '0' ? 0 : opts.handshakeQueueSize,
      maxPerAddress: Math.ceil((opts.handshakeQueueSize * opts.maxHandshakesPerAddress) / opts.maxHandshakes),
      maxAgeMs: opts.handshakeQueueMs,
    });
    this.endpoint = UdpEndpoint.open(
      host,
      opts.port,
      opts.socketBufferBytes,
      (arena, off, len, ip, port) => this.onDatagram(arena, off, len, ip, port),
      32,
      opts.receiveThread
        ? { onRecord: (arena, off, len, ip, port) => this.onRecord(arena, off, len, ip, port) }
        : undefined,
    );
    this.address = { address: host, port: this.endpoint.port };
    this.ctx.setFd(this.endpoint.fd);
    this.cookieTimer = setInterval(() => this.ctx.rotateCookieSecret(), opts.cookieRotationMs);
    this.cookieTimer.unref();
  }

  /** Binds host:port (port 0: any free port) and starts serving. */
  static async listen(options: DtlsServerOptions): Promise<DtlsServer> {
    if (isIP(options.host) !== 4) {
      throw new InputError(`DTLS listen address must be an IPv4 address (SPEC §1.1), got '${options.host}'`);
    }
    if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
      throw new InputError(`DTLS port must be 0..65535, got ${options.port}`);
    }
    if (typeof options.verifyPeer !== 'function') throw new InputError('verifyPeer hook is required');
    const handshakeTimeoutMs = options.handshakeTimeoutMs ?? 5000;
    const handshakeLatencyTargetMs = options.handshakeLatencyTargetMs ?? handshakeTimeoutMs / 2;
    const maxHandshakes = options.maxHandshakes ?? 256;
    const cookieRotationMs = options.cookieRotationMs ?? 30_000;
    const opts: DtlsServer['opts'] = {
      host: options.host,
      port: options.port,
      identities: options.identities,
      cipherList: options.cipherList ?? DEFAULT_CIPHERS,
      verifyPeer: options.verifyPeer,
      mtu: options.mtu ?? 1500,
      handshakeTimeoutMs,
      handshakeLatencyTargetMs,
      idleTimeoutMs: options.idleTimeoutMs ?? 120_000,
      maxHandshakes,
      maxSessions: options.maxSessions ?? 10_000,
      maxHandshakesPerAddress: options.maxHandshakesPerAddress ?? 32,
      cookieRotationMs,
      // Off unless asked for (SENG_HELLO_QUEUE=1 turns the default on): measured on a machine
      // whose clients share the gateway's CPUs, the queue made reconnect bursts worse (docs/dtls.md).
      handshakeQueueSize:
        options.handshakeQueueSize ?? (process.env.SENG_HELLO_QUEUE === '1' ? 16 * maxHandshakes : 0),
      // A hello that waited longer than a handshake should take has used up much of its client's
      // patience: under overload the oldest entries expire (their clients retransmit) instead of
      // every client waiting its whole setup timeout in line. Well inside the cookie's validity.
      handshakeQueueMs: options.handshakeQueueMs ?? Math.min(handshakeLatencyTargetMs, cookieRotationMs / 2),
      socketBufferBytes: options.socketBufferBytes ?? 4 * 1024 * 1024,
      retainPeerChain: options.retainPeerChain ?? true,
      receiveThread: options.receiveThread ?? process.env.SENG_NATIVE_RECV_THREAD !== '0',
    };
    const positive = (name: string, v: number, min: number): void => {
      if (!Number.isFinite(v) || v < min)
        throw new InputError(`DTLS option ${name} must be a number ≥ ${min}, got ${v}`);
    };
    positive('mtu', opts.mtu, 576);
    positive('handshakeTimeoutMs', opts.handshakeTimeoutMs, 1);
    positive('handshakeLatencyTargetMs', opts.handshakeLatencyTargetMs, 1);
    positive('idleTimeoutMs', opts.idleTimeoutMs, 0);
    positive('maxHandshakes', opts.maxHandshakes, 1);
    positive('maxSessions', opts.maxSessions, 1);
    positive('maxHandshakesPerAddress', opts.maxHandshakesPerAddress, 1);
    positive('cookieRotationMs', opts.cookieRotationMs, 1000);
    positive('handshakeQueueSize', opts.handshakeQueueSize, 0);
    positive('handshakeQueueMs', opts.handshakeQueueMs, 1);
    positive('socketBufferBytes', opts.socketBufferBytes, 0);
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
    let server: DtlsServer;
    try {
      server = new DtlsServer(ctx, opts.host, opts, logger);
    } catch (err) {
      ctx.free();
      throw err;
    }
    logger.debug({ address: opts.host, port: server.address.port }, 'dtls server listening');
    return server;
  }

  stats(): DtlsServerStats {
    const q = this.queue.stats();
    return {
      handshakes: this.handshakeCount,
      sessions: this.sessionCount,
      ...this.counters,
      handshakeLimit: this.pacer.limit,
      queued: q.queued,
      queuedTotal: q.enqueued,
      queueExpired: q.expired,
    };
  }

  /** The established sessions. */
  sessions(): DtlsSession[] {
    const out: DtlsSession[] = [];
    for (const e of this.peers.values()) if (e.session) out.push(e.session);
    return out;
  }

  /** The native receive thread's counters, undefined when the socket is read on this thread. */
  receiveThreadStats(): NativeRecvThreadStats | undefined {
    return this.endpoint.threadStats();
  }

  /** What the receive thread did for `session` (forwarded, discarded), undefined without a thread. */
  receiveStats(session: DtlsSession): ReceiveRouteStats | undefined {
    for (const e of this.peers.values()) if (e.session === session) return e.recv?.stats();
    return undefined;
  }

  /**
   * Starts the native gateway → enclave path: a thread of the addon reads the TUN device `tunFd`
   * (not owned; nothing else may read it), routes each packet by destination to the session given to
   * `route()`, seals it with that session's record layer and sends it from this server's socket.
   * Close the dispatch before the device (server.close() closes it too). `vnetHdr`: the device
   * was opened with offload (frames with a virtio_net_hdr; TSO super-packets are segmented).
   */
  dispatchFromTun(tunFd: number, mtu: number, batch = 64, vnetHdr = false): TunDispatch {
    if (this.closing) throw new InputError('the DTLS server is closed');
    let native: NativeTunDispatch;
    try {
      native = new (loadAddon().TunDispatch)(tunFd, this.endpoint.fd, mtu, batch, vnetHdr);
      native.start();
    } catch (err) {
      throw nativeError(err, 'cannot dispatch from the TUN device');
    }
    const dispatch = new TunDispatch(native, tunFd);
    this.dispatches.add(dispatch);
    return dispatch;
  }

  /** Sends close_notify to every session, drops handshakes, then closes the socket. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      clearInterval(this.cookieTimer);
      this.queue.clear();
      for (const d of this.dispatches) d.close();
      this.dispatches.clear();
      for (const [key, e] of [...this.peers]) {
        if (e.session) e.session.close('server-shutdown');
        else this.dropHandshake(e.hs, 'server-shutdown');
        this.peers.delete(key);
      }
      this.ctx.free();
      await this.endpoint.close();
      this.logger.debug({ port: this.address.port }, 'dtls server closed');
    })();
    return this.closing;
  }

  // -------------------------------------------------------------------------------------------

  private onDatagram(arena: Buffer, off: number, len: number, ip: number, port: number): void {
    if (this.closing) return;
    const key = peerKey(ip, port);
    const entry = this.peers.get(key);
    if (entry) {
      const random = clientHelloRandom(arena, off, len);
      const current = entry.hs ? entry.hs.random : entry.random;
      if (random === undefined || random === current) {
        if (entry.session) entry.session.input(arena, off, len);
        else if (!entry.hs.verifying) this.drive(entry.hs, arena, off, len);
        return;
      }
      // A new ClientHello from a known address:port: the peer restarted. Only a valid cookie
      // (proof that it receives at this address) replaces the existing state.
    }
    if (!entry) {
      if (this.handshakeCount + this.sessionCount >= this.opts.maxSessions) {
        this.counters.busy++;
        return;
      }
      // Those that wait go first: a new hello queues behind them even if a slot is free now.
      if (this.queue.size > 0 || !this.slotFor(ip)) {
        this.holdBack(arena, off, len, ip, port, key);
        return;
      }
    }
    this.start(arena, off, len, ip, port, key, entry);
  }

  /** Whether a new handshake may start now (slots, the pacer's limit, sessions). */
  private slotFree(): boolean {
    return (
      this.handshakeCount < this.opts.maxHandshakes &&
      this.handshakeCount < this.pacer.limit &&
      this.handshakeCount + this.sessionCount < this.opts.maxSessions
    );
  }

  /** Whether a new handshake from `ip` may start now. */
  private slotFor(ip: number): boolean {
    return this.slotFree() && (this.handshakesByIp.get(ip) ?? 0) < this.opts.maxHandshakesPerAddress;
  }

  /**
   * A new peer's datagram that cannot start a handshake now. A ClientHello with a valid cookie
   * (the peer proved its address) is queued; one without (or with a stale cookie) gets its
   * HelloVerifyRequest as always — stateless, so a flood costs nothing but the answer —;
   * anything else is dropped.
   */
  private holdBack(arena: Buffer, off: number, len: number, ip: number, port: number, key: number): void {
    const hello = parseClientHello(arena, off, len);
    if (!hello) {
      this.counters.dropped++;
      return;
    }
    const address = ipv4ToString(ip);
    // A retransmission of the queued hello (same client random): its cookie was checked when it
    // queued. Anything else from that address:port proves itself again.
    const repeated = this.queue.randomOf(key) === hello.random;
    if (!repeated && !(hello.cookieLength > 0 && this.cookieValid(address, port, arena, hello))) {
      this.answerStatelessly(arena, off, len, address, port);
      return;
    }
    const result = this.queue.offer(key, ip, port, arena.subarray(off, off + len), hello.random);
    if (result === 'full') this.counters.busy++;
    else this.counters.deferred++;
    this.scheduleDrain();
  }

  private cookieValid(
    address: string,
    port: number,
    arena: Buffer,
    hello: { cookieOffset: number; cookieLength: number },
  ): boolean {
    try {
      return this.ctx.cookieValid(address, port, arena, hello.cookieOffset, hello.cookieLength);
    } catch {
      return false;
    }
  }

  /** The listener's answer to a hello that must not start now: a HelloVerifyRequest or nothing. */
  private answerStatelessly(arena: Buffer, off: number, len: number, address: string, port: number): void {
    const conn = this.listen(arena, off, len, address, port);
    if (conn) {
      // OpenSSL found a valid cookie where the parser did not: no slot for it now.
      conn.free();
      this.counters.dropped++;
    }
  }

  /**
   * Runs a datagram through the stateless listener: a connection when it is a ClientHello with a
   * valid cookie; otherwise undefined, counted as a HelloVerifyRequest sent or as dropped.
   */
  private listen(
    arena: Buffer,
    off: number,
    len: number,
    address: string,
    port: number,
  ): NativeConn | undefined {
    let r: NativeConn | number;
    try {
      r = this.ctx.listen(arena, address, port, off, len);
    } catch (err) {
      this.logger.warn({ peer: `${address}:${port}`, err: errorMessage(err) }, 'dtls listen failed');
      return undefined;
    }
    if (typeof r !== 'number') return r;
    if (r === 0) this.counters.dropped++;
    else this.counters.cookiesSent++;
    return undefined;
  }

  /** Starts queued hellos while slots are free (after a handshake ended or the limit grew). */
  private scheduleDrain(): void {
    if (this.drainScheduled || this.queue.size === 0 || this.closing) return;
    this.drainScheduled = true;
    setImmediate(() => {
      this.drainScheduled = false;
      this.drain();
    });
  }

  private drain(): void {
    const admissible = (q: QueuedHello): boolean => !this.peers.has(q.key) && this.slotFor(q.ip);
    while (!this.closing && this.queue.size > 0 && this.slotFree()) {
      const q = this.queue.take(admissible);
      if (!q) return;
      this.counters.queueStarted++;
      this.start(q.datagram, 0, q.datagram.length, q.ip, q.port, q.key, undefined);
    }
  }

  /**
   * Runs the datagram through the stateless listener and starts a handshake if its cookie is
   * valid; `entry` is the peer's existing state, replaced by the new handshake.
   */
  private start(
    arena: Buffer,
    off: number,
    len: number,
    ip: number,
    port: number,
    key: number,
    entry: Entry | undefined,
  ): void {
    const address = ipv4ToString(ip);
    const r = this.listen(arena, off, len, address, port);
    if (!r) return;
    this.queue.delete(key); // started by a retransmission while its queued copy waited
    if (entry) {
      if (entry.session) entry.session.end('replaced', 'new handshake from the same address and port');
      else this.dropHandshake(entry.hs, 'replaced');
    }
    const hs: Handshake = {
      conn: r,
      address,
      ip,
      port,
      key,
      random: clientHelloRandom(arena, off, len) ?? '',
      started: performance.now(),
      verifying: false,
      rtx: undefined,
      deadline: setTimeout(() => this.onDeadline(hs), this.opts.handshakeTimeoutMs),
    };
    this.peers.set(key, { hs });
    this.countHandshake(ip, +1);
    this.drive(hs, null, 0, 0);
  }

  /** A decrypted record of a routed session that the receive thread left to JavaScript. */
  private onRecord(arena: Buffer, off: number, len: number, ip: number, port: number): void {
    if (this.closing) return;
    // The session may have ended since the thread queued it: then the record is dropped.
    const session = this.peers.get(peerKey(ip, port))?.session;
    session?.receivedRecord(Buffer.from(arena.subarray(off, off + len)));
  }

  private drive(hs: Handshake, datagram: Buffer | null, off: number, len: number): void {
    const flags = hs.conn.input(datagram, EMPTY_SLAB, 0, EMPTY_LENS, off, len) & 0xff;
    this.afterStep(hs, flags);
  }

  private afterStep(hs: Handshake, flags: number): void {
    if (flags & F_FATAL) {
      const info = hs.conn.info();
      this.counters.failed++;
      this.logger.debug(
        {
          peer: `${hs.address}:${hs.port}`,
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
      this.pacer.finished(performance.now() - hs.started);
      this.scheduleDrain(); // the limit may have grown
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
          { peer: `${hs.address}:${hs.port}`, err: errorMessage(err) },
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
      // Per handshake, and the gateway logs its own 'rejected' event: detail only.
      this.logger.debug({ peer: `${hs.address}:${hs.port}`, reason, alert }, 'dtls peer rejected');
      hs.conn.reject(ALERT_CODES[alert] ?? ALERT_CODES.access_denied);
      this.dropHandshake(hs, 'rejected');
      return;
    }
    if (hs.conn.release() & F_FATAL) {
      // The handoff to the native record layer failed (a suite it does not support).
      this.counters.failed++;
      this.logger.warn(
        { peer: `${hs.address}:${hs.port}`, error: hs.conn.info().error },
        'dtls session could not start',
      );
      this.dropHandshake(hs, 'failed');
      return;
    }
    clearTimeout(hs.deadline);
    this.countHandshake(hs.ip, -1);
    const recv = this.opts.receiveThread ? new ReceiveRoute(this.endpoint, hs.ip, hs.port) : undefined;
    const session = new DtlsSession({
      conn: hs.conn,
      remoteAddress: hs.address,
      remotePort: hs.port,
      localPort: this.address.port,
      peerChain: this.opts.retainPeerChain ? chain : NO_CHAIN,
      verifyContext: v.context,
      idleTimeoutMs: this.opts.idleTimeoutMs,
      logger: this.logger,
      onEnd: this.sessionEnder(hs.key),
      receiveRoute: recv,
    });
    this.peers.set(hs.key, { session, random: hs.random, recv });
    this.sessionCount++;
    this.counters.accepted++;
    this.logger.debug(
      { peer: `${hs.address}:${hs.port}`, cipher: session.cipher },
      'dtls session established',
    );
    this.emit('session', session);
  }

  /**
   * The session's end hook, made outside onVerdict so that its closure holds only the key (a
   * closure there would keep the whole Handshake, its timers and random, for the session's life).
   */
  private sessionEnder(key: number): (s: DtlsSession, reason: CloseReason) => void {
    return (s, reason) => this.onSessionEnd(key, s, reason);
  }

  private onSessionEnd(key: number, s: DtlsSession, _reason: CloseReason): void {
    this.sessionCount--;
    if (this.peers.get(key)?.session === s) this.peers.delete(key);
  }

  private onDeadline(hs: Handshake): void {
    if (this.peers.get(hs.key)?.hs !== hs) return;
    this.counters.timedOut++;
    this.logger.info(
      { peer: `${hs.address}:${hs.port}`, verifying: hs.verifying },
      'dtls handshake deadline passed',
    );
    if (hs.verifying) hs.conn.reject(ALERT_CODES.handshake_failure);
    this.dropHandshake(hs, 'timeout');
  }

  private dropHandshake(hs: Handshake, _why: string): void {
    clearTimeout(hs.deadline);
    if (hs.rtx) clearTimeout(hs.rtx);
    hs.rtx = undefined;
    if (this.peers.get(hs.key)?.hs === hs) this.peers.delete(hs.key);
    hs.conn.free();
    this.countHandshake(hs.ip, -1);
  }

  private countHandshake(ip: number, delta: 1 | -1): void {
    this.handshakeCount += delta;
    const n = (this.handshakesByIp.get(ip) ?? 0) + delta;
    if (n > 0) this.handshakesByIp.set(ip, n);
    else this.handshakesByIp.delete(ip);
    if (delta < 0) this.scheduleDrain(); // a slot freed: the oldest queued hello starts
  }
}

// The server side never reads application data during the handshake (it holds until the verdict).
const EMPTY_SLAB = Buffer.alloc(0);
const EMPTY_LENS = new Uint32Array(1);
const NO_CHAIN: Buffer[] = [];
