/**
 * Link configuration over rtnetlink, in the calling process's network namespace: MTU,
 * up/down, IPv4 addresses, deletion. No `ip` processes are spawned.
 *
 * Built on seng's own netlink layer (src/netlink) rather than the `netlink` package's
 * RtNetlinkSocket: that one reports a kernel refusal as the text "Request rejected: EEXIST",
 * which callers had to parse back with a regex; the layer hands us a NetlinkError with the
 * errno number, the same type the kmod bridge, nf_tables and conntrack get, plus the
 * kernel's extended-ack message. The handful of rtnetlink messages used here are small
 * (src/netlink/rtnetlink.ts).
 */
import {
  Errno,
  IFF_UP,
  IFLA_MTU,
  IFLA_TXQLEN,
  NETLINK_ROUTE,
  NLM_F_CREATE,
  NLM_F_EXCL,
  NetlinkChannel,
  NetlinkError,
  RTM_DELADDR,
  RTM_DELLINK,
  RTM_GETLINK,
  RTM_NEWADDR,
  RTM_SETLINK,
  AF_INET,
  RawSocketTransport,
  encodeAddressDump,
  encodeAddressRequest,
  encodeLinkRequest,
  nlaU32,
  parseAddressMessage,
  parseLinkMessage,
  type BuildMessage,
  type NlMessage,
} from '../netlink/index.js';
import { EnvironmentError, errorMessage } from '../util/errors.js';
import { formatIpv4 } from '../util/ipv4.js';

const REQUEST_TIMEOUT_MS = 5000;

export interface LinkInfo {
  index: number;
  name: string;
  mtu: number;
  up: boolean;
}

export interface LinkAddress {
  /** Host-order IPv4 address. */
  address: number;
  prefix: number;
}

/** errno name of a failed netlink request ("EEXIST"), taken from its errno number; else undefined. */
export function netlinkErrorCode(err: unknown): string | undefined {
  return err instanceof NetlinkError ? err.errnoName : undefined;
}

export class LinkConfig {
  private constructor(private readonly channel: NetlinkChannel) {}

  /** Opens an rtnetlink socket; close() it when done. */
  static open(): LinkConfig {
    try {
      return new LinkConfig(new NetlinkChannel(new RawSocketTransport(NETLINK_ROUTE)));
    } catch (err) {
      throw new EnvironmentError(
        'ENETLINK',
        `cannot open an rtnetlink socket: ${errorMessage(err)}`,
        'the kernel must support NETLINK_ROUTE',
        err,
      );
    }
  }

  close(): void {
    this.channel.close();
  }

  private request(what: string, build: BuildMessage, dump = false): Promise<NlMessage[]> {
    return this.channel.request(build, { what, timeoutMs: REQUEST_TIMEOUT_MS, dump });
  }

  /** Runs one request; a failure becomes ETUN_CONFIG "what: ERRNO" with a hint. */
  private async call<T>(what: string, fn: () => Promise<T>, hint?: string): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw configError(what, err, hint);
    }
  }

  async getLink(index: number): Promise<LinkInfo> {
    const what = `cannot read link #${index}`;
    const msgs = await this.call(what, () =>
      this.request(what, (seq, port) => encodeLinkRequest({ type: RTM_GETLINK, index }, seq, port)),
    );
    const m = msgs.map(parseLinkMessage).find((l) => l !== null);
    if (!m) throw new EnvironmentError('ETUN_CONFIG', `link #${index} not found`);
    return { index, name: m.name, mtu: m.mtu, up: (m.flags & IFF_UP) !== 0 };
  }

  async setMtu(index: number, mtu: number, name = `#${index}`): Promise<void> {
    await this.setLink(
      `cannot set MTU ${mtu} on ${name}`,
      { index, attrs: [nlaU32(IFLA_MTU, mtu)] },
      'the MTU must be between 68 and 65535 for a TUN device',
    );
  }

  async setUp(index: number, up: boolean, name = `#${index}`): Promise<void> {
    await this.setLink(`cannot set ${name} ${up ? 'up' : 'down'}`, {
      index,
      ifFlags: up ? IFF_UP : 0,
      ifChange: IFF_UP,
    });
  }

  async setTxQueueLen(index: number, txqlen: number, name = `#${index}`): Promise<void> {
    await this.setLink(`cannot set txqueuelen ${txqlen} on ${name}`, {
      index,
      attrs: [nlaU32(IFLA_TXQLEN, txqlen)],
    });
  }

  private async setLink(
    what: string,
    r: { index: number; ifFlags?: number; ifChange?: number; attrs?: Buffer[] },
    hint?: string,
  ): Promise<void> {
    await this.call(
      what,
      () => this.request(what, (seq, port) => encodeLinkRequest({ type: RTM_SETLINK, ...r }, seq, port)),
      hint,
    );
  }

  /** Adds an IPv4 address; returns false if the link already had exactly that address. */
  async addAddress(index: number, address: number, prefix: number, name = `#${index}`): Promise<boolean> {
    const what = `cannot add address ${formatIpv4(address)}/${prefix} to ${name}`;
    try {
      await this.request(what, (seq, port) =>
        encodeAddressRequest(
          { type: RTM_NEWADDR, flags: NLM_F_CREATE | NLM_F_EXCL, index, address, prefix },
          seq,
          port,
        ),
      );
      return true;
    } catch (err) {
      const exists = err instanceof NetlinkError && err.isKernel(Errno.EEXIST);
      if (exists) {
        const existing = await this.listAddresses(index);
        if (existing.some((a) => a.address === address && a.prefix === prefix)) return false;
      }
      throw configError(
        what,
        err,
        exists ? 'the address exists with another prefix length; remove it first (ip addr del)' : undefined,
      );
    }
  }

  async delAddress(index: number, address: number, prefix: number, name = `#${index}`): Promise<void> {
    const what = `cannot remove address ${formatIpv4(address)}/${prefix} from ${name}`;
    await this.call(what, () =>
      this.request(what, (seq, port) =>
        encodeAddressRequest({ type: RTM_DELADDR, index, address, prefix }, seq, port),
      ),
    );
  }

  async listAddresses(index: number): Promise<LinkAddress[]> {
    const what = `cannot list addresses of link #${index}`;
    const msgs = await this.call(what, () => this.request(what, encodeAddressDump, true));
    const out: LinkAddress[] = [];
    for (const m of msgs) {
      const a = parseAddressMessage(m);
      if (!a || a.index !== index || a.family !== AF_INET || a.address === undefined) continue;
      out.push({ address: a.address, prefix: a.prefix });
    }
    return out;
  }

  async deleteLink(index: number, name = `#${index}`): Promise<void> {
    const what = `cannot delete ${name}`;
    await this.call(what, () =>
      this.request(what, (seq, port) => encodeLinkRequest({ type: RTM_DELLINK, index }, seq, port)),
    );
  }
}

/**
 * ETUN_CONFIG "what: EEXIST" (the errno's name for a kernel or socket failure, the whole
 * message otherwise); EPERM gets the privilege hint unless the caller has a better one.
 */
function configError(what: string, err: unknown, hint?: string): EnvironmentError {
  const code = netlinkErrorCode(err);
  const isTimeout = err instanceof NetlinkError && err.source === 'timeout';
  return new EnvironmentError(
    'ETUN_CONFIG',
    `${what}: ${code && !isTimeout ? code : errorMessage(err)}`,
    hint ??
      (err instanceof NetlinkError && err.errno === Errno.EPERM
        ? 'run as root or with CAP_NET_ADMIN'
        : undefined),
    err,
  );
}
