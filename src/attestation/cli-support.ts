/** Helpers shared by the `seng attest …` and `seng sim …` commands. */
import { readFileSync } from 'node:fs';
import { EnvironmentError } from '../util/errors.js';
import { parseRaTlsCertificate, type Evidence } from './evidence.js';

/** Reads a certificate file ('-' = stdin) and parses it; parse errors stay AttestationParseError. */
export function readEvidence(path: string): Evidence {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path === '-' ? 0 : path);
  } catch (e) {
    throw new EnvironmentError(
      'ENOENT',
      `cannot read certificate ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      'Pass the path of a DER or PEM RA-TLS certificate, or - for stdin.',
      e,
    );
  }
  return parseRaTlsCertificate(bytes);
}

/** Splits repeated and comma-separated flag values. */
export function listFlag(values: string[] | undefined): string[] {
  return (values ?? [])
    .flatMap((v) => v.split(','))
    .map((v) => v.trim())
    .filter((v) => v.length > 0);
}
