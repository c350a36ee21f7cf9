/**
 * One established DTLS association (server or client side). Records are decrypted and encrypted
 * synchronously in the addon; encrypted records go straight to the socket with sendto(2).
 */
import { EventEmitter } from 'node:events';
import type { ReceiveRoute } from './recv-route.js';
import type { Logger } from 'pino';
import { silentLogger } from '../util/log.js';
import { F_FATAL, F_MORE, F_PEER_CLOSED, type NativeConn } from './native.js';
import type { CloseReason } from './types.js';

// Decrypted records are written into a shared slab and handed out as views of it (no copy, no
// allocation per record); a new slab is started when less than one maximal record fits.
const SLAB_BYTES = 128 * 1024;
const MAX_PLAIN = 16384;
let slab = Buffer.allocUnsafe(SLAB_BYTES);
let slabOff = 0;
const lens = new Uint32Array(1024);

/** Buffered records while nobody listens for 'message' yet (e.g. right after dtlsConnect resolves). */
const MAX_EARLY_RECORDS = 256;
const NO_CERTIFICATE = Buffer.alloc(0);

export interface SessionInit {
  conn: NativeConn;
  remoteAddress: string;
  remotePort: number;
  localPort: number;
  peerChain: Buffer[];
  verifyContext?: unknown;
  idleTimeoutMs: number;
  logger?: Logger;
  /** Called once when the session ends (before the 'close' event). */
  onEnd?: (session: DtlsSession, reason: CloseReason) => void;
  /** The server's receive thread, when one reads this session's datagrams (recv-route.ts). */
  receiveRoute?: ReceiveRoute;
}

/** Counters of the native receive-tunnel fast path (forwardTo). */
export interface ForwardStats {
  /** Packets written to the device, and their bytes. */
  packets: number;
  bytes: number;
  /** Valid packets the device refused (full queue, link down). */
  dropped: number;
  /** Invalid records dropped natively by reason (only with dropInvalid). */
  oversize: number;
  malformed: number;
  spoofed: number;
  /** Source address (host order) of the last spoofed packet, 0 if none. */
  lastSpoofedSource: number;
}

const NO_FORWARDING: Readonly<ForwardStats> = Object.freeze({
  packets: 0,
  bytes: 0,
  dropped: 0,
  oversize: 0,
  malformed: 0,
  spoofed: 0,
  lastSpoofedSource: 0,
});

export interface DtlsSessionStats {
  recordsIn: number;
  recordsOut: number;
  bytesIn: number;
  bytesOut: number;
  /** send() calls refused because the record was larger than maxRecordSize. */
  oversize: number;
}

export interface DtlsSessionEvents {
  message: [record: Buffer];
  close: [reason: CloseReason, detail: string];
  newListener: [event: string | symbol, listener: unknown];
}

/** One string per cipher-suite name for all sessions (the addon returns a fresh one each time). */
const suiteNames = new Map<string, string>();
function internSuiteName(name: string): string {
  const known = suiteNames.get(name);
  if (known !== undefined) return known;
  if (suiteNames.size < 64) suiteNames.set(name, name);
  return name;
}

/**
 * Memory: a gateway holds two sessions per enclave for as long as it is connected, so a session
 * keeps only what it needs while idle: the suite name shared with every session of that suite,
 * its counters as plain number fields (no counters object), no forwarding counters until it ends
 * (read from the native object), and no 'newListener' listener unless records arrived before the
 * first 'message' listener. The idle timer calls a module-level function with the session as its
 * argument (no closure per arm).
 */
export class DtlsSession extends EventEmitter<DtlsSessionEvents> {
  readonly remoteAddress: string;
  readonly remotePort: number;
  /** Our UDP port of this session (the server's port on the server side). */
  readonly localPort: number;
  /**
   * DER of the peer's (verified) certificate: the client's on the server, the server's on the
   * client. Empty on a server created with retainPeerChain: false.
   */
  readonly peerCertificate: Buffer;
  /** The peer's whole certificate chain as sent, DER, leaf first (empty without retainPeerChain). */
  readonly peerChain: Buffer[];
  /** What the verification hook returned as context (server side). */
  readonly verifyContext: unknown;
  /** OpenSSL name of the negotiated cipher suite, e.g. ECDHE-RSA-AES256-GCM-SHA384. */
  readonly cipher: string;
  /** Largest record send() accepts: what fits the link MTU after IP, UDP and DTLS overhead. */
  readonly maxRecordSize: number;

  private conn: NativeConn | undefined;
  /** forwardStats() as of the end, kept after the native object is freed. */
  private lastForward: Readonly<ForwardStats> = NO_FORWARDING;
  private readonly logger: Logger;
  private readonly onEnd: ((session: DtlsSession, reason: CloseReason) => void) | undefined;
  /** @internal read by checkIdle (the receive thread's last-receive stamp) */
  readonly receiveRoute: ReceiveRoute | undefined;
  /** @internal read by checkIdle */
  idleMs: number;
  /** @internal */
  idleTimer: NodeJS.Timeout | undefined;
  /** @internal when the last datagram arrived (Date.now()) */
  lastRx = Date.now();
  private early: Buffer[] | undefined;
  private ended = false;
  private recordsIn = 0;
  private recordsOut = 0;
  private bytesIn = 0;
  private bytesOut = 0;
  private oversize = 0;

  /** @internal sessions are made by DtlsServer and dtlsConnect. */
  constructor(init: SessionInit) {
    super();
    this.conn = init.conn;
    this.remoteAddress = init.remoteAddress;
    this.remotePort = init.remotePort;
    this.localPort = init.localPort;
    this.peerChain = init.peerChain;
    this.peerCertificate = init.peerChain[0] ?? NO_CERTIFICATE;
    this.verifyContext = init.verifyContext;
    this.logger = init.logger ?? silentLogger;
    this.onEnd = init.onEnd;
    this.receiveRoute = init.receiveRoute;
    const info = init.conn.info();
    this.cipher = internSuiteName(info.cipher ?? '');
    this.maxRecordSize = info.maxRecord;
    this.idleMs = init.idleTimeoutMs;
    this.armIdle(this.idleMs);
  }

  /** True until the session has ended. */
  get open(): boolean {
    return !this.ended;
  }

  stats(): DtlsSessionStats {
    return {
      recordsIn: this.recordsIn,
      recordsOut: this.recordsOut,
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
      oversize: this.oversize,
    };
  }

  /**
   * Encrypts one application record and sends it. Returns false when the session is closed or the
   * record is empty or larger than maxRecordSize (nothing is sent then).
   */
  send(record: Uint8Array): boolean {
    const conn = this.conn;
    if (!conn) return false;
    const r = conn.send(record);
    if (r > 0) {
      this.recordsOut++;
      this.bytesOut += record.byteLength;
      return true;
    }
    if (r === -1) {
      this.oversize++;
      return false;
    }
    if (r === -2) this.end('error', conn.info().error);
    return false;
  }

  /** Sends close_notify and ends the session with the given reason (default 'local'). */
  close(reason: CloseReason = 'local'): void {
    const conn = this.conn;
    if (!conn) return;
    conn.shutdown();
    this.end(reason, '');
  }

  /**
   * Fast path for a tunnel endpoint: decrypted records that are valid IPv4 packets (the gateway's
   * rule: ≤ `mtu`, well-formed, source `sourceIp` in host order) are written to `fd` (a TUN
   * device) inside the addon and never surface as 'message' events. Invalid records still do,
   * or, with `dropInvalid`, are dropped inside the addon and counted by reason. Pass fd = -1 to
   * turn it off. Counters: forwardStats(). `vnetHdr`: the fd carries a virtio_net_hdr (a TUN
   * device opened with offload); the packets of one receive batch are then written together,
   * consecutive TCP segments of a flow coalesced into GSO frames (counters: tunWriteStats()).
   * `checkDestination` (client role): `sourceIp` is the destination every packet must have.
   */
  forwardTo(
    fd: number,
    sourceIp: number,
    mtu: number,
    opts: { dropInvalid?: boolean; vnetHdr?: boolean; checkDestination?: boolean } = {},
  ): void {
    this.conn?.setForward(
      fd,
      sourceIp,
      mtu,
      opts.dropInvalid === true,
      opts.vnetHdr === true,
      opts.checkDestination === true,
    );
    if (this.conn) this.receiveRoute?.update(this.conn, fd >= 0);
  }

  /** Counters of forwardTo() (kept after the session ended). */
  forwardStats(): ForwardStats {
    const s = this.conn?.forwardStats();
    const own = s ? forwardCounters(s) : this.lastForward;
    const t = this.receiveRoute?.stats();
    if (!t) return { ...own };
    // What the receive thread forwarded for this session, added to the JavaScript thread's part.
    return {
      packets: own.packets + t.packets,
      bytes: own.bytes + t.bytes,
      dropped: own.dropped + t.dropped,
      oversize: own.oversize + t.oversize,
      malformed: own.malformed + t.malformed,
      spoofed: own.spoofed + t.spoofed,
      lastSpoofedSource: t.lastSpoofedSource || own.lastSpoofedSource,
    };
  }

  /** @internal the native connection while the session is open (for TunDispatch). */
  nativeConn(): NativeConn | undefined {
    return this.conn;
  }

  /** Changes the idle timeout (ms; 0 disables it). */
  setIdleTimeout(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0)
      throw new RangeError(`idle timeout must be a non-negative number of ms, got ${ms}`);
    this.idleMs = ms;
    this.armIdle(ms);
  }

  /**
   * @internal one datagram from the peer: bytes [off, off + len) of `datagram` (whole when off and
   * len are left out); null only collects records OpenSSL has buffered.
   */
  input(datagram: Buffer | null, off = 0, len = datagram ? datagram.length : 0): void {
    if (!this.conn) return;
    if (datagram) this.lastRx = Date.now();
    let dg: Buffer | null = datagram;
    for (;;) {
      const conn = this.conn;
      if (!conn) return;
      if (slab.length - slabOff < MAX_PLAIN) {
        slab = Buffer.allocUnsafe(SLAB_BYTES);
        slabOff = 0;
      }
      const r = conn.input(dg, slab, slabOff, lens, off, len);
      dg = null;
      const flags = r & 0xff;
      const n = Math.floor(r / 256);
      if (n > 0) this.deliver(n);
      if (flags & F_PEER_CLOSED) {
        this.end('close_notify', '');
        return;
      }
      if (flags & F_FATAL) {
        const info = conn.info();
        const alert = info.alertReceived;
        if (alert && alert.level === 'fatal') this.end('alert', alert.name);
        else this.end('error', info.error);
        return;
      }
      if (!(flags & F_MORE)) return;
    }
  }

  /** @internal ends the session without sending anything (server shutdown sends close_notify first). */
  end(reason: CloseReason, detail: string): void {
    if (this.ended) return;
    this.ended = true;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    const conn = this.conn;
    // Keep the JavaScript thread's part; the receive route keeps its own after remove().
    const ownAtEnd = conn?.forwardStats();
    if (ownAtEnd) this.lastForward = forwardCounters(ownAtEnd);
    this.receiveRoute?.remove();
    this.conn = undefined;
    conn?.free();
    this.logger.debug(
      { peer: `${this.remoteAddress}:${this.remotePort}`, reason, detail: detail || undefined },
      'dtls session ended',
    );
    this.onEnd?.(this, reason);
    this.emit('close', reason, detail);
  }

  /** @internal a decrypted record the server's receive thread left to JavaScript (a copy). */
  receivedRecord(record: Buffer): void {
    if (this.ended) return;
    this.lastRx = Date.now();
    this.deliverOne(record);
  }

  private deliver(n: number): void {
    // Take all views first: a 'message' listener may cause other input (re-entrancy) that reuses lens.
    let records: Buffer | Buffer[];
    if (n === 1) {
      const len = lens[0] ?? 0;
      records = slab.subarray(slabOff, slabOff + len);
      slabOff += len;
    } else {
      records = [];
      for (let i = 0; i < n; i++) {
        const len = lens[i] ?? 0;
        records.push(slab.subarray(slabOff, slabOff + len));
        slabOff += len;
      }
    }
    if (Array.isArray(records)) for (const rec of records) this.deliverOne(rec);
    else this.deliverOne(records);
  }

  private deliverOne(rec: Buffer): void {
    this.recordsIn++;
    this.bytesIn += rec.length;
    if (this.listenerCount('message') === 0) {
      if (!this.early) {
        this.early = [];
        // Only now a 'newListener' hook: it hands the buffered records to the first listener.
        const hook = (event: string | symbol): void => {
          if (event !== 'message') return;
          this.off('newListener', hook);
          this.flushEarly();
        };
        this.on('newListener', hook);
      }
      if (this.early.length < MAX_EARLY_RECORDS) this.early.push(rec);
    } else if (!this.ended) {
      this.emit('message', rec);
    }
  }

  /** Hands the records buffered before the first 'message' listener to it. */
  private flushEarly(): void {
    const queued = this.early;
    if (!queued) return;
    this.early = undefined;
    queueMicrotask(() => {
      for (const r of queued) {
        if (this.ended && this.listenerCount('message') === 0) break;
        this.emit('message', r);
      }
    });
  }

  /** @internal (re)starts the idle timer; also called by checkIdle. */
  armIdle(ms: number): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    if (ms <= 0 || this.ended) return;
    this.idleTimer = setTimeout(checkIdle, ms, this);
    this.idleTimer.unref();
  }
}

/** The idle timer of `s` fired: closes it when quiet long enough, else waits for the rest. */
/** The native forwarder's counters (an array, see NativeConn.forwardStats) as an object. */
function forwardCounters(s: number[]): ForwardStats {
  return {
    packets: s[0] ?? 0,
    bytes: s[1] ?? 0,
    dropped: s[2] ?? 0,
    oversize: s[3] ?? 0,
    malformed: s[4] ?? 0,
    spoofed: s[5] ?? 0,
    lastSpoofedSource: s[6] ?? 0,
  };
}

function checkIdle(s: DtlsSession): void {
  s.idleTimer = undefined;
  if (!s.open) return;
  const quiet = Date.now() - Math.max(s.lastRx, s.receiveRoute?.lastReceived() ?? 0);
  if (quiet >= s.idleMs) {
    s.close('idle');
    return;
  }
  s.armIdle(s.idleMs - quiet);
}
