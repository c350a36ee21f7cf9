/** Input validation for the policy store: the rules the original scripts never enforced. */
import { InputError } from '../util/errors.js';
import {
  cidrContains,
  formatCidr,
  formatIpv4,
  parseCidr,
  parseIpv4,
  type Cidr,
  type Ipv4,
} from '../util/ipv4.js';

import { CATEGORY_NAME, validateCategory as validateCategoryName } from '../util/names.js';

/** The one category rule (src/util/names.ts), shared with policies and the kernel-module bridge. */
export const CATEGORY_PATTERN = CATEGORY_NAME;

/** Longest app name seng writes (SPEC §4 leaves TEXT unbounded; 255 fits any display and log line). */
export const APP_NAME_MAX = 255;
export { quoteInput } from '../util/quote.js';
import { quoteInput } from '../util/quote.js';

export function parseMeasurement(hex: string, what: 'mrenclave' | 'mrsigner'): Buffer {
  const clean = hex.trim().toLowerCase();
  if (/^[0-9a-f]{64}$/.test(clean)) return Buffer.from(clean, 'hex');
  const hint = 'print it with: seng attest inspect CERT --json';
  const bad = [...clean].findIndex((ch) => !/[0-9a-f]/.test(ch));
  if (bad >= 0) {
    throw new InputError(
      `--${what} must be 64 hex digits (0-9, a-f), but character ${bad + 1} of ${quoteInput(hex)} is ${quoteInput([...clean][bad] ?? '')}, not a hex digit`,
      hint,
    );
  }
  throw new InputError(
    `--${what} must be 64 hex digits (a 32-byte SHA-256 measurement), got ${[...clean].length} hex digits`,
    hint,
  );
}

export function validateCategory(name: string): string {
  return validateCategoryName(name);
}

export function validateAppName(name: string): string {
  const length = [...name].length;
  const rule = `an app name is 1 to ${APP_NAME_MAX} printable characters without leading or trailing spaces`;
  if (name.trim() === '') throw new InputError(`app name ${quoteInput(name)} is empty`, rule);
  if (length > APP_NAME_MAX) {
    throw new InputError(`app name ${quoteInput(name)} is too long`, rule);
  }
  if (/[\p{Cc}\p{Cf}]/u.test(name)) {
    throw new InputError(`app name ${quoteInput(name)} contains control or format characters`, rule);
  }
  if (name.trim() !== name) {
    throw new InputError(`app name ${quoteInput(name)} has leading or trailing spaces`, rule);
  }
  return name;
}

/**
 * Address ranges an enclave subnet must not touch, and why: the gateway hands out
 * these addresses as ordinary unicast host addresses routed through its TUN device.
 */
const UNUSABLE_RANGES: { cidr: string; label: string; why: string }[] = [
  {
    cidr: '0.0.0.0/8',
    label: '"this network"',
    why: '"this network" addresses are only valid as a source during boot',
  },
  {
    cidr: '127.0.0.0/8',
    label: 'loopback',
    why: 'loopback addresses never leave a host, so enclaves could not be reached',
  },
  {
    cidr: '169.254.0.0/16',
    label: 'link-local',
    why: 'link-local addresses are self-assigned on one link and routers never forward them',
  },
  { cidr: '224.0.0.0/4', label: 'multicast', why: 'multicast addresses name groups, not hosts' },
  {
    cidr: '240.0.0.0/4',
    label: 'reserved, with the broadcast address',
    why: 'reserved addresses (including the broadcast address 255.255.255.255) are not routable',
  },
];

function overlaps(a: Cidr, b: Cidr): boolean {
  return cidrContains(a, b.network) || cidrContains(b, a.network);
}

/** Refuses an enclave subnet that overlaps loopback, link-local, multicast or reserved space. */
export function checkEnclaveSubnetRange(cidr: Cidr): void {
  for (const range of UNUSABLE_RANGES) {
    if (overlaps(cidr, parseCidr(range.cidr))) {
      throw new InputError(
        `enclave subnet ${formatCidr(cidr)} overlaps ${range.cidr} (${range.label}): ${range.why}`,
        'use a private range: 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16',
      );
    }
  }
}

/** Parses an enclave subnet and its gateway; the gateway must be a host address inside it. */
export function parseSubnetWithGateway(
  cidrText: string,
  gatewayText?: string,
): { cidr: Cidr; gateway: Ipv4 } {
  const cidr = parseCidr(cidrText, { strict: true });
  if (cidr.prefix > 30) {
    throw new InputError(`enclave subnet ${cidrText} is too small`, 'use a prefix of /30 or shorter');
  }
  checkEnclaveSubnetRange(cidr);
  const gateway = gatewayText === undefined ? (cidr.network + 1) >>> 0 : parseIpv4(gatewayText);
  const broadcast = (cidr.network | (~cidr.mask >>> 0)) >>> 0;
  if (!cidrContains(cidr, gateway) || gateway === cidr.network || gateway === broadcast) {
    throw new InputError(
      `gateway ${formatIpv4(gateway)} is not a host address of ${cidrText}`,
      `pick an address between ${formatIpv4(cidr.network + 1)} and ${formatIpv4(broadcast - 1)}`,
    );
  }
  return { cidr, gateway };
}
