/**
 * Enclave IP allocation for one enclave subnet (SPEC §4): host numbers
 * 1 … 2^(32-prefix) - 2, the gateway's number reserved, next-fit (continue after the
 * last one handed out, wrapping around), full subnet → no address.
 */
import { formatCidr, hostCount, type Cidr, type Ipv4 } from '../util/ipv4.js';

export class IpPool {
  readonly cidr: Cidr;
  readonly gateway: Ipv4;
  private readonly size: number;
  private readonly used = new Set<number>();
  /** Host number handed out last; the next search starts after it. */
  private cursor = 0;

  constructor(cidr: Cidr, gateway: Ipv4) {
    this.cidr = cidr;
    this.gateway = gateway;
    this.size = hostCount(cidr.prefix);
  }

  get label(): string {
    return formatCidr(this.cidr);
  }

  /** Number of addresses that can still be handed out. */
  get free(): number {
    return this.size - this.used.size - (this.isHost(this.gateway) ? 1 : 0);
  }

  get inUse(): number {
    return this.used.size;
  }

  private isHost(ip: Ipv4): boolean {
    const n = (ip - this.cidr.network) >>> 0;
    return (ip & this.cidr.mask) >>> 0 === this.cidr.network && n >= 1 && n <= this.size;
  }

  /** Next free address, or undefined when the subnet is full. */
  allocate(): Ipv4 | undefined {
    const gatewayHost = (this.gateway - this.cidr.network) >>> 0;
    for (let step = 1; step <= this.size; step++) {
      const host = ((this.cursor + step - 1) % this.size) + 1;
      if (host === gatewayHost || this.used.has(host)) continue;
      this.used.add(host);
      this.cursor = host;
      return (this.cidr.network + host) >>> 0;
    }
    return undefined;
  }

  /**
   * Marks a specific address as used (e.g. held by another gateway of the fleet); false when
   * it is not a host of this subnet, is the gateway's, or is already used.
   */
  reserve(ip: Ipv4): boolean {
    if (!this.isHost(ip) || ip === this.gateway) return false;
    const host = (ip - this.cidr.network) >>> 0;
    if (this.used.has(host)) return false;
    this.used.add(host);
    return true;
  }

  release(ip: Ipv4): boolean {
    return this.used.delete((ip - this.cidr.network) >>> 0);
  }

  contains(ip: Ipv4): boolean {
    return this.isHost(ip);
  }
}
