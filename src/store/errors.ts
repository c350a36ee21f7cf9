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
