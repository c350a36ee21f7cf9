/**
 * nfnetlink (NETLINK_NETFILTER), shared by ctnetlink (conntrack) and nf_tables: the
 * `nfgenmsg` header, message types (subsystem << 8 | message) and batches.
 *
 * A batch is BATCH_BEGIN, the messages, BATCH_END in one datagram; subsystems that support
 * it (nf_tables) commit the messages as one transaction: all or nothing. The kernel answers
 * every message that carries NLM_F_ACK, and every failing one, after processing the whole
 * batch; the markers themselves carry no ACK and are not awaited.
 */
import type { NetlinkChannel, MessageResult, OutgoingMessage, RequestOptions } from './channel.js';
import { AF_UNSPEC, NLM_F_REQUEST, encodeNlmsg } from './wire.js';

export const NFNETLINK_V0 = 0;
export const NFNL_SUBSYS_CTNETLINK = 1;
export const NFNL_SUBSYS_NFTABLES = 10;
export const NFNL_MSG_BATCH_BEGIN = 0x10;
export const NFNL_MSG_BATCH_END = 0x11;

/** nf_tables' name for AF_INET (the `ip` table family). */
export const NFPROTO_IPV4 = 2;

export const NFGENMSG_LEN = 4;

/** `struct nfgenmsg`: u8 family, u8 version (V0), u16 res_id in network byte order. */
export function nfgenmsg(family: number, resId = 0): Buffer {
  const b = Buffer.from([family & 0xff, NFNETLINK_V0, 0, 0]);
  b.writeUInt16BE(resId, 2);
  return b;
}

export interface NfnlHeader {
  subsys: number;
  /** The subsystem's message number (IPCTNL_MSG_CT_GET, NFT_MSG_NEWSETELEM, …). */
  msg: number;
  flags: number;
  family: number;
  seq: number;
  port: number;
}

/** One nfnetlink message: nlmsghdr, nfgenmsg, then the already-encoded attributes. */
export function encodeNfnlMsg(h: NfnlHeader, attrs: Buffer[] = []): Buffer {
  return encodeNlmsg(
    { type: (h.subsys << 8) | h.msg, flags: h.flags, seq: h.seq, port: h.port },
    Buffer.concat([nfgenmsg(h.family), ...attrs]),
  );
}

/** A BATCH_BEGIN / BATCH_END marker for `subsys` (carried in nfgenmsg.res_id). */
function batchMarker(type: number, subsys: number): OutgoingMessage {
  return {
    noReply: true,
    build: (seq, port) => encodeNlmsg({ type, flags: NLM_F_REQUEST, seq, port }, nfgenmsg(AF_UNSPEC, subsys)),
  };
}

/**
 * Sends the messages as one batch of `subsys` in one datagram and returns, per message,
 * its replies or the kernel's error for it (named by that message's `what`).
 */
export function sendBatch(
  channel: NetlinkChannel,
  subsys: number,
  messages: OutgoingMessage[],
  opts: RequestOptions,
): Promise<MessageResult[]> {
  return channel.requestMany(
    [batchMarker(NFNL_MSG_BATCH_BEGIN, subsys), ...messages, batchMarker(NFNL_MSG_BATCH_END, subsys)],
    opts,
  );
}
