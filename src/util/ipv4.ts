/**
 * IPv4 addresses and CIDRs.
 *
 * Internally an address is a *host-order* unsigned 32-bit number (192.168.28.2 =
 * 0xc0a81c02), which makes masking and arithmetic natural. SENG's databases and
 * protobuf messages use another encoding (SPEC §1.3): the address's four bytes in
 * network order read as a little-endian integer (what an x86 in_addr_t holds), so
 * 192.168.28.2 is stored as 0x021ca8c0. `toWire`/`fromWire` convert between them.
 */
import { InputError } from './errors.js';
import { quoteInput } from './quote.js';

export type Ipv4 = number;

const OCTET = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

export function parseIpv4(text: string): Ipv4 {
  const parts = text.trim().split('.');
  if (parts.length !== 4 || !parts.every((p) => OCTET.test(p))) {
    throw new InputError(
      `${quoteInput(text)} is not an IPv4 address`,
      'write it in dotted form, e.g. 192.168.28.1',
    );
  }
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0) >>> 0;
}

export function isIpv4(text: string): boolean {
  const parts = text.split('.');
  return parts.length === 4 && parts.every((p) => OCTET.test(p));
}

export function formatIpv4(ip: Ipv4): string {
  return [ip >>> 24, (ip >>> 16) & 0xff, (ip >>> 8) & 0xff, ip & 0xff].join('.');
}

/** Host-order address → SPEC encoding (network bytes read little-endian). */
export function toWire(ip: Ipv4): number {
  return (
    (((ip & 0xff) << 24) | (((ip >>> 8) & 0xff) << 16) | (((ip >>> 16) & 0xff) << 8) | (ip >>> 24)) >>> 0
  );
}

/** SPEC encoding → host-order address. The byte swap is its own inverse. */
export const fromWire = toWire;

export function prefixToMask(prefix: number): Ipv4 {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/** Prefix length of a contiguous mask, or -1 if the mask has holes. */
export function maskToPrefix(mask: Ipv4): number {
  const inv = ~mask >>> 0;
  if ((inv & (inv + 1)) !== 0) return -1;
  return 32 - Math.log2(inv + 1);
}

export interface Cidr {
  /** Network address (host bits cleared). */
  network: Ipv4;
  prefix: number;
  mask: Ipv4;
}

export function parseCidr(text: string, opts: { strict?: boolean } = {}): Cidr {
  const m = /^([^/]+)\/(\d{1,2})$/.exec(text.trim());
  if (!m || Number(m[2]) > 32 || !isIpv4(m[1] ?? '')) {
    throw new InputError(
      `${quoteInput(text)} is not an IPv4 CIDR`,
      'write it as ADDRESS/PREFIX, e.g. 192.168.28.0/24',
    );
  }
  const prefix = Number(m[2]);
  const mask = prefixToMask(prefix);
  const addr = parseIpv4(m[1] as string);
  const network = (addr & mask) >>> 0;
  if (opts.strict && network !== addr) {
    throw new InputError(
      `${quoteInput(text)} has host bits set`,
      `did you mean ${formatIpv4(network)}/${prefix}?`,
    );
  }
  return { network, prefix, mask };
}

export function formatCidr(c: Pick<Cidr, 'network' | 'prefix'>): string {
  return `${formatIpv4(c.network)}/${c.prefix}`;
}

export function cidrContains(c: Pick<Cidr, 'network' | 'mask'>, ip: Ipv4): boolean {
  return (ip & c.mask) >>> 0 === c.network;
}

/** Number of usable host numbers (1 … 2^(32-prefix) - 2) in a subnet; 0 for /31 and /32. */
export function hostCount(prefix: number): number {
  return prefix >= 31 ? 0 : 2 ** (32 - prefix) - 2;
}
