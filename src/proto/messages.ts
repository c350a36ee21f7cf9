/**
 * SENG's protobuf messages (SPEC §1.3, proto2, package seng_proto), encoded with
 * protobufjs from the schema text below, so the field numbers and `required`
 * semantics are exactly those of the original .proto. Addresses in the uint32
 * fields use SPEC encoding (see src/util/ipv4.ts toWire/fromWire).
 */
import protobuf from 'protobufjs';
import { SengError } from '../util/errors.js';

export const SENG_PROTO = `
syntax = "proto2";
package seng_proto;

message IpAssignment { required uint32 ip = 1; required uint32 netmask = 2; required uint32 gw_ip = 3; }
message IpAssignACK { required uint32 ip = 1; }

message RequestCliSockShadowing { required uint32 handle = 1; required uint32 port = 2; required uint32 proto = 3; }
message NotifyAboutClose { required uint32 handle = 1; }
message ShadowSrvMsg { oneof msg { RequestCliSockShadowing reqShadow = 1; NotifyAboutClose closeNotify = 2; } }
message ShadowReqReply { enum Replies { DENIED = 0; GRANTED = 1; } required Replies reply = 1; }
message ListenStartConfirm { enum Replies { FAILED = 0; NOW_LISTENING = 1; } required Replies reply = 1; }

message RequestSockBlocking { required uint32 port = 1; required uint32 proto = 2; required bytes mr_enclave = 3; required bytes mr_signer = 4; }
message CloseNotify { required uint32 port = 1; required uint32 proto = 2; }
message CliBlockerMsg { oneof msg { RequestSockBlocking sockBlock = 1; CloseNotify closeNotify = 2; } }
message CliBlockerReply { enum Replies { DENIED = 0; GRANTED = 1; IN_USE = 2; WAS_NOT_BLOCKED = 3; NOW_UNLBOCKED = 4; } required Replies reply = 1; }
`;

const root = protobuf.parse(SENG_PROTO).root;
export const IpAssignmentType = root.lookupType('seng_proto.IpAssignment');
export const IpAssignAckType = root.lookupType('seng_proto.IpAssignACK');
export const protoRoot = root;

/** A message that does not decode as the expected type. */
export class ProtocolError extends SengError {
  constructor(message: string) {
    super('EPROTO', message);
  }
}

export interface IpAssignment {
  /** All three in SPEC wire encoding. */
  ip: number;
  netmask: number;
  gwIp: number;
}

export function encodeIpAssignment(msg: IpAssignment): Buffer {
  const b = IpAssignmentType.encode(IpAssignmentType.create(msg)).finish();
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

export function decodeIpAssignment(buf: Buffer): IpAssignment {
  try {
    const m = IpAssignmentType.toObject(IpAssignmentType.decode(buf)) as IpAssignment;
    return { ip: m.ip >>> 0, netmask: m.netmask >>> 0, gwIp: m.gwIp >>> 0 };
  } catch (err) {
    throw new ProtocolError(`malformed IpAssignment: ${(err as Error).message}`);
  }
}

export function encodeIpAssignAck(ip: number): Buffer {
  const b = IpAssignAckType.encode(IpAssignAckType.create({ ip })).finish();
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

/** Decodes an IpAssignACK; returns the echoed ip (wire encoding). */
export function decodeIpAssignAck(buf: Buffer): number {
  try {
    const m = IpAssignAckType.toObject(IpAssignAckType.decode(buf)) as { ip: number };
    return m.ip >>> 0;
  } catch (err) {
    throw new ProtocolError(`malformed IpAssignACK: ${(err as Error).message}`);
  }
}
