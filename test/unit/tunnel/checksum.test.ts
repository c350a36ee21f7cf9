/**
 * The native Internet checksum (native/common/seng_net.c seng_csum_add, used before every USO
 * merge and TSO segment) against the TypeScript implementation: every length across the block
 * boundaries of its unrolled loop, unaligned buffers, sums that carry, and single-byte damage.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  buildTcpPacket,
  buildUdpPacket,
  loadTunAddon,
  tcpChecksumOk,
  udpChecksumOk,
  TCP_ACK,
} from '../../../src/tunnel/index.js';
import { parseIpv4 } from '../../../src/util/ipv4.js';

const addon = loadTunAddon();
const SRC = parseIpv4('10.128.0.2');
const DST = parseIpv4('10.99.0.2');

/** The packet copied to a buffer that starts `offset` bytes into a larger one (unaligned reads). */
function at(offset: number, packet: Buffer): Buffer {
  const backing = Buffer.alloc(packet.length + offset + 8, 0xa5);
  packet.copy(backing, offset);
  return backing.subarray(offset, offset + packet.length);
}

function payloadOf(len: number, kind: number): Buffer {
  if (kind === 0) return randomBytes(len);
  if (kind === 1) return Buffer.alloc(len, 0xff); // every word 0xffff: the accumulators carry most
  return Buffer.from(Array.from({ length: len }, (_, i) => (i % 2 ? 0xff : 0x00)));
}

test('UDP: the native check agrees with the TypeScript one at every length up to 1,404 B, any alignment', () => {
  for (let len = 0; len <= 1404; len++) {
    for (const kind of [0, 1, 2]) {
      if (kind !== 0 && len % 7 !== 0) continue; // the patterned payloads at a sample of lengths
      const p = buildUdpPacket({
        src: SRC,
        dst: DST,
        srcPort: 40000 + (len % 1000),
        dstPort: 5201,
        payload: payloadOf(len, kind),
      });
      assert.ok(udpChecksumOk(p), `reference accepts ${len}`);
      const offset = len % 8;
      assert.equal(addon.l4ChecksumOk(at(offset, p)), true, `len ${len} kind ${kind} offset ${offset}`);
      if (len === 0) continue;
      const damaged = Buffer.from(p);
      const i = 28 + ((len * 31) % len);
      damaged[i] = (damaged[i] as number) ^ 0x5a;
      assert.equal(udpChecksumOk(damaged), false);
      assert.equal(addon.l4ChecksumOk(at(offset, damaged)), false, `damage at ${i} of ${len}`);
    }
  }
});

test('TCP: the native check agrees with the TypeScript one across the 32-byte blocks', () => {
  for (let len = 0; len <= 1380; len += 13) {
    const p = buildTcpPacket({
      src: SRC,
      dst: DST,
      srcPort: 5201,
      dstPort: 40000,
      seq: len * 1000,
      ack: 7,
      flags: TCP_ACK,
      payload: randomBytes(len),
    });
    assert.ok(tcpChecksumOk(p));
    for (const offset of [0, 1, 3, 7])
      assert.equal(addon.l4ChecksumOk(at(offset, p)), true, `len ${len} offset ${offset}`);
    const damaged = Buffer.from(p);
    damaged[damaged.length - 1] = (damaged[damaged.length - 1] as number) ^ 0x01;
    assert.equal(addon.l4ChecksumOk(damaged), false, `damaged last byte of ${len}`);
  }
});
