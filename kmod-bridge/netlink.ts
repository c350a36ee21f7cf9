/**
 * Netlink framing and request/reply plumbing, small and self-contained.
 *
 * - Encoding: `nlmsghdr` (16 bytes: u32 len, u16 type, u16 flags, u32 seq, u32 port, all in
 *   host byte order) followed by the payload padded to 4 bytes; attributes (`nlattr`: u16 len,
 *   u16 type, payload, padding to 4 bytes; `len` counts header + payload, not padding).
 * - Transport: {@link NetlinkTransport} moves whole datagrams; the real one sits on the
 *   `netlink` package's raw socket, tests inject a recording one at this boundary.
 * - {@link NetlinkChannel}: sequence numbers, acks, multipart dumps and timeouts on top of a
 *   transport. We do the framing ourselves instead of using the package's `request()`
 *   because that one turns kernel errnos into untyped strings.
 */
import { endianness } from 'node:os';
import { RawNetlinkSocket } from 'netlink';
import { NetlinkErrnoError, NetlinkProtocolError, NetlinkTimeoutError } from './errors.js';

export const NLMSG_HDRLEN = 16;
export const NLA_HDRLEN = 4;

export const NLMSG_NOOP = 1;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLMSG_OVERRUN = 4;

export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
export const NLM_F_ACK = 0x4;
export const NLM_F_DUMP_INTR = 0x10;
export const NLM_F_ROOT = 0x100;
export const NLM_F_MATCH = 0x200;
export const NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH;
/** In an ack: the original request is not echoed back in full. */
export const NLM_F_CAPPED = 0x100;
/** In an ack: extended-ack TLVs follow. */
export const NLM_F_ACK_TLVS = 0x200;

export const NLA_F_NESTED = 0x8000;
export const NLA_F_NET_BYTEORDER = 0x4000;
const NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xffff;

const NLMSGERR_ATTR_MSG = 1;

export const NETLINK_NETFILTER = 12;
export const NETLINK_GENERIC = 16;

const LE = endianness() === 'LE';

export function align4(n: number): number {
  return (n + 3) & ~3;
}

/** Writes a u16 in host byte order (netlink headers and most attribute payloads). */
export function writeU16(buf: Buffer, value: number, offset: number): void {
  if (LE) buf.writeUInt16LE(value, offset);
  else buf.writeUInt16BE(value, offset);
}
export function writeU32(buf: Buffer, value: number, offset: number): void {
  if (LE) buf.writeUInt32LE(value >>> 0, offset);
  else buf.writeUInt32BE(value >>> 0, offset);
}
export function readU16(buf: Buffer, offset: number): number {
  return LE ? buf.readUInt16LE(offset) : buf.readUInt16BE(offset);
}
export function readU32(buf: Buffer, offset: number): number {
  return LE ? buf.readUInt32LE(offset) : buf.readUInt32BE(offset);
}
export function readI32(buf: Buffer, offset: number): number {
  return LE ? buf.readInt32LE(offset) : buf.readInt32BE(offset);
}

/** One attribute: `nlattr` header, payload, zero padding to a multiple of 4 bytes. */
export function nla(type: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const len = NLA_HDRLEN + payload.length;
  if (len > 0xffff) throw new RangeError(`netlink attribute ${type} too long (${payload.length} bytes)`);
  const out = Buffer.alloc(align4(len));
  writeU16(out, len, 0);
  writeU16(out, type, 2);
  payload.copy(out, NLA_HDRLEN);
  return out;
}

/** A nested attribute (NLA_F_NESTED set) holding already-encoded attributes. */
export function nlaNested(type: number, children: Buffer[]): Buffer {
  return nla(type | NLA_F_NESTED, Buffer.concat(children));
}

export function nlaU32(type: number, value: number): Buffer {
  const b = Buffer.alloc(4);
  writeU32(b, value, 0);
  return nla(type, b);
}

/** u32 whose payload is big-endian (network order), e.g. an IPv4 address. */
export function nlaBe32(type: number, value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(value >>> 0, 0);
  return nla(type, b);
}

export function nlaStringz(type: number, value: string): Buffer {
  return nla(type, Buffer.concat([Buffer.from(value, 'utf8'), Buffer.alloc(1)]));
}

export interface NlMsgHeader {
  type: number;
  flags: number;
  seq: number;
  port: number;
}

/** Encodes one netlink message: header followed by the payload, padded to 4 bytes. */
export function encodeNlmsg(h: NlMsgHeader, payload: Buffer): Buffer {
  const len = NLMSG_HDRLEN + payload.length;
  const out = Buffer.alloc(align4(len));
  writeU32(out, len, 0);
  writeU16(out, h.type, 4);
  writeU16(out, h.flags, 6);
  writeU32(out, h.seq, 8);
  writeU32(out, h.port, 12);
  payload.copy(out, NLMSG_HDRLEN);
  return out;
}

export interface NlMessage extends NlMsgHeader {
  /** Payload after the 16-byte header (a view into the datagram). */
  payload: Buffer;
}

/** Splits a datagram into its netlink messages. */
export function parseNlmsgs(datagram: Buffer): NlMessage[] {
  const out: NlMessage[] = [];
  let off = 0;
  while (off + NLMSG_HDRLEN <= datagram.length) {
    const len = readU32(datagram, off);
    if (len < NLMSG_HDRLEN || off + len > datagram.length) {
      throw new NetlinkProtocolError(
        `netlink message at offset ${off} claims ${len} bytes of ${datagram.length - off}`,
      );
    }
    out.push({
      type: readU16(datagram, off + 4),
      flags: readU16(datagram, off + 6),
      seq: readU32(datagram, off + 8),
      port: readU32(datagram, off + 12),
      payload: datagram.subarray(off + NLMSG_HDRLEN, off + len),
    });
    off += align4(len);
  }
  return out;
}

export interface NlAttr {
  /** Type without the NESTED / NET_BYTEORDER flag bits. */
  type: number;
  nested: boolean;
  value: Buffer;
  /** The whole attribute as encoded (header + payload, without padding), to resend verbatim. */
  raw: Buffer;
}

/** Parses a run of attributes. */
export function parseAttrs(buf: Buffer): NlAttr[] {
  const out: NlAttr[] = [];
  let off = 0;
  while (off + NLA_HDRLEN <= buf.length) {
    const len = readU16(buf, off);
    const rawType = readU16(buf, off + 2);
    if (len < NLA_HDRLEN || off + len > buf.length) {
      throw new NetlinkProtocolError(
        `netlink attribute at offset ${off} claims ${len} bytes of ${buf.length - off}`,
      );
    }
    out.push({
      type: rawType & NLA_TYPE_MASK,
      nested: (rawType & NLA_F_NESTED) !== 0,
      value: buf.subarray(off + NLA_HDRLEN, off + len),
      raw: buf.subarray(off, off + len),
    });
    off += align4(len);
  }
  return out;
}

/** Attributes by type (the last one wins on duplicates). */
export function attrMap(buf: Buffer): Map<number, NlAttr> {
  const m = new Map<number, NlAttr>();
  for (const a of parseAttrs(buf)) m.set(a.type, a);
  return m;
}

/**
 * The first attribute of `type` in a run of attributes, as [value, raw] views, without
 * allocating anything for the others (hot path of large dumps). Throws on a malformed run.
 */
export function findAttr(buf: Buffer, type: number): { value: Buffer; raw: Buffer } | undefined {
  let off = 0;
  while (off + NLA_HDRLEN <= buf.length) {
    const len = readU16(buf, off);
    if (len < NLA_HDRLEN || off + len > buf.length) {
      throw new NetlinkProtocolError(
        `netlink attribute at offset ${off} claims ${len} bytes of ${buf.length - off}`,
      );
    }
    if ((readU16(buf, off + 2) & NLA_TYPE_MASK) === type) {
      return { value: buf.subarray(off + NLA_HDRLEN, off + len), raw: buf.subarray(off, off + len) };
    }
    off += align4(len);
  }
  return undefined;
}

export interface NlError {
  /** 0 for an ack, otherwise a positive errno. */
  errno: number;
  /** Extended-ack message, when present. */
  extack?: string;
}

/** Parses the payload of an NLMSG_ERROR message (`struct nlmsgerr` + optional ext-ack TLVs). */
export function parseNlError(msg: NlMessage): NlError {
  if (msg.payload.length < 4) throw new NetlinkProtocolError('truncated NLMSG_ERROR');
  const errno = -readI32(msg.payload, 0);
  const result: NlError = { errno };
  if (msg.flags & NLM_F_ACK_TLVS && msg.payload.length >= 4 + NLMSG_HDRLEN) {
    const origLen = readU32(msg.payload, 4);
    const tlvStart = 4 + (msg.flags & NLM_F_CAPPED ? NLMSG_HDRLEN : align4(origLen));
    if (tlvStart <= msg.payload.length) {
      try {
        const m = attrMap(msg.payload.subarray(tlvStart)).get(NLMSGERR_ATTR_MSG);
        if (m) result.extack = m.value.toString('utf8').replace(/\0+$/, '');
      } catch {
        // A malformed ext-ack section is not worth failing the error report for.
      }
    }
  }
  return result;
}

/** Moves whole netlink datagrams between this process and the kernel. */
export interface NetlinkTransport {
  /** The local port id (`nl_pid`) to put in request headers. */
  readonly portId: number;
  /** Sends one datagram to the kernel; rejects with a {@link NetlinkErrnoError} if sendmsg fails. */
  send(datagram: Buffer): Promise<void>;
  /** Installs the receiver of every datagram from the kernel and of socket-level errors. */
  setReceiver(onDatagram: (datagram: Buffer) => void, onError: (err: NetlinkErrnoError) => void): void;
  /** Keeps the event loop alive while true (requests pending). */
  setActive(active: boolean): void;
  close(): void;
}

/** The generic-netlink flavour of a transport (same contract; named for the kmod client). */
export type GenlTransport = NetlinkTransport;

function toErrno(err: unknown): number {
  const e = err as { errno?: unknown; code?: unknown };
  if (typeof e.errno === 'number') return Math.abs(e.errno);
  return 5; // EIO
}

/** A real netlink socket (`socket(AF_NETLINK, SOCK_RAW, protocol)`) from the `netlink` package. */
export class RawSocketTransport implements NetlinkTransport {
  private readonly socket: RawNetlinkSocket;
  readonly portId: number;
  private closed = false;

  constructor(protocol: number, opts: { recvBufferSize?: number } = {}) {
    try {
      this.socket = new RawNetlinkSocket(protocol, {
        ...(opts.recvBufferSize ? { recvBufferSize: opts.recvBufferSize } : {}),
      } as ConstructorParameters<typeof RawNetlinkSocket>[1]);
    } catch (err) {
      throw new NetlinkErrnoError(
        toErrno(err),
        'socket',
        `cannot open netlink socket (protocol ${protocol})`,
      );
    }
    this.portId = this.socket.address().port;
    this.socket.unref();
  }

  send(datagram: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.closed) {
        reject(new NetlinkErrnoError(9, 'socket', 'netlink socket already closed'));
        return;
      }
      this.socket.send(datagram, { port: 0 }, (err) => {
        if (err) reject(new NetlinkErrnoError(toErrno(err), 'socket', 'sending to the kernel'));
        else resolve();
      });
    });
  }

  setReceiver(onDatagram: (datagram: Buffer) => void, onError: (err: NetlinkErrnoError) => void): void {
    this.socket.on('message', (msg) => onDatagram(msg));
    this.socket.on('truncatedMessage', () =>
      onError(new NetlinkErrnoError(105 /* ENOBUFS */, 'socket', 'a reply was truncated')),
    );
    this.socket.on('error', (err) =>
      onError(new NetlinkErrnoError(toErrno(err), 'socket', 'receiving from the kernel')),
    );
  }

  setActive(active: boolean): void {
    if (this.closed) return;
    if (active) this.socket.ref();
    else this.socket.unref();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.close();
  }
}

interface Pending {
  what: string;
  dump: boolean;
  messages: NlMessage[];
  resolve: (msgs: NlMessage[]) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export interface RequestOptions {
  /** Milliseconds to wait for the ack (or the end of a dump). */
  timeoutMs: number;
  /** A dump: collect messages until NLMSG_DONE (the request must carry NLM_F_DUMP). */
  dump?: boolean;
  /** For error messages: what this request does. */
  what: string;
}

/**
 * Request/reply on top of a transport: assigns sequence numbers, routes replies to their
 * request, collects multipart replies, turns NLMSG_ERROR into {@link NetlinkErrnoError}
 * and enforces a timeout.
 */
export class NetlinkChannel {
  private seq: number;
  private readonly pending = new Map<number, Pending>();

  constructor(readonly transport: NetlinkTransport) {
    // Start from a time-derived number so replies to a previous process's requests
    // (same port id reused) are unlikely to match.
    this.seq = (Math.floor(Date.now() / 1000) & 0x7fffffff) >>> 0;
    transport.setReceiver(
      (d) => this.onDatagram(d),
      (e) => this.onSocketError(e),
    );
  }

  get portId(): number {
    return this.transport.portId;
  }

  nextSeq(): number {
    this.seq = (this.seq + 1) >>> 0 || 1;
    return this.seq;
  }

  /**
   * Sends one datagram holding the message(s) built for `seq` and resolves with the
   * reply messages (data messages before the ack / NLMSG_DONE).
   */
  async request(build: (seq: number, port: number) => Buffer, opts: RequestOptions): Promise<NlMessage[]> {
    const results = await this.requestMany([build], opts);
    const r = results[0] as NlMessage[] | Error;
    if (r instanceof Error) throw r;
    return r;
  }

  /**
   * Sends several requests in one datagram (the kernel processes them in order) and
   * returns, per request, its reply messages or its error. Socket-level failures reject.
   */
  async requestMany(
    builds: Array<(seq: number, port: number) => Buffer>,
    opts: RequestOptions,
  ): Promise<Array<NlMessage[] | NetlinkErrnoError>> {
    const parts: Buffer[] = [];
    const waits: Array<Promise<NlMessage[] | NetlinkErrnoError>> = [];
    const seqs: number[] = [];
    for (const build of builds) {
      const seq = this.nextSeq();
      seqs.push(seq);
      parts.push(build(seq, this.transport.portId));
      waits.push(
        new Promise<NlMessage[]>((resolve, reject) => {
          const timer = setTimeout(() => {
            this.finish(seq);
            reject(new NetlinkTimeoutError(opts.what, opts.timeoutMs));
          }, opts.timeoutMs);
          this.pending.set(seq, {
            what: opts.what,
            dump: opts.dump ?? false,
            messages: [],
            resolve,
            reject,
            timer,
          });
        }).catch((err: unknown) => {
          if (err instanceof NetlinkErrnoError && err.source === 'kernel') return err;
          throw err;
        }),
      );
    }
    this.transport.setActive(true);
    try {
      await this.transport.send(parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts));
    } catch (err) {
      // Nothing was sent: forget the requests (their promises are dropped unsettled).
      for (const seq of seqs) this.finish(seq);
      throw err;
    }
    // Wait for all, but surface the first socket-level failure / timeout.
    const settled = await Promise.allSettled(waits);
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
    return settled.map((s) => (s as PromiseFulfilledResult<NlMessage[] | NetlinkErrnoError>).value);
  }

  private finish(seq: number): Pending | undefined {
    const p = this.pending.get(seq);
    if (!p) return undefined;
    clearTimeout(p.timer);
    this.pending.delete(seq);
    if (this.pending.size === 0) this.transport.setActive(false);
    return p;
  }

  private onDatagram(datagram: Buffer): void {
    let msgs: NlMessage[];
    try {
      msgs = parseNlmsgs(datagram);
    } catch (err) {
      // Cannot attribute a garbled datagram: fail everything waiting (they would time out anyway).
      for (const seq of [...this.pending.keys()]) this.finish(seq)?.reject(err as Error);
      return;
    }
    for (const m of msgs) {
      const p = this.pending.get(m.seq);
      if (!p) continue; // late reply to a timed-out request, or a multicast notification
      if (m.type === NLMSG_ERROR) {
        let e: NlError;
        try {
          e = parseNlError(m);
        } catch (err) {
          this.finish(m.seq)?.reject(err as Error);
          continue;
        }
        this.finish(m.seq);
        if (e.errno === 0) p.resolve(p.messages);
        else p.reject(new NetlinkErrnoError(e.errno, 'kernel', p.what, e.extack));
      } else if (m.type === NLMSG_DONE) {
        this.finish(m.seq);
        const status = m.payload.length >= 4 ? readI32(m.payload, 0) : 0;
        if (status < 0) p.reject(new NetlinkErrnoError(-status, 'kernel', p.what));
        else p.resolve(p.messages);
      } else if (m.type === NLMSG_OVERRUN) {
        this.finish(m.seq)?.reject(new NetlinkErrnoError(105, 'socket', `${p.what}: overrun`));
      } else if (m.type !== NLMSG_NOOP) {
        p.messages.push(m); // a view into the datagram, which is never reused by the socket
      }
    }
  }

  private onSocketError(err: NetlinkErrnoError): void {
    // ENOBUFS on receive: replies were dropped; no pending request can be trusted to complete.
    for (const seq of [...this.pending.keys()]) this.finish(seq)?.reject(err);
  }

  /** Rejects everything pending and closes the transport. */
  close(): void {
    for (const seq of [...this.pending.keys()]) {
      this.finish(seq)?.reject(new NetlinkErrnoError(9, 'socket', 'netlink channel closed'));
    }
    this.transport.close();
  }
}
