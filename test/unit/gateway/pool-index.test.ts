import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IpPool } from '../../../src/gateway/ip-pool.js';
import { EnclaveIndex } from '../../../src/gateway/enclave-index.js';
import { Store, DEMO_MEASUREMENTS } from '../../../src/store/index.js';
import { formatIpv4, parseCidr, parseIpv4 } from '../../../src/util/ipv4.js';
import {
  decodeIpAssignAck,
  decodeIpAssignment,
  encodeIpAssignAck,
  encodeIpAssignment,
  ProtocolError,
} from '../../../src/proto/messages.js';

test('IpPool: next-fit over hosts 1..2^n-2, gateway reserved, wrap-around, full', () => {
  const pool = new IpPool(parseCidr('10.0.0.0/29'), parseIpv4('10.0.0.1')); // hosts .1-.6, gw .1
  const got = [1, 2, 3, 4, 5].map(() => formatIpv4(pool.allocate() as number));
  assert.deepEqual(got, ['10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5', '10.0.0.6']);
  assert.equal(pool.allocate(), undefined);
  assert.equal(pool.free, 0);
  assert.ok(pool.release(parseIpv4('10.0.0.3')));
  assert.ok(pool.release(parseIpv4('10.0.0.5')));
  // next-fit: continues after the last handed out (.6), wraps, skips gw .1 → .3 then .5
  assert.equal(formatIpv4(pool.allocate() as number), '10.0.0.3');
  assert.equal(formatIpv4(pool.allocate() as number), '10.0.0.5');
  assert.equal(pool.allocate(), undefined);
  assert.equal(pool.release(parseIpv4('10.0.0.3')), true);
  assert.equal(pool.release(parseIpv4('10.0.0.3')), false);
});

test('IpPool: next-fit does not reuse a just-released address first', () => {
  const pool = new IpPool(parseCidr('192.168.28.0/24'), parseIpv4('192.168.28.1'));
  const a = pool.allocate() as number;
  pool.release(a);
  assert.notEqual(pool.allocate(), a);
});

test('IpAssignment and IpAssignACK encode SPEC field numbers and reject malformed records', () => {
  const wire = encodeIpAssignment({ ip: 35432640, netmask: 0x00ffffff, gwIp: 18655424 });
  // field 1 varint 35432640, field 2 varint 0x00ffffff, field 3 varint 18655424
  assert.equal(wire.toString('hex'), '08c0d1f21010ffffff0718c0d1f208');
  assert.deepEqual(decodeIpAssignment(wire), { ip: 35432640, netmask: 0x00ffffff, gwIp: 18655424 });
  assert.equal(encodeIpAssignAck(35432640).toString('hex'), '08c0d1f210');
  assert.equal(decodeIpAssignAck(encodeIpAssignAck(0xffffffff)), 0xffffffff);
  assert.throws(() => decodeIpAssignment(Buffer.from('08c0d1f210', 'hex')), ProtocolError);
  assert.throws(() => decodeIpAssignAck(Buffer.alloc(0)), ProtocolError);
  assert.throws(() => decodeIpAssignAck(Buffer.from('ff', 'hex')), ProtocolError);
});

test('EnclaveIndex with the vanilla demo database: allowlist, host subnet, subnet choice, signer', () => {
  const dir = mkdtempSync(join(tmpdir(), 'seng-idx-'));
  try {
    const store = Store.create(join(dir, 'v.db'), 'vanilla', { demo: true });
    const demo = Buffer.from(DEMO_MEASUREMENTS.DemoEnclave.mrEnclave, 'hex');
    const nginx = Buffer.from(DEMO_MEASUREMENTS.NGINX.mrEnclave, 'hex');
    const signer = Buffer.from(DEMO_MEASUREMENTS.DemoEnclave.mrSigner, 'hex');
    const idx = new EnclaveIndex(store);
    const a = idx.admit(demo, signer, parseIpv4('127.0.0.5'));
    assert.ok(a.ok && a.pool.label === '192.168.28.0/24' && a.appName === 'DemoEnclave');
    const b = idx.admit(nginx, signer, parseIpv4('127.0.0.63'));
    assert.ok(b.ok && b.pool.label === '172.16.28.0/26');
    const c = idx.admit(nginx, signer, parseIpv4('127.0.0.64'));
    assert.ok(!c.ok && c.check === 'host-subnet');
    const d = idx.admit(Buffer.alloc(32, 7), signer, parseIpv4('127.0.0.5'));
    assert.ok(!d.ok && d.check === 'allowlist');
    const strict = new EnclaveIndex(store, { requireSigner: true });
    const e = strict.admit(demo, Buffer.alloc(32, 1), parseIpv4('127.0.0.5'));
    assert.ok(!e.ok && e.check === 'mr-signer');
    assert.deepEqual(
      idx.subnets().map((p) => p.label),
      ['192.168.28.0/24', '172.16.28.0/26'],
    );
    store.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('EnclaveIndex with a netfilter database admits every enclave and follows category edits', () => {
  const dir = mkdtempSync(join(tmpdir(), 'seng-idx-'));
  try {
    const path = join(dir, 'n.db');
    const store = Store.create(path, 'netfilter', { demo: true });
    const idx = new EnclaveIndex(store);
    const demo = Buffer.from(DEMO_MEASUREMENTS.DemoEnclave.mrEnclave, 'hex');
    const a = idx.admit(demo, Buffer.alloc(32), parseIpv4('10.1.1.1'));
    assert.ok(a.ok && a.pool.label === '192.168.28.0/24');
    assert.deepEqual(a.ok && a.categories, ['Demo']);
    const unknown = idx.admit(Buffer.alloc(32, 9), Buffer.alloc(32), parseIpv4('10.1.1.1'));
    assert.ok(unknown.ok && unknown.appName === undefined && unknown.categories.length === 0);
    // Another connection edits the database: the index notices through data_version.
    const writer = Store.open(path);
    writer.addCategory('DemoEnclave', 'Browser');
    writer.close();
    const changed = idx.reload();
    assert.deepEqual(
      changed.map((c) => [c.mrEnclave.toString('hex'), c.categories]),
      [[DEMO_MEASUREMENTS.DemoEnclave.mrEnclave, ['Browser', 'Demo']]],
    );
    assert.deepEqual(idx.reload(), []);
    store.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
