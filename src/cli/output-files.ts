/**
 * Output files of the `seng sim …` commands: refuse to overwrite without --force, never
 * write two outputs to one file, check the parent directory before any work is done, and
 * report failures with the path and what to do.
 */
import { closeSync, fchmodSync, openSync, realpathSync, statSync, writeSync, constants } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { InputError, SengError } from '../util/errors.js';

export class OutputFileError extends SengError {
  constructor(code: string, message: string, hint: string, cause?: unknown) {
    super(code, message, { hint, cause });
  }
}

/** The canonical path of `path` (its parent resolved through symlinks, so aliases compare equal). */
export function canonicalOutputPath(path: string): string {
  const abs = resolve(path);
  try {
    return resolve(realpathSync(dirname(abs)), basename(abs));
  } catch {
    return abs;
  }
}

/**
 * Checks an output path before anything is generated: the parent must be an existing
 * directory, the path itself must not be a directory, and an existing file needs `force`.
 */
export function checkOutputPath(path: string, flag: string, force: boolean): void {
  const abs = resolve(path);
  const parent = dirname(abs);
  let parentStat;
  try {
    parentStat = statSync(parent);
  } catch (e) {
    throw new OutputFileError(
      'EOUTPUT',
      `${flag} ${path}: the directory ${parent} does not exist`,
      `create ${parent} first, or choose another ${flag} path`,
      e,
    );
  }
  if (!parentStat.isDirectory())
    throw new OutputFileError(
      'EOUTPUT',
      `${flag} ${path}: ${parent} is not a directory`,
      `choose another ${flag} path`,
    );
  let st;
  try {
    st = statSync(abs);
  } catch {
    return; // does not exist yet: fine
  }
  if (st.isDirectory())
    throw new OutputFileError(
      'EOUTPUT',
      `${flag} ${path} is a directory`,
      `give ${flag} a file name, e.g. ${path.replace(/\/+$/, '')}/enclave.der`,
    );
  if (!force)
    throw new OutputFileError(
      'EEXIST',
      `${flag} ${path} already exists`,
      'choose another path, or --force to replace it',
    );
}

/** Refuses two outputs that name the same file (one would silently replace the other). */
export function checkDistinctOutputs(
  a: { flag: string; path: string },
  b: { flag: string; path: string },
): void {
  if (canonicalOutputPath(a.path) === canonicalOutputPath(b.path))
    throw new InputError(
      `${a.flag} and ${b.flag} are the same file (${a.path})`,
      `the certificate and its private key need two files, e.g. ${a.flag} enclave.der ${b.flag} enclave.key`,
    );
}

/**
 * Writes `data` to `path` with `mode`: exclusively (O_EXCL) unless `force`, so a file that
 * appeared since the check is not replaced; with `force` the mode is also set on an existing file.
 */
export function writeOutputFile(path: string, data: string | Buffer, mode: number, force: boolean): void {
  const flags = constants.O_WRONLY | constants.O_CREAT | (force ? constants.O_TRUNC : constants.O_EXCL);
  let fd: number | undefined;
  try {
    fd = openSync(path, flags, mode);
    fchmodSync(fd, mode);
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    for (let off = 0; off < buf.length;) off += writeSync(fd, buf, off);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new OutputFileError(
      code === 'EEXIST' ? 'EEXIST' : 'EOUTPUT',
      `cannot write ${path}: ${code ?? (e as Error).message}`,
      code === 'EEXIST'
        ? 'choose another path, or --force to replace it'
        : 'check that the directory exists and is writable',
      e,
    );
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
