/**
 * Conntrack purge for shadowed (DNATed) flows (SPEC §6.8): a client's connection to
 * `<host IP>:X` has the host IP as its *original* destination and the enclave IP only as
 * its *reply* source, so purgeConntrack (original source/destination) does not see it.
 * This dumps the IPv4 table over ctnetlink and deletes the entries whose reply source is
 * the enclave IP while their original destination is another address (i.e. NATed),
 * optionally only those of one port and protocol. Entries are deleted by their original
 * tuple, zone and id, like src/enforce/conntrack.ts does.
 */
import {
  AF_INET,
  Errno,
  NETLINK_NETFILTER,
  NFGENMSG_LEN,
  NFNL_SUBSYS_CTNETLINK,
  NLM_F_ACK,
  NLM_F_REQUEST,
  NetlinkChannel,
  NetlinkError,
  RawSocketTransport,
  encodeNfnlMsg,
  findAttr,
  type NlMessage,
} from '../netlink/index.js';
import { ConntrackError, encodeCtDump, parseCtEntry, type CtEntry } from '../enforce/conntrack.js';
import { errorMessage } from '../util/errors.js';
import { formatIpv4, type Ipv4 } from '../util/ipv4.js';

const CTA_TUPLE_REPLY = 2;
const CTA_TUPLE_IP = 1;
const CTA_TUPLE_PROTO = 2;
const CTA_IP_V4_SRC = 1;
const CTA_PROTO_NUM = 1;
const CTA_PROTO_SRC_PORT = 2;
const IPCTNL_MSG_CT_DELETE = 2;
/** Deletes per datagram (the kernel acks each). */
const DELETE_BATCH = 128;

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
  let channel: NetlinkChannel;
  try {
    channel = new NetlinkChannel(new RawSocketTransport(NETLINK_NETFILTER, { recvBufferSize: 1 << 20 }));
  } catch (err) {
    throw new ConntrackError(`cannot open a ctnetlink socket: ${errorMessage(err)}`, err);
  }
  try {
    const msgs = await channel.request((seq, port) => encodeCtDump(seq, port, null, 'src'), {
      timeoutMs,
      dump: true,
      what: 'dumping conntrack entries',
    });
    const victims = msgs.map(parseNatFlow).filter((f): f is NatFlow => f !== null && isShadowFlow(f, filter));
    if (victims.length === 0) return 0;
    let deleted = 0;
    for (let i = 0; i < victims.length; i += DELETE_BATCH) {
      deleted += await deleteBatch(channel, victims.slice(i, i + DELETE_BATCH), timeoutMs);
    }
    return deleted;
  } catch (err) {
    if (err instanceof ConntrackError) throw err;
    throw new ConntrackError(
      `purging the shadowed flows of ${formatIpv4(filter.enclaveIp)} failed: ${errorMessage(err)}`,
      err,
    );
  } finally {
    channel.close();
  }
}

async function deleteBatch(channel: NetlinkChannel, victims: NatFlow[], timeoutMs: number): Promise<number> {
  const results = await channel.requestMany(
    victims.map(
      (e) => (seq: number, port: number) =>
        encodeNfnlMsg(
          {
            subsys: NFNL_SUBSYS_CTNETLINK,
            msg: IPCTNL_MSG_CT_DELETE,
            flags: NLM_F_REQUEST | NLM_F_ACK,
            family: AF_INET,
            seq,
            port,
          },
          [e.key],
        ),
    ),
    { timeoutMs, what: 'deleting a conntrack entry' },
  );
  let deleted = 0;
  for (const r of results) {
    if (!(r instanceof NetlinkError)) deleted++;
    else if (!r.isKernel(Errno.ENOENT)) throw r;
  }
  return deleted;
}
