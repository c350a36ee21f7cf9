/** Input validation for the policy store: the rules the original scripts never enforced. */
import { InputError } from '../util/errors.js';
import { cidrContains, formatIpv4, parseCidr, parseIpv4, type Cidr, type Ipv4 } from '../util/ipv4.js';

import { CATEGORY_NAME, validateCategory as validateCategoryName } from '../util/names.js';

/** The one category rule (src/util/names.ts), shared with policies and the kernel-module bridge. */
export const CATEGORY_PATTERN = CATEGORY_NAME;

export function parseMeasurement(hex: string, what: 'mrenclave' | 'mrsigner'): Buffer {
  const clean = hex.trim().toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(clean)) {
    throw new InputError(
      `--${what} must be 64 hex digits (a 32-byte SHA-256 measurement), got ${hex.length} characters`,
      `print it with: seng attest inspect CERT --json`,
    );
  }
  return Buffer.from(clean, 'hex');
}

export function validateCategory(name: string): string {
  return validateCategoryName(name);
}

export function validateAppName(name: string): string {
  if (name.trim() === '' || name.length > 255 || [...name].some((ch) => ch.charCodeAt(0) < 0x20)) {
    throw new InputError(`app name "${name}" is invalid: it must be 1 to 255 printable characters`);
  }
  return name;
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
