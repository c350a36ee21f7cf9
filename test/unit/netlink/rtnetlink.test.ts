/**
 * rtnetlink encoders and parsers (src/netlink/rtnetlink.ts) against linux/rtnetlink.h,
 * linux/if_link.h and linux/if_addr.h, read with the independent test helper. The requests
 * against a real kernel are exercised by the TUN integration tests (test/integration/tunnel).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  IFF_UP,
  IFLA_MTU,
  NLM_F_CREATE,
  NLM_F_EXCL,
  RTM_NEWADDR,
  RTM_SETLINK,
  encodeAddressDump,
  encodeAddressRequest,
  encodeLinkRequest,
  nlaU32,
  parseAddressMessage,
  parseLinkMessage,
  parseNlmsgs,
} from '../../../src/netlink/index.js';
import { attr, attrs, nlmsg, readU32, splitDatagram, u32 } from '../../helpers/netlink-wire.js';

describe('rtnetlink', () => {
  it('RTM_SETLINK: ifinfomsg (index, flags, change) then attributes, REQUEST|ACK', () => {
    const [m] = splitDatagram(
      encodeLinkRequest(
        { type: RTM_SETLINK, index: 7, ifFlags: IFF_UP, ifChange: IFF_UP, attrs: [nlaU32(IFLA_MTU, 1400)] },
        3,
        4,
      ),
    );
    assert.ok(m);
    assert.deepEqual([m.type, m.flags, m.seq, m.port], [19, 5, 3, 4]);
    assert.deepEqual(
      [m.payload[0], readU32(m.payload, 4), readU32(m.payload, 8), readU32(m.payload, 12)],
      [0, 7, 1, 1],
    );
    assert.deepEqual(attrs(m.payload.subarray(16)), [[4, u32(1400)]]);
  });

  it('RTM_NEWADDR: ifaddrmsg (AF_INET, prefix, index), IFA_LOCAL and IFA_ADDRESS in network order', () => {
    const [m] = splitDatagram(
      encodeAddressRequest(
        { type: RTM_NEWADDR, flags: NLM_F_CREATE | NLM_F_EXCL, index: 9, address: 0xc0a81c01, prefix: 24 },
        1,
        0,
      ),
    );
    assert.ok(m);
    assert.deepEqual([m.type, m.flags], [20, 0x605]);
    assert.deepEqual([m.payload[0], m.payload[1], readU32(m.payload, 4)], [2, 24, 9]);
    assert.deepEqual(attrs(m.payload.subarray(8)), [
      [2, Buffer.from([192, 168, 28, 1])],
      [1, Buffer.from([192, 168, 28, 1])],
    ]);
    const [d] = splitDatagram(encodeAddressDump(2, 0));
    assert.deepEqual([d?.type, d?.flags, d?.payload[0]], [22, 0x301, 2]);
  });

  it('parses RTM_NEWLINK and RTM_NEWADDR replies; other messages are not links or addresses', () => {
    const ifi = Buffer.concat([Buffer.from([0, 0, 0xfe, 0xff]), u32(12), u32(0x1043), u32(0)]);
    const link = nlmsg(
      16,
      0,
      1,
      0,
      Buffer.concat([ifi, attr(3, Buffer.from('seng0\0')), attr(4, u32(1420))]),
    );
    const ifa = Buffer.concat([Buffer.from([2, 24, 0, 0]), u32(12)]);
    const addr = nlmsg(
      20,
      2,
      1,
      0,
      Buffer.concat([ifa, attr(1, Buffer.from([10, 0, 0, 2])), attr(2, Buffer.from([10, 0, 0, 1]))]),
    );
    const [l, a] = parseNlmsgs(Buffer.concat([link, addr]));
    assert.deepEqual(parseLinkMessage(l as NonNullable<typeof l>), {
      index: 12,
      name: 'seng0',
      mtu: 1420,
      flags: 0x1043,
    });
    assert.deepEqual(parseAddressMessage(a as NonNullable<typeof a>), {
      family: 2,
      prefix: 24,
      index: 12,
      address: 0x0a000001,
    });
    assert.equal(parseLinkMessage(a as NonNullable<typeof a>), null);
    assert.equal(parseAddressMessage(l as NonNullable<typeof l>), null);
  });
});
