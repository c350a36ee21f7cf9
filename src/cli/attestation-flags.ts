/** Certificate input and flag-value helpers of the `seng attest …` and `seng sim …` commands. */
import { readFileSync, statSync } from 'node:fs';
import { EnvironmentError, InputError, SengError } from '../util/errors.js';
import { parseRaTlsCertificate, type Evidence } from '../attestation/evidence.js';

/** Larger than any certificate a client sends (a DCAP RA-TLS certificate with collateral is ~10 KiB). */
export const MAX_CERTIFICATE_BYTES = 1 << 20;

/**
 * Reads a certificate file ('-' = stdin) as bytes. Missing, unreadable and directory paths,
 * and files too large to be a certificate, fail with an error that names the path.
 */
export function readCertificateFile(path: string, what = 'certificate'): Buffer {
  const hint = `Pass the path of a DER or PEM ${what}${path === '-' ? '' : ', or - for stdin'}.`;
  let bytes: Buffer;
  try {
    if (path !== '-') {
      const st = statSync(path);
      if (st.isDirectory()) throw new InputError(`${what} ${path} is a directory, not a file`, hint);
      if (st.isFile() && st.size > MAX_CERTIFICATE_BYTES)
        throw new InputError(`${what} ${path} is too large (${st.size} bytes) to be a certificate`, hint);
    }
    bytes = readFileSync(path === '-' ? 0 : path);
  } catch (e) {
    if (e instanceof InputError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new EnvironmentError(
      code === 'ENOENT' ? 'ENOENT' : 'EREAD',
      `cannot read ${what} ${path}: ${code ?? (e as Error).message}`,
      hint,
      e,
    );
  }
  if (bytes.length > MAX_CERTIFICATE_BYTES)
    throw new InputError(
      `${what} from ${path} is too large (${bytes.length} bytes) to be a certificate`,
      hint,
    );
  if (bytes.length === 0) throw new InputError(`${what} ${path === '-' ? 'on stdin' : path} is empty`, hint);
  assertCertificateShape(bytes, path, what);
  return bytes;
}

/**
 * Rejects input that is neither PEM (a "-----BEGIN CERTIFICATE-----" block) nor DER (a
 * SEQUENCE), so random bytes are reported as what they are rather than as a broken PEM.
 */
export function assertCertificateShape(bytes: Buffer, path: string, what = 'certificate'): void {
  const text = bytes.toString('latin1');
  if (bytes[0] === 0x30 || text.includes('-----BEGIN CERTIFICATE-----')) return;
  const other = /-----BEGIN ([A-Z0-9 ]+)-----/.exec(text)?.[1];
  throw new SengError(
    'ECERT_FORMAT',
    other
      ? `${what} ${path} holds a PEM "${other}" block, not a CERTIFICATE`
      : `${what} ${path} is neither a PEM nor a DER X.509 certificate`,
    { hint: 'Pass a certificate file: PEM ("-----BEGIN CERTIFICATE-----") or DER.' },
  );
}

/** Reads a certificate file ('-' = stdin) and parses it; parse errors stay AttestationParseError. */
export function readEvidence(path: string): Evidence {
  return parseRaTlsCertificate(readCertificateFile(path));
}

/** Splits repeated and comma-separated flag values. */
export function listFlag(values: string[] | undefined): string[] {
  return (values ?? [])
    .flatMap((v) => v.split(','))
    .map((v) => v.trim())
    .filter((v) => v.length > 0);
}

/** Parses repeated/comma-separated ISV product ids (0..65535) of `flag`. */
export function productIdsFlag(values: string[] | undefined, flag: string): number[] {
  return listFlag(values).map((v) => {
    const n = /^\d+$/.test(v) ? Number(v) : NaN;
    if (!Number.isInteger(n) || n > 65535)
      throw new InputError(
        `${flag}: "${v}" is not an ISV product id`,
        'Give integers from 0 to 65535, repeated or comma-separated, e.g. --allowed-prod-id 0,1.',
      );
    return n;
  });
}
