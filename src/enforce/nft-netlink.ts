/**
 * nf_tables set-element updates over a raw netlink socket, without spawning `nft`.
 *
 * A burst of admissions and session ends becomes ONE netfilter batch (BATCH_BEGIN,
 * one NEWSETELEM/DESTROYSETELEM message per (set, operation), BATCH_END) written with
 * one sendmsg and committed by the kernel as one transaction: either every element
 * change of the batch takes effect or none does. One round trip, typically well under a
 * millisecond, where `nft` costs a process spawn (several ms) per update.
 *
 * Removal uses DESTROYSETELEM (Linux ≥ 6.3), which, unlike DELSETELEM, does not fail
 * the whole batch when an element is already gone (an admin flushed the set, …). On
 * older kernels the client falls back to DELSETELEM (the enforcer only removes elements it added).
 *
 * The socket lives in the network namespace of the process that opens it.
 */
import { RawNetlinkSocket } from 'netlink';
import { EnvironmentError } from '../util/errors.js';

const NETLINK_NETFILTER = 12;
const NFNL_SUBSYS_NFTABLES = 10;
const NFNL_MSG_BATCH_BEGIN = 0x10;
const NFNL_MSG_BATCH_END = 0x11;
const NFT_MSG_NEWSETELEM = 12;
const NFT_MSG_DELSETELEM = 14;
/** Linux ≥ 6.3: delete, ignoring elements that do not exist. */
const NFT_MSG_DESTROYSETELEM = 30;
const NLMSG_ERROR = 2;
const NLM_F_REQUEST = 0x1;
const NLM_F_ACK = 0x4;
const NLM_F_CREATE = 0x400;
const NLA_F_NESTED = 0x8000;
const NFPROTO_IPV4 = 2;
const NFTA_SET_ELEM_LIST_TABLE = 1;
const NFTA_SET_ELEM_LIST_SET = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS = 3;
const NFTA_LIST_ELEM = 1;
const NFTA_SET_ELEM_KEY = 1;
const NFTA_DATA_VALUE = 1;
/** 16 bytes per element; an attribute holds at most 65535 bytes. */
const MAX_ELEMENTS_PER_MESSAGE = 2048;

/** Element changes of one set. Addresses are host-order numbers. */
export interface SetElementChange {
  set: string;
  add: number[];
  remove: number[];
}

export class NetlinkBatchError extends Error {
  constructor(
    message: string,
    readonly errno: number,
  ) {
    super(message);
    this.name = 'NetlinkBatchError';
  }
}

function attr(type: number, payload: Buffer): Buffer {
  const len = 4 + payload.length;
  const padded = (len + 3) & ~3;
  const b = Buffer.alloc(padded);
  b.writeUInt16LE(len, 0);
  b.writeUInt16LE(type, 2);
  payload.copy(b, 4);
  return b;
}

function strAttr(type: number, s: string): Buffer {
  return attr(type, Buffer.concat([Buffer.from(s, 'utf8'), Buffer.alloc(1)]));
}

function nested(type: number, parts: Buffer[]): Buffer {
  return attr(type | NLA_F_NESTED, Buffer.concat(parts));
}

function message(
  type: number,
  flags: number,
  seq: number,
  family: number,
  resId: number,
  body: Buffer,
): Buffer {
  const hdr = Buffer.alloc(20);
  hdr.writeUInt32LE(20 + body.length, 0);
  hdr.writeUInt16LE(type, 4);
  hdr.writeUInt16LE(flags, 6);
  hdr.writeUInt32LE(seq, 8);
  hdr.writeUInt32LE(0, 12);
  hdr.writeUInt8(family, 16);
  hdr.writeUInt8(0, 17); // NFNETLINK_V0
  hdr.writeUInt16BE(resId, 18);
  return Buffer.concat([hdr, body]);
}

function ipKey(ip: number): Buffer {
  const v = Buffer.alloc(4);
  v.writeUInt32BE(ip >>> 0, 0);
  return nested(NFTA_LIST_ELEM, [nested(NFTA_SET_ELEM_KEY, [attr(NFTA_DATA_VALUE, v)])]);
}

const ERRNO_NAMES: Record<number, string> = {
  1: 'EPERM',
  2: 'ENOENT',
  12: 'ENOMEM',
  17: 'EEXIST',
  22: 'EINVAL',
  28: 'ENOSPC',
  95: 'EOPNOTSUPP',
};

export interface NftNetlinkOptions {
  table: string;
  /** Reply timeout for one batch (default 2000 ms). */
  timeoutMs?: number;
}

/** A long-lived netfilter netlink socket that applies set-element batches. */
export class NftNetlink {
  private sock: RawNetlinkSocket | undefined;
  private seq = Math.floor(Math.random() * 0x3fffffff);
  private readonly pending = new Map<number, { resolve: (errno: number) => void }>();
  private destroySupported = true;
  readonly table: string;
  private readonly timeoutMs: number;

  constructor(opts: NftNetlinkOptions) {
    this.table = opts.table;
    this.timeoutMs = opts.timeoutMs ?? 2000;
  }

  private open(): RawNetlinkSocket {
    if (this.sock) return this.sock;
    let sock: RawNetlinkSocket;
    try {
      sock = new RawNetlinkSocket(NETLINK_NETFILTER, { recvBufferSize: 1 << 20, sendBufferSize: 1 << 20 });
    } catch (e) {
      throw new EnvironmentError(
        'ENETLINK',
        `cannot open a netfilter netlink socket: ${(e as Error).message}`,
        'seng needs root (CAP_NET_ADMIN) for nftables enforcement',
        e,
      );
    }
    sock.on('message', (buf) => this.receive(buf));
    sock.on('error', () => {
      for (const p of this.pending.values()) p.resolve(-5);
      this.pending.clear();
    });
    sock.unref();
    this.sock = sock;
    return sock;
  }

  private receive(buf: Buffer): void {
    let off = 0;
    while (off + 16 <= buf.length) {
      const len = buf.readUInt32LE(off);
      const type = buf.readUInt16LE(off + 4);
      const seq = buf.readUInt32LE(off + 8);
      if (len < 16) break;
      if (type === NLMSG_ERROR && off + 20 <= buf.length) {
        const errno = -buf.readInt32LE(off + 16);
        const p = this.pending.get(seq);
        if (p) {
          this.pending.delete(seq);
          p.resolve(errno);
        }
      }
      off += (len + 3) & ~3;
    }
    if (this.pending.size === 0) this.sock?.unref();
  }

  /**
   * Applies the changes as one kernel transaction. Rejects (and changes nothing) if the
   * kernel refuses any message, e.g. because a set does not exist.
   */
  async apply(changes: SetElementChange[]): Promise<void> {
    const work = changes.filter((c) => c.add.length || c.remove.length);
    if (work.length === 0) return;
    try {
      await this.send(work, this.destroySupported ? NFT_MSG_DESTROYSETELEM : NFT_MSG_DELSETELEM);
    } catch (e) {
      // Kernels before 6.3 do not know DESTROYSETELEM: remember and retry with DELSETELEM.
      if (
        this.destroySupported &&
        e instanceof NetlinkBatchError &&
        e.errno === 95 &&
        work.some((c) => c.remove.length)
      ) {
        this.destroySupported = false;
        await this.send(work, NFT_MSG_DELSETELEM);
        return;
      }
      throw e;
    }
  }

  private async send(work: SetElementChange[], delType: number): Promise<void> {
    const sock = this.open();
    const msgs: Buffer[] = [];
    const seqs: { seq: number; what: string }[] = [];
    const next = (): number => {
      this.seq = (this.seq + 1) >>> 0 || 1;
      return this.seq;
    };
    msgs.push(message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, next(), 0, NFNL_SUBSYS_NFTABLES, Buffer.alloc(0)));
    const elemMsg = (type: number, flags: number, set: string, all: number[], what: string): void => {
      // The element list is one attribute, whose length field has 16 bits: chunk it.
      for (let i = 0; i < all.length; i += MAX_ELEMENTS_PER_MESSAGE) {
        elemChunk(type, flags, set, all.slice(i, i + MAX_ELEMENTS_PER_MESSAGE), what);
      }
    };
    const elemChunk = (type: number, flags: number, set: string, ips: number[], what: string): void => {
      const seq = next();
      const body = Buffer.concat([
        strAttr(NFTA_SET_ELEM_LIST_TABLE, this.table),
        strAttr(NFTA_SET_ELEM_LIST_SET, set),
        nested(NFTA_SET_ELEM_LIST_ELEMENTS, ips.map(ipKey)),
      ]);
      msgs.push(message((NFNL_SUBSYS_NFTABLES << 8) | type, flags, seq, NFPROTO_IPV4, 0, body));
      seqs.push({ seq, what });
    };
    // Removals first: an IP that leaves and rejoins within one batch ends up present.
    for (const c of work) {
      if (c.remove.length)
        elemMsg(delType, NLM_F_REQUEST | NLM_F_ACK, c.set, c.remove, `remove from set ${c.set}`);
    }
    for (const c of work) {
      if (c.add.length)
        elemMsg(
          NFT_MSG_NEWSETELEM,
          NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
          c.set,
          c.add,
          `add to set ${c.set}`,
        );
    }
    msgs.push(message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, next(), 0, NFNL_SUBSYS_NFTABLES, Buffer.alloc(0)));

    const replies = seqs.map(
      ({ seq }) =>
        new Promise<number>((resolve) => {
          this.pending.set(seq, { resolve });
        }),
    );
    sock.ref();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), this.timeoutMs);
    });
    await new Promise<void>((resolve, reject) => {
      sock.send(Buffer.concat(msgs), { port: 0 }, (err) => (err ? reject(err) : resolve()));
    }).catch((e: unknown) => {
      for (const { seq } of seqs) this.pending.delete(seq);
      clearTimeout(timer);
      throw new NetlinkBatchError(`netlink send failed: ${(e as Error).message}`, 5);
    });
    const result = await Promise.race([Promise.all(replies), timeout]);
    clearTimeout(timer);
    if (result === 'timeout') {
      for (const { seq } of seqs) this.pending.delete(seq);
      if (this.pending.size === 0) sock.unref();
      throw new NetlinkBatchError(`no reply from nf_tables within ${this.timeoutMs} ms`, 110);
    }
    const failed = result
      .map((errno, i) => ({ errno, what: seqs[i]?.what ?? '?' }))
      .filter((r) => r.errno !== 0);
    const first = failed[0];
    if (first) {
      const name = ERRNO_NAMES[first.errno] ?? `errno ${first.errno}`;
      throw new NetlinkBatchError(
        `nf_tables rejected the batch (${name} on ${first.what} in table ip ${this.table}); nothing was changed`,
        first.errno,
      );
    }
  }

  close(): void {
    for (const p of this.pending.values()) p.resolve(-5);
    this.pending.clear();
    this.sock?.close();
    this.sock = undefined;
  }
}
