/**
 * Category names: ONE rule for the database, policy files and the kernel-module bridge,
 * so a policy can never name a category the database cannot hold or the module cannot
 * match. SPEC §5.1: the module carries a category as a NUL-terminated string of at most
 * 20 characters; iptables passes it as one unquoted word (`--src-cat NAME`). The alphabet
 * is the database's: letters, digits, `_`, `.`, `-`.
 */
import { InputError } from './errors.js';
import { quoteInput } from './quote.js';

/** Longest category name the kernel module holds (SPEC §5.1: 20 characters + NUL). */
export const CATEGORY_MAX = 20;
export const CATEGORY_NAME = /^[A-Za-z0-9_.-]{1,20}$/;

/** Why a category name is not allowed, or undefined when it is. */
export function categoryNameProblem(name: string): string | undefined {
  if (CATEGORY_NAME.test(name)) return undefined;
  const rule = `category ${quoteInput(name)} is invalid: it must be 1 to ${CATEGORY_MAX} characters of A-Z a-z 0-9 _ . -`;
  return name.length > CATEGORY_MAX
    ? `${rule} (it has ${name.length}; the kernel module holds at most ${CATEGORY_MAX})`
    : rule;
}

/** Returns the name, or throws an InputError saying what is wrong with it. */
export function validateCategory(name: string): string {
  const problem = categoryNameProblem(name);
  if (problem)
    throw new InputError(problem, 'the seng kernel module stores at most 20 characters per category name');
  return name;
}

/**
 * Network interface names: ONE rule for `serve --tun`, the TUN device and the shadow's
 * interface. The kernel (dev_valid_name) takes 1–15 bytes other than "/", ":" and
 * whitespace, and not "." or ".."; seng narrows that to characters that need no quoting
 * anywhere an admin may paste the name (shell, iptables argv, nft JSON, logs). `%` is the
 * kernel's template character (`tun%d`: the kernel picks the number) and only allowed
 * where a device is created.
 */
export const INTERFACE_MAX = 15;

export function interfaceNameProblem(name: string, opts: { template?: boolean } = {}): string | undefined {
  const alphabet = opts.template ? /^[A-Za-z0-9_.@%-]+$/ : /^[A-Za-z0-9_.@-]+$/;
  if (
    name.length >= 1 &&
    name.length <= INTERFACE_MAX &&
    alphabet.test(name) &&
    name !== '.' &&
    name !== '..'
  )
    return undefined;
  return (
    `${quoteInput(name)} is not a network interface name: it must be 1 to ${INTERFACE_MAX} characters of ` +
    `A-Z a-z 0-9 _ . - @${opts.template ? ' %' : ''}, not "." or ".."`
  );
}

/** Returns the name, or throws an InputError saying what is wrong with it. */
export function validateInterfaceName(name: string, opts: { template?: boolean } = {}): string {
  const problem = interfaceNameProblem(name, opts);
  if (problem) throw new InputError(problem, 'e.g. tunFA or eth0 (see `ip link` for the names on this host)');
  return name;
}
