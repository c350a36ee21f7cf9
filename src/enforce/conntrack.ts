/**
 * Conntrack purge over ctnetlink (NETLINK_NETFILTER, subsystem CTNETLINK).
 *
 * `purgeConntrack(ip)` deletes every IPv4 conntrack entry whose *original* source or
 * destination is `ip`, in the network namespace of the calling process, and returns how
 * many it deleted. It is what a session end needs so that a reused enclave IP never
 * rides on a previous enclave's connections (SPEC §5.1).
 *
 * How: every conntrack dump walks the whole global hash table (nf_conntrack_buckets, often
 * 262144 buckets: several ms), whatever it returns. So with few entries in the namespace
 * (IPCTNL_MSG_CT_GET_STATS, no walk) we do one unfiltered dump; with many, two
 * kernel-filtered dumps (CTA_FILTER on the original source, then on the original destination;
 * Linux ≥ 5.8) so the kernel only serializes matching entries; on kernels that refuse the
 * filter we always do the full dump. Every returned entry is checked again in user space, then deleted by its original tuple, zone and id (the id guards against
 * deleting a newer entry that reuses the tuple), many deletes per datagram. An entry that
 * vanished between dump and delete (ENOENT) is not counted.
 */
import {
  AF_INET,
  Errno,
  AF_UNSPEC,
  NETLINK_NETFILTER,
  NFNL_SUBSYS_CTNETLINK,
  NLM_F_ACK,
  NLM_F_DUMP,
  NLM_F_REQUEST,
  NFGENMSG_LEN,
  NetlinkChannel,
  NetlinkError,
  RawSocketTransport,
  align4,
  attrMap,
  encodeNfnlMsg,
  findAttr,
  nlaBe32,
  nlaNested,
  nlaU32,
  type NetlinkTransport,
  type NlMessage,
} from '../netlink/index.js';
import { EnvironmentError } from '../util/errors.js';
import { formatIpv4, type Ipv4 } from '../util/ipv4.js';

const IPCTNL_MSG_CT_GET = 1;
const IPCTNL_MSG_CT_DELETE = 2;
const IPCTNL_MSG_CT_GET_STATS = 5;
const CTA_STATS_GLOBAL_ENTRIES = 1;

const CTA_TUPLE_ORIG = 1;
const CTA_ID = 12;
const CTA_ZONE = 18;
const CTA_FILTER = 25;
const CTA_TUPLE_IP = 1;
const CTA_IP_V4_SRC = 1;
const CTA_IP_V4_DST = 2;
const CTA_FILTER_ORIG_FLAGS = 1;
const CTA_FILTER_FLAG_IP_SRC = 1 << 0;
const CTA_FILTER_FLAG_IP_DST = 1 << 1;

/** Deletes per datagram: the kernel acks each; 128 acks fit any receive buffer. */
const DELETE_BATCH = 128;

/** Conntrack maintenance over ctnetlink failed. */
export class ConntrackError extends EnvironmentError {
  constructor(message: string, cause?: unknown) {
    super(
      'ECONNTRACK',
      message,
      'conntrack over netlink needs CAP_NET_ADMIN and the nf_conntrack_netlink support in the kernel',
      cause,
    );
  }
}

export interface PurgeOptions {
  /** Milliseconds to wait for each dump / batch of deletes (default 5000). */
  timeoutMs?: number;
  /** Reuse this purger (its socket) instead of the process-wide default one. */
  purger?: ConntrackPurger;
}

/** A ctnetlink message: nlmsghdr, nfgenmsg, attributes. */
function ctMsg(
  msg: number,
  flags: number,
  family: number,
  seq: number,
  port: number,
  attrs: Buffer[] = [],
): Buffer {
  return encodeNfnlMsg({ subsys: NFNL_SUBSYS_CTNETLINK, msg, flags, family, seq, port }, attrs);
}

/** Encodes the filtered dump request: original source (`dir: 'src'`) or destination equal to ip. */
export function encodeCtDump(seq: number, port: number, ip: Ipv4 | null, dir: 'src' | 'dst'): Buffer {
  const attrs: Buffer[] = [];
  if (ip !== null) {
    attrs.push(
      nlaNested(CTA_TUPLE_ORIG, [
        nlaNested(CTA_TUPLE_IP, [nlaBe32(dir === 'src' ? CTA_IP_V4_SRC : CTA_IP_V4_DST, ip)]),
      ]),
      nlaNested(CTA_FILTER, [
        nlaU32(CTA_FILTER_ORIG_FLAGS, dir === 'src' ? CTA_FILTER_FLAG_IP_SRC : CTA_FILTER_FLAG_IP_DST),
      ]),
    );
  }
  return ctMsg(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, AF_INET, seq, port, attrs);
}

export interface CtEntry {
  /** Original-direction source and destination (host order). */
  src: Ipv4;
  dst: Ipv4;
  /** Encoded attributes identifying the entry for a delete (tuple, zone, id), verbatim from the dump. */
  key: Buffer;
}

/** Parses one IPCTNL_MSG_CT_NEW message of a dump; null if it is not an IPv4 entry. */
export function parseCtEntry(msg: NlMessage): CtEntry | null {
  if (msg.payload.length < NFGENMSG_LEN || msg.payload[0] !== AF_INET) return null;
  const attrs = msg.payload.subarray(NFGENMSG_LEN);
  const orig = findAttr(attrs, CTA_TUPLE_ORIG);
  if (!orig) return null;
  const ipAttr = findAttr(orig.value, CTA_TUPLE_IP);
  if (!ipAttr) return null;
  const s = findAttr(ipAttr.value, CTA_IP_V4_SRC);
  const d = findAttr(ipAttr.value, CTA_IP_V4_DST);
  if (!s || !d || s.value.length < 4 || d.value.length < 4) return null;
  const zone = findAttr(attrs, CTA_ZONE);
  const id = findAttr(attrs, CTA_ID);
  // Each part re-padded to 4 bytes (`raw` excludes the trailing padding).
  const parts = [orig.raw, zone?.raw, id?.raw];
  let size = 0;
  for (const b of parts) if (b) size += align4(b.length);
  const key = Buffer.alloc(size);
  let off = 0;
  for (const b of parts) {
    if (!b) continue;
    b.copy(key, off);
    off += align4(b.length);
  }
  return { src: s.value.readUInt32BE(0), dst: d.value.readUInt32BE(0), key };
}

/**
 * Holds one ctnetlink socket (bound in the network namespace the process was in when the
 * purger was created) for repeated purges.
 */
export class ConntrackPurger {
  private readonly channel: NetlinkChannel;
  /** null until the first dump tells us whether the kernel accepts CTA_FILTER. */
  private filterSupported: boolean | null = null;
  private readonly fullDumpBelow: number;
  /** Purges requested while a dump runs; the next run serves all of them with one walk. */
  private pending = new Map<Ipv4, { resolve: (n: number) => void; reject: (e: unknown) => void }[]>();
  private running = false;

  /**
   * @param opts.fullDumpBelow with at most this many entries in the namespace, one unfiltered
   *   dump replaces the two kernel-filtered ones (default 500; 0 = always filter).
   */
  constructor(opts: { transport?: NetlinkTransport; fullDumpBelow?: number } = {}) {
    this.fullDumpBelow = opts.fullDumpBelow ?? 500;
    let transport = opts.transport;
    if (!transport) {
      try {
        transport = new RawSocketTransport(NETLINK_NETFILTER, { recvBufferSize: 1 << 20 });
      } catch (err) {
        throw new ConntrackError(`cannot open a ctnetlink socket: ${(err as Error).message}`, err);
      }
    }
    this.channel = new NetlinkChannel(transport);
  }

  /**
   * Deletes every IPv4 entry whose original source or destination is `ip`; returns the count.
   * A netlink socket runs one dump at a time, and every dump walks the whole table; so calls
   * made while a purge runs are coalesced, and the next run purges all their IPs at once (a
   * burst of session ends costs a few table walks, not one each).
   */
  purge(ip: Ipv4, opts: { timeoutMs?: number } = {}): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      const waiters = this.pending.get(ip) ?? [];
      waiters.push({ resolve, reject });
      this.pending.set(ip, waiters);
      this.pump(opts.timeoutMs ?? 5000);
    });
  }

  private pump(timeoutMs: number): void {
    if (this.running || this.pending.size === 0) return;
    this.running = true;
    const batch = this.pending;
    this.pending = new Map();
    this.purgeNow([...batch.keys()], timeoutMs)
      .then(
        (counts) => {
          for (const [ip, waiters] of batch) for (const w of waiters) w.resolve(counts.get(ip) ?? 0);
        },
        (err: unknown) => {
          for (const waiters of batch.values()) for (const w of waiters) w.reject(err);
        },
      )
      .finally(() => {
        this.running = false;
        this.pump(timeoutMs);
      });
  }

  private async purgeNow(ips: Ipv4[], timeoutMs: number): Promise<Map<Ipv4, number>> {
    const wanted = new Set(ips);
    const entries = new Map<string, CtEntry>();
    const collect = (list: CtEntry[]): void => {
      for (const e of list) entries.set(e.key.toString('latin1'), e);
    };
    try {
      // Every dump walks the whole (global) conntrack hash table, which costs the same
      // whatever it returns: with few entries in this namespace, or several IPs to purge,
      // one unfiltered walk is cheaper than two filtered ones per IP.
      // The entry count costs no table walk; an empty table (conntrack unused in this
      // namespace) needs no walk at all.
      const count = await this.entryCount(timeoutMs);
      if (count === 0) return new Map();
      const small = this.filterSupported === false || ips.length > 1 || count <= this.fullDumpBelow;
      const ip = ips[0] as Ipv4;
      if (!small) {
        try {
          for (const dir of ['src', 'dst'] as const) collect(await this.dump(ip, dir, timeoutMs));
          this.filterSupported = true;
        } catch (err) {
          if (
            this.filterSupported === null &&
            err instanceof NetlinkError &&
            (err.isKernel(Errno.EOPNOTSUPP) || err.isKernel(Errno.EINVAL))
          ) {
            this.filterSupported = false;
            entries.clear();
          } else {
            throw err;
          }
        }
      }
      if (small || this.filterSupported === false) collect(await this.dump(null, 'src', timeoutMs));
      const victims = [...entries.values()].filter((e) => wanted.has(e.src) || wanted.has(e.dst));
      const counts = new Map<Ipv4, number>();
      for (const e of await this.deleteAll(victims, timeoutMs)) {
        const owner = wanted.has(e.src) ? e.src : e.dst;
        counts.set(owner, (counts.get(owner) ?? 0) + 1);
      }
      return counts;
    } catch (err) {
      if (err instanceof ConntrackError) throw err;
      if (err instanceof NetlinkError) {
        throw new ConntrackError(
          `purging conntrack entries of ${ips.map(formatIpv4).join(', ')} failed: ${err.message}`,
          err,
        );
      }
      throw err;
    }
  }

  /**
   * Deletes every IPv4 entry whose original source or destination `matches` (e.g. lies in an
   * enclave subnet), with one unfiltered dump; returns the count. For the start of a gateway
   * after a crash: not coalesced with purge(), so call it before any purge() runs.
   */
  purgeWhere(matches: (ip: Ipv4) => boolean, opts: { timeoutMs?: number } = {}): Promise<number> {
    return this.purgeSelected(
      (msg) => {
        const e = parseCtEntry(msg);
        return e && (matches(e.src) || matches(e.dst)) ? e : null;
      },
      { ...opts, what: 'purging stale conntrack entries' },
    );
  }

  /**
   * One unfiltered dump; deletes the entries `select` returns (it sees each dumped message, so
   * it can judge attributes CtEntry does not carry, e.g. the reply tuple of NATed flows).
   * Not coalesced with purge(). Returns how many the kernel deleted.
   */
  async purgeSelected(
    select: (msg: NlMessage) => CtEntry | null,
    opts: { timeoutMs?: number; what?: string } = {},
  ): Promise<number> {
    const timeoutMs = opts.timeoutMs ?? 5000;
    try {
      if ((await this.entryCount(timeoutMs)) === 0) return 0;
      const msgs = await this.dumpMessages(null, 'src', timeoutMs);
      const victims: CtEntry[] = [];
      for (const m of msgs) {
        const e = select(m);
        if (e) victims.push(e);
      }
      return (await this.deleteAll(victims, timeoutMs)).length;
    } catch (err) {
      if (err instanceof NetlinkError)
        throw new ConntrackError(`${opts.what ?? 'purging conntrack entries'} failed: ${err.message}`, err);
      throw err;
    }
  }

  /** Number of conntrack entries in this namespace (IPCTNL_MSG_CT_GET_STATS; no table walk). */
  async entryCount(timeoutMs = 5000): Promise<number> {
    const msgs = await this.channel.request(
      (seq, port) => ctMsg(IPCTNL_MSG_CT_GET_STATS, NLM_F_REQUEST | NLM_F_ACK, AF_UNSPEC, seq, port),
      { timeoutMs, what: 'reading conntrack statistics' },
    );
    for (const m of msgs) {
      const n = attrMap(m.payload.subarray(NFGENMSG_LEN)).get(CTA_STATS_GLOBAL_ENTRIES);
      if (n && n.value.length >= 4) return n.value.readUInt32BE(0);
    }
    // No statistics in the reply: assume a big table, the filtered path is always correct.
    return Number.MAX_SAFE_INTEGER;
  }

  private dumpMessages(ip: Ipv4 | null, dir: 'src' | 'dst', timeoutMs: number): Promise<NlMessage[]> {
    return this.channel.request((seq, port) => encodeCtDump(seq, port, ip, dir), {
      timeoutMs,
      dump: true,
      what: `dumping conntrack entries${ip === null ? '' : ` with original ${dir} ${formatIpv4(ip)}`}`,
    });
  }

  private async dump(ip: Ipv4 | null, dir: 'src' | 'dst', timeoutMs: number): Promise<CtEntry[]> {
    const msgs = await this.dumpMessages(ip, dir, timeoutMs);
    const out: CtEntry[] = [];
    for (const m of msgs) {
      const e = parseCtEntry(m);
      if (e) out.push(e);
    }
    return out;
  }

  /** Deletes the entries; returns those the kernel deleted (ENOENT: already gone, not counted). */
  private async deleteAll(victims: CtEntry[], timeoutMs: number): Promise<CtEntry[]> {
    const deleted: CtEntry[] = [];
    for (let i = 0; i < victims.length; i += DELETE_BATCH) {
      const batch = victims.slice(i, i + DELETE_BATCH);
      const results = await this.channel.requestMany(
        batch.map(
          (e) => (seq: number, port: number) =>
            ctMsg(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, AF_INET, seq, port, [e.key]),
        ),
        { timeoutMs, what: 'deleting a conntrack entry' },
      );
      results.forEach((r, i) => {
        if (!(r instanceof NetlinkError)) deleted.push(batch[i] as CtEntry);
        else if (!r.isKernel(Errno.ENOENT)) throw r;
      });
    }
    return deleted;
  }

  close(): void {
    this.channel.close();
  }
}

let shared: ConntrackPurger | undefined;

/**
 * Deletes every IPv4 conntrack entry whose original source or destination is `ip` (host
 * order) in the caller's network namespace and resolves with the number deleted. Calls
 * share one netlink socket unless `opts.purger` is given. Throws {@link ConntrackError}.
 */
export async function purgeConntrack(ip: Ipv4, opts: PurgeOptions = {}): Promise<number> {
  const purger = opts.purger ?? (shared ??= new ConntrackPurger());
  return purger.purge(ip, opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs });
}
