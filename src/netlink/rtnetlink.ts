/**
 * rtnetlink (NETLINK_ROUTE), the part seng uses: links (`ifinfomsg`) and IPv4 addresses
 * (`ifaddrmsg`). Encoders of whole request messages and parsers of the replies; the
 * request/reply exchange is the {@link NetlinkChannel}'s.
 */
import {
  AF_INET,
  NLM_F_ACK,
  NLM_F_DUMP,
  NLM_F_REQUEST,
  encodeNlmsg,
  findAttr,
  nla,
  readI32,
  readU32,
  writeU32,
  type NlMessage,
} from './wire.js';

export const RTM_NEWLINK = 16;
export const RTM_DELLINK = 17;
export const RTM_GETLINK = 18;
export const RTM_SETLINK = 19;
export const RTM_NEWADDR = 20;
export const RTM_DELADDR = 21;
export const RTM_GETADDR = 22;

export const IFLA_IFNAME = 3;
export const IFLA_MTU = 4;
export const IFLA_TXQLEN = 13;
export const IFA_ADDRESS = 1;
export const IFA_LOCAL = 2;

export const IFF_UP = 0x1;

const IFINFOMSG_LEN = 16;
const IFADDRMSG_LEN = 8;

export interface LinkRequest {
  type: number;
  /** Extra flags besides REQUEST | ACK. */
  flags?: number;
  index: number;
  /** `ifi_flags` and `ifi_change`: which device flags to set (e.g. IFF_UP) and which to touch. */
  ifFlags?: number;
  ifChange?: number;
  attrs?: Buffer[];
}

/** A whole RTM_*LINK request: nlmsghdr, `ifinfomsg` (family 0), attributes. */
export function encodeLinkRequest(r: LinkRequest, seq: number, port: number): Buffer {
  const ifi = Buffer.alloc(IFINFOMSG_LEN); // u8 family, u8 pad, u16 type, s32 index, u32 flags, u32 change
  writeU32(ifi, r.index, 4);
  writeU32(ifi, r.ifFlags ?? 0, 8);
  writeU32(ifi, r.ifChange ?? 0, 12);
  return encodeNlmsg(
    { type: r.type, flags: NLM_F_REQUEST | NLM_F_ACK | (r.flags ?? 0), seq, port },
    Buffer.concat([ifi, ...(r.attrs ?? [])]),
  );
}

export interface AddressRequest {
  type: number;
  flags?: number;
  index: number;
  /** Host-order IPv4 address; written as both IFA_LOCAL and IFA_ADDRESS (a point-to-point peer is not used). */
  address: number;
  prefix: number;
}

/** `ifaddrmsg`: u8 family, u8 prefixlen, u8 flags, u8 scope, u32 index. */
function ifaddrmsg(family: number, prefix: number, index: number): Buffer {
  const ifa = Buffer.alloc(IFADDRMSG_LEN);
  ifa[0] = family;
  ifa[1] = prefix;
  writeU32(ifa, index, 4);
  return ifa;
}

function ipv4Bytes(ip: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(ip >>> 0, 0);
  return b;
}

/** A whole RTM_NEWADDR / RTM_DELADDR request for one IPv4 address. */
export function encodeAddressRequest(r: AddressRequest, seq: number, port: number): Buffer {
  return encodeNlmsg(
    { type: r.type, flags: NLM_F_REQUEST | NLM_F_ACK | (r.flags ?? 0), seq, port },
    Buffer.concat([
      ifaddrmsg(AF_INET, r.prefix, r.index),
      nla(IFA_LOCAL, ipv4Bytes(r.address)),
      nla(IFA_ADDRESS, ipv4Bytes(r.address)),
    ]),
  );
}

/** The RTM_GETADDR dump of every IPv4 address. */
export function encodeAddressDump(seq: number, port: number): Buffer {
  return encodeNlmsg(
    { type: RTM_GETADDR, flags: NLM_F_REQUEST | NLM_F_DUMP, seq, port },
    ifaddrmsg(AF_INET, 0, 0),
  );
}

export interface LinkMessage {
  index: number;
  name: string;
  mtu: number;
  flags: number;
}

/** Parses an RTM_NEWLINK message; null if it is not one. */
export function parseLinkMessage(m: NlMessage): LinkMessage | null {
  if (m.type !== RTM_NEWLINK || m.payload.length < IFINFOMSG_LEN) return null;
  const attrs = m.payload.subarray(IFINFOMSG_LEN);
  const name = findAttr(attrs, IFLA_IFNAME)?.value;
  const mtu = findAttr(attrs, IFLA_MTU)?.value;
  return {
    index: readI32(m.payload, 4),
    name: name ? name.subarray(0, name.indexOf(0) < 0 ? name.length : name.indexOf(0)).toString('utf8') : '',
    mtu: mtu && mtu.length >= 4 ? readU32(mtu, 0) : 0,
    flags: readU32(m.payload, 8),
  };
}

export interface AddressMessage {
  family: number;
  index: number;
  prefix: number;
  /** Host-order IPv4 address (IFA_LOCAL, else IFA_ADDRESS); undefined if neither is 4 bytes. */
  address: number | undefined;
}

/** Parses an RTM_NEWADDR message; null if it is not one. */
export function parseAddressMessage(m: NlMessage): AddressMessage | null {
  if (m.type !== RTM_NEWADDR || m.payload.length < IFADDRMSG_LEN) return null;
  const attrs = m.payload.subarray(IFADDRMSG_LEN);
  const raw = findAttr(attrs, IFA_LOCAL)?.value ?? findAttr(attrs, IFA_ADDRESS)?.value;
  return {
    family: m.payload[0] as number,
    prefix: m.payload[1] as number,
    index: readU32(m.payload, 4),
    address: raw && raw.length === 4 ? raw.readUInt32BE(0) : undefined,
  };
}
