/**
 * Link configuration over rtnetlink (the `netlink` package's RtNetlinkSocket), in the
 * calling process's network namespace: MTU, up/down, IPv4 addresses, deletion. No `ip`
 * processes are spawned.
 */
import { createRtNetlink, FlagsNew, type RtNetlinkSocket } from 'netlink';
import { EnvironmentError, errorMessage } from '../util/errors.js';
import { formatIpv4 } from '../util/ipv4.js';

const AF_INET = 2;
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

/** errno name from a rejected netlink request ("Request rejected: EEXIST"), or undefined. */
export function netlinkErrorCode(err: unknown): string | undefined {
  const m = /Request rejected: (E[A-Z0-9]+)/.exec(errorMessage(err));
  return m?.[1];
}

function addrBytes(ip: number): Buffer {
  return Buffer.from([ip >>> 24, (ip >>> 16) & 0xff, (ip >>> 8) & 0xff, ip & 0xff]);
}

export class LinkConfig {
  private constructor(private readonly sock: RtNetlinkSocket) {}

  /** Opens an rtnetlink socket; close() it when done. */
  static open(): LinkConfig {
    try {
      return new LinkConfig(createRtNetlink());
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
    this.sock.socket.close();
  }

  private async call<T>(what: string, fn: () => Promise<T>, hint?: string): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      const code = netlinkErrorCode(err);
      throw new EnvironmentError(
        'ETUN_CONFIG',
        `${what}: ${code ?? errorMessage(err)}`,
        hint ?? (code === 'EPERM' ? 'run as root or with CAP_NET_ADMIN' : undefined),
        err,
      );
    }
  }

  async getLink(index: number): Promise<LinkInfo> {
    const msgs = await this.call(`cannot read link #${index}`, () =>
      this.sock.getLink({ index }, {}, { timeout: REQUEST_TIMEOUT_MS }),
    );
    const m = msgs[0];
    if (!m) throw new EnvironmentError('ETUN_CONFIG', `link #${index} not found`);
    return {
      index,
      name: m.attrs.ifname ?? '',
      mtu: m.attrs.mtu ?? 0,
      up: m.data.flags?.up === true,
    };
  }

  async setMtu(index: number, mtu: number, name = `#${index}`): Promise<void> {
    await this.call(
      `cannot set MTU ${mtu} on ${name}`,
      () => this.sock.setLink({ index }, { mtu }, { timeout: REQUEST_TIMEOUT_MS }),
      'the MTU must be between 68 and 65535 for a TUN device',
    );
  }

  async setUp(index: number, up: boolean, name = `#${index}`): Promise<void> {
    await this.call(`cannot set ${name} ${up ? 'up' : 'down'}`, () =>
      this.sock.setLink(
        { index, change: { up: true }, flags: up ? { up: true } : {} },
        {},
        { timeout: REQUEST_TIMEOUT_MS },
      ),
    );
  }

  async setTxQueueLen(index: number, txqlen: number, name = `#${index}`): Promise<void> {
    await this.call(`cannot set txqueuelen ${txqlen} on ${name}`, () =>
      this.sock.setLink({ index }, { txqlen }, { timeout: REQUEST_TIMEOUT_MS }),
    );
  }

  /** Adds an IPv4 address; returns false if the link already had exactly that address. */
  async addAddress(index: number, address: number, prefix: number, name = `#${index}`): Promise<boolean> {
    const shown = `${formatIpv4(address)}/${prefix}`;
    try {
      await this.sock.newAddress(
        { family: AF_INET, prefixlen: prefix, index },
        { local: addrBytes(address), address: addrBytes(address) },
        { flags: FlagsNew.CREATE | FlagsNew.EXCL, timeout: REQUEST_TIMEOUT_MS },
      );
      return true;
    } catch (err) {
      if (netlinkErrorCode(err) === 'EEXIST') {
        const existing = await this.listAddresses(index);
        if (existing.some((a) => a.address === address && a.prefix === prefix)) return false;
      }
      throw new EnvironmentError(
        'ETUN_CONFIG',
        `cannot add address ${shown} to ${name}: ${netlinkErrorCode(err) ?? errorMessage(err)}`,
        netlinkErrorCode(err) === 'EEXIST'
          ? 'the address exists with another prefix length; remove it first (ip addr del)'
          : undefined,
        err,
      );
    }
  }

  async delAddress(index: number, address: number, prefix: number, name = `#${index}`): Promise<void> {
    await this.call(`cannot remove address ${formatIpv4(address)}/${prefix} from ${name}`, () =>
      this.sock.delAddress(
        { family: AF_INET, prefixlen: prefix, index },
        { local: addrBytes(address), address: addrBytes(address) },
        { timeout: REQUEST_TIMEOUT_MS },
      ),
    );
  }

  async listAddresses(index: number): Promise<LinkAddress[]> {
    const msgs = await this.call(`cannot list addresses of link #${index}`, () =>
      this.sock.getAddresses({ family: AF_INET }, {}, { timeout: REQUEST_TIMEOUT_MS }),
    );
    const out: LinkAddress[] = [];
    for (const m of msgs) {
      if (m.data.index !== index || m.data.family !== AF_INET) continue;
      const raw = m.attrs.local ?? m.attrs.address;
      if (!raw || raw.length !== 4) continue;
      out.push({ address: raw.readUInt32BE(0), prefix: m.data.prefixlen ?? 32 });
    }
    return out;
  }

  async deleteLink(index: number, name = `#${index}`): Promise<void> {
    await this.call(`cannot delete ${name}`, () =>
      this.sock.delLink({ index }, {}, { timeout: REQUEST_TIMEOUT_MS }),
    );
  }
}
