// The native data path on a TUN device opened with offload (IFF_VNET_HDR): the dispatch splits a
// TSO super-packet read from the device into records of at most the MTU (one packet each, SPEC
// §1), and the receive forwarder writes one receive batch's TCP segments as a GSO frame. A UDP
// socket stands in for the device on the read side (one read = one frame) and a file on the write
// side (every frame appended: virtio_net_hdr + packet); the gateway tests run both on a real TUN.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DtlsServer, dtlsConnect, tunWriteStats, type DtlsSession } from '../../../src/dtls/index.js';
import { loadAddon } from '../../../src/dtls/native.js';
import {
  buildTcpPacket,
  ipv4HeaderChecksumOk,
  tcpChecksumOk,
  TCP_ACK,
  TCP_PSH,
} from '../../../src/tunnel/index.js';
import { CertDir, type TestIdentity } from '../../fixtures/dtls/certs.js';

const ENCLAVE = 0xc0a81c02; // 192.168.28.2
const PEER = 0x0a630002; // 10.99.0.2
const MTU = 1432;

let certs: CertDir;
let srv: TestIdentity;
let cli: TestIdentity;

function pattern(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + 7) & 0xff;
  return b;
}

/** virtio_net_hdr (host order = little endian here) + packet. */
function frame(h: { flags: number; gsoType: number; hdrLen: number; gsoSize: number }, pkt: Buffer): Buffer {
  const b = Buffer.alloc(10);
  b[0] = h.flags;
  b[1] = h.gsoType;
  b.writeUInt16LE(h.hdrLen, 2);
  b.writeUInt16LE(h.gsoSize, 4);
  b.writeUInt16LE(h.flags ? 20 : 0, 6); // csum_start: the TCP header
  b.writeUInt16LE(h.flags ? 16 : 0, 8); // csum_offset: the TCP checksum
  return Buffer.concat([b, pkt]);
}

function tcpPayload(p: Buffer): Buffer {
  const ihl = (p[0]! & 0x0f) * 4;
  return p.subarray(ihl + (p[ihl + 12]! >> 4) * 4, p.readUInt16BE(2));
}

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function pair(
  receiveThread?: boolean,
): Promise<{ server: DtlsServer; client: DtlsSession; session: DtlsSession }> {
  const server = await DtlsServer.listen({
    host: '127.0.0.1',
    port: 0,
    receiveThread,
    identities: [{ certPem: srv.certPem, keyPem: srv.keyPem }],
    verifyPeer: () => Promise.resolve({ accept: true }),
  });
  const sessionP = new Promise<DtlsSession>((resolve) => server.once('session', resolve));
  const client = await dtlsConnect({
    host: '127.0.0.1',
    port: server.address.port,
    certPem: cli.certPem,
    keyPem: cli.keyPem,
    caPem: srv.certPem,
  });
  return { server, client, session: await sessionP };
}

describe('dtls native data path with TUN offload', { timeout: 60_000 }, () => {
  before(() => {
    certs = new CertDir();
    srv = certs.make('off-srv', 'ec');
    cli = certs.make('off-cli', 'ec');
  });
  after(() => certs.cleanup());

  it('splits a TSO super-packet into MTU-sized records with complete checksums', async () => {
    const { server, client, session } = await pair();
    const device = loadAddon().openUdp('127.0.0.1', 0, 1 << 20);
    const writer = dgram.createSocket('udp4');
    await new Promise<void>((r) => writer.bind(0, '127.0.0.1', () => r()));
    const inject = (p: Buffer): void => void writer.send(p, device.port, '127.0.0.1');
    const dispatch = server.dispatchFromTun(device.fd, MTU, 16, true);
    try {
      const got: Buffer[] = [];
      client.on('message', (m: Buffer) => got.push(Buffer.from(m)));
      assert.equal(dispatch.route(ENCLAVE, session), true);
      // 40 000 payload bytes with MSS 1380: 29 segments; the checksum is left to us (partial).
      const data = pattern(40_000);
      const superPacket = buildTcpPacket({
        src: PEER,
        dst: ENCLAVE,
        srcPort: 7000,
        dstPort: 40000,
        seq: 1000,
        ack: 5,
        flags: TCP_ACK | TCP_PSH,
        payload: data,
      });
      superPacket.writeUInt16BE(0, 36); // a partial checksum is not a complete one
      inject(frame({ flags: 1, gsoType: 1, hdrLen: 40, gsoSize: 1380 }, superPacket));
      const plain = buildTcpPacket({
        src: PEER,
        dst: ENCLAVE,
        srcPort: 1,
        dstPort: 2,
        seq: 1,
        payload: pattern(10),
      });
      inject(frame({ flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0 }, plain));
      inject(frame({ flags: 0, gsoType: 9, hdrLen: 40, gsoSize: 1380 }, plain)); // unsupported GSO type
      const segments = Math.ceil(data.length / 1380);
      await until(() => got.length === segments + 1, 'the segments and the plain packet');
      const segs = got.slice(0, segments);
      for (const s of segs) {
        assert.ok(s.length <= MTU, `segment of ${s.length} bytes`);
        assert.ok(ipv4HeaderChecksumOk(s) && tcpChecksumOk(s), 'complete checksums');
      }
      assert.deepEqual(Buffer.concat(segs.map(tcpPayload)), data, 'the payload, in order');
      assert.deepEqual(
        segs.map((s) => s.readUInt32BE(24)),
        segs.map((_, i) => 1000 + i * 1380),
        'sequence numbers advance per segment',
      );
      assert.deepEqual(got[segments], plain);
      await until(() => dispatch.stats().badFrames === 1, 'the refused frame counted');
      const st = dispatch.stats();
      assert.equal(st.offload, true);
      assert.equal(st.gsoFrames, 1);
      assert.equal(st.gsoSegments, segments);
      assert.equal(st.reads, segments + 1);
      assert.equal(st.packets, segments + 1);
      assert.equal(st.malformed, 1);
    } finally {
      dispatch.close();
      writer.close();
      loadAddon().closeFd(device.fd);
      client.close();
      await server.close();
    }
  });

  it("writes one receive batch's consecutive TCP segments as one GSO frame", async () => {
    // On the JavaScript thread's path, where a batch is what the loop finds waiting; the receive
    // thread reads as datagrams arrive (its batches are only as full as the load makes them).
    const { server, client, session } = await pair(false);
    const out = join(certs.dir, 'gso-frames.bin');
    const fd = openSync(out, 'w');
    try {
      session.forwardTo(fd, ENCLAVE, MTU, { vnetHdr: true });
      const before = tunWriteStats(fd);
      const segs = Array.from({ length: 12 }, (_, i) =>
        buildTcpPacket({
          src: ENCLAVE,
          dst: PEER,
          srcPort: 40000,
          dstPort: 7000,
          seq: 1 + i * 1000,
          ack: 77,
          flags: TCP_ACK,
          payload: pattern(1000).subarray(0, 1000).fill(i),
        }),
      );
      const other = buildTcpPacket({
        src: ENCLAVE,
        dst: PEER,
        srcPort: 1,
        dstPort: 2,
        seq: 0,
        payload: pattern(5),
      });
      // Sent in one tick, so the server reads them in one recvmmsg batch.
      for (const s of segs) client.send(s);
      client.send(other);
      await until(() => tunWriteStats(fd).packets - before.packets === 13, 'the 13 packets written');
      const st = tunWriteStats(fd);
      assert.equal(st.gsoFrames - before.gsoFrames, 1, JSON.stringify(st));
      assert.equal(st.frames - before.frames, 2, 'one GSO frame, one plain packet');
      assert.equal(session.forwardStats().packets, 13);
      // The file holds what the device would get: virtio_net_hdr + IPv4 packet, twice.
      const file = readFileSync(out);
      const gsoLen = file.subarray(10).readUInt16BE(2);
      const gso = file.subarray(10, 10 + gsoLen);
      assert.equal(file[1], 1, 'GSO_TCPV4');
      assert.equal(file.readUInt16LE(4), 1000, 'gso_size = the first segment payload');
      assert.deepEqual(tcpPayload(gso), Buffer.concat(segs.map(tcpPayload)));
      const rest = file.subarray(10 + gsoLen);
      assert.deepEqual(rest.subarray(0, 10), Buffer.alloc(10), 'a zero header');
      assert.deepEqual(rest.subarray(10), other);
    } finally {
      session.forwardTo(-1, 0, MTU);
      closeSync(fd);
      client.close();
      await server.close();
    }
  });

  it("the receive thread's own writer delivers the stream intact, however its batches fall", async () => {
    const { server, client, session } = await pair(true);
    const out = join(certs.dir, 'thread-frames.bin');
    const fd = openSync(out, 'w');
    try {
      session.forwardTo(fd, ENCLAVE, MTU, { vnetHdr: true });
      const before = tunWriteStats(fd);
      const segs = Array.from({ length: 40 }, (_, i) =>
        buildTcpPacket({
          src: ENCLAVE,
          dst: PEER,
          srcPort: 40000,
          dstPort: 7000,
          seq: 1 + i * 1000,
          ack: 77,
          flags: TCP_ACK,
          payload: Buffer.alloc(1000, i),
        }),
      );
      for (const s of segs) client.send(s);
      // The thread's writer is counted in tunWriteStats(fd) like the JavaScript thread's.
      await until(() => tunWriteStats(fd).packets - before.packets === segs.length, 'the 40 packets written');
      assert.equal(server.receiveStats(session)?.packets, segs.length, 'all forwarded on the thread');
      // Frames (virtio_net_hdr + packet, GSO super-packets or single segments) carry the stream in order.
      const file = readFileSync(out);
      const payloads: Buffer[] = [];
      let frames = 0;
      for (let off = 0; off < file.length; frames++) {
        const len = file.readUInt16BE(off + 10 + 2);
        const pkt = file.subarray(off + 10, off + 10 + len);
        assert.equal(pkt.length, len, 'a whole frame');
        payloads.push(tcpPayload(pkt));
        off += 10 + len;
      }
      assert.equal(frames, tunWriteStats(fd).frames - before.frames);
      assert.deepEqual(Buffer.concat(payloads), Buffer.concat(segs.map(tcpPayload)));
    } finally {
      session.forwardTo(-1, 0, MTU);
      closeSync(fd);
      client.close();
      await server.close();
    }
  });
});
