/**
 * SPEC §1.4, one definition of a valid inner packet (classifyEnclavePacket in
 * src/tunnel/packet.ts) on the gateway's JS path: every malformed form is dropped before the
 * TUN device and counted by reason, per enclave and gateway-wide; packets from the TUN
 * device are refused when malformed, for an unknown destination, or oversize.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { classifyEnclavePacket, routeDevicePacket } from '../../../src/tunnel/packet.js';
import { parseIpv4 } from '../../../src/util/ipv4.js';
import { harness, ipv4Packet } from './fakes.js';
import { invalidForms as forms, type DropReason } from '../../helpers/packet-forms.js';

const MTU = 1432;
const SERVICE = parseIpv4('10.99.0.2');

function invalidForms(ip: number): [string, DropReason, Buffer][] {
  return forms(ip).map((f) => [f.name, f.reason, f.packet]);
}

test('classifyEnclavePacket: the order oversize, malformed, spoofed; valid packets pass', () => {
  const ip = parseIpv4('192.168.28.2');
  for (const [what, reason, packet] of invalidForms(ip)) {
    assert.equal(classifyEnclavePacket(packet, MTU, ip), reason, what);
  }
  assert.equal(classifyEnclavePacket(ipv4Packet(ip, SERVICE), MTU, ip), 'ok');
  assert.equal(classifyEnclavePacket(ipv4Packet(ip, SERVICE, MTU), MTU, ip), 'ok', 'exactly the MTU');
  // Oversize wins over malformed, malformed over spoofed.
  const big = ipv4Packet(parseIpv4('1.2.3.4'), SERVICE, MTU + 1);
  big[0] = 0x65;
  assert.equal(classifyEnclavePacket(big, MTU, ip), 'oversize');
  const bad = ipv4Packet(parseIpv4('1.2.3.4'), SERVICE);
  bad[0] = 0x44;
  assert.equal(classifyEnclavePacket(bad, MTU, ip), 'malformed');
});

test('JS path: no invalid form reaches the TUN device; drops are counted per reason', async () => {
  const h = harness();
  await h.gateway.start();
  const { recv, ip } = await h.connect();
  const forms = invalidForms(ip);
  for (const [, , packet] of forms) recv.emit('message', packet);
  assert.equal(h.written.length, 0, 'nothing invalid was written');
  recv.emit('message', ipv4Packet(ip, SERVICE));
  assert.equal(h.written.length, 1, 'a valid packet still passes');

  const count = (r: string) => forms.filter(([, reason]) => reason === r).length;
  const st = h.gateway.status()[0]!;
  assert.deepEqual(
    [st.oversizeDropped, st.malformedDropped, st.spoofedDropped, st.packetsIn],
    [count('oversize'), count('malformed'), count('spoofed'), 1],
  );
  const s = h.gateway.stats;
  assert.deepEqual(
    [s.oversize, s.malformed, s.spoofed],
    [count('oversize'), count('malformed'), count('spoofed')],
  );
  await h.gateway.stop();
});

test('TUN → enclave: malformed, unknown destination and oversize packets are refused and counted', async () => {
  const h = harness();
  await h.gateway.start();
  const { send, ip } = await h.connect();
  const v6 = ipv4Packet(SERVICE, ip);
  v6[0] = 0x60;
  h.deliver([
    ipv4Packet(SERVICE, ip).subarray(0, 19),
    v6,
    ipv4Packet(SERVICE, parseIpv4('192.168.28.77')),
    ipv4Packet(SERVICE, ip, MTU + 1),
    ipv4Packet(SERVICE, ip),
  ]);
  assert.equal(send.sent.length, 1, 'only the valid packet went to the enclave');
  const s = h.gateway.stats;
  assert.deepEqual([s.malformed, s.unknownDestination, s.oversize], [2, 1, 1]);
  assert.equal(h.gateway.status()[0]!.oversizeDropped, 1, 'the oversize drop is the enclave’s too');
  assert.equal(
    routeDevicePacket(ipv4Packet(SERVICE, ip), MTU, () => undefined),
    'unknownDestination',
  );
  await h.gateway.stop();
});
