/**
 * Netlink encoders and a datagram splitter for fake kernels in tests, written from the
 * kernel's structs (linux/netlink.h) independently of src/netlink, in host byte order like
 * the kernel: `nlmsghdr` is u32 len, u16 type, u16 flags, u32 seq, u32 port; `nlattr` is
 * u16 len, u16 type; both padded to 4 bytes.
 */
import { endianness } from 'node:os';

const LE = endianness() === 'LE';

export function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  if (LE) b.writeUInt16LE(n, 0);
  else b.writeUInt16BE(n, 0);
  return b;
}

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  if (LE) b.writeUInt32LE(n >>> 0, 0);
  else b.writeUInt32BE(n >>> 0, 0);
  return b;
}

export function readU16(b: Buffer, off: number): number {
  return LE ? b.readUInt16LE(off) : b.readUInt16BE(off);
}

export function readU32(b: Buffer, off: number): number {
  return LE ? b.readUInt32LE(off) : b.readUInt32BE(off);
}

export const NESTED = 0x8000;

/** One attribute, padded to 4 bytes. */
export function attr(type: number, payload: Buffer): Buffer {
  const len = 4 + payload.length;
  const out = Buffer.alloc((len + 3) & ~3);
  u16(len).copy(out, 0);
  u16(type).copy(out, 2);
  payload.copy(out, 4);
  return out;
}

/** One netlink message, padded to 4 bytes. */
export function nlmsg(type: number, flags: number, seq: number, port: number, payload: Buffer): Buffer {
  const out = Buffer.alloc((16 + payload.length + 3) & ~3);
  u32(16 + payload.length).copy(out, 0);
  u16(type).copy(out, 4);
  u16(flags).copy(out, 6);
  u32(seq).copy(out, 8);
  u32(port).copy(out, 12);
  payload.copy(out, 16);
  return out;
}

/** NLMSG_ERROR (type 2, NLM_F_CAPPED) with `error = -errno` and the request's header echoed. */
export function errorReply(seq: number, port: number, errno: number, request?: Buffer): Buffer {
  const p = Buffer.alloc(20);
  const err = Buffer.alloc(4);
  if (LE) err.writeInt32LE(-errno, 0);
  else err.writeInt32BE(-errno, 0);
  err.copy(p, 0);
  request?.copy(p, 4, 0, 16);
  return nlmsg(2, 0x100, seq, port, p);
}

/** NLMSG_DONE (type 3, NLM_F_MULTI) ending a dump. */
export function doneReply(seq: number, port = 0): Buffer {
  return nlmsg(3, 2, seq, port, Buffer.alloc(4));
}

export interface SentMessage {
  type: number;
  flags: number;
  seq: number;
  port: number;
  /** Payload after the nlmsghdr. */
  payload: Buffer;
  /** The whole message as sent. */
  bytes: Buffer;
}

/** Splits a datagram the code under test sent into its messages (copies, safe to keep). */
export function splitDatagram(datagram: Buffer): SentMessage[] {
  const out: SentMessage[] = [];
  let off = 0;
  while (off + 16 <= datagram.length) {
    const len = readU32(datagram, off);
    out.push({
      type: readU16(datagram, off + 4),
      flags: readU16(datagram, off + 6),
      seq: readU32(datagram, off + 8),
      port: readU32(datagram, off + 12),
      payload: Buffer.from(datagram.subarray(off + 16, off + len)),
      bytes: Buffer.from(datagram.subarray(off, off + len)),
    });
    off += (len + 3) & ~3;
  }
  return out;
}

/** Attribute `type` (flag bits masked) of a run, or undefined. */
export function getAttr(buf: Buffer, type: number): Buffer | undefined {
  let off = 0;
  while (off + 4 <= buf.length) {
    const len = readU16(buf, off);
    if ((readU16(buf, off + 2) & 0x3fff) === type) return buf.subarray(off + 4, off + len);
    off += (len + 3) & ~3;
  }
  return undefined;
}

/** Every attribute of a run as [type, payload]. */
export function attrs(buf: Buffer): Array<[number, Buffer]> {
  const out: Array<[number, Buffer]> = [];
  let off = 0;
  while (off + 4 <= buf.length) {
    const len = readU16(buf, off);
    out.push([readU16(buf, off + 2) & 0x3fff, buf.subarray(off + 4, off + len)]);
    off += (len + 3) & ~3;
  }
  return out;
}
