// The addon's UDP endpoint: batched receive (recvmmsg), addresses, oversize datagrams, close.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { UdpEndpoint, ipv4FromString, ipv4ToString } from '../../../src/dtls/endpoint.js';
import { nativeStats } from '../../../src/dtls/index.js';

describe('dtls udp endpoint', { timeout: 30_000 }, () => {
  it('delivers every datagram with its source, drops oversize ones, closes and frees the port', async () => {
    const base = nativeStats().liveEndpoint;
    const got: { data: string; ip: number; port: number }[] = [];
    let batches = 0;
    const ep = UdpEndpoint.open('127.0.0.1', 0, 1 << 20, (arena, off, len, ip, port) => {
      batches++;
      got.push({ data: arena.toString('utf8', off, off + len), ip, port });
    });
    assert.equal(nativeStats().liveEndpoint, base + 1);
    const sender = dgram.createSocket('udp4');
    await new Promise<void>((r) => sender.bind(0, '127.0.0.1', () => r()));
    try {
      for (let i = 0; i < 200; i++) sender.send(Buffer.from(`datagram ${i}`), ep.port, '127.0.0.1');
      sender.send(Buffer.alloc(30_000, 1), ep.port, '127.0.0.1'); // larger than a DTLS record can be
      sender.send(Buffer.from('last'), ep.port, '127.0.0.1');
      const end = Date.now() + 5000;
      while (got.length < 201 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
      assert.equal(got.length, 201, 'all but the oversize datagram');
      assert.deepEqual(
        got.slice(0, 200).map((g) => g.data),
        Array.from({ length: 200 }, (_, i) => `datagram ${i}`),
      );
      assert.equal(got[200]?.data, 'last');
      assert.ok(got.every((g) => g.ip === ipv4FromString('127.0.0.1') && g.port === sender.address().port));
      assert.ok(batches >= 1);
    } finally {
      sender.close();
    }
    const port = ep.port;
    await ep.close();
    await ep.close(); // idempotent
    assert.equal(nativeStats().liveEndpoint, base);
    const again = UdpEndpoint.open('127.0.0.1', port, 0, () => {});
    assert.equal(again.port, port, 'the port is free again after close()');
    await again.close();
  });

  it('formats and parses IPv4 numbers and refuses IPv6', () => {
    assert.equal(ipv4ToString(ipv4FromString('192.168.28.2')), '192.168.28.2');
    assert.equal(ipv4FromString('255.255.255.255'), 0xffffffff);
    assert.throws(() => ipv4FromString('::1'), { code: 'EINPUT' });
    assert.throws(() => UdpEndpoint.open('::1', 0, 0, () => {}), { code: 'EINPUT' });
  });
});
