/**
 * A small, strict DER reader and writer: just what RA-TLS certificates, X.509 chains
 * and Intel's SGX certificate extensions need. The reader never throws anything but
 * `DerError`, whatever bytes it is given, so callers can turn every malformed input
 * into one typed parse error.
 */

export class DerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DerError';
  }
}

export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  ENUMERATED: 0x0a,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** One decoded TLV. `raw` is the whole element (tag, length, value); `value` its contents. */
export interface DerNode {
  tag: number;
  /** Offset of the element in the buffer it was read from. */
  offset: number;
  raw: Buffer;
  value: Buffer;
}

const MAX_DEPTH_BYTES = 4;

/** Reads one element at `offset` of `buf`; the element must lie entirely within `end`. */
export function readNode(buf: Buffer, offset = 0, end = buf.length): DerNode {
  if (offset + 2 > end) throw new DerError(`truncated element at offset ${offset}`);
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError(`unsupported high tag number at offset ${offset}`);
  let len = buf[offset + 1]!;
  let hdr = 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0) throw new DerError(`indefinite length at offset ${offset} (not DER)`);
    if (n > MAX_DEPTH_BYTES) throw new DerError(`length of ${n} bytes at offset ${offset} is too large`);
    if (offset + 2 + n > end) throw new DerError(`truncated length at offset ${offset}`);
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[offset + 2 + i]!;
    if (buf[offset + 2] === 0 || len < 0x80) throw new DerError(`non-minimal length at offset ${offset}`);
    hdr += n;
  }
  if (offset + hdr + len > end) throw new DerError(`element at offset ${offset} overruns its container`);
  return {
    tag,
    offset,
    raw: buf.subarray(offset, offset + hdr + len),
    value: buf.subarray(offset + hdr, offset + hdr + len),
  };
}

/** Children of a constructed element (SEQUENCE, SET, [n] constructed). */
export function children(node: DerNode): DerNode[] {
  if ((node.tag & 0x20) === 0)
    throw new DerError(`element with tag 0x${node.tag.toString(16)} is not constructed`);
  const out: DerNode[] = [];
  let off = 0;
  const v = node.value;
  while (off < v.length) {
    const c = readNode(v, off, v.length);
    out.push(c);
    off += c.raw.length;
  }
  return out;
}

/** Parses a buffer that must hold exactly one element. */
export function parseDer(buf: Buffer): DerNode {
  const n = readNode(buf, 0, buf.length);
  if (n.raw.length !== buf.length)
    throw new DerError(`${buf.length - n.raw.length} trailing bytes after DER element`);
  return n;
}

export function expectTag(node: DerNode | undefined, tag: number, what: string): DerNode {
  if (!node) throw new DerError(`missing ${what}`);
  if (node.tag !== tag) {
    throw new DerError(`${what}: expected tag 0x${tag.toString(16)}, got 0x${node.tag.toString(16)}`);
  }
  return node;
}

export function decodeOid(node: DerNode): string {
  expectTag(node, TAG.OID, 'OBJECT IDENTIFIER');
  const v = node.value;
  if (v.length === 0) throw new DerError('empty OBJECT IDENTIFIER');
  const arcs: number[] = [];
  let cur = 0;
  for (let i = 0; i < v.length; i++) {
    const b = v[i]!;
    if (cur === 0 && b === 0x80) throw new DerError('non-minimal OBJECT IDENTIFIER arc');
    cur = cur * 128 + (b & 0x7f);
    if (cur > Number.MAX_SAFE_INTEGER / 128) throw new DerError('OBJECT IDENTIFIER arc too large');
    if ((b & 0x80) === 0) {
      arcs.push(cur);
      cur = 0;
    } else if (i === v.length - 1) {
      throw new DerError('truncated OBJECT IDENTIFIER');
    }
  }
  const first = arcs[0]!;
  const head = first < 40 ? [0, first] : first < 80 ? [1, first - 40] : [2, first - 80];
  return [...head, ...arcs.slice(1)].join('.');
}

export function decodeBoolean(node: DerNode): boolean {
  expectTag(node, TAG.BOOLEAN, 'BOOLEAN');
  if (node.value.length !== 1) throw new DerError('BOOLEAN must be one byte');
  return node.value[0] !== 0;
}

/** Non-negative INTEGER or ENUMERATED as a JS number (throws if it does not fit). */
export function decodeSmallInt(node: DerNode): number {
  if (node.tag !== TAG.INTEGER && node.tag !== TAG.ENUMERATED) throw new DerError('expected INTEGER');
  const v = node.value;
  if (v.length === 0 || v.length > 6) throw new DerError('INTEGER out of range');
  if (v[0]! & 0x80) throw new DerError('negative INTEGER');
  let n = 0;
  for (const b of v) n = n * 256 + b;
  return n;
}

/** Contents of a BIT STRING without its unused-bits byte (which must be 0 for keys/signatures). */
export function decodeBitString(node: DerNode): Buffer {
  expectTag(node, TAG.BIT_STRING, 'BIT STRING');
  if (node.value.length === 0) throw new DerError('empty BIT STRING');
  if (node.value[0] !== 0) throw new DerError('BIT STRING with unused bits');
  return node.value.subarray(1);
}

/** Bits of a BIT STRING (e.g. keyUsage) as a number, bit 0 = most significant bit of the first byte. */
export function decodeBitFlags(node: DerNode): number {
  expectTag(node, TAG.BIT_STRING, 'BIT STRING');
  if (node.value.length === 0) throw new DerError('empty BIT STRING');
  let flags = 0;
  const bytes = node.value.subarray(1, 5);
  bytes.forEach((b, i) => {
    for (let bit = 0; bit < 8; bit++) if (b & (0x80 >> bit)) flags |= 1 << (i * 8 + bit);
  });
  return flags >>> 0;
}

export function decodeTime(node: DerNode): Date {
  const s = node.value.toString('latin1');
  let m: RegExpExecArray | null;
  if (node.tag === TAG.UTC_TIME) {
    m = /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s);
    if (!m) throw new DerError(`malformed UTCTime "${s}"`);
    const yy = Number(m[1]);
    const year = yy >= 50 ? 1900 + yy : 2000 + yy;
    return checkedDate(year, m);
  }
  if (node.tag === TAG.GENERALIZED_TIME) {
    m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s);
    if (!m) throw new DerError(`malformed GeneralizedTime "${s}"`);
    return checkedDate(Number(m[1]), m);
  }
  throw new DerError('expected UTCTime or GeneralizedTime');
}

function checkedDate(year: number, m: RegExpExecArray): Date {
  const [mo, d, h, mi, se] = [2, 3, 4, 5, 6].map((i) => Number(m[i]));
  const t = Date.UTC(year, mo! - 1, d, h, mi, se);
  const dt = new Date(t);
  if (
    Number.isNaN(t) ||
    dt.getUTCMonth() !== mo! - 1 ||
    dt.getUTCDate() !== d ||
    h! > 23 ||
    mi! > 59 ||
    se! > 60
  ) {
    throw new DerError(`invalid date ${m[0]}`);
  }
  return dt;
}

// ---------------------------------------------------------------------------------------------
// Writer

function encodeLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  while (n > 0) {
    bytes.unshift(n & 0xff);
    n = Math.floor(n / 256);
  }
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

export function tlv(tag: number, value: Buffer): Buffer {
  return Buffer.concat([Buffer.from([tag]), encodeLength(value.length), value]);
}

export const seq = (...items: Buffer[]): Buffer => tlv(TAG.SEQUENCE, Buffer.concat(items));
export const set = (...items: Buffer[]): Buffer => tlv(TAG.SET, Buffer.concat(items));
export const octets = (b: Buffer): Buffer => tlv(TAG.OCTET_STRING, b);
export const bitString = (b: Buffer): Buffer => tlv(TAG.BIT_STRING, Buffer.concat([Buffer.from([0]), b]));
export const boolean = (v: boolean): Buffer => tlv(TAG.BOOLEAN, Buffer.from([v ? 0xff : 0]));
export const nullValue = (): Buffer => Buffer.from([TAG.NULL, 0]);
export const utf8 = (s: string): Buffer => tlv(TAG.UTF8_STRING, Buffer.from(s, 'utf8'));
/** Context-specific constructed [n]. */
export const explicit = (n: number, inner: Buffer): Buffer => tlv(0xa0 | n, inner);

export function integer(v: number | Buffer): Buffer {
  let b: Buffer;
  if (typeof v === 'number') {
    const bytes: number[] = [];
    let n = v;
    do {
      bytes.unshift(n & 0xff);
      n = Math.floor(n / 256);
    } while (n > 0);
    b = Buffer.from(bytes);
  } else {
    let i = 0;
    while (i < v.length - 1 && v[i] === 0) i++;
    b = v.subarray(i);
  }
  if (b.length === 0) b = Buffer.from([0]);
  if (b[0]! & 0x80) b = Buffer.concat([Buffer.from([0]), b]);
  return tlv(TAG.INTEGER, b);
}

export function oid(dotted: string): Buffer {
  const arcs = dotted.split('.').map(Number);
  const first = arcs[0]! * 40 + arcs[1]!;
  const out: number[] = [];
  for (const arc of [first, ...arcs.slice(2)]) {
    const chunk: number[] = [arc & 0x7f];
    let n = Math.floor(arc / 128);
    while (n > 0) {
      chunk.unshift((n & 0x7f) | 0x80);
      n = Math.floor(n / 128);
    }
    out.push(...chunk);
  }
  return tlv(TAG.OID, Buffer.from(out));
}

/** UTCTime for years 1950–2049, GeneralizedTime otherwise (RFC 5280 §4.1.2.5). */
export function time(d: Date): Buffer {
  const iso = d.toISOString();
  const year = d.getUTCFullYear();
  const body = iso.slice(5, 19).replace(/[-T:]/g, '') + 'Z';
  if (year >= 1950 && year < 2050)
    return tlv(TAG.UTC_TIME, Buffer.from(String(year).slice(2) + body, 'latin1'));
  return tlv(TAG.GENERALIZED_TIME, Buffer.from(String(year).padStart(4, '0') + body, 'latin1'));
}
