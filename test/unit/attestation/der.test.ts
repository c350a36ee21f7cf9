// DER reader/writer and X.509 parsing edge cases.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DerError,
  children,
  decodeOid,
  decodeSmallInt,
  decodeTime,
  integer,
  oid,
  parseDer,
  readNode,
  seq,
  time,
} from '../../../src/attestation/der.js';
import { parseCertificate, pemCertificates, toPem } from '../../../src/attestation/x509.js';
import { rawJsonMember } from '../../../src/attestation/collateral.js';
import { parseIasTimestamp } from '../../../src/attestation/evidence.js';
import { make } from './helpers.js';
import { buildRaTlsCertificate } from '../../../src/attestation/sim.js';

test('OIDs round-trip, including multi-byte arcs', () => {
  for (const o of ['1.2.840.113741.1337.6', '1.2.840.113741.1.13.1.2.17', '2.5.29.19', '2.999.3']) {
    assert.equal(decodeOid(parseDer(oid(o))), o);
  }
  assert.equal(oid('1.2.840.113741.1337.6').toString('hex'), '06092a864886f84d8a3906');
});

test('INTEGER and time encodings round-trip', () => {
  for (const n of [0, 1, 127, 128, 255, 256, 65535, 2 ** 40])
    assert.equal(decodeSmallInt(parseDer(integer(n))), n);
  for (const d of [
    '2019-03-20T00:00:00Z',
    '2049-12-31T23:59:59Z',
    '2050-01-01T00:00:00Z',
    '1999-06-01T12:00:00Z',
  ]) {
    assert.equal(decodeTime(parseDer(time(new Date(d)))).toISOString(), new Date(d).toISOString());
  }
});

test('malformed DER is rejected with DerError only', () => {
  const bad = [
    Buffer.from([]),
    Buffer.from([0x30]),
    Buffer.from([0x30, 0x80, 0x00, 0x00]), // indefinite length
    Buffer.from([0x30, 0x81, 0x05, 1, 2, 3, 4, 5]), // non-minimal length
    Buffer.from([0x30, 0x85, 1, 0, 0, 0, 0]), // length of 5 bytes
    Buffer.from([0x30, 0x05, 0x02, 0x01]), // overrun
    Buffer.from([0x1f, 0x01, 0x00]), // high tag number
    Buffer.from([0x30, 0x00, 0x00]), // trailing byte
  ];
  for (const b of bad) assert.throws(() => children(parseDer(b)), DerError, b.toString('hex'));
  assert.throws(() => decodeOid(readNode(Buffer.from([0x06, 0x02, 0x2a, 0x86]))), DerError);
  assert.throws(() => decodeTime(readNode(Buffer.from('170d3139313331323030303030305a', 'hex'))), DerError); // month 13
});

test('certificate parsing: fields, extensions and criticality', () => {
  const { der } = make({ kind: 'dcap' });
  const c = parseCertificate(der);
  assert.equal(c.version, 3);
  assert.equal(c.subject, c.issuer);
  assert.deepEqual(
    c.extensions.map((e) => [e.oid, e.critical]),
    [6, 7, 8, 9, 10, 11, 12, 13].map((n) => [`1.2.840.113741.1337.${n}`, false]),
  );
  assert.deepEqual(pemCertificates(toPem(der)), [der]);
  // Truncated, and with the same extension twice: malformed.
  assert.throws(() => parseCertificate(der.subarray(0, der.length - 1)), DerError);
  const m = make({ kind: 'epid' });
  const dup = buildRaTlsCertificate(m.key, [...m.exts, m.exts[0]!]);
  assert.throws(() => parseCertificate(dup), /appears twice/);
  assert.ok(seq().equals(Buffer.from([0x30, 0x00])));
});

test('rawJsonMember returns the exact signed text of a member', () => {
  const text = '{"tcbInfo": {"a":"}\\"{","b":[1,{"c":2}]} ,"signature":"00"}';
  assert.equal(rawJsonMember(text, 'tcbInfo'), '{"a":"}\\"{","b":[1,{"c":2}]}');
  assert.equal(rawJsonMember(text, 'signature'), '"00"');
  assert.equal(rawJsonMember(text, 'missing'), undefined);
  assert.equal(rawJsonMember('[1]', 'x'), undefined);
  assert.equal(rawJsonMember('{"x":{', 'x'), undefined);
});

test('IAS timestamps: microseconds, no zone, UTC', () => {
  assert.equal(parseIasTimestamp('2019-03-20T10:11:12.123456')?.toISOString(), '2019-03-20T10:11:12.123Z');
  assert.equal(parseIasTimestamp('2019-03-20T10:11:12')?.toISOString(), '2019-03-20T10:11:12.000Z');
  assert.equal(parseIasTimestamp('2019-02-30T10:11:12'), undefined);
  assert.equal(parseIasTimestamp('yesterday'), undefined);
});
