/**
 * The invalid inner-packet forms of SPEC §1.4 (see classifyEnclavePacket in
 * src/tunnel/packet.ts), built for an enclave with IP `ip`: used by the gateway's unit
 * tests (JS path) and by the real-gateway test that also covers the native fast path.
 */
import { internetChecksum, ipv4UpdateChecksum } from '../../src/tunnel/packet.js';

export const TUN_MTU = 1432;
const SERVICE = 0x0a630002; // 10.99.0.2

export type DropReason = 'oversize' | 'malformed' | 'spoofed';

/** A minimal IPv4 header (no options) of `len` bytes from src to dst. */
export function ipv4Packet(src: number, dst: number, len = 60): Buffer {
  const p = Buffer.alloc(len);
  p[0] = 0x45;
  p.writeUInt16BE(len, 2);
  p.writeUInt32BE(src >>> 0, 12);
  p.writeUInt32BE(dst >>> 0, 16);
  return p;
}

export function invalidForms(ip: number): { name: string; reason: DropReason; packet: Buffer }[] {
  const p = (mutate: (b: Buffer) => Buffer | void, len = 60) => {
    const b = ipv4Packet(ip, SERVICE, len);
    return mutate(b) ?? b;
  };
  return [
    { name: 'larger than the MTU', reason: 'oversize', packet: p(() => {}, TUN_MTU + 1) },
    { name: 'shorter than 20 bytes', reason: 'malformed', packet: p((b) => b.subarray(0, 19)) },
    { name: 'version 6', reason: 'malformed', packet: p((b) => void (b[0] = 0x65)) },
    { name: 'IHL below 5', reason: 'malformed', packet: p((b) => void (b[0] = 0x44)) },
    { name: 'IHL × 4 longer than the record', reason: 'malformed', packet: p((b) => void (b[0] = 0x4f), 40) },
    {
      name: 'total length shorter than the record (trailing bytes)',
      reason: 'malformed',
      packet: p((b) => void b.writeUInt16BE(40, 2)),
    },
    {
      name: 'total length longer than the record',
      reason: 'malformed',
      packet: p((b) => void b.writeUInt16BE(80, 2)),
    },
    { name: 'source is not the enclave', reason: 'spoofed', packet: ipv4Packet(0xc0a81c63, SERVICE) },
  ];
}

/** A valid packet from the enclave (the marker that must reach the TUN device). */
export function validPacket(ip: number): Buffer {
  return ipv4Packet(ip, SERVICE);
}

/** An ICMP echo request (valid checksums) from src to dst with this sequence number. */
export function echoRequest(src: number, dst: number, seq: number): Buffer {
  const b = ipv4Packet(src, dst, 28);
  b[8] = 64;
  b[9] = 1; // ICMP
  ipv4UpdateChecksum(b);
  b[20] = 8; // echo request
  b.writeUInt16BE(0x5e6e, 24);
  b.writeUInt16BE(seq & 0xffff, 26);
  b.writeUInt16BE(internetChecksum(b, 20, 28), 22);
  return b;
}

/** The sequence number of an ICMP echo reply, or undefined for anything else. */
export function echoReplySeq(b: Buffer): number | undefined {
  if (b.length < 28 || b[9] !== 1 || b[20] !== 0) return undefined;
  return b.readUInt16BE(26);
}
