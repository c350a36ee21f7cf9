import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  formatIpv4,
  fromWire,
  maskToPrefix,
  parseCidr,
  parseIpv4,
  prefixToMask,
  toWire,
} from '../../../src/util/ipv4.js';

test('SPEC §1.3 address encoding: network bytes read little-endian', () => {
  assert.equal(toWire(parseIpv4('192.168.28.2')), 0x021ca8c0);
  assert.equal(toWire(parseIpv4('192.168.28.2')), 35432640);
  assert.equal(toWire(parseIpv4('255.255.255.0')), 0x00ffffff);
  assert.equal(toWire(parseIpv4('192.168.28.0')), 1878208);
  assert.equal(toWire(parseIpv4('255.255.255.192')), 3238002687);
  assert.equal(formatIpv4(fromWire(18616492)), '172.16.28.1');
  assert.equal(formatIpv4(fromWire(16777343)), '127.0.0.1');
});

test('parse and format addresses and CIDRs', () => {
  assert.equal(formatIpv4(parseIpv4('10.0.0.255')), '10.0.0.255');
  for (const bad of ['1.2.3', '256.1.1.1', '01.2.3.4', 'a.b.c.d', '1.2.3.4.5', '']) {
    assert.throws(() => parseIpv4(bad), /not an IPv4 address/);
  }
  const c = parseCidr('10.1.2.3/8');
  assert.equal(formatIpv4(c.network), '10.0.0.0');
  assert.throws(() => parseCidr('10.1.2.3/8', { strict: true }), /host bits set/);
  assert.throws(() => parseCidr('10.0.0.0/33'), /not an IPv4 CIDR/);
  assert.equal(maskToPrefix(prefixToMask(26)), 26);
  assert.equal(maskToPrefix(parseIpv4('255.0.255.0')), -1);
  assert.equal(prefixToMask(0), 0);
});

test('bad addresses are quoted in messages: control characters escaped, long input cut', () => {
  assert.throws(
    () => parseIpv4('10.0.0.1\n\u001b[31mX'),
    (err: Error) => {
      assert.equal(err.message, '"10.0.0.1\\x0a\\x1b[31mX" is not an IPv4 address');
      return true;
    },
  );
  assert.throws(
    () => parseCidr('1'.repeat(5000)),
    (err: Error) => {
      assert.ok(err.message.length < 100, err.message);
      assert.match(err.message, /…" \(5000 characters\) is not an IPv4 CIDR/);
      return true;
    },
  );
});
