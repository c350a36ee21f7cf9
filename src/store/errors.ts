import { dirname } from 'node:path';
import { SengError } from '../util/errors.js';

/** A database could not be opened or has a layout seng does not know. */
export class StoreOpenError extends SengError {
  constructor(message: string, hint?: string, cause?: unknown) {
    super('ESTORE_OPEN', message, { ...(hint === undefined ? {} : { hint }), cause });
  }
}

/** A write was refused (validation, duplicate, unknown reference); nothing changed. */
export class StoreWriteError extends SengError {
  constructor(message: string, hint?: string) {
    super('ESTORE_WRITE', message, hint === undefined ? {} : { hint });
  }
}

/** Another connection held the database's write lock past the busy timeout; nothing changed. */
export class StoreBusyError extends SengError {
  constructor(path: string, timeoutMs: number, cause?: unknown) {
    super(
      'ESTORE_BUSY',
      `database ${path} is busy: another process held its lock for more than ${timeoutMs} ms`,
      {
        hint: 'retry; another seng db command, seng serve or a sqlite3 session is writing to it (SENG_DB_BUSY_TIMEOUT_MS sets how long to wait)',
        cause,
      },
    );
  }
}

/** The file system refused access: permissions, a read-only file or directory. */
export class StorePermissionError extends SengError {
  constructor(message: string, hint: string, cause?: unknown) {
    super('ESTORE_PERMISSION', message, { hint, cause });
  }
}

/** The path cannot hold a database: a missing directory, a directory instead of a file. */
export class StorePathError extends SengError {
  constructor(message: string, hint: string, cause?: unknown) {
    super('ESTORE_PATH', message, { hint, cause });
  }
}

/** The disk failed or is full while reading or writing. */
export class StoreIoError extends SengError {
  constructor(message: string, hint: string, cause?: unknown) {
    super('ESTORE_IO', message, { hint, cause });
  }
}

/**
 * Turns an SQLite error of better-sqlite3 (which carries an extended result code
 * such as SQLITE_READONLY_DIRECTORY) into a typed error with a hint. Returns the
 * error unchanged when it is not one the operator can act on (then it is a bug).
 */
export function translateSqliteError(err: unknown, path: string, timeoutMs: number): unknown {
  const code = (err as { code?: unknown }).code;
  if (typeof code !== 'string' || !code.startsWith('SQLITE_')) return err;
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) {
    return new StoreBusyError(path, timeoutMs, err);
  }
  if (code === 'SQLITE_READONLY_DIRECTORY') {
    return new StorePermissionError(
      `cannot write to ${path}: its directory ${dirname(path)} is not writable`,
      `SQLite creates a journal file next to the database while writing; make ${dirname(path)} writable for this user, or run as the database's owner`,
      err,
    );
  }
  if (code.startsWith('SQLITE_READONLY')) {
    return new StorePermissionError(
      `cannot write to ${path}: the file is read-only for this user`,
      `check its owner and mode (ls -l ${path}); run as its owner or make it writable`,
      err,
    );
  }
  if (code.startsWith('SQLITE_CANTOPEN') || code === 'SQLITE_PERM' || code === 'SQLITE_AUTH') {
    return new StorePermissionError(
      `cannot open ${path} or create a file next to it`,
      `check the permissions of ${path} and of ${dirname(path)} (ls -ld ${dirname(path)} ${path})`,
      err,
    );
  }
  if (code === 'SQLITE_FULL') {
    return new StoreIoError(
      `cannot write to ${path}: the disk is full`,
      'free some space and retry; nothing was changed',
      err,
    );
  }
  if (code.startsWith('SQLITE_IOERR')) {
    return new StoreIoError(
      `input/output error on ${path} (${code})`,
      'check the disk (dmesg); nothing was changed if a write failed',
      err,
    );
  }
  if (code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB') {
    return new StoreOpenError(
      `${path} is not a usable SQLite database: ${(err as Error).message}`,
      'restore the file from a backup (seng db import) if it is corrupt',
      err,
    );
  }
  return err;
}
