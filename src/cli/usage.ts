/**
 * Argument parsers that turn bad command-line values into usage errors (exit 2, with the
 * value and what is expected) instead of the generic errors oclif throws for positional
 * arguments (which would surface as "Internal error").
 */
import { Args, Errors } from '@oclif/core';
import { isIpv4 } from '../util/ipv4.js';
import { quoteInput } from '../util/quote.js';

/** Throws an oclif usage error: exit code 2, printed as "Error: …" (or EUSAGE with --json). */
export function usageError(message: string): never {
  throw new Errors.CLIError(message, { exit: 2 });
}

/** Parses a decimal integer in min..max, or fails with a usage error naming `what`. */
export function parseIntegerIn(input: string, min: number, max: number, what: string): number {
  const text = input.trim();
  const n = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    usageError(`${what} must be an integer from ${min} to ${max}, got ${quoteInput(input)}`);
  }
  return n;
}

/**
 * The receive-tunnel UDP port P of a SENG gateway: the send tunnel uses P+1, so P must be
 * 1..65534.
 */
export const tunnelPortArg = (description: string) =>
  Args.custom<number>({
    description,
    default: 12345,
    parse: async (input) => parseIntegerIn(input, 1, 65534, 'PORT (P; the send tunnel uses P+1)'),
  })();

/** A dotted-quad IPv4 address. */
export const ipv4Arg = (description: string, defaultValue: string) =>
  Args.custom<string>({
    description,
    default: defaultValue,
    parse: async (input) =>
      isIpv4(input) ? input : usageError(`${quoteInput(input)} is not an IPv4 address`),
  })();
