/**
 * The pure offload functions of native/common (seng_gso_split, seng_gro_*, seng_ipv4_check),
 * driven through the TUN addon's test exports with crafted packets: no device, no root.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  buildTcpPacket,
  buildUdpPacket,
  checkIpv4,
  ipv4HeaderChecksumOk,
  loadTunAddon,
  tcpChecksumOk,
  udpChecksumOk,
  TCP_ACK,
  TCP_CWR,
  TCP_FIN,
  TCP_PSH,
  TCP_SYN,
} from '../../../src/tunnel/index.js';
import { parseIpv4 } from '../../../src/util/ipv4.js';

const addon = loadTunAddon();
const EINVAL = 22;
const EPROTONOSUPPORT = 93;
const MTU = 1432;
const SRC = parseIpv4('10.1.0.2');
const DST = parseIpv4('10.2.0.9');
/** Timestamp option as Linux sends it: NOP NOP TS(10). */
const TS_OPTION = Buffer.from([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);

function pattern(n: number, seed = 7): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

interface VnetHeader {
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
}

function vnet(h: VnetHeader): Buffer {
  const b = Buffer.alloc(10);
  b[0] = h.flags;
  b[1] = h.gsoType;
  b.writeUInt16LE(h.hdrLen, 2);
  b.writeUInt16LE(h.gsoSize, 4);
  b.writeUInt16LE(h.csumStart, 6);
  b.writeUInt16LE(h.csumOffset, 8);
  return b;
}

function readVnet(frame: Buffer): VnetHeader {
  return {
    flags: frame[0] as number,
    gsoType: frame[1] as number,
    hdrLen: frame.readUInt16LE(2),
    gsoSize: frame.readUInt16LE(4),
    csumStart: frame.readUInt16LE(6),
    csumOffset: frame.readUInt16LE(8),
  };
}

/** The pseudo-header sum the kernel leaves in the checksum field of a CHECKSUM_PARTIAL packet. */
function setPartialChecksum(pkt: Buffer, l4Offset: number, field: number, proto: number): void {
  let sum = proto + (pkt.length - l4Offset);
  for (let i = 12; i < 20; i += 2) sum += pkt.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  pkt.writeUInt16BE(sum, l4Offset + field);
}

/** A TSO super-packet as the kernel hands it over: vnet header + one big IPv4/TCP packet. */
function superFrame(
  payload: Buffer,
  opts: { gsoSize: number; flags: number; seq?: number; id?: number },
): Buffer {
  const pkt = buildTcpPacket({
    src: SRC,
    dst: DST,
    srcPort: 40000,
    dstPort: 5201,
    seq: opts.seq ?? 0xfffff000, // wraps around 2^32 inside the frame
    ack: 1234,
    flags: opts.flags,
    options: TS_OPTION,
    payload,
    id: opts.id ?? 0xfffe, // wraps around 2^16
  });
  setPartialChecksum(pkt, 20, 16, 6);
  return Buffer.concat([
    vnet({ flags: 1, gsoType: 1, hdrLen: 52, gsoSize: opts.gsoSize, csumStart: 20, csumOffset: 16 }),
    pkt,
  ]);
}

function split(frame: Buffer, mtu = MTU): Buffer[] {
  const r = addon.gsoSplit(frame, mtu);
  if (typeof r === 'number') throw new Error(`gsoSplit failed: ${r}`);
  const out: Buffer[] = [];
  let start = 0;
  for (let i = 0; i < r.ends.length / 4; i++) {
    const end = r.ends.readUInt32LE(i * 4);
    out.push(r.slab.subarray(start, end));
    start = end;
  }
  return out;
}

function assertValidSegments(
  segs: Buffer[],
  payload: Buffer,
  first: { seq: number; id: number; flags: number },
): void {
  let offset = 0;
  for (const [i, s] of segs.entries()) {
    assert.ok(s.length <= MTU, `segment ${i} is ${s.length} bytes`);
    assert.equal(checkIpv4(s), 0);
    assert.equal(s.readUInt16BE(2), s.length, 'total length');
    assert.ok(ipv4HeaderChecksumOk(s), `IP header checksum of segment ${i}`);
    assert.ok(tcpChecksumOk(s), `TCP checksum of segment ${i}`);
    assert.ok(addon.l4ChecksumOk(s));
    assert.equal(s.readUInt16BE(4), (first.id + i) & 0xffff, 'IP id');
    assert.equal(s.readUInt32BE(24), (first.seq + offset) >>> 0, 'sequence number');
    const last = i === segs.length - 1;
    const want = first.flags & ~(last ? 0 : TCP_FIN | TCP_PSH) & ~(i === 0 ? 0 : TCP_CWR) & 0xff;
    assert.equal(s[33], want, `flags of segment ${i}`);
    assert.deepEqual(s.subarray(40, 52), TS_OPTION, 'options copied');
    assert.deepEqual(s.subarray(52), payload.subarray(offset, offset + s.length - 52));
    offset += s.length - 52;
  }
  assert.equal(offset, payload.length, 'the segments carry the whole payload');
}

test('a TSO super-packet splits into valid packets of at most the MTU', () => {
  const payload = pattern(20_000);
  const flags = TCP_ACK | TCP_PSH | TCP_FIN | TCP_CWR;
  const segs = split(superFrame(payload, { gsoSize: 1380, flags }));
  assert.equal(segs.length, Math.ceil(20_000 / 1380));
  assert.equal(segs[0]?.length, 52 + 1380, 'gso_size decides the segment size when it fits the MTU');
  assertValidSegments(segs, payload, { seq: 0xfffff000, id: 0xfffe, flags });
});

test('gso_size larger than the MTU allows is clamped; exactly-MTU segments', () => {
  const payload = pattern(3 * (MTU - 52));
  const segs = split(superFrame(payload, { gsoSize: 9000, flags: TCP_ACK }));
  assert.equal(segs.length, 3);
  for (const s of segs) assert.equal(s.length, MTU);
  assertValidSegments(segs, payload, { seq: 0xfffff000, id: 0xfffe, flags: TCP_ACK });
  // A TSO frame without payload (possible for a bare FIN) stays one packet.
  const empty = split(superFrame(Buffer.alloc(0), { gsoSize: 1380, flags: TCP_ACK | TCP_FIN }));
  assert.equal(empty.length, 1);
  assert.ok(tcpChecksumOk(empty[0] as Buffer));
});

test('a CHECKSUM_PARTIAL packet gets its checksum completed; a plain one is copied', () => {
  const udp = buildUdpPacket({ src: SRC, dst: DST, srcPort: 53, dstPort: 3000, payload: pattern(333) });
  const partial = Buffer.from(udp);
  setPartialChecksum(partial, 20, 6, 17);
  const [done] = split(
    Buffer.concat([
      vnet({ flags: 1, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 20, csumOffset: 6 }),
      partial,
    ]),
  );
  assert.ok(udpChecksumOk(done as Buffer));
  assert.deepEqual(done, udp);
  const plain = split(Buffer.concat([Buffer.alloc(10), udp]));
  assert.deepEqual(plain, [udp]);
  // Non-IPv4 packets without offload flags pass through untouched (the router decides).
  const v6 = Buffer.from([0x60, 0, 0, 0, 0, 0, 59, 64]);
  assert.deepEqual(split(Buffer.concat([Buffer.alloc(10), v6])), [v6]);
});

test('malformed or unsupported frames are refused, not read out of bounds', () => {
  const good = superFrame(pattern(3000), { gsoSize: 1000, flags: TCP_ACK });
  assert.equal(addon.gsoSplit(good.subarray(0, 9), MTU), -EINVAL, 'shorter than the header');
  assert.equal(addon.gsoSplit(good.subarray(0, 10), MTU), -EINVAL, 'header only');
  const udpGso = Buffer.from(good);
  udpGso[1] = 5; // VIRTIO_NET_HDR_GSO_UDP_L4 on a TCP packet
  assert.equal(addon.gsoSplit(udpGso, MTU), -EINVAL);
  const tcp6Gso = Buffer.from(good);
  tcp6Gso[1] = 4; // VIRTIO_NET_HDR_GSO_TCPV6: IPv6, never forwarded
  assert.equal(addon.gsoSplit(tcp6Gso, MTU), -EPROTONOSUPPORT);
  const zeroSize = Buffer.from(good);
  zeroSize.writeUInt16LE(0, 4);
  assert.equal(addon.gsoSplit(zeroSize, MTU), -EINVAL);
  const truncated = good.subarray(0, 500); // IP total length beyond the buffer
  assert.equal(addon.gsoSplit(truncated, MTU), -EINVAL);
  const badDoff = Buffer.from(good);
  badDoff[10 + 32] = 0x20; // TCP header of 8 bytes
  assert.equal(addon.gsoSplit(badDoff, MTU), -EINVAL);
  const notTcp = Buffer.from(good);
  notTcp[10 + 9] = 17;
  assert.equal(addon.gsoSplit(notTcp, MTU), -EINVAL);
  assert.equal(addon.gsoSplit(good, 52), -EINVAL, 'no room for payload within the MTU');
  const badCsum = Buffer.concat([
    vnet({ flags: 1, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 40, csumOffset: 6 }),
    Buffer.alloc(45),
  ]);
  assert.equal(addon.gsoSplit(badCsum, MTU), -EINVAL, 'checksum field beyond the packet');
  const tinySegments = superFrame(pattern(60_000), { gsoSize: 100, flags: TCP_ACK });
  assert.ok((addon.gsoSplit(tinySegments, MTU) as number) < 0, 'more than 256 segments are refused');
});

function segment(
  seq: number,
  len: number,
  extra: { flags?: number; srcPort?: number; id?: number; ack?: number } = {},
): Buffer {
  return buildTcpPacket({
    src: SRC,
    dst: DST,
    srcPort: extra.srcPort ?? 40000,
    dstPort: 5201,
    seq,
    ack: extra.ack ?? 77,
    flags: extra.flags ?? TCP_ACK,
    options: TS_OPTION,
    payload: pattern(len, seq),
    id: extra.id ?? seq / 1380,
  });
}

test('contiguous segments of one flow coalesce into one GSO frame that splits back into them', () => {
  const segs = Array.from({ length: 10 }, (_, i) =>
    segment(1380 * i, 1380, { id: 100 + i, flags: i === 9 ? TCP_ACK | TCP_PSH : TCP_ACK }),
  );
  const frames = addon.groCoalesce(segs);
  assert.equal(frames.length, 1);
  const f = frames[0] as Buffer;
  const h = readVnet(f);
  assert.deepEqual(h, { flags: 1, gsoType: 1, hdrLen: 52, gsoSize: 1380, csumStart: 20, csumOffset: 16 });
  assert.equal(f.length, 10 + 52 + 13_800);
  assert.equal(f.readUInt16BE(10 + 2), 52 + 13_800, 'IP total length of the merged packet');
  assert.ok(ipv4HeaderChecksumOk(f.subarray(10)));
  assert.equal(f[10 + 33], TCP_ACK | TCP_PSH, 'PSH of the last segment');
  // What the kernel does with the frame: segment it again (same size) -> the original packets.
  assert.deepEqual(split(f), segs);
});

test('coalescing stops where the kernel would not merge, and keeps each flow in order', () => {
  const a0 = segment(0, 1380);
  const a1 = segment(1380, 1380);
  const gap = segment(5000, 1380); // not contiguous
  const b0 = segment(0, 1000, { srcPort: 40001 });
  const b1 = segment(1000, 1000, { srcPort: 40001 });
  const short = segment(2000, 500, { srcPort: 40001 }); // shorter: joins, then closes the frame
  const b3 = segment(2500, 1000, { srcPort: 40001 });
  const udp = buildUdpPacket({ src: SRC, dst: DST, srcPort: 1, dstPort: 2, payload: pattern(10) });
  const frames = addon.groCoalesce([a0, b0, a1, udp, b1, gap, short, b3]);
  const view = frames.map((f) => ({
    gso: f[1],
    size: f.length - 10,
    port: f.readUInt16BE(30),
    seq: f.readUInt32BE(34),
  }));
  assert.deepEqual(view, [
    { gso: 1, size: 52 + 2760, port: 40000, seq: 0 },
    { gso: 1, size: 52 + 2500, port: 40001, seq: 0 },
    { gso: 0, size: udp.length, port: 1, seq: view[2]?.seq },
    { gso: 0, size: gap.length, port: 40000, seq: 5000 },
    { gso: 0, size: b3.length, port: 40001, seq: 2500 },
  ]);
  assert.deepEqual(frames[2]?.subarray(10), udp, 'other protocols pass unchanged');

  // A segment with a bad checksum is never merged (the kernel must still drop it).
  const corrupt = segment(1380, 1380);
  corrupt[100] = (corrupt[100] as number) ^ 0xff;
  const c = addon.groCoalesce([segment(0, 1380), corrupt, segment(2760, 1380)]);
  assert.equal(c.length, 3);
  assert.deepEqual(c[1]?.subarray(10), corrupt);

  // A control segment (SYN/FIN/RST) or another ACK number starts a new frame; later segments do
  // not jump over it into an older frame.
  const fin = segment(1380, 0, { flags: TCP_ACK | TCP_FIN });
  const otherAck = segment(1380, 1380, { ack: 78 });
  assert.equal(addon.groCoalesce([segment(0, 1380), fin, segment(1380, 1380)]).length, 3);
  assert.equal(addon.groCoalesce([segment(0, 1380), otherAck]).length, 2);
  assert.equal(
    addon.groCoalesce([segment(0, 1380, { flags: TCP_SYN | TCP_ACK }), segment(1380, 1380)]).length,
    2,
  );
  // PSH closes the frame.
  assert.equal(
    addon.groCoalesce([segment(0, 1380, { flags: TCP_ACK | TCP_PSH }), segment(1380, 1380)]).length,
    2,
  );
  // The merged IP packet may not exceed 65535 bytes.
  const many = Array.from({ length: 50 }, (_, i) => segment(1380 * i, 1380));
  const big = addon.groCoalesce(many);
  assert.ok(big.length >= 2);
  for (const f of big) assert.ok(f.length - 10 <= 0xffff);
});

test('seng_ipv4_check agrees with checkIpv4 on well-formed and malformed headers', () => {
  const p = segment(0, 100);
  const cases: Buffer[] = [
    p,
    p.subarray(0, 19),
    Buffer.from(p),
    Buffer.from(p),
    Buffer.from(p),
    Buffer.from(p),
  ];
  (cases[2] as Buffer)[0] = 0x65; // version 6
  (cases[3] as Buffer)[0] = 0x44; // IHL 4
  (cases[4] as Buffer).writeUInt16BE(p.length + 1, 2); // longer than the buffer
  (cases[5] as Buffer)[0] = 0x4f; // IHL 60 ...
  (cases[5] as Buffer).writeUInt16BE(50, 2); // ... but a total length of 50
  for (const c of cases) assert.equal(addon.ipv4Check(c), checkIpv4(c));
  assert.deepEqual(
    cases.map((c) => addon.ipv4Check(c)),
    [0, 1, 2, 3, 4, 4],
  );
});

test('seng_udp_gro_split cuts a UDP GRO read into its datagrams, the last one possibly shorter', () => {
  const E2BIG = 7;
  // Equal datagrams, then a short last one, then no control message (one datagram).
  assert.deepEqual(addon.udpGroSplit(3 * 1469, 1469), [1469, 2938, 4407]);
  assert.deepEqual(addon.udpGroSplit(2 * 1469 + 101, 1469), [1469, 2938, 3039]);
  assert.deepEqual(addon.udpGroSplit(1200, 0), [1200]);
  // gso_size at or above the read's length: one datagram.
  assert.deepEqual(addon.udpGroSplit(1200, 1200), [1200]);
  assert.deepEqual(addon.udpGroSplit(1200, 9000), [1200]);
  // Malformed: nothing read, a negative gso_size or one no datagram can have, a read too long.
  assert.equal(addon.udpGroSplit(0, 100), -EINVAL);
  assert.equal(addon.udpGroSplit(1000, -1), -EINVAL);
  assert.equal(addon.udpGroSplit(1000, 65536), -EINVAL);
  assert.equal(addon.udpGroSplit(65536, 1000), -EINVAL);
  // More datagrams than the caller takes (256): refused whole, never truncated.
  assert.equal(addon.udpGroSplit(257, 1), -E2BIG);
  const ends = addon.udpGroSplit(256, 1);
  assert.ok(Array.isArray(ends) && ends.length === 256 && ends[255] === 256);
});

test('UDP datagrams of one flow and size merge into a USO frame that cuts back into the same datagrams', () => {
  const udp = (len: number, seed: number, srcPort = 5001) =>
    buildUdpPacket({ src: SRC, dst: DST, srcPort, dstPort: 5201, payload: pattern(len, seed), id: seed });
  const a = [udp(1400, 1), udp(1400, 2), udp(1400, 3), udp(600, 4)]; // the short one ends the frame
  const after = udp(1400, 5); // starts the next frame of the flow
  const other = udp(64, 6, 6000); // another flow, interleaved
  const corrupt = udp(1400, 7);
  corrupt[40] = (corrupt[40] as number) ^ 0xff; // payload changed, checksum not: never merged
  const noChecksum = udp(1400, 8);
  noChecksum.writeUInt16BE(0, 26); // no UDP checksum: left alone (merging would add one)
  const frames = addon.groCoalesce([a[0]!, other, a[1]!, a[2]!, a[3]!, after, corrupt, noChecksum]);
  assert.equal(frames.length, 5);
  const [merged, single, next, bad, bare] = frames as [Buffer, Buffer, Buffer, Buffer, Buffer];
  assert.deepEqual(readVnet(merged), {
    flags: 1,
    gsoType: 5,
    hdrLen: 28,
    gsoSize: 1400,
    csumStart: 20,
    csumOffset: 6,
  });
  const ip = merged.subarray(10);
  assert.equal(ip.readUInt16BE(2), ip.length, 'IP total length of the whole frame');
  assert.ok(ipv4HeaderChecksumOk(ip));
  assert.equal(ip.readUInt16BE(24), ip.length - 20, 'UDP length of the whole frame');
  assert.deepEqual(ip.subarray(0, 2), a[0]!.subarray(0, 2));
  // CHECKSUM_PARTIAL: the pseudo-header sum (addresses, protocol, UDP length), not complemented.
  let sum = ((SRC >>> 16) + (SRC & 0xffff) + (DST >>> 16) + (DST & 0xffff) + 17 + ip.length - 20) >>> 0;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  assert.equal(ip.readUInt16BE(26), sum);
  // Cut at gso_size, the payload gives back each datagram's payload, the short one last.
  const payload = ip.subarray(28);
  const cut = [0, 1400, 2800, 4200].map((o, i) => payload.subarray(o, i === 3 ? payload.length : o + 1400));
  assert.deepEqual(
    cut,
    a.map((d) => d.subarray(28)),
  );
  for (const [frame, pkt] of [
    [single, other],
    [next, after],
    [bad, corrupt],
    [bare, noChecksum],
  ] as const) {
    assert.equal(frame[1], 0, 'written as it came');
    assert.deepEqual(frame.subarray(10), pkt);
  }
  assert.ok(udpChecksumOk(a[0]!));
  // At most 64 datagrams per frame (the kernel's UDP_MAX_SEGMENTS).
  const many = addon.groCoalesce(Array.from({ length: 70 }, (_, i) => udp(100, i)));
  assert.deepEqual(
    many.map((f) => (f.length - 10 - 28) / 100),
    [64, 6],
  );
});

/** A USO super-packet as the kernel hands it over: vnet header + one IPv4/UDP packet whose
 * payload is `count` datagrams of `gsoSize` bytes (the last one shorter by `short`). */
function udpSuperFrame(
  gsoSize: number,
  count: number,
  short = 0,
  id = 0xfffe,
): { frame: Buffer; payload: Buffer } {
  const payload = pattern(gsoSize * count - short);
  const pkt = buildUdpPacket({ src: SRC, dst: DST, srcPort: 40001, dstPort: 5201, payload, id });
  setPartialChecksum(pkt, 20, 6, 17);
  const frame = Buffer.concat([
    vnet({ flags: 1, gsoType: 5, hdrLen: 28, gsoSize, csumStart: 20, csumOffset: 6 }),
    pkt,
  ]);
  return { frame, payload };
}

test('USO: a UDP super-packet becomes its datagrams, each with its own lengths, IP id and checksums', () => {
  const { frame, payload } = udpSuperFrame(1000, 5, 400);
  const segs = split(frame);
  assert.deepEqual(
    segs.map((s) => s.length),
    [1028, 1028, 1028, 1028, 628],
    'gso_size bytes each, the last one shorter',
  );
  let off = 0;
  segs.forEach((s, i) => {
    assert.equal(checkIpv4(s), 0, `valid IPv4 header of datagram ${i}`);
    assert.ok(ipv4HeaderChecksumOk(s), `IP header checksum of datagram ${i}`);
    assert.equal(s.readUInt16BE(4), (0xfffe + i) & 0xffff, 'IP id counts up per datagram, wrapping');
    assert.equal(s.readUInt16BE(24), s.length - 20, 'UDP length');
    assert.ok(udpChecksumOk(s), `UDP checksum of datagram ${i}`);
    assert.notEqual(s.readUInt16BE(26), 0, 'a checksum is always present');
    assert.ok(s.subarray(28).equals(payload.subarray(off, off + s.length - 28)), 'the payload in order');
    off += s.length - 28;
  });
  assert.equal(off, payload.length);
});

test('USO: datagram bounds are the sender’s — never re-cut to the MTU; tiny datagrams; malformed frames refused', () => {
  // 1404-byte datagrams split at exactly the MTU; larger ones are left whole for the caller to refuse.
  assert.deepEqual(
    split(udpSuperFrame(1404, 3).frame).map((s) => s.length),
    [1432, 1432, 1432],
  );
  assert.deepEqual(
    split(udpSuperFrame(1500, 2).frame).map((s) => s.length),
    [1528, 1528],
    'not cut to the MTU (a datagram boundary is the message boundary)',
  );
  const tiny = split(udpSuperFrame(1, 64).frame);
  assert.equal(tiny.length, 64);
  assert.ok(tiny.every((s) => s.length === 29 && udpChecksumOk(s)));
  const { frame } = udpSuperFrame(100, 4);
  const zeroSize = Buffer.from(frame);
  zeroSize.writeUInt16LE(0, 4);
  assert.equal(addon.gsoSplit(zeroSize, MTU), -EINVAL, 'gso_size 0');
  const notUdp = Buffer.from(frame);
  notUdp[10 + 9] = 6;
  assert.equal(addon.gsoSplit(notUdp, MTU), -EINVAL, 'UDP GSO type on a TCP packet');
  assert.equal(addon.gsoSplit(frame.subarray(0, 10 + 28), MTU), -EINVAL, 'IP total length beyond the buffer');
  const headerOnly = udpSuperFrame(100, 1);
  const empty = Buffer.from(headerOnly.frame.subarray(0, 10 + 28));
  empty.writeUInt16BE(28, 10 + 2);
  assert.equal(addon.gsoSplit(empty, MTU), -EINVAL, 'no payload');
  const fragment = Buffer.from(frame);
  fragment.writeUInt16BE(0x2000, 10 + 6); // more fragments
  assert.equal(addon.gsoSplit(fragment, MTU), -EINVAL, 'a fragment');
});
