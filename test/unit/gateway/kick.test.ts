/** `seng kick` selectors on the gateway: by enclave IP, app, client host, all. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSimCertificate } from '../../../src/attestation/index.js';
import { EnclaveIndex } from '../../../src/gateway/enclave-index.js';
import { kickSelector } from '../../../src/gateway/control-dispatch.js';
import { Store } from '../../../src/store/index.js';
import { formatIpv4, parseIpv4 } from '../../../src/util/ipv4.js';
import { ca, harness } from './fakes.js';

const WEB = 'b1'.repeat(32);
const DB = 'b2'.repeat(32);
const SIGNER = '22'.repeat(32);
const web = createSimCertificate(ca, { kind: 'dcap', mrEnclave: WEB, mrSigner: SIGNER });
const db = createSimCertificate(ca, { kind: 'dcap', mrEnclave: DB, mrSigner: SIGNER });

test('kick by app, by client host, by IP and all end exactly the matching sessions', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'seng-kick-'));
  const store = Store.create(join(dir, 'n.db'), 'netfilter');
  try {
    store.addApp({ name: 'web', mrEnclave: Buffer.from(WEB, 'hex'), mrSigner: Buffer.from(SIGNER, 'hex') });
    store.addApp({ name: 'db', mrEnclave: Buffer.from(DB, 'hex'), mrSigner: Buffer.from(SIGNER, 'hex') });
    const h = harness(undefined, undefined, { index: new EnclaveIndex(store) });
    await h.gateway.start();
    const web1 = await h.connect(web.certDer, '10.0.0.1');
    const web2 = await h.connect(web.certDer, '10.0.0.2');
    const db1 = await h.connect(db.certDer, '10.0.0.1');
    const db2 = await h.connect(db.certDer, '10.0.0.2');
    const ips = (list: { enclaveIp: string }[]) => list.map((s) => s.enclaveIp).sort();

    assert.deepEqual(ips(await h.gateway.kick({ app: 'web' })), ips([web1, web2].map(toStatus)));
    assert.equal(web1.recv.closedWith, 'kicked by admin');
    assert.deepEqual(ips(await h.gateway.kick({ host: parseIpv4('10.0.0.1') })), [formatIpv4(db1.ip)]);
    assert.deepEqual(await h.gateway.kick({ app: 'web' }), [], 'nothing left to kick');
    assert.deepEqual(ips(await h.gateway.kick({ ip: db2.ip })), [formatIpv4(db2.ip)]);
    const again = await h.connect(web.certDer, '10.0.0.3');
    assert.deepEqual(ips(await h.gateway.kick({ all: true })), [formatIpv4(again.ip)]);
    assert.equal(h.gateway.status().length, 0);
    await h.gateway.stop();
  } finally {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a kick request names exactly one selector', () => {
  assert.deepEqual(kickSelector({ cmd: 'kick', app: 'web' }), { app: 'web' });
  assert.deepEqual(kickSelector({ cmd: 'kick', all: true }), { all: true });
  assert.deepEqual(kickSelector({ cmd: 'kick', host: '10.0.0.1' }), { host: parseIpv4('10.0.0.1') });
  assert.throws(() => kickSelector({ cmd: 'kick' }), /exactly one/);
  assert.throws(() => kickSelector({ cmd: 'kick', ip: '192.168.28.2', all: true }), /exactly one/);
  assert.throws(() => kickSelector({ cmd: 'kick', ip: 'nope' }), /not an IPv4 address/);
});

function toStatus(c: { ip: number }): { enclaveIp: string } {
  return { enclaveIp: formatIpv4(c.ip) };
}
