/**
 * Request/reply on top of a {@link NetlinkTransport}: assigns sequence numbers, routes each
 * reply to its request by sequence number, collects multipart replies (dumps), turns an
 * `NLMSG_ERROR` into a {@link NetlinkError} naming the request it answered, and bounds every
 * wait with a timeout. Several messages can share one datagram (the kernel processes them in
 * order), which is also how nfnetlink batches are sent.
 */
import { Errno, NetlinkError, NetlinkTimeoutError, type NetlinkRequest } from './errors.js';
import {
  NLMSG_DONE,
  NLMSG_ERROR,
  NLMSG_NOOP,
  NLMSG_OVERRUN,
  parseNlError,
  parseNlmsgs,
  readI32,
  readU16,
  type NlMessage,
} from './wire.js';
import type { NetlinkTransport } from './socket.js';

/** Builds one complete netlink message for the sequence number and port the channel assigns. */
export type BuildMessage = (seq: number, port: number) => Buffer;

/** One message of a multi-message datagram. */
export interface OutgoingMessage {
  build: BuildMessage;
  /** What this message does, for its error (default: the request options' `what`). */
  what?: string;
  /**
   * The kernel sends nothing back for this message unless it fails (no NLM_F_ACK, e.g. the
   * BEGIN/END markers of an nfnetlink batch): nothing is awaited for it.
   */
  noReply?: boolean;
}

export interface RequestOptions {
  /** Milliseconds to wait for the ack (or the end of a dump). */
  timeoutMs: number;
  /** A dump: collect messages until NLMSG_DONE (the request must carry NLM_F_DUMP). */
  dump?: boolean;
  /** For error messages: what this request does. */
  what: string;
}

/** Per awaited message: its reply messages, or the kernel's errno for it. */
export type MessageResult = NlMessage[] | NetlinkError;

interface Pending {
  request: NetlinkRequest;
  messages: NlMessage[];
  resolve: (msgs: NlMessage[]) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export class NetlinkChannel {
  private seq: number;
  private readonly pending = new Map<number, Pending>();

  constructor(readonly transport: NetlinkTransport) {
    // Start from a time-derived number so replies to a previous process's requests
    // (same port id reused) are unlikely to match.
    this.seq = (Math.floor(Date.now() / 1000) & 0x7fffffff) >>> 0;
    transport.setReceiver(
      (d) => this.onDatagram(d),
      (e) => this.failAll(e),
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
   * Sends one message built for its sequence number and resolves with the reply messages
   * (data messages before the ack / NLMSG_DONE). Rejects with the {@link NetlinkError}.
   */
  async request(build: BuildMessage, opts: RequestOptions): Promise<NlMessage[]> {
    const [r] = await this.requestMany([build], opts);
    if (r instanceof Error) throw r;
    return r as NlMessage[];
  }

  /**
   * Sends several messages in one datagram and returns one result per message that awaits
   * a reply, in order: its reply messages, or the kernel's {@link NetlinkError} for it (so a
   * failing message of a batch is named by its own `what` and sequence number). Socket-level
   * failures and timeouts reject.
   */
  async requestMany(
    messages: Array<BuildMessage | OutgoingMessage>,
    opts: RequestOptions,
  ): Promise<MessageResult[]> {
    // Build everything before waiting for anything: an encoder that throws leaves no wait behind.
    const parts: Buffer[] = [];
    const requests: NetlinkRequest[] = [];
    for (const m of messages) {
      const { build, what = opts.what, noReply = false } = typeof m === 'function' ? { build: m } : m;
      const seq = this.nextSeq();
      const bytes = build(seq, this.transport.portId);
      parts.push(bytes);
      if (!noReply) requests.push({ what, seq, type: readU16(bytes, 4) });
    }
    const waits = requests.map((r) => this.await(r, opts.timeoutMs));
    const seqs = requests.map((r) => r.seq as number);
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
    return settled.map((s) => (s as PromiseFulfilledResult<MessageResult>).value);
  }

  /** Registers the wait for `request.seq`; the kernel's errno resolves (not rejects) it. */
  private await(request: NetlinkRequest, timeoutMs: number): Promise<MessageResult> {
    const seq = request.seq as number;
    return new Promise<NlMessage[]>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.finish(seq);
        reject(new NetlinkTimeoutError(request, timeoutMs));
      }, timeoutMs);
      this.pending.set(seq, { request, messages: [], resolve, reject, timer });
    }).catch((err: unknown) => {
      if (err instanceof NetlinkError && err.source === 'kernel') return err;
      throw err;
    });
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
      this.failAll(err as Error);
      return;
    }
    for (const m of msgs) {
      const p = this.pending.get(m.seq);
      if (!p) continue; // late reply to a timed-out request, or a multicast notification
      if (m.type === NLMSG_ERROR) this.onError(m, p);
      else if (m.type === NLMSG_DONE) {
        this.finish(m.seq);
        const status = m.payload.length >= 4 ? readI32(m.payload, 0) : 0;
        if (status < 0) p.reject(new NetlinkError(-status, 'kernel', p.request));
        else p.resolve(p.messages);
      } else if (m.type === NLMSG_OVERRUN) {
        this.finish(m.seq);
        p.reject(
          new NetlinkError(Errno.ENOBUFS, 'socket', { ...p.request, what: `${p.request.what}: overrun` }),
        );
      } else if (m.type !== NLMSG_NOOP) {
        p.messages.push(m); // a view into the datagram, which is never reused by the socket
      }
    }
  }

  /** An ack (errno 0) completes the request; a negative errno fails it with its NetlinkError. */
  private onError(m: NlMessage, p: Pending): void {
    this.finish(m.seq);
    let e: ReturnType<typeof parseNlError>;
    try {
      e = parseNlError(m);
    } catch (err) {
      p.reject(err as Error);
      return;
    }
    if (e.errno === 0) p.resolve(p.messages);
    else p.reject(new NetlinkError(e.errno, 'kernel', p.request, e.extack ? { extack: e.extack } : {}));
  }

  /** A socket failure (ENOBUFS: replies were dropped): no pending request can be trusted to complete. */
  private failAll(err: Error): void {
    for (const seq of [...this.pending.keys()]) this.finish(seq)?.reject(err);
  }

  /** Rejects everything pending and closes the transport. */
  close(): void {
    this.failAll(new NetlinkError(Errno.EBADF, 'socket', { what: 'netlink channel closed' }));
    this.transport.close();
  }
}
