/**
 * Conntrack purge for shadowed (DNATed) flows (SPEC §6.8): a client's connection to
 * `<host IP>:X` has the host IP as its *original* destination and the enclave IP only as
 * its *reply* source, so purgeConntrack (original source/destination) does not see it.
 * This dumps the IPv4 table over ctnetlink and deletes the entries whose reply source is
 * the enclave IP while their original destination is another address (i.e. NATed),
 * optionally only those of one port and protocol, through ConntrackPurger.purgeSelected
 * (deleted by their original tuple, zone and id, like every purge).
 */
import { NFGENMSG_LEN, findAttr, type NlMessage } from '../netlink/index.js';
import { ConntrackPurger, parseCtEntry, type CtEntry } from '../enforce/conntrack.js';
import { formatIpv4, type Ipv4 } from '../util/ipv4.js';

const CTA_TUPLE_REPLY = 2;
const CTA_TUPLE_IP = 1;
const CTA_TUPLE_PROTO = 2;
const CTA_IP_V4_SRC = 1;
const CTA_PROTO_NUM = 1;
const CTA_PROTO_SRC_PORT = 2;

export interface NatFlow extends CtEntry {
  replySrc: Ipv4;
  replySport: number | undefined;
  proto: number | undefined;
}

/** Parses a dump message with its reply tuple; null if it is not IPv4. */
export function parseNatFlow(msg: NlMessage): NatFlow | null {
  const e = parseCtEntry(msg);
  if (!e) return null;
  const reply = findAttr(msg.payload.subarray(NFGENMSG_LEN), CTA_TUPLE_REPLY);
  const ip = reply && findAttr(reply.value, CTA_TUPLE_IP);
  const src = ip && findAttr(ip.value, CTA_IP_V4_SRC);
  if (!src || src.value.length < 4) return null;
  const proto = findAttr(reply.value, CTA_TUPLE_PROTO);
  const num = proto && findAttr(proto.value, CTA_PROTO_NUM);
  const sport = proto && findAttr(proto.value, CTA_PROTO_SRC_PORT);
  return {
    ...e,
    replySrc: src.value.readUInt32BE(0),
    proto: num && num.value.length >= 1 ? num.value[0] : undefined,
    replySport: sport && sport.value.length >= 2 ? sport.value.readUInt16BE(0) : undefined,
  };
}

export interface ShadowFlowFilter {
  enclaveIp: Ipv4;
  port?: number;
  proto?: number;
}

export function isShadowFlow(f: NatFlow, filter: ShadowFlowFilter): boolean {
  return (
    f.replySrc === filter.enclaveIp &&
    f.dst !== filter.enclaveIp &&
    (filter.port === undefined || f.replySport === filter.port) &&
    (filter.proto === undefined || f.proto === filter.proto)
  );
}

export type PurgeShadowFlows = (filter: ShadowFlowFilter) => Promise<number>;

/** Deletes the DNATed flows to an enclave IP in this network namespace; returns how many. */
export async function purgeShadowFlows(filter: ShadowFlowFilter, timeoutMs = 5000): Promise<number> {
  // Its own socket: a netlink socket runs one dump at a time, and the session-end purges of
  // src/enforce share theirs.
  const purger = new ConntrackPurger();
  try {
    return await purger.purgeSelected(
      (msg) => {
        const f = parseNatFlow(msg);
        return f && isShadowFlow(f, filter) ? f : null;
      },
      { timeoutMs, what: `purging the shadowed flows of ${formatIpv4(filter.enclaveIp)}` },
    );
  } finally {
    purger.close();
  }
}
