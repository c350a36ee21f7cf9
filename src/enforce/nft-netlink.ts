/**
 * nf_tables set-element updates over a raw netlink socket, without spawning `nft`.
 *
 * A burst of admissions and session ends becomes ONE netfilter batch (BATCH_BEGIN,
 * one NEWSETELEM/DESTROYSETELEM message per (set, operation), BATCH_END) written with
 * one sendmsg and committed by the kernel as one transaction: either every element
 * change of the batch takes effect or none does. One round trip, typically well under a
 * millisecond, where `nft` costs a process spawn (several ms) per update.
 *
 * Removal uses DESTROYSETELEM (Linux ≥ 6.3), which, unlike DELSETELEM, does not fail
 * the whole batch when an element is already gone (an admin flushed the set, …). On
 * older kernels the client falls back to DELSETELEM (the enforcer only removes elements it added).
 *
 * The socket lives in the network namespace of the process that opens it (at the first
 * update). Framing, sequence/ack matching, the batch markers and timeouts are the netlink
 * layer's (src/netlink); this file owns only the nf_tables messages and what a failure means.
 */
import {
  Errno,
  NETLINK_NETFILTER,
  NFNL_SUBSYS_NFTABLES,
  NFPROTO_IPV4,
  NLM_F_ACK,
  NLM_F_CREATE,
  NLM_F_REQUEST,
  NetlinkChannel,
  NetlinkError,
  RawSocketTransport,
  encodeNfnlMsg,
  nla,
  nlaNested,
  nlaStringz,
  sendBatch,
  type NetlinkTransport,
  type OutgoingMessage,
} from '../netlink/index.js';
import { EnvironmentError, errorMessage } from '../util/errors.js';

const NFT_MSG_NEWCHAIN = 3;
const NFT_MSG_NEWRULE = 6;
const NFT_MSG_DELRULE = 8;
const NFT_MSG_NEWSETELEM = 12;
const NFT_MSG_DELSETELEM = 14;
/** Linux ≥ 6.3: delete, ignoring elements that do not exist. */
const NFT_MSG_DESTROYSETELEM = 30;
const NFTA_SET_ELEM_LIST_TABLE = 1;
const NFTA_SET_ELEM_LIST_SET = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS = 3;
const NFTA_LIST_ELEM = 1;
const NFTA_SET_ELEM_KEY = 1;
const NFTA_SET_ELEM_DATA = 2;
const NFTA_DATA_VALUE = 1;
const NFTA_DATA_VERDICT = 2;
const NFTA_VERDICT_CODE = 1;
const NFTA_VERDICT_CHAIN = 2;
const NFTA_CHAIN_TABLE = 1;
const NFTA_CHAIN_NAME = 3;
const NFTA_RULE_TABLE = 1;
const NFTA_RULE_CHAIN = 2;
const NFTA_RULE_EXPRESSIONS = 4;
const NFTA_EXPR_NAME = 1;
const NFTA_EXPR_DATA = 2;
const NFTA_IMMEDIATE_DREG = 1;
const NFTA_IMMEDIATE_DATA = 2;
const NFT_REG_VERDICT = 0;
/** include/uapi/linux/netlink.h: add the rule at the end of the chain. */
const NLM_F_APPEND = 0x800;
/** include/uapi/linux/netfilter/nf_tables.h: enum nft_verdicts, NFT_JUMP = -3, NFT_GOTO = -4. */
const NFT_JUMP = -3;
const NFT_GOTO = -4;
/** What one batch (one sendmsg) may carry; the socket's send buffer is 8 MiB. */
const MAX_BATCH_BYTES = 6 << 20;
/** An element list is one attribute, whose length field has 16 bits: stay below it. */
const MAX_ELEMENT_BYTES_PER_MESSAGE = 2048 * 16;

/**
 * Element changes of one set or map. Addresses are host-order numbers. For a verdict map
 * (the policy's dispatch maps), `gotoChains[i]` is the chain the element `add[i]` jumps to
 * with `goto`; `replace` lists added elements that may exist with another verdict (they
 * are removed first in the same batch: the kernel refuses to overwrite a map element's data).
 */
export interface SetElementChange {
  set: string;
  add: number[];
  remove: number[];
  gotoChains?: string[];
  replace?: number[];
  /** The map's verdicts are `jump` (category maps: the walk goes on after the chain), not `goto`. */
  jump?: boolean;
}

/**
 * A regular chain to create (or re-fill) in the same batch, before the elements that name
 * it: `jump` rules to `jumps`, in order (the category profile chains of src/policy/dispatch.ts).
 */
export interface ChainCreation {
  name: string;
  jumps: string[];
}

function verdict(code: number, chain: string): Buffer {
  const c = Buffer.alloc(4);
  c.writeInt32BE(code, 0);
  return nlaNested(NFTA_DATA_VERDICT, [nla(NFTA_VERDICT_CODE, c), nlaStringz(NFTA_VERDICT_CHAIN, chain)]);
}

/** The expression list of `jump <chain>`: one immediate into the verdict register. */
function jumpExpressions(chain: string): Buffer {
  const dreg = Buffer.alloc(4);
  dreg.writeUInt32BE(NFT_REG_VERDICT, 0);
  return nlaNested(NFTA_RULE_EXPRESSIONS, [
    nlaNested(NFTA_LIST_ELEM, [
      nlaStringz(NFTA_EXPR_NAME, 'immediate'),
      nlaNested(NFTA_EXPR_DATA, [
        nla(NFTA_IMMEDIATE_DREG, dreg),
        nlaNested(NFTA_IMMEDIATE_DATA, [verdict(NFT_JUMP, chain)]),
      ]),
    ]),
  ]);
}

function ipValue(ip: number): Buffer {
  const v = Buffer.alloc(4);
  v.writeUInt32BE(ip >>> 0, 0);
  return v;
}

function element(ip: number, chain?: string, jump = false): Buffer {
  const parts = [nlaNested(NFTA_SET_ELEM_KEY, [nla(NFTA_DATA_VALUE, ipValue(ip))])];
  if (chain !== undefined)
    parts.push(nlaNested(NFTA_SET_ELEM_DATA, [verdict(jump ? NFT_JUMP : NFT_GOTO, chain)]));
  return nlaNested(NFTA_LIST_ELEM, parts);
}

export interface NftNetlinkOptions {
  table: string;
  /** Reply timeout for one batch (default 2000 ms). */
  timeoutMs?: number;
  /** Socket boundary; default: a real NETLINK_NETFILTER socket, opened at the first update. */
  transport?: NetlinkTransport;
}

/** A long-lived netfilter netlink socket that applies set-element batches. */
export class NftNetlink {
  private channel: NetlinkChannel | undefined;
  private destroySupported = true;
  /** Batches committed (one kernel transaction each), for benchmarks and tests. */
  transactions = 0;
  readonly table: string;
  private readonly timeoutMs: number;
  private readonly transport: NetlinkTransport | undefined;

  constructor(opts: NftNetlinkOptions) {
    this.table = opts.table;
    this.timeoutMs = opts.timeoutMs ?? 2000;
    this.transport = opts.transport;
  }

  private open(): NetlinkChannel {
    if (this.channel) return this.channel;
    let transport = this.transport;
    if (!transport) {
      try {
        transport = new RawSocketTransport(NETLINK_NETFILTER, {
          recvBufferSize: 4 << 20,
          // A batch is one sendmsg, bounded by the send buffer: room for ~20,000 joins with their map entries.
          sendBufferSize: 8 << 20,
        });
      } catch (e) {
        throw new EnvironmentError(
          'ENETLINK',
          `cannot open a netfilter netlink socket: ${errorMessage(e)}`,
          'seng needs root (CAP_NET_ADMIN) for nftables enforcement',
          e,
        );
      }
    }
    this.channel = new NetlinkChannel(transport);
    return this.channel;
  }

  /**
   * Applies the changes as one kernel transaction. Rejects with a {@link NetlinkError} naming
   * the first message the kernel refused (and changes nothing), e.g. because a set does not exist.
   */
  async apply(changes: SetElementChange[], chains: ChainCreation[] = []): Promise<void> {
    const work = changes.filter((c) => c.add.length || c.remove.length);
    if (work.length === 0 && chains.length === 0) return;
    try {
      await this.send(work, this.destroySupported ? NFT_MSG_DESTROYSETELEM : NFT_MSG_DELSETELEM, chains);
    } catch (e) {
      // Kernels before 6.3 do not know DESTROYSETELEM: remember and retry with DELSETELEM.
      if (
        this.destroySupported &&
        e instanceof NetlinkError &&
        e.isKernel(Errno.EOPNOTSUPP) &&
        work.some((c) => c.remove.length)
      ) {
        this.destroySupported = false;
        await this.send(work, NFT_MSG_DELSETELEM, chains);
        return;
      }
      throw e;
    }
  }

  /**
   * The batch's messages: chains to create first (elements name them), then removals, so an
   * IP that leaves and rejoins within one batch ends up present, then additions.
   */
  private messages(
    work: SetElementChange[],
    delType: number,
    chains: ChainCreation[] = [],
  ): OutgoingMessage[] {
    const out: OutgoingMessage[] = [];
    const message = (msg: number, flags: number, attrs: Buffer[], what: string): void => {
      out.push({
        what,
        build: (seq, port) =>
          encodeNfnlMsg({ subsys: NFNL_SUBSYS_NFTABLES, msg, flags, family: NFPROTO_IPV4, seq, port }, attrs),
      });
    };
    const table = nlaStringz(NFTA_CHAIN_TABLE, this.table);
    const ruleTable = nlaStringz(NFTA_RULE_TABLE, this.table);
    for (const c of chains) {
      const name = nlaStringz(NFTA_CHAIN_NAME, c.name);
      message(
        NFT_MSG_NEWCHAIN,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
        [table, name],
        `create chain ${c.name}`,
      );
      // Emptied first: re-creating a chain that exists (a retry) must not double its jumps.
      const chain = nlaStringz(NFTA_RULE_CHAIN, c.name);
      message(NFT_MSG_DELRULE, NLM_F_REQUEST | NLM_F_ACK, [ruleTable, chain], `flush chain ${c.name}`);
      for (const j of c.jumps)
        message(
          NFT_MSG_NEWRULE,
          NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND,
          [ruleTable, chain, jumpExpressions(j)],
          `add jump ${j} to chain ${c.name}`,
        );
    }
    const elements = (
      msg: number,
      flags: number,
      set: string,
      all: number[],
      what: string,
      targets?: string[],
      jump = false,
    ): void => {
      const encoded = all.map((ip, i) => element(ip, targets?.[i], jump));
      // The element list is one attribute, whose length field has 16 bits: chunk it.
      for (let i = 0; i < encoded.length;) {
        const chunk: Buffer[] = [];
        let bytes = 0;
        while (i < encoded.length && bytes + (encoded[i] as Buffer).length <= MAX_ELEMENT_BYTES_PER_MESSAGE) {
          bytes += (encoded[i] as Buffer).length;
          chunk.push(encoded[i] as Buffer);
          i += 1;
        }
        const attrs = [
          nlaStringz(NFTA_SET_ELEM_LIST_TABLE, this.table),
          nlaStringz(NFTA_SET_ELEM_LIST_SET, set),
          nlaNested(NFTA_SET_ELEM_LIST_ELEMENTS, chunk),
        ];
        out.push({
          what,
          build: (seq, port) =>
            encodeNfnlMsg(
              { subsys: NFNL_SUBSYS_NFTABLES, msg, flags, family: NFPROTO_IPV4, seq, port },
              attrs,
            ),
        });
      }
    };
    for (const c of work) {
      const remove = c.replace?.length ? [...new Set([...c.remove, ...c.replace])] : c.remove;
      if (remove.length)
        elements(delType, NLM_F_REQUEST | NLM_F_ACK, c.set, remove, `remove from set ${c.set}`);
    }
    for (const c of work) {
      if (c.add.length)
        elements(
          NFT_MSG_NEWSETELEM,
          NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
          c.set,
          c.add,
          `add to set ${c.set}`,
          c.gotoChains,
          c.jump,
        );
    }
    return out;
  }

  private async send(work: SetElementChange[], delType: number, chains: ChainCreation[]): Promise<void> {
    // A batch is one sendmsg, and the kernel refuses one larger than the socket's send
    // buffer: a change beyond MAX_BATCH_BYTES (≈ 50,000 joins with their map entries, e.g.
    // removing everything at shutdown) goes as several transactions, removals first.
    let group: OutgoingMessage[] = [];
    let bytes = 0;
    for (const m of this.messages(work, delType, chains)) {
      const size = m.build(0, 0).length;
      if (group.length && bytes + size > MAX_BATCH_BYTES) {
        await this.sendOne(group);
        group = [];
        bytes = 0;
      }
      group.push(m);
      bytes += size;
    }
    if (group.length) await this.sendOne(group);
  }

  private async sendOne(messages: OutgoingMessage[]): Promise<void> {
    const results = await sendBatch(this.open(), NFNL_SUBSYS_NFTABLES, messages, {
      // The kernel finds each message's set by name (a list walk per message): a burst that
      // touches thousands of sets legitimately takes longer than one join.
      timeoutMs: this.timeoutMs + messages.length,
      what: `nf_tables batch on table ip ${this.table}`,
    });
    const first = results.find((r): r is NetlinkError => r instanceof NetlinkError);
    if (!first) this.transactions += 1;
    if (first) {
      throw new NetlinkError(first.errno, 'kernel', first.request, {
        ...(first.extack ? { extack: first.extack } : {}),
        message:
          `nf_tables rejected the batch (${first.errnoName} on ${first.request.what} in table ip ${this.table}` +
          `${first.extack ? `: ${first.extack}` : ''}); nothing was changed`,
      });
    }
  }

  close(): void {
    this.channel?.close();
    this.channel = undefined;
  }
}
