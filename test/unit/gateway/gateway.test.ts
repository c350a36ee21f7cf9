/**
 * Gateway session logic with in-memory DTLS sessions, device and enforcer: the SPEC §1.2
 * sequence, enforcement ordering (join before routing; leave before the IP is reused),
 * IpAssignment resends, quarantine when the firewall cannot confirm a removal.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadAttestationPolicy } from '../../../src/attestation/index.js';
import { Gateway } from '../../../src/gateway/gateway.js';
import { EnclaveIndex } from '../../../src/gateway/enclave-index.js';
import type { PeerVerdict, VerifyPeer } from '../../../src/gateway/types.js';
import { decodeIpAssignment, encodeIpAssignAck } from '../../../src/proto/messages.js';
import { formatIpv4, fromWire, parseIpv4 } from '../../../src/util/ipv4.js';
import {
  cert,
  FakeListener,
  FakeSession,
  harness,
  ipv4Packet,
  otherCert,
  RecordingEnforcer,
} from './fakes.js';

test('SPEC §1.2 setup, forwarding with anti-spoofing, O(1) dispatch, ordered teardown', async () => {
  const enf = new RecordingEnforcer();
  const h = harness(enf);
  await h.gateway.start();
  const { recv, send, ip } = await h.connect();
  assert.equal(formatIpv4(ip), '192.168.28.2');
  const assignment = decodeIpAssignment(recv.sent[0]!);
  assert.equal(formatIpv4(fromWire(assignment.netmask)), '255.255.255.0');
  assert.equal(formatIpv4(fromWire(assignment.gwIp)), '192.168.28.1');
  assert.deepEqual(enf.calls, ['start', 'join 192.168.28.2 host 10.0.0.7']);
  assert.equal(send.idle, 0, 'liveness is judged on the receive tunnel');
  assert.equal(recv.idle, 1000);

  recv.emit('message', ipv4Packet(ip, parseIpv4('10.99.0.2')));
  recv.emit('message', ipv4Packet(parseIpv4('192.168.28.99'), parseIpv4('10.99.0.2')));
  recv.emit('message', ipv4Packet(ip, parseIpv4('10.99.0.2'), 1500)); // larger than the TUN MTU
  recv.emit('message', Buffer.from('junk'));
  assert.equal(h.written.length, 1);
  const st = h.gateway.status()[0]!;
  assert.equal(st.spoofedDropped, 1);
  assert.equal(st.packetsIn, 1);

  h.deliver([
    ipv4Packet(parseIpv4('10.99.0.2'), ip),
    ipv4Packet(parseIpv4('10.99.0.2'), parseIpv4('192.168.28.77')),
  ]);
  assert.equal(send.sent.length, 1);
  assert.equal(h.gateway.stats.unknownDestination, 1);

  recv.close('close_notify');
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(send.closedWith, 'receive tunnel closed: close_notify');
  assert.deepEqual(enf.calls.slice(2), ['leave 192.168.28.2']);
  assert.equal(h.gateway.status().length, 0);
  await h.gateway.stop();
  assert.equal(enf.calls.at(-1), 'stop');
});

test('IpAssignment is resent on a timer and the setup is abandoned after the bounded tries', async () => {
  const h = harness();
  await h.gateway.start();
  const recv = (await h.handshake(12345, cert.certDer)) as FakeSession;
  await new Promise((r) => setTimeout(r, 120));
  assert.equal(recv.sent.length, 3);
  assert.match(recv.closedWith ?? '', /no IpAssignACK after 3/);
  assert.equal(h.gateway.status().length, 0);
});

test('the second session must come from the same IP with the same quote and key', async () => {
  const h = harness();
  await h.gateway.start();
  const recv = (await h.handshake(12345, cert.certDer)) as FakeSession;
  recv.emit('message', encodeIpAssignAck(decodeIpAssignment(recv.sent[0]!).ip));
  const fromElsewhere = (await h.handshake(12346, cert.certDer, '10.0.0.8')) as PeerVerdict;
  assert.equal(fromElsewhere.accept, false);
  const otherQuote = (await h.handshake(12346, otherCert.certDer)) as PeerVerdict;
  assert.equal(otherQuote.accept, false);
  await new Promise((r) => setTimeout(r, 250));
  assert.match(recv.closedWith ?? '', /no send-tunnel handshake within 200 ms/);
});

test('a send handshake verified before the IpAssignACK on the other port was read waits for it', async () => {
  // The ACK (port P) and the second handshake (port P+1) come in on two sockets, read by two
  // paths; the client sends its ACK and opens the send tunnel at once, so on a busy gateway the
  // second handshake's certificate can be verified before the ACK record was read.
  const h = harness();
  await h.gateway.start();
  const recv = (await h.handshake(12345, cert.certDer)) as FakeSession;
  const ack = encodeIpAssignAck(decodeIpAssignment(recv.sent[0]!).ip);
  const early = h.handshake(12346, cert.certDer);
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(h.gateway.status()[0]?.state, 'assigning');
  recv.emit('message', ack);
  const send = await early;
  assert.ok(send instanceof FakeSession, 'the send tunnel is accepted once the ACK is read');
  await new Promise((r) => setImmediate(r));
  assert.equal(h.gateway.status()[0]?.state, 'active');

  // No ACK at all: the waiting handshake is refused when the setup is abandoned.
  const recv2 = (await h.handshake(12345, cert.certDer)) as FakeSession;
  const verdict = (await h.handshake(12346, cert.certDer)) as PeerVerdict;
  assert.equal(verdict.accept, false);
  assert.match(verdict.accept ? '' : verdict.reason, /IpAssignACK/);
  assert.match(recv2.closedWith ?? '', /no IpAssignACK after 3/);
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(h.gateway.status().length, 1, 'only the first enclave is left');
  await h.gateway.stop();
});

test('an enclave whose removal the firewall cannot confirm keeps its IP out of the pool', async () => {
  const enf = new RecordingEnforcer();
  const h = harness(enf);
  await h.gateway.start();
  const first = await h.connect();
  enf.failLeave = true;
  first.recv.close('close_notify');
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(h.gateway.stats.quarantined, 1);
  enf.failLeave = false;
  // Next-fit would move on anyway; fill the subnet to prove .2 never comes back.
  const ips = new Set<string>();
  for (let i = 0; i < 252; i++) ips.add(formatIpv4((await h.connect()).ip));
  assert.equal(ips.has(formatIpv4(first.ip)), false);
  assert.equal(ips.size, 252);
  const full = (await h.handshake(12345, cert.certDer)) as FakeSession;
  assert.match(full.closedWith ?? '', /enclave subnet full/);
});

test('a failed firewall registration ends the session and frees the IP', async () => {
  const enf = new RecordingEnforcer();
  enf.failJoin = true;
  const h = harness(enf);
  await h.gateway.start();
  const { recv } = await h.connect();
  await new Promise((r) => setTimeout(r, 10));
  assert.match(recv.closedWith ?? '', /firewall registration failed: join refused/);
  assert.equal(h.gateway.status().length, 0);
  assert.equal(h.gateway.stats.admitted, 0);
});

test('a certificate that is not RA-TLS or fails attestation is rejected in the handshake', async () => {
  const h = harness();
  await h.gateway.start();
  const bogus = (await h.handshake(12345, Buffer.from('not a certificate'))) as PeerVerdict;
  assert.ok(!bogus.accept && /not an RA-TLS certificate/.test(bogus.reason));
  const strict = new Gateway({
    port: 1,
    listen: async () => new FakeListener(),
    attestation: loadAttestationPolicy({}), // Intel roots: the test authority is not trusted
    index: new EnclaveIndex(undefined),
    device: { write: () => true, onPackets: () => {}, close: () => {} },
  });
  const { admission } = strict as unknown as { admission: { verifyRecv: VerifyPeer } };
  const verdict = await admission.verifyRecv([cert.certDer], {
    address: '10.0.0.1',
    port: 1,
  });
  assert.ok(!verdict.accept && /attestation failed/.test(verdict.reason));
});
