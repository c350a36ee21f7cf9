import { test } from 'node:test';
import assert from 'node:assert/strict';
import { udpDropsByInode } from '../../../bench/lib/udp-drops.js';

// Rows as the kernel prints them (6.x), one IPv4 table and one IPv6 table.
const HEADER =
  '   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops';
const UDP4 = [
  HEADER,
  // iperf3 -c (service → enclave receiver): remote port 5201 (0x1451), 37 drops.
  '  123: 0280000A:9C40 0200630A:1451 01 00000000:00000000 00:00000000 00000000     0        0 41001 2 0000000000000000 37',
  // the tunnel's own socket: port 12345 (0x3039), never counted.
  '  124: 0100340A:3039 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 41002 2 0000000000000000 9000',
].join('\n');
const UDP6 = [
  '  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops',
  // iperf3 -s: dual-stack listener on [::]:5201, its IPv4 peers are listed here.
  '  600: 00000000000000000000000000000000:1451 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 52001 2 0000000000000000 212',
  '  601: 0000000000000000FFFF00000200630A:1451 0000000000000000FFFF00000280000A:A000 01 00000000:00000000 00:00000000 00000000     0        0 52002 2 0000000000000000 4',
].join('\n');

test('UDP drops: sockets of the test port in both tables, by inode; other ports never', () => {
  const drops = udpDropsByInode([UDP4, UDP6], 5201);
  assert.deepEqual([...drops.entries()].sort(), [
    ['41001', 37],
    ['52001', 212],
    ['52002', 4],
  ]);
});

test('UDP drops: the IPv4 table alone misses a dual-stack listener', () => {
  assert.deepEqual([...udpDropsByInode([UDP4], 5201).keys()], ['41001']);
  assert.equal(udpDropsByInode([UDP6], 5201).get('52001'), 212);
});

test('UDP drops: headers, blank and short lines are skipped', () => {
  assert.equal(udpDropsByInode(['', HEADER, `${HEADER}\n\n  1: junk`], 5201).size, 0);
  assert.equal(udpDropsByInode([UDP4], 12345).get('41002'), 9000);
});
