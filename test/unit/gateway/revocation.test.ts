/**
 * Issue #17 item 5: a database edit that revokes an app ends its live sessions (and so
 * removes them from the firewall) on the next reload, with the reason in the log; apps the
 * edit does not concern keep their sessions.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSimCertificate } from '../../../src/attestation/index.js';
import { EnclaveIndex } from '../../../src/gateway/enclave-index.js';
import { Store } from '../../../src/store/index.js';
import { formatIpv4, parseCidr } from '../../../src/util/ipv4.js';
import { pino } from 'pino';
import type { Logger } from '../../../src/util/log.js';
import { ca, harness, RecordingEnforcer } from './fakes.js';

const NGINX = 'a1'.repeat(32);
const REDIS = 'a2'.repeat(32);
const SIGNER = '22'.repeat(32);
const nginx = createSimCertificate(ca, { kind: 'dcap', mrEnclave: NGINX, mrSigner: SIGNER });
const redis = createSimCertificate(ca, { kind: 'dcap', mrEnclave: REDIS, mrSigner: SIGNER });

/** A logger that keeps the structured fields of every line. */
function recordingLogger(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line)) });
  return { logger, lines };
}

function withDatabase(
  schema: 'vanilla' | 'netfilter',
  fn: (store: Store, writer: Store) => Promise<void>,
): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'seng-revoke-'));
  const path = join(dir, 'p.db');
  const writer = Store.create(path, schema);
  const store = Store.open(path, { readonly: true });
  return fn(store, writer).finally(() => {
    store.close();
    writer.close();
    rmSync(dir, { recursive: true, force: true });
  });
}

const sub = (s: string) => parseCidr(s);

async function vanillaGateway(store: Store, writer: Store) {
  writer.addSubnet(sub('192.168.28.0/24'), 0xc0a81c01);
  writer.addSubnet(sub('172.16.28.0/24'), 0xac101c01);
  for (const [name, mr] of [
    ['nginx', NGINX],
    ['redis', REDIS],
  ] as const) {
    writer.addApp({
      name,
      mrEnclave: Buffer.from(mr, 'hex'),
      mrSigner: Buffer.from(SIGNER, 'hex'),
      hostSubnet: sub('10.0.0.0/24'),
      enclaveSubnet: sub('192.168.28.0/24'),
    });
  }
  const enf = new RecordingEnforcer();
  const { logger, lines } = recordingLogger();
  const h = harness(enf, undefined, { index: new EnclaveIndex(store), logger });
  await h.gateway.start();
  return { h, enf, lines };
}

test('removing an app ends its sessions on the next reload, says why, and leaves other apps alone', async () => {
  await withDatabase('vanilla', async (store, writer) => {
    const { h, enf, lines } = await vanillaGateway(store, writer);
    const a = await h.connect(nginx.certDer);
    const b = await h.connect(redis.certDer);
    assert.deepEqual(await h.gateway.reloadIndex(), { changedApps: 0, ended: [] }, 'nothing changed yet');

    writer.removeApp('nginx');
    const result = await h.gateway.reloadIndex();
    assert.deepEqual(result.ended, [formatIpv4(a.ip)]);
    assert.equal(a.recv.closedWith, 'app nginx removed from the allowlist');
    assert.equal(b.recv.closedWith, undefined, 'redis keeps its session');
    assert.ok(enf.calls.includes(`leave ${formatIpv4(a.ip)}`), 'left the firewall');
    const end = lines.find((l) => l.event === 'session-end');
    assert.equal(end?.reason, 'app nginx removed from the allowlist');
    assert.deepEqual(
      h.gateway.status().map((s) => s.app),
      ['redis'],
    );
    await h.gateway.stop();
  });
});

test('moving an app to another host subnet or enclave subnet ends its sessions', async () => {
  await withDatabase('vanilla', async (store, writer) => {
    const { h } = await vanillaGateway(store, writer);
    const a = await h.connect(nginx.certDer);
    const b = await h.connect(redis.certDer);
    writer.removeApp('nginx');
    writer.addApp({
      name: 'nginx',
      mrEnclave: Buffer.from(NGINX, 'hex'),
      mrSigner: Buffer.from(SIGNER, 'hex'),
      hostSubnet: sub('10.9.0.0/24'),
      enclaveSubnet: sub('192.168.28.0/24'),
    });
    writer.removeApp('redis');
    writer.addApp({
      name: 'redis',
      mrEnclave: Buffer.from(REDIS, 'hex'),
      mrSigner: Buffer.from(SIGNER, 'hex'),
      hostSubnet: sub('10.0.0.0/24'),
      enclaveSubnet: sub('172.16.28.0/24'),
    });
    const result = await h.gateway.reloadIndex();
    assert.equal(result.ended.length, 2);
    assert.match(
      a.recv.closedWith ?? '',
      /^app nginx no longer admitted: app nginx may not connect from host 10\.0\.0\.7/,
    );
    assert.equal(b.recv.closedWith, 'app redis moved to enclave subnet 172.16.28.0/24');
    await h.gateway.stop();
  });
});

test('netfilter database: removing an app ends its sessions although unknown apps are admitted', async () => {
  await withDatabase('netfilter', async (store, writer) => {
    writer.addApp({
      name: 'nginx',
      mrEnclave: Buffer.from(NGINX, 'hex'),
      mrSigner: Buffer.from(SIGNER, 'hex'),
    });
    const enf = new RecordingEnforcer();
    const h = harness(enf, undefined, { index: new EnclaveIndex(store) });
    await h.gateway.start();
    const a = await h.connect(nginx.certDer);
    const unknown = await h.connect(redis.certDer);
    writer.addCategory('nginx', 'Web');
    assert.deepEqual((await h.gateway.reloadIndex()).ended, [], 'a category change does not end sessions');
    writer.removeApp('nginx');
    assert.deepEqual((await h.gateway.reloadIndex()).ended, [formatIpv4(a.ip)]);
    assert.equal(a.recv.closedWith, 'app nginx removed from the allowlist');
    assert.equal(unknown.recv.closedWith, undefined);
    await h.gateway.stop();
  });
});
