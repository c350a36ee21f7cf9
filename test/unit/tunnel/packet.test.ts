import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Ipv4Check,
  buildUdpPacket,
  checkIpv4,
  describeIpv4Check,
  icmpEchoRequestToReply,
  internetChecksum,
  ipVersion,
  ipv4Destination,
  ipv4HeaderChecksumOk,
  ipv4HeaderLength,
  ipv4IsFragment,
  ipv4Protocol,
  ipv4Source,
  ipv4TotalLength,
  ipv4Ttl,
  ipv4UpdateChecksum,
  isIcmpEchoRequest,
  isIpv4,
  setIpv4Destination,
  setIpv4Source,
  udpChecksumOk,
  IPPROTO_ICMP,
  IPPROTO_UDP,
} from '../../../src/tunnel/packet.js';
import { parseIpv4 } from '../../../src/util/ipv4.js';

// An ICMP echo request the kernel wrote into a TUN device (`ping -c1 -s 11 -p 41 10.77.0.2`
// from 10.77.0.1): its header and ICMP checksums were computed by Linux, not by us.
const KERNEL_PING = '4500002747fe40004001de3b0a4d00010a4d0002080054581c6000014141414141414141414141';

function ping(): Buffer {
  return Buffer.from(KERNEL_PING, 'hex');
}

test('header accessors read a kernel-made packet', () => {
  const p = ping();
  assert.equal(checkIpv4(p), Ipv4Check.OK);
  assert.ok(isIpv4(p));
  assert.equal(ipVersion(p), 4);
  assert.equal(ipv4HeaderLength(p), 20);
  assert.equal(ipv4TotalLength(p), 39);
  assert.equal(ipv4Protocol(p), IPPROTO_ICMP);
  assert.equal(ipv4Ttl(p), 64);
  assert.equal(ipv4Source(p), parseIpv4('10.77.0.1'));
  assert.equal(ipv4Destination(p), parseIpv4('10.77.0.2'));
  assert.equal(ipv4IsFragment(p), false); // DF only
  assert.ok(ipv4HeaderChecksumOk(p));
  assert.equal(internetChecksum(p, 20, 39), 0, 'ICMP checksum (odd length) verifies to zero');
  assert.ok(isIcmpEchoRequest(p));
});

test('addresses above 127.255.255.255 come back as unsigned host-order numbers', () => {
  const p = ping();
  setIpv4Source(p, parseIpv4('192.168.28.2'));
  setIpv4Destination(p, parseIpv4('255.255.255.254'));
  assert.equal(ipv4Source(p), 0xc0a81c02);
  assert.equal(ipv4Destination(p), 0xfffffffe);
  assert.equal(p.readUInt32BE(12), 0xc0a81c02);
  assert.equal(ipv4HeaderChecksumOk(p), false);
  ipv4UpdateChecksum(p);
  assert.ok(ipv4HeaderChecksumOk(p));
});

test('ipv4UpdateChecksum reproduces the kernel checksum', () => {
  const p = ping();
  p[10] = 0xde;
  p[11] = 0xad;
  ipv4UpdateChecksum(p);
  assert.equal(p.toString('hex'), KERNEL_PING);
});

test('checkIpv4 rejects malformed headers with specific codes', () => {
  assert.equal(checkIpv4(Buffer.alloc(0)), Ipv4Check.TOO_SHORT);
  assert.equal(checkIpv4(ping().subarray(0, 19)), Ipv4Check.TOO_SHORT);
  const v6 = ping();
  v6[0] = 0x60;
  assert.equal(checkIpv4(v6), Ipv4Check.BAD_VERSION);
  assert.equal(isIpv4(v6), false);
  assert.equal(ipVersion(v6), 6);
  assert.equal(ipVersion(Buffer.alloc(0)), -1);
  const shortIhl = ping();
  shortIhl[0] = 0x44;
  assert.equal(checkIpv4(shortIhl), Ipv4Check.BAD_HEADER_LENGTH);
  const longIhl = ping().subarray(0, 24);
  longIhl[0] = 0x47; // 28-byte header in a 24-byte buffer
  assert.equal(checkIpv4(longIhl), Ipv4Check.BAD_HEADER_LENGTH);
  const truncated = ping().subarray(0, 30);
  assert.equal(checkIpv4(truncated), Ipv4Check.BAD_TOTAL_LENGTH);
  const tooSmallTotal = ping();
  tooSmallTotal.writeUInt16BE(19, 2);
  assert.equal(checkIpv4(tooSmallTotal), Ipv4Check.BAD_TOTAL_LENGTH);
  // Trailing bytes beyond the total length are tolerated.
  assert.equal(checkIpv4(Buffer.concat([ping(), Buffer.alloc(3)])), Ipv4Check.OK);
  assert.match(describeIpv4Check(Ipv4Check.BAD_VERSION), /not IPv4/);
});

test('fragment detection: MF flag or non-zero offset', () => {
  const p = ping();
  p.writeUInt16BE(0x2000, 6); // MF
  assert.ok(ipv4IsFragment(p));
  p.writeUInt16BE(0x0001, 6); // offset 8
  assert.ok(ipv4IsFragment(p));
  p.writeUInt16BE(0x4000, 6); // DF only
  assert.ok(!ipv4IsFragment(p));
});

test('icmpEchoRequestToReply swaps addresses and produces valid checksums', () => {
  const p = ping();
  assert.ok(icmpEchoRequestToReply(p));
  assert.equal(ipv4Source(p), parseIpv4('10.77.0.2'));
  assert.equal(ipv4Destination(p), parseIpv4('10.77.0.1'));
  assert.equal(p[20], 0);
  assert.ok(ipv4HeaderChecksumOk(p));
  assert.equal(internetChecksum(p, 20, 39), 0);
  // Identifier, sequence and payload are kept.
  assert.equal(p.subarray(24).toString('hex'), Buffer.from(KERNEL_PING, 'hex').subarray(24).toString('hex'));
  // A reply is not a request: converting again is refused and changes nothing.
  const before = p.toString('hex');
  assert.equal(icmpEchoRequestToReply(p), false);
  assert.equal(p.toString('hex'), before);
  const udp = buildUdpPacket({ src: 1, dst: 2, srcPort: 3, dstPort: 4, payload: Buffer.alloc(4) });
  assert.equal(icmpEchoRequestToReply(udp), false);
});

test('buildUdpPacket: well-formed header, UDP checksum verifies, corruption is detected', () => {
  const payload = Buffer.from('hello, enclave!'); // odd length
  const p = buildUdpPacket({
    src: parseIpv4('192.168.28.2'),
    dst: parseIpv4('10.0.0.1'),
    srcPort: 40000,
    dstPort: 53,
    payload,
    id: 7,
  });
  assert.equal(p.length, 20 + 8 + payload.length);
  assert.equal(checkIpv4(p), Ipv4Check.OK);
  assert.equal(ipv4Protocol(p), IPPROTO_UDP);
  assert.ok(ipv4HeaderChecksumOk(p));
  assert.ok(udpChecksumOk(p));
  assert.equal(p.readUInt16BE(20), 40000);
  assert.equal(p.readUInt16BE(22), 53);
  assert.equal(p.subarray(28).toString(), 'hello, enclave!');
  p[30] = (p[30] as number) ^ 0x01;
  assert.equal(udpChecksumOk(p), false);
  assert.throws(
    () => buildUdpPacket({ src: 1, dst: 2, srcPort: 1, dstPort: 2, payload: Buffer.alloc(70000) }),
    RangeError,
  );
});

test('internetChecksum matches the RFC 1071 worked example', () => {
  // RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2 → checksum 0x220d.
  const b = Buffer.from('0001f203f4f5f6f7', 'hex');
  assert.equal(internetChecksum(b), 0x220d);
});
