/**
 * Netlink wire format, in host byte order (as the kernel reads it; `NLA_F_NET_BYTEORDER`
 * payloads and addresses are the exceptions, written big-endian by their encoders):
 * - `nlmsghdr` (16 bytes: u32 len, u16 type, u16 flags, u32 seq, u32 port) followed by the
 *   payload padded to 4 bytes;
 * - attributes (`nlattr`: u16 len, u16 type, payload, padding to 4 bytes; `len` counts
 *   header + payload, not padding);
 * - `NLMSG_ERROR` payloads (`struct nlmsgerr` and the extended-ack TLVs).
 * Pure functions only: no socket, no state.
 */
import { endianness } from 'node:os';
import { NetlinkProtocolError } from './errors.js';

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
/** In a NEW request: fail with EEXIST if the object exists. */
export const NLM_F_EXCL = 0x200;
/** In a NEW request: create the object if it does not exist. */
export const NLM_F_CREATE = 0x400;
/** In an ack: the original request is not echoed back in full. */
export const NLM_F_CAPPED = 0x100;
/** In an ack: extended-ack TLVs follow. */
export const NLM_F_ACK_TLVS = 0x200;

export const NLA_F_NESTED = 0x8000;
export const NLA_F_NET_BYTEORDER = 0x4000;
const NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xffff;

const NLMSGERR_ATTR_MSG = 1;

/** Address families, as nfgenmsg / ifaddrmsg carry them. */
export const AF_UNSPEC = 0;
export const AF_INET = 2;

export const NETLINK_ROUTE = 0;
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

/** Walks a run of attributes, bounds-checking each; `visit` returns true to stop. */
function walkAttrs(buf: Buffer, visit: (rawType: number, start: number, end: number) => boolean): void {
  let off = 0;
  while (off + NLA_HDRLEN <= buf.length) {
    const len = readU16(buf, off);
    if (len < NLA_HDRLEN || off + len > buf.length) {
      throw new NetlinkProtocolError(
        `netlink attribute at offset ${off} claims ${len} bytes of ${buf.length - off}`,
      );
    }
    if (visit(readU16(buf, off + 2), off, off + len)) return;
    off += align4(len);
  }
}

/** Parses a run of attributes. */
export function parseAttrs(buf: Buffer): NlAttr[] {
  const out: NlAttr[] = [];
  walkAttrs(buf, (rawType, start, end) => {
    out.push({
      type: rawType & NLA_TYPE_MASK,
      nested: (rawType & NLA_F_NESTED) !== 0,
      value: buf.subarray(start + NLA_HDRLEN, end),
      raw: buf.subarray(start, end),
    });
    return false;
  });
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
  let found: { value: Buffer; raw: Buffer } | undefined;
  walkAttrs(buf, (rawType, start, end) => {
    if ((rawType & NLA_TYPE_MASK) !== type) return false;
    found = { value: buf.subarray(start + NLA_HDRLEN, end), raw: buf.subarray(start, end) };
    return true;
  });
  return found;
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
  const errno = 0 - readI32(msg.payload, 0); // not -x: an ack would be -0
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
