/** The Prometheus registry against a gateway driven by in-memory fakes (test/unit/gateway/fakes.ts). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { GatewayMetrics, parseListenAddress, serveMetrics } from '../../../src/audit/metrics.js';
import { silentLogger } from '../../../src/util/log.js';
import { fanOut } from '../../../src/audit/observers.js';
import { EnclaveIndex } from '../../../src/gateway/enclave-index.js';
import type { GatewayObserver } from '../../../src/gateway/context.js';
import { formatIpv4, parseIpv4 } from '../../../src/util/ipv4.js';
import { harness, ipv4Packet, RecordingEnforcer } from '../../unit/gateway/fakes.js';

/** The value of one sample line, e.g. sample(text, 'seng_packets_total{direction="to_enclave"}'). */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

function setup(enforcer = new RecordingEnforcer()) {
  const observers: GatewayObserver[] = [];
  const index = new EnclaveIndex(undefined);
  const h = harness(enforcer, undefined, { observer: fanOut(observers), index });
  const metrics = new GatewayMetrics({
    gateway: h.gateway,
    pools: () => index.subnets(),
    handshakes: () => [
      { channel: 'receive', inProgress: 3, limit: 256 },
      { channel: 'send', inProgress: 0, limit: 256 },
    ],
    processMetrics: false,
  });
  observers.push(metrics.observer);
  return { h, metrics, enforcer };
}

test('metrics follow admissions, traffic, drops, pools and session ends; no IP in any label', async () => {
  const { h, metrics } = setup();
  await h.gateway.start();
  const rejected = await h.handshake(12345, Buffer.from('not a certificate'));
  assert.ok('accept' in rejected && !rejected.accept);
  const { recv, ip } = await h.connect();
  const service = parseIpv4('10.99.0.2');
  recv.emit('message', ipv4Packet(ip, service, 100));
  recv.emit('message', ipv4Packet(parseIpv4('10.1.2.3'), service)); // spoofed source
  h.deliver([ipv4Packet(service, ip, 80), ipv4Packet(service, parseIpv4('192.168.28.200'))]);

  let text = await metrics.text();
  assert.equal(sample(text, 'seng_sessions_active{app="(unregistered)"}'), 1);
  assert.equal(sample(text, 'seng_admissions_total{result="admitted",reason="ok"}'), 1);
  assert.equal(sample(text, 'seng_admissions_total{result="rejected",reason="certificate"}'), 1);
  assert.equal(sample(text, 'seng_session_setup_seconds_count'), 1);
  assert.equal(sample(text, 'seng_packets_total{direction="from_enclave"}'), 1);
  assert.equal(sample(text, 'seng_bytes_total{direction="from_enclave"}'), 100);
  assert.equal(sample(text, 'seng_packets_total{direction="to_enclave"}'), 1);
  assert.equal(sample(text, 'seng_bytes_total{direction="to_enclave"}'), 80);
  assert.equal(sample(text, 'seng_packets_dropped_total{reason="spoofed_source"}'), 1);
  assert.equal(sample(text, 'seng_packets_dropped_total{reason="unknown_destination"}'), 1);
  assert.equal(sample(text, 'seng_packets_dropped_total{reason="oversize"}'), 0);
  assert.equal(sample(text, 'seng_pool_addresses_in_use{subnet="192.168.28.0/24"}'), 1);
  assert.equal(sample(text, 'seng_pool_addresses{subnet="192.168.28.0/24"}'), 253);
  assert.equal(sample(text, 'seng_dtls_handshakes_in_progress{channel="receive"}'), 3);
  assert.equal(sample(text, 'seng_dtls_handshakes_limit{channel="send"}'), 256);
  assert.equal(sample(text, 'seng_enforcement_seconds_count{op="join"}'), 1);
  assert.ok(!text.includes(formatIpv4(ip)), 'the enclave IP appears nowhere');
  assert.ok(!text.includes('10.0.0.7'), 'the host IP appears nowhere');

  await h.gateway.kick({ all: true });
  text = await metrics.text();
  assert.equal(sample(text, 'seng_sessions_active{app="(unregistered)"}'), undefined);
  assert.equal(sample(text, 'seng_sessions_ended_total'), 1);
  assert.equal(sample(text, 'seng_enforcement_seconds_count{op="leave"}'), 1);
  // Counters of ended sessions are kept: the gateway-wide counters never go backwards.
  assert.equal(sample(text, 'seng_packets_total{direction="from_enclave"}'), 1);
  assert.equal(sample(text, 'seng_bytes_total{direction="to_enclave"}'), 80);
  assert.equal(sample(text, 'seng_pool_addresses_in_use{subnet="192.168.28.0/24"}'), 0);
  await h.gateway.stop();
});

test('a failing firewall join is counted as an enforcement failure', async () => {
  const enforcer = new RecordingEnforcer();
  enforcer.failJoin = true;
  const { h, metrics } = setup(enforcer);
  await h.gateway.start();
  const { recv } = await h.connect();
  await new Promise((r) => setImmediate(r));
  assert.match(recv.closedWith ?? '', /firewall registration failed/);
  const text = await metrics.text();
  assert.equal(sample(text, 'seng_enforcement_failures_total{op="join"}'), 1);
  assert.equal(sample(text, 'seng_admissions_total{result="admitted",reason="ok"}'), undefined);
  await h.gateway.stop();
});

test('--metrics HOST:PORT parsing', () => {
  assert.deepEqual(parseListenAddress('127.0.0.1:9464'), { host: '127.0.0.1', port: 9464 });
  assert.deepEqual(parseListenAddress('[::1]:9464'), { host: '::1', port: 9464 });
  for (const bad of ['9464', ':9464', '127.0.0.1:', '127.0.0.1:0', '127.0.0.1:70000', 'a b:1'])
    assert.throws(() => parseListenAddress(bad), /--metrics/);
});

test('the endpoint serves GET /metrics in the Prometheus text format, 404 elsewhere', async () => {
  const { h, metrics } = setup();
  await h.gateway.start();
  const endpoint = await serveMetrics(metrics, { host: '127.0.0.1', port: 0 }, silentLogger);
  try {
    const { port } = endpoint.server.address() as AddressInfo;
    const ok = await fetch(`http://127.0.0.1:${port}/metrics`);
    assert.equal(ok.status, 200);
    assert.match(ok.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    assert.match(await ok.text(), /^# TYPE seng_sessions_active gauge$/m);
    assert.equal((await fetch(`http://127.0.0.1:${port}/`)).status, 404);
    assert.equal((await fetch(`http://127.0.0.1:${port}/metrics`, { method: 'POST' })).status, 404);
  } finally {
    await endpoint.close();
    await h.gateway.stop();
  }
});
