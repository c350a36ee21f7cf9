/**
 * The ShadowServer wire format (SPEC §6.2, §6.3): messages are a 4-byte little-endian
 * length followed by that many bytes of protobuf (the §1.3 schemas of
 * src/proto/messages.ts). `port` fields carry the port's network-order bytes read as a
 * little-endian uint16 ("byte-swapped"); this module converts at the edge so the rest of
 * the code only sees ordinary port numbers, and validates the untruncated values the
 * original truncated (§6.7 bug 6).
 */
import type { Duplex } from 'node:stream';
import protobuf from 'protobufjs';
import { protoRoot } from '../proto/messages.js';
import { SengError } from '../util/errors.js';

export const CONTROL_PORT = 2409;
export const BLOCKER_PORT = 2834;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export type ShadowProto = typeof IPPROTO_TCP | typeof IPPROTO_UDP;

/** Receive limits of §6.2: body bytes. */
export const MAX_CONTROL_BODY = 128;
export const MAX_BLOCKER_REPLY_BODY = 128;
export const MAX_BLOCKER_REQUEST_BODY = 768;
export const MAX_BLOCKER_CONFIRM_BODY = 128;

/** Unread bytes a FrameReader holds at most (every message fits many times). */
const MAX_BUFFERED = 4096;

/** A malformed, oversize or out-of-range ShadowServer message. */
export class ShadowProtocolError extends SengError {
  constructor(message: string) {
    super('ESHADOWPROTO', message);
  }
}

const type = (name: string): protobuf.Type => protoRoot.lookupType(`seng_proto.${name}`);
const ShadowSrvMsg = type('ShadowSrvMsg');
const ShadowReqReply = type('ShadowReqReply');
const ListenStartConfirm = type('ListenStartConfirm');
const CliBlockerMsg = type('CliBlockerMsg');
const CliBlockerReply = type('CliBlockerReply');

export const BlockerReply = {
  DENIED: 0,
  GRANTED: 1,
  IN_USE: 2,
  WAS_NOT_BLOCKED: 3,
  NOW_UNLBOCKED: 4,
} as const;
export type BlockerReplyCode = (typeof BlockerReply)[keyof typeof BlockerReply];

// ------------------------------------------------------------------------- field values

/** Port number → its §6.3 wire value (network-order bytes read little-endian). */
export function portToWire(port: number): number {
  return ((port & 0xff) << 8) | ((port >>> 8) & 0xff);
}

/** §6.3 wire value → port number; refuses values a 16-bit port cannot hold and port 0. */
export function portFromWire(wire: number): number {
  if (!Number.isInteger(wire) || wire < 0 || wire > 0xffff)
    throw new ShadowProtocolError(`port field ${wire} does not fit 16 bits`);
  const port = portToWire(wire);
  if (port === 0) throw new ShadowProtocolError('port 0 cannot be shadowed');
  return port;
}

/** Accepts exactly 6 (TCP) or 17 (UDP), untruncated. */
export function checkProto(proto: number): ShadowProto {
  if (proto === IPPROTO_TCP || proto === IPPROTO_UDP) return proto;
  throw new ShadowProtocolError(`protocol ${proto} is neither TCP (6) nor UDP (17)`);
}

export function protoName(proto: ShadowProto): 'tcp' | 'udp' {
  return proto === IPPROTO_TCP ? 'tcp' : 'udp';
}

// ------------------------------------------------------------------------------ framing

/** 4-byte little-endian length prefix + body, as one buffer (one write). */
export function frame(body: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(4 + body.length);
  out.writeUInt32LE(body.length, 0);
  out.set(body, 4);
  return out;
}

function encode(t: protobuf.Type, value: Record<string, unknown>): Buffer {
  const b = t.encode(t.create(value)).finish();
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

function decode(t: protobuf.Type, body: Buffer): Record<string, unknown> {
  if (body.length === 0) throw new ShadowProtocolError(`empty ${t.name}`);
  try {
    return t.toObject(t.decode(body), { oneofs: true }) as Record<string, unknown>;
  } catch (err) {
    throw new ShadowProtocolError(`malformed ${t.name}: ${(err as Error).message}`);
  }
}

function u32(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new ShadowProtocolError(`${what} missing`);
  return v >>> 0;
}

/**
 * Reads length-prefixed messages from a stream, reassembling them from whatever chunks
 * arrive. Each read has a body limit and a deadline; EOF, an oversize or empty prefix,
 * and the deadline all reject.
 */
export class FrameReader {
  private buf: Buffer = Buffer.alloc(0);
  private ended = false;
  private failure: Error | undefined;
  private wake: (() => void) | undefined;

  constructor(private readonly stream: Duplex) {
    stream.on('data', (d: Buffer) => {
      this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
      if (this.buf.length > MAX_BUFFERED) {
        // Every message is small; a peer that floods us is cut off.
        this.failure = new Error(`more than ${MAX_BUFFERED} bytes unread`);
        this.buf = Buffer.alloc(0);
        stream.destroy();
      }
      this.wake?.();
    });
    stream.on('end', () => {
      this.ended = true;
      this.wake?.();
    });
    stream.on('close', () => {
      this.ended = true;
      this.wake?.();
    });
    stream.on('error', (err: Error) => {
      this.failure = err;
      this.wake?.();
    });
  }

  read(maxBody: number, timeoutMs: number, what: string): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.wake = undefined;
        reject(new ShadowProtocolError(`no ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      const check = (): void => {
        if (this.buf.length >= 4) {
          const len = this.buf.readUInt32LE(0);
          if (len === 0 || len > maxBody) {
            return done(
              new ShadowProtocolError(
                len === 0 ? `empty ${what}` : `${what} of ${len} bytes exceeds the limit of ${maxBody}`,
              ),
            );
          }
          if (this.buf.length >= 4 + len) {
            const body = Buffer.from(this.buf.subarray(4, 4 + len));
            this.buf = this.buf.subarray(4 + len);
            return done(undefined, body);
          }
        }
        if (this.failure) return done(new ShadowProtocolError(`${what}: ${this.failure.message}`));
        if (this.ended) return done(new ShadowProtocolError(`connection closed before the ${what}`));
      };
      const done = (err: Error | undefined, body?: Buffer): void => {
        clearTimeout(timer);
        this.wake = undefined;
        if (err) reject(err);
        else resolve(body as Buffer);
      };
      this.wake = check;
      check();
    });
  }
}

// ---------------------------------------------------------- enclave ↔ gateway (control)

export type ControlMessage =
  { kind: 'request'; handle: number; port: number; proto: ShadowProto } | { kind: 'close'; handle: number };

/** Encodes E → G `ShadowSrvMsg` (body only); `port` is the ordinary port number. */
export function encodeControlMessage(m: ControlMessage): Buffer {
  if (m.kind === 'close') return encode(ShadowSrvMsg, { closeNotify: { handle: m.handle } });
  return encode(ShadowSrvMsg, {
    reqShadow: { handle: m.handle, port: portToWire(m.port), proto: m.proto },
  });
}

/** Decodes and validates E → G `ShadowSrvMsg`. */
export function decodeControlMessage(body: Buffer): ControlMessage {
  const m = decode(ShadowSrvMsg, body);
  if (m.msg === 'closeNotify') {
    const c = m.closeNotify as Record<string, unknown>;
    return { kind: 'close', handle: u32(c.handle, 'handle') };
  }
  if (m.msg === 'reqShadow') {
    const r = m.reqShadow as Record<string, unknown>;
    return {
      kind: 'request',
      handle: u32(r.handle, 'handle'),
      port: portFromWire(u32(r.port, 'port')),
      proto: checkProto(u32(r.proto, 'proto')),
    };
  }
  throw new ShadowProtocolError('ShadowSrvMsg carries neither reqShadow nor closeNotify');
}

export function encodeShadowReply(granted: boolean): Buffer {
  return encode(ShadowReqReply, { reply: granted ? 1 : 0 });
}

export function decodeShadowReply(body: Buffer): boolean {
  const reply = u32(decode(ShadowReqReply, body).reply, 'reply');
  if (reply > 1) throw new ShadowProtocolError(`unknown ShadowReqReply ${reply}`);
  return reply === 1;
}

export function encodeListenConfirm(listening: boolean): Buffer {
  return encode(ListenStartConfirm, { reply: listening ? 1 : 0 });
}

export function decodeListenConfirm(body: Buffer): boolean {
  const reply = u32(decode(ListenStartConfirm, body).reply, 'reply');
  if (reply > 1) throw new ShadowProtocolError(`unknown ListenStartConfirm ${reply}`);
  return reply === 1;
}

// ------------------------------------------------------------------ gateway ↔ blocker

export type BlockerMessage =
  | { kind: 'block'; port: number; proto: ShadowProto; mrEnclave: Buffer; mrSigner: Buffer }
  | { kind: 'close'; port: number; proto: ShadowProto };

export function encodeBlockerMessage(m: BlockerMessage): Buffer {
  if (m.kind === 'close')
    return encode(CliBlockerMsg, { closeNotify: { port: portToWire(m.port), proto: m.proto } });
  return encode(CliBlockerMsg, {
    sockBlock: { port: portToWire(m.port), proto: m.proto, mrEnclave: m.mrEnclave, mrSigner: m.mrSigner },
  });
}

/** Decodes and validates G → B `CliBlockerMsg` (measurements must be 32 bytes each). */
export function decodeBlockerMessage(body: Buffer): BlockerMessage {
  const m = decode(CliBlockerMsg, body);
  if (m.msg === 'closeNotify') {
    const c = m.closeNotify as Record<string, unknown>;
    return {
      kind: 'close',
      port: portFromWire(u32(c.port, 'port')),
      proto: checkProto(u32(c.proto, 'proto')),
    };
  }
  if (m.msg === 'sockBlock') {
    const r = m.sockBlock as Record<string, unknown>;
    const mrEnclave = r.mrEnclave;
    const mrSigner = r.mrSigner;
    if (!(mrEnclave instanceof Uint8Array) || mrEnclave.length !== 32)
      throw new ShadowProtocolError('mr_enclave must be 32 bytes');
    if (!(mrSigner instanceof Uint8Array) || mrSigner.length !== 32)
      throw new ShadowProtocolError('mr_signer must be 32 bytes');
    return {
      kind: 'block',
      port: portFromWire(u32(r.port, 'port')),
      proto: checkProto(u32(r.proto, 'proto')),
      mrEnclave: Buffer.from(mrEnclave),
      mrSigner: Buffer.from(mrSigner),
    };
  }
  throw new ShadowProtocolError('CliBlockerMsg carries neither sockBlock nor closeNotify');
}

export function encodeBlockerReply(reply: BlockerReplyCode): Buffer {
  return encode(CliBlockerReply, { reply });
}

export function decodeBlockerReply(body: Buffer): BlockerReplyCode {
  const reply = u32(decode(CliBlockerReply, body).reply, 'reply');
  if (reply > 4) throw new ShadowProtocolError(`unknown CliBlockerReply ${reply}`);
  return reply as BlockerReplyCode;
}

export function blockerReplyName(r: BlockerReplyCode): string {
  return (
    (Object.keys(BlockerReply) as (keyof typeof BlockerReply)[]).find((k) => BlockerReply[k] === r) ??
    String(r)
  );
}
