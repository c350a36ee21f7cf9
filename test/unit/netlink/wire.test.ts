/**
 * Netlink framing and attributes (src/netlink/wire.ts) against encoders written
 * independently from the kernel's structs (test/helpers/netlink-wire.ts), in host byte order.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { endianness } from 'node:os';
import {
  NetlinkProtocolError,
  attrMap,
  encodeNlmsg,
  findAttr,
  nla,
  nlaBe32,
  nlaNested,
  nlaStringz,
  nlaU32,
  parseAttrs,
  parseNlError,
  parseNlmsgs,
} from '../../../src/netlink/index.js';
import { attr, errorReply, nlmsg, splitDatagram, u16, u32 } from '../../helpers/netlink-wire.js';

describe('netlink framing (host byte order)', () => {
  it('encodes the header in host order and pads the payload; the independent reader agrees', () => {
    const a = encodeNlmsg(
      { type: 0x1234, flags: 0x0305, seq: 0x01020304, port: 0x0a0b0c0d },
      Buffer.from([1, 2, 3]),
    );
    assert.equal(a.length, 20, 'padded to 4 bytes');
    assert.deepEqual(a, nlmsg(0x1234, 0x0305, 0x01020304, 0x0a0b0c0d, Buffer.from([1, 2, 3])));
    assert.deepEqual(a.subarray(0, 4), u32(19), 'length excludes the padding');
    const little = endianness() === 'LE';
    assert.equal(a.subarray(8, 12).toString('hex'), little ? '04030201' : '01020304', 'seq in host order');
    const [m] = splitDatagram(a);
    assert.deepEqual(
      { type: m?.type, flags: m?.flags, seq: m?.seq, port: m?.port },
      { type: 0x1234, flags: 0x0305, seq: 0x01020304, port: 0x0a0b0c0d },
    );
  });

  it('round-trips several messages of one datagram, payloads as views', () => {
    const datagram = Buffer.concat([
      encodeNlmsg({ type: 20, flags: 2, seq: 7, port: 9 }, Buffer.from([1, 2, 3])),
      encodeNlmsg({ type: 21, flags: 0, seq: 8, port: 9 }, Buffer.alloc(0)),
      encodeNlmsg({ type: 22, flags: 1, seq: 0xffffffff, port: 0 }, Buffer.alloc(8, 7)),
    ]);
    const msgs = parseNlmsgs(datagram);
    assert.deepEqual(
      msgs.map((m) => [m.type, m.flags, m.seq, m.port, [...m.payload]]),
      [
        [20, 2, 7, 9, [1, 2, 3]],
        [21, 0, 8, 9, []],
        [22, 1, 0xffffffff, 0, [7, 7, 7, 7, 7, 7, 7, 7]],
      ],
    );
  });

  it('rejects a message whose length overruns the datagram or is shorter than a header', () => {
    const a = encodeNlmsg({ type: 20, flags: 0, seq: 1, port: 0 }, Buffer.alloc(8));
    u32(64).copy(a, 0);
    assert.throws(
      () => parseNlmsgs(a),
      (e: unknown) => e instanceof NetlinkProtocolError && /claims 64 bytes/.test(e.message),
    );
    u32(8).copy(a, 0);
    assert.throws(() => parseNlmsgs(a), NetlinkProtocolError);
  });

  it('parses NLMSG_ERROR: errno, and the extended-ack message after a capped or a full echo', () => {
    const extack = attr(1, Buffer.from('bad\0'));
    // Capped: the echoed request is only its 16-byte header.
    const capped = Buffer.concat([
      errorReply(8, 9, 22, nlmsg(99, 5, 8, 9, Buffer.alloc(12))).subarray(16),
      extack,
    ]);
    const [c] = parseNlmsgs(nlmsg(2, 0x300, 8, 9, capped));
    assert.deepEqual(parseNlError(c as NonNullable<typeof c>), { errno: 22, extack: 'bad' });
    // Not capped: the whole request (28 bytes) is echoed before the TLVs.
    const request = nlmsg(99, 5, 8, 9, Buffer.alloc(12, 1));
    const errHead = errorReply(8, 9, 1).subarray(16, 20);
    const [f] = parseNlmsgs(nlmsg(2, 0x200, 8, 9, Buffer.concat([errHead, request, extack])));
    assert.deepEqual(parseNlError(f as NonNullable<typeof f>), { errno: 1, extack: 'bad' });
    // A plain ack.
    const [ack] = parseNlmsgs(errorReply(3, 0, 0));
    assert.deepEqual(parseNlError(ack as NonNullable<typeof ack>), { errno: 0 });
  });
});

describe('netlink attributes', () => {
  it('encodes header in host order, padding excluded from the length; nested and typed payloads', () => {
    assert.deepEqual(nla(7, Buffer.from([1])), attr(7, Buffer.from([1])));
    assert.deepEqual(nla(7).length, 4, 'a flag attribute is a bare header');
    assert.deepEqual(nlaU32(4, 1500), attr(4, u32(1500)));
    assert.deepEqual(
      nlaBe32(1, 0x0a000001),
      attr(1, Buffer.from([10, 0, 0, 1])),
      'addresses stay big-endian',
    );
    assert.deepEqual(nlaStringz(3, 'tun0'), attr(3, Buffer.from('tun0\0')));
    assert.deepEqual(
      nlaNested(2, [nla(1, u16(5)), nla(2)]),
      attr(2 | 0x8000, Buffer.concat([attr(1, u16(5)), attr(2, Buffer.alloc(0))])),
    );
    assert.throws(() => nla(1, Buffer.alloc(0x10000)), RangeError);
  });

  it('parses a run: flag bits split off, last duplicate wins in the map, findAttr stops at the first', () => {
    const run = Buffer.concat([
      attr(1, Buffer.from([1])),
      attr(2 | 0x8000, attr(1, u32(9))),
      attr(1, Buffer.from([2, 2])),
    ]);
    const all = parseAttrs(run);
    assert.deepEqual(
      all.map((a) => [a.type, a.nested, [...a.value]]),
      [
        [1, false, [1]],
        [2, true, [...attr(1, u32(9))]],
        [1, false, [2, 2]],
      ],
    );
    assert.deepEqual(
      [...(all[0]?.raw ?? [])],
      [...attr(1, Buffer.from([1])).subarray(0, 5)],
      'raw excludes padding',
    );
    assert.deepEqual([...(attrMap(run).get(1)?.value ?? [])], [2, 2]);
    assert.deepEqual([...(findAttr(run, 1)?.value ?? [])], [1]);
    assert.equal(findAttr(run, 3), undefined);
  });

  it('rejects an attribute that overruns its run', () => {
    const bad = attr(1, Buffer.alloc(4));
    u16(40).copy(bad, 0);
    assert.throws(() => parseAttrs(bad), NetlinkProtocolError);
    assert.throws(() => findAttr(bad, 9), NetlinkProtocolError);
  });
});
