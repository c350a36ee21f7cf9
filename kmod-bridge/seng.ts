/**
 * The seng kernel module's generic-netlink requests (SPEC §5.1), encoded byte-exactly.
 *
 * Every request is one `GENL_XT_SENG_MSG` (cmd 1, version 1) carrying attributes, in
 * ascending attribute number:
 *   APP   = 1  32 bytes (mr_enclave)
 *   CAT   = 2  NUL-terminated string, at most 20 characters + NUL
 *   HOST  = 3  u32, IPv4 in network byte order
 *   ENC   = 4  u32, IPv4 in network byte order
 *   ADD   = 5  flag (no payload)   RMV = 6 flag   FLUSH = 7 flag
 * Each attribute is padded to 4 bytes. The module validates none of this (it declares
 * no policy), so the validation here is the only one.
 */
import { InputError } from '../src/util/errors.js';
import { CATEGORY_MAX, validateCategory as validateCategoryName } from '../src/util/names.js';
import { formatIpv4, type Ipv4 } from '../src/util/ipv4.js';
import { NLM_F_ACK, NLM_F_REQUEST, encodeNlmsg, genlHeader, nla, nlaBe32 } from '../src/netlink/index.js';

export const SENG_FAMILY_NAME = 'seng_family';
export const SENG_MCGRP_NAME = 'seng_mcgrp';
export const SENG_GENL_VERSION = 1;
export const GENL_XT_SENG_MSG = 1;

export const SENG_ATTR_APP = 1;
export const SENG_ATTR_CAT = 2;
export const SENG_ATTR_HOST = 3;
export const SENG_ATTR_ENC = 4;
export const SENG_ATTR_ADD = 5;
export const SENG_ATTR_RMV = 6;
export const SENG_ATTR_FLUSH = 7;

export const SENG_APP_LEN = 32;
export const SENG_CAT_MAX = CATEGORY_MAX;

/** Checks a category name for the module (the one rule of src/util/names.ts) and returns it. */
export function validateCategory(name: string): string {
  return validateCategoryName(name);
}

/** Checks an app measurement (mr_enclave) and returns it. */
export function validateApp(mrEnclave: Buffer): Buffer {
  if (mrEnclave.length !== SENG_APP_LEN) {
    throw new InputError(
      `an app measurement (mr_enclave) is ${SENG_APP_LEN} bytes, got ${mrEnclave.length}`,
      'pass the 64 hex digits of MRENCLAVE',
    );
  }
  return mrEnclave;
}

/** Parses 64 hex digits into the 32-byte app measurement. */
export function parseAppHex(hex: string): Buffer {
  const h = hex.trim().toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(h)) {
    throw new InputError(`"${hex}" is not an app measurement`, 'write MRENCLAVE as 64 hex digits');
  }
  return Buffer.from(h, 'hex');
}

function validateIp(ip: Ipv4, what: string, allowZero: boolean): Ipv4 {
  if (!Number.isInteger(ip) || ip < 0 || ip > 0xffffffff)
    throw new InputError(`${what} ${ip} is not an IPv4 address`);
  if (!allowZero && ip === 0) throw new InputError(`${what} 0.0.0.0 cannot be registered`);
  return ip;
}

function appAttr(mrEnclave: Buffer): Buffer {
  return nla(SENG_ATTR_APP, validateApp(mrEnclave));
}

function catAttr(category: string): Buffer {
  return nla(
    SENG_ATTR_CAT,
    Buffer.concat([Buffer.from(validateCategory(category), 'ascii'), Buffer.alloc(1)]),
  );
}

function message(attrs: Buffer[]): Buffer {
  return Buffer.concat([genlHeader(GENL_XT_SENG_MSG, SENG_GENL_VERSION), ...attrs]);
}

export interface RegisterRequest {
  enclaveIp: Ipv4;
  mrEnclave: Buffer;
  hostIp: Ipv4;
  /** Optional category added to the app along with the registration (rule 1). */
  category?: string;
}

/** Rule 1: APP, [CAT], HOST, ENC, ADD. Returns the generic-netlink payload (genl header + attributes). */
export function encodeRegister(r: RegisterRequest): Buffer {
  const attrs = [appAttr(r.mrEnclave)];
  if (r.category !== undefined) attrs.push(catAttr(r.category));
  attrs.push(
    nlaBe32(SENG_ATTR_HOST, validateIp(r.hostIp, 'host IP', true)),
    nlaBe32(SENG_ATTR_ENC, validateIp(r.enclaveIp, 'enclave IP', false)),
    nla(SENG_ATTR_ADD),
  );
  return message(attrs);
}

/** Rule 2: ENC, RMV. */
export function encodeUnregister(enclaveIp: Ipv4): Buffer {
  return message([nlaBe32(SENG_ATTR_ENC, validateIp(enclaveIp, 'enclave IP', false)), nla(SENG_ATTR_RMV)]);
}

/** Rule 3: APP, CAT, ADD or RMV. */
export function encodeCategory(op: 'add' | 'remove', mrEnclave: Buffer, category: string): Buffer {
  return message([appAttr(mrEnclave), catAttr(category), nla(op === 'add' ? SENG_ATTR_ADD : SENG_ATTR_RMV)]);
}

/** Rule 4: FLUSH. */
export function encodeFlush(): Buffer {
  return message([nla(SENG_ATTR_FLUSH)]);
}

/** Wraps a seng payload into the full netlink message (REQUEST | ACK) for the resolved family id. */
export function sengNlmsg(familyId: number, seq: number, port: number, genlPayload: Buffer): Buffer {
  return encodeNlmsg({ type: familyId, flags: NLM_F_REQUEST | NLM_F_ACK, seq, port }, genlPayload);
}

/** One-line description of a request, for logs and error messages. */
export function describeRegister(r: RegisterRequest): string {
  return `register ${formatIpv4(r.enclaveIp)} (app ${r.mrEnclave.toString('hex').slice(0, 16)}…, host ${formatIpv4(r.hostIp)})`;
}
