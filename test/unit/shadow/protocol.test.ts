/**
 * Byte-exact checks of the ShadowServer framing against the examples of SPEC §6.3, and
 * the validation the original lacked (§6.7 bug 6, §6.8 safe checks).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import {
  BlockerReply,
  FrameReader,
  ShadowProtocolError,
  decodeBlockerMessage,
  decodeBlockerReply,
  decodeControlMessage,
  decodeListenConfirm,
  decodeShadowReply,
  encodeBlockerMessage,
  encodeBlockerReply,
  encodeControlMessage,
  encodeListenConfirm,
  encodeShadowReply,
  frame,
  portFromWire,
  portToWire,
} from '../../../src/shadow/protocol.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const MR_ENCLAVE = Buffer.alloc(32, 0xa1);
const MR_SIGNER = Buffer.alloc(32, 0x5e);

test('port fields are byte-swapped (§6.3): 4711 → 26386, 80 → 20480', () => {
  assert.equal(portToWire(4711), 26386);
  assert.equal(portToWire(80), 20480);
  assert.equal(portFromWire(26386), 4711);
  assert.equal(portFromWire(20480), 80);
});

test('E → G request, handle 600, port 4711 (§6.3 example)', () => {
  const bytes = frame(encodeControlMessage({ kind: 'request', handle: 600, port: 4711, proto: 6 }));
  assert.deepEqual(bytes, hex('0b000000 0a0908d804 1092ce01 1806'));
  assert.deepEqual(decodeControlMessage(bytes.subarray(4)), {
    kind: 'request',
    handle: 600,
    port: 4711,
    proto: 6,
  });
});

test('E → G close notify, handle 600 (§6.3 example)', () => {
  const bytes = frame(encodeControlMessage({ kind: 'close', handle: 600 }));
  assert.deepEqual(bytes, hex('05000000 1203 08d804'));
  assert.deepEqual(decodeControlMessage(bytes.subarray(4)), { kind: 'close', handle: 600 });
});

test('G → E GRANTED / DENIED, enum 0 written explicitly (§6.2, §6.3)', () => {
  assert.deepEqual(frame(encodeShadowReply(true)), hex('02000000 0801'));
  assert.deepEqual(frame(encodeShadowReply(false)), hex('02000000 0800'));
  assert.equal(decodeShadowReply(hex('0801')), true);
  assert.equal(decodeShadowReply(hex('0800')), false);
});

test('G → B request: 76-byte body with both measurements (§6.3 example)', () => {
  const body = encodeBlockerMessage({
    kind: 'block',
    port: 4711,
    proto: 6,
    mrEnclave: MR_ENCLAVE,
    mrSigner: MR_SIGNER,
  });
  const expected = Buffer.concat([
    hex('4c000000 0a4a 0892ce01 1006 1a20'),
    MR_ENCLAVE,
    hex('2220'),
    MR_SIGNER,
  ]);
  assert.equal(body.length, 76);
  assert.deepEqual(frame(body), expected);
  const back = decodeBlockerMessage(body);
  assert.equal(back.kind, 'block');
  assert.equal(back.port, 4711);
  assert.equal(back.proto, 6);
  assert.ok(back.kind === 'block' && back.mrEnclave.equals(MR_ENCLAVE) && back.mrSigner.equals(MR_SIGNER));
});

test('B → G IN_USE and the confirmation bodies (§6.3 examples)', () => {
  assert.deepEqual(frame(encodeBlockerReply(BlockerReply.IN_USE)), hex('02000000 0802'));
  assert.equal(decodeBlockerReply(hex('0802')), BlockerReply.IN_USE);
  assert.deepEqual(encodeListenConfirm(true), hex('0801'));
  assert.deepEqual(encodeListenConfirm(false), hex('0800'));
  assert.equal(decodeListenConfirm(hex('0801')), true);
  assert.equal(decodeListenConfirm(hex('0800')), false);
});

test('G → B close notify carries the byte-swapped port and the protocol', () => {
  const body = encodeBlockerMessage({ kind: 'close', port: 4711, proto: 6 });
  assert.deepEqual(body, hex('1206 0892ce01 1006'));
  assert.deepEqual(decodeBlockerMessage(body), { kind: 'close', port: 4711, proto: 6 });
});

test('untruncated checks: port beyond 16 bits, port 0, proto 262 or 1 are refused', () => {
  const req = (port: number, proto: number) =>
    Buffer.from(
      // Hand-encoded so out-of-range values reach the decoder: field 1 (reqShadow) { 1: 600, 2: port, 3: proto }.
      encodeRaw(port, proto),
    );
  assert.throws(() => decodeControlMessage(req(0x10000 + 26386, 6)), ShadowProtocolError);
  assert.throws(() => decodeControlMessage(req(0, 6)), ShadowProtocolError);
  assert.throws(() => decodeControlMessage(req(26386, 262)), ShadowProtocolError);
  assert.throws(() => decodeControlMessage(req(26386, 1)), ShadowProtocolError);
  assert.equal(decodeControlMessage(req(26386, 17)).kind, 'request');
});

function varint(n: number): number[] {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}

function encodeRaw(port: number, proto: number): number[] {
  const inner = [0x08, ...varint(600), 0x10, ...varint(port), 0x18, ...varint(proto)];
  return [0x0a, inner.length, ...inner];
}

test('garbage, empty bodies, missing required fields and wrong measurement lengths are refused', () => {
  assert.throws(() => decodeControlMessage(Buffer.alloc(0)), ShadowProtocolError);
  assert.throws(() => decodeControlMessage(hex('ffffffff')), ShadowProtocolError);
  assert.throws(() => decodeControlMessage(hex('0a00')), ShadowProtocolError); // reqShadow without fields
  assert.throws(() => decodeShadowReply(hex('0802')), ShadowProtocolError);
  assert.throws(() => decodeBlockerReply(hex('0809')), ShadowProtocolError);
  const short = encodeBlockerMessage({
    kind: 'block',
    port: 80,
    proto: 6,
    mrEnclave: Buffer.alloc(31),
    mrSigner: MR_SIGNER,
  });
  assert.throws(() => decodeBlockerMessage(short), /mr_enclave/);
});

test('FrameReader reassembles split prefixes and bodies, and enforces the body limit', async () => {
  const s = new PassThrough();
  const r = new FrameReader(s);
  const msg = frame(encodeControlMessage({ kind: 'request', handle: 600, port: 4711, proto: 6 }));
  const got = r.read(128, 2000, 'request');
  for (const b of msg) s.write(Buffer.from([b]));
  assert.deepEqual(await got, msg.subarray(4));
  // Two messages in one chunk.
  s.write(Buffer.concat([frame(hex('0801')), frame(hex('0800'))]));
  assert.deepEqual(await r.read(128, 2000, 'reply'), hex('0801'));
  assert.deepEqual(await r.read(128, 2000, 'reply'), hex('0800'));
  s.write(hex('81000000'));
  await assert.rejects(r.read(128, 2000, 'request'), /129 bytes exceeds the limit of 128/);
});

test('FrameReader: an empty prefix, EOF mid-message and the deadline reject', async () => {
  const a = new PassThrough();
  const ra = new FrameReader(a);
  a.write(hex('00000000'));
  await assert.rejects(ra.read(128, 2000, 'request'), /empty request/);
  const b = new PassThrough();
  const rb = new FrameReader(b);
  b.end(hex('05000000 1203'));
  await assert.rejects(rb.read(128, 2000, 'request'), /closed before/);
  const c = new PassThrough();
  const rc = new FrameReader(c);
  await assert.rejects(rc.read(128, 50, 'request'), /no request within 50 ms/);
});

test('FrameReader cuts off a peer that floods it', async () => {
  const s = new PassThrough();
  const r = new FrameReader(s);
  s.write(Buffer.concat([frame(hex('0801')), Buffer.alloc(8192)]));
  await assert.rejects(r.read(128, 2000, 'reply'), /unread/);
  assert.equal(s.destroyed, true);
});
