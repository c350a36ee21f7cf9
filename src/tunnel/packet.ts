/**
 * IPv4 header helpers for the per-packet path. Every function reads the Buffer in place and
 * allocates nothing (addresses are returned as host-order numbers, as in src/util/ipv4.ts), so
 * they can run on every packet moving between the TUN device and the DTLS sessions.
 *
 * Callers that have not validated a packet yet should call `checkIpv4(buf)` first (or
 * `isIpv4(buf)` for the cheap version-and-length test); the accessors assume a buffer of at
 * least 20 bytes.
 */

/** Result codes of checkIpv4(); 0 means the header is well-formed. */
export const Ipv4Check = {
  OK: 0,
  /** Shorter than a minimal IPv4 header (20 bytes). */
  TOO_SHORT: 1,
  /** The version nibble is not 4 (e.g. an IPv6 packet, version 6). */
  BAD_VERSION: 2,
  /** IHL below 5 words, or a header longer than the buffer. */
  BAD_HEADER_LENGTH: 3,
  /** Total length smaller than the header, or larger than the buffer. */
  BAD_TOTAL_LENGTH: 4,
} as const;
export type Ipv4CheckCode = (typeof Ipv4Check)[keyof typeof Ipv4Check];

const CHECK_TEXT: Record<Ipv4CheckCode, string> = {
  0: 'ok',
  1: 'shorter than an IPv4 header (20 bytes)',
  2: 'not IPv4 (version field is not 4)',
  3: 'bad IPv4 header length (IHL)',
  4: 'IPv4 total length does not match the packet',
};

export const IPV4_MIN_HEADER = 20;
export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

/** Human-readable reason for a checkIpv4() code (for logs; not for the hot path). */
export function describeIpv4Check(code: Ipv4CheckCode): string {
  return CHECK_TEXT[code];
}

/** Version nibble of the first byte (4 or 6 for real traffic), or -1 for an empty buffer. */
export function ipVersion(buf: Uint8Array): number {
  return buf.length === 0 ? -1 : (buf[0] as number) >>> 4;
}

/** Cheap test: at least 20 bytes and version 4. */
export function isIpv4(buf: Uint8Array): boolean {
  return buf.length >= IPV4_MIN_HEADER && (buf[0] as number) >>> 4 === 4;
}

/**
 * Validates version, IHL and total length against the buffer. A buffer longer than the total
 * length (trailing bytes) is accepted, as the kernel does; use ipv4TotalLength() to trim.
 * This is a general header check; what the gateway forwards from an enclave is decided by
 * the stricter classifyEnclavePacket().
 */
export function checkIpv4(buf: Uint8Array): Ipv4CheckCode {
  if (buf.length < IPV4_MIN_HEADER) return Ipv4Check.TOO_SHORT;
  const b0 = buf[0] as number;
  if (b0 >>> 4 !== 4) return Ipv4Check.BAD_VERSION;
  const ihl = (b0 & 0x0f) << 2;
  if (ihl < IPV4_MIN_HEADER || ihl > buf.length) return Ipv4Check.BAD_HEADER_LENGTH;
  const total = ((buf[2] as number) << 8) | (buf[3] as number);
  if (total < ihl || total > buf.length) return Ipv4Check.BAD_TOTAL_LENGTH;
  return Ipv4Check.OK;
}

/**
 * What the gateway does with a record an enclave sent on its receive session (SPEC §1.4).
 * This is THE definition of a valid inner packet, for every path that writes enclave packets
 * into the TUN device (the native fast path in native/dtls must agree with it):
 *
 *   1. `oversize`  — the record is longer than the TUN MTU (1432);
 *   2. `malformed` — shorter than 20 bytes, version ≠ 4, IHL < 5, IHL × 4 > the record, or the
 *                    total-length field ≠ the record length (one packet per record, no
 *                    trailing bytes);
 *   3. `spoofed`   — the source address is not the enclave's IP;
 *   otherwise `ok`: the packet may be written to the TUN device.
 */
export type EnclavePacketVerdict = 'ok' | 'oversize' | 'malformed' | 'spoofed';

/** Classifies one record from an enclave whose IP is `enclaveIp` (host order); see above. */
export function classifyEnclavePacket(buf: Uint8Array, mtu: number, enclaveIp: number): EnclavePacketVerdict {
  const len = buf.length;
  if (len > mtu) return 'oversize';
  if (len < IPV4_MIN_HEADER) return 'malformed';
  const b0 = buf[0] as number;
  const ihl = (b0 & 0x0f) << 2;
  if (b0 >>> 4 !== 4 || ihl < IPV4_MIN_HEADER || ihl > len) return 'malformed';
  if ((((buf[2] as number) << 8) | (buf[3] as number)) !== len) return 'malformed';
  return read32(buf, 12) === enclaveIp >>> 0 ? 'ok' : 'spoofed';
}

/**
 * The rule for packets the kernel routes into the TUN device, towards an enclave, in this
 * order: `malformed` if shorter than 20 bytes or not IPv4 (the destination cannot be read);
 * `unknownDestination` if `lookup(destination)` finds no owner; `oversize` if longer than the
 * MTU. Otherwise returns the owner (an object, so `typeof result === 'string'` tells a drop).
 */
export function routeDevicePacket<T extends object>(
  buf: Uint8Array,
  mtu: number,
  lookup: (destination: number) => T | undefined,
): T | 'malformed' | 'unknownDestination' | 'oversize' {
  if (!isIpv4(buf)) return 'malformed';
  const owner = lookup(read32(buf, 16));
  if (owner === undefined) return 'unknownDestination';
  return buf.length > mtu ? 'oversize' : owner;
}

/** Drop reasons on the data path; the gateway counts each (per enclave and in total). */
export type PacketDropReason = 'oversize' | 'malformed' | 'spoofed' | 'unknownDestination';

/** Header length in bytes (IHL × 4). */
export function ipv4HeaderLength(buf: Uint8Array): number {
  return ((buf[0] as number) & 0x0f) << 2;
}

/** The header's total-length field. */
export function ipv4TotalLength(buf: Uint8Array): number {
  return ((buf[2] as number) << 8) | (buf[3] as number);
}

/** Protocol number (1 ICMP, 6 TCP, 17 UDP, …). */
export function ipv4Protocol(buf: Uint8Array): number {
  return buf[9] as number;
}

export function ipv4Ttl(buf: Uint8Array): number {
  return buf[8] as number;
}

/** True for any fragment other than a complete datagram (MF set or offset ≠ 0). */
export function ipv4IsFragment(buf: Uint8Array): boolean {
  return ((((buf[6] as number) << 8) | (buf[7] as number)) & 0x3fff) !== 0;
}

function read32(buf: Uint8Array, off: number): number {
  return (
    (((buf[off] as number) << 24) |
      ((buf[off + 1] as number) << 16) |
      ((buf[off + 2] as number) << 8) |
      (buf[off + 3] as number)) >>>
    0
  );
}

function write32(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v >>> 24;
  buf[off + 1] = (v >>> 16) & 0xff;
  buf[off + 2] = (v >>> 8) & 0xff;
  buf[off + 3] = v & 0xff;
}

/** Source address, host order (192.168.28.2 → 0xc0a81c02). */
export function ipv4Source(buf: Uint8Array): number {
  return read32(buf, 12);
}

/** Destination address, host order. */
export function ipv4Destination(buf: Uint8Array): number {
  return read32(buf, 16);
}

/** Overwrites the source address (does not fix the checksum; see ipv4UpdateChecksum). */
export function setIpv4Source(buf: Uint8Array, ip: number): void {
  write32(buf, 12, ip);
}

export function setIpv4Destination(buf: Uint8Array, ip: number): void {
  write32(buf, 16, ip);
}

/**
 * One's-complement sum of buf[start, end) as 16-bit big-endian words (odd tail padded with a
 * zero byte), added to `initial`, folded to 16 bits. Not complemented: ~result & 0xffff is the
 * Internet checksum.
 */
export function onesComplementSum(buf: Uint8Array, start = 0, end = buf.length, initial = 0): number {
  let sum = initial;
  let i = start;
  for (; i + 1 < end; i += 2) sum += ((buf[i] as number) << 8) | (buf[i + 1] as number);
  if (i < end) sum += (buf[i] as number) << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/** RFC 1071 Internet checksum of buf[start, end). */
export function internetChecksum(buf: Uint8Array, start = 0, end = buf.length): number {
  return ~onesComplementSum(buf, start, end) & 0xffff;
}

/** True if the IPv4 header checksum is correct. */
export function ipv4HeaderChecksumOk(buf: Uint8Array): boolean {
  return onesComplementSum(buf, 0, ipv4HeaderLength(buf)) === 0xffff;
}

/** Recomputes and stores the IPv4 header checksum in place. */
export function ipv4UpdateChecksum(buf: Uint8Array): void {
  buf[10] = 0;
  buf[11] = 0;
  const c = internetChecksum(buf, 0, ipv4HeaderLength(buf));
  buf[10] = c >>> 8;
  buf[11] = c & 0xff;
}

export const ICMP_ECHO_REPLY = 0;
export const ICMP_ECHO_REQUEST = 8;

/** True for a well-formed, unfragmented IPv4 ICMP echo request. */
export function isIcmpEchoRequest(buf: Uint8Array): boolean {
  if (checkIpv4(buf) !== Ipv4Check.OK || ipv4Protocol(buf) !== IPPROTO_ICMP || ipv4IsFragment(buf)) {
    return false;
  }
  const ihl = ipv4HeaderLength(buf);
  return ipv4TotalLength(buf) >= ihl + 8 && buf[ihl] === ICMP_ECHO_REQUEST && buf[ihl + 1] === 0;
}

/**
 * Turns an ICMP echo request into the matching echo reply, in place: swaps the addresses,
 * sets type 0, resets the TTL to 64 and fixes both checksums. Returns false (and leaves the
 * buffer untouched) if it is not an echo request. Intended for tests and simulators.
 */
export function icmpEchoRequestToReply(buf: Uint8Array): boolean {
  if (!isIcmpEchoRequest(buf)) return false;
  const ihl = ipv4HeaderLength(buf);
  const total = ipv4TotalLength(buf);
  const src = ipv4Source(buf);
  setIpv4Source(buf, ipv4Destination(buf));
  setIpv4Destination(buf, src);
  buf[8] = 64;
  ipv4UpdateChecksum(buf);
  buf[ihl] = ICMP_ECHO_REPLY;
  buf[ihl + 2] = 0;
  buf[ihl + 3] = 0;
  const c = internetChecksum(buf, ihl, total);
  buf[ihl + 2] = c >>> 8;
  buf[ihl + 3] = c & 0xff;
  return true;
}

/**
 * Builds an IPv4/UDP packet (checksums filled in). Allocates one Buffer; meant for tests,
 * simulators and benchmarks rather than the forwarding path.
 */
export function buildUdpPacket(opts: {
  src: number;
  dst: number;
  srcPort: number;
  dstPort: number;
  payload: Uint8Array;
  ttl?: number;
  id?: number;
}): Buffer {
  const total = IPV4_MIN_HEADER + 8 + opts.payload.length;
  if (total > 0xffff) throw new RangeError(`UDP payload of ${opts.payload.length} bytes does not fit IPv4`);
  const b = Buffer.allocUnsafe(total);
  b[0] = 0x45;
  b[1] = 0;
  b.writeUInt16BE(total, 2);
  b.writeUInt16BE((opts.id ?? 0) & 0xffff, 4);
  b.writeUInt16BE(0x4000, 6); // DF
  b[8] = opts.ttl ?? 64;
  b[9] = IPPROTO_UDP;
  setIpv4Source(b, opts.src);
  setIpv4Destination(b, opts.dst);
  ipv4UpdateChecksum(b);
  b.writeUInt16BE(opts.srcPort, 20);
  b.writeUInt16BE(opts.dstPort, 22);
  b.writeUInt16BE(8 + opts.payload.length, 24);
  b.writeUInt16BE(0, 26);
  b.set(opts.payload, 28);
  // Pseudo-header: src, dst, zero+protocol, UDP length.
  let sum = onesComplementSum(b, 12, 20, IPPROTO_UDP + 8 + opts.payload.length);
  sum = onesComplementSum(b, 20, total, sum);
  const c = ~sum & 0xffff;
  b.writeUInt16BE(c === 0 ? 0xffff : c, 26);
  return b;
}

/** Checks the UDP checksum of an unfragmented IPv4/UDP packet (0 = no checksum = ok). */
export function udpChecksumOk(buf: Uint8Array): boolean {
  const ihl = ipv4HeaderLength(buf);
  const total = ipv4TotalLength(buf);
  if (total < ihl + 8) return false;
  if (buf[ihl + 6] === 0 && buf[ihl + 7] === 0) return true;
  const udpLen = total - ihl;
  const sum = onesComplementSum(buf, ihl, total, onesComplementSum(buf, 12, 20, IPPROTO_UDP + udpLen));
  return sum === 0xffff;
}

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
export const TCP_CWR = 0x80;

/**
 * Builds an IPv4/TCP packet (no IP options; checksums filled in). `options` are raw TCP option
 * bytes (padded to a multiple of 4 with NOPs). For tests, simulators and benchmarks.
 */
export function buildTcpPacket(opts: {
  src: number;
  dst: number;
  srcPort: number;
  dstPort: number;
  seq: number;
  ack?: number;
  flags?: number;
  window?: number;
  options?: Uint8Array;
  payload: Uint8Array;
  ttl?: number;
  id?: number;
}): Buffer {
  const optLen = ((opts.options?.length ?? 0) + 3) & ~3;
  const thl = 20 + optLen;
  const total = IPV4_MIN_HEADER + thl + opts.payload.length;
  if (thl > 60 || total > 0xffff) throw new RangeError('TCP options or payload too long for IPv4');
  const b = Buffer.alloc(total);
  b[0] = 0x45;
  b.writeUInt16BE(total, 2);
  b.writeUInt16BE((opts.id ?? 0) & 0xffff, 4);
  b.writeUInt16BE(0x4000, 6); // DF
  b[8] = opts.ttl ?? 64;
  b[9] = IPPROTO_TCP;
  setIpv4Source(b, opts.src);
  setIpv4Destination(b, opts.dst);
  ipv4UpdateChecksum(b);
  const t = IPV4_MIN_HEADER;
  b.writeUInt16BE(opts.srcPort, t);
  b.writeUInt16BE(opts.dstPort, t + 2);
  b.writeUInt32BE(opts.seq >>> 0, t + 4);
  b.writeUInt32BE((opts.ack ?? 0) >>> 0, t + 8);
  b[t + 12] = (thl / 4) << 4;
  b[t + 13] = opts.flags ?? TCP_ACK;
  b.writeUInt16BE(opts.window ?? 65535, t + 14);
  if (opts.options) {
    b.fill(1, t + 20, t + thl); // NOP padding
    b.set(opts.options, t + 20);
  }
  b.set(opts.payload, t + thl);
  const sum = onesComplementSum(
    b,
    t,
    total,
    onesComplementSum(b, 12, 20, IPPROTO_TCP + thl + opts.payload.length),
  );
  b.writeUInt16BE(~sum & 0xffff, t + 16);
  return b;
}

/** Checks the TCP checksum of an unfragmented IPv4/TCP packet. */
export function tcpChecksumOk(buf: Uint8Array): boolean {
  const ihl = ipv4HeaderLength(buf);
  const total = ipv4TotalLength(buf);
  if (total < ihl + 20 || total > buf.length) return false;
  const sum = onesComplementSum(buf, ihl, total, onesComplementSum(buf, 12, 20, IPPROTO_TCP + total - ihl));
  return sum === 0xffff;
}
