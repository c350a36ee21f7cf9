/**
 * The netlink layer's typed errors. Every failure of a request carries the errno (number
 * and name), where it came from (the kernel's answer, the socket, or no answer in time) and
 * the request it answered (what it did, its sequence number and message type), so callers
 * branch on numbers, never on message text.
 */
import { getSystemErrorName } from 'node:util';
import { SengError } from '../util/errors.js';

/** `ENOENT` for 2, `E123` when the platform does not know the number. */
export function errnoName(errno: number): string {
  try {
    return getSystemErrorName(-Math.abs(errno));
  } catch {
    return `E${Math.abs(errno)}`;
  }
}

/** The Linux errno numbers seng's netlink users branch on (one table, not one per file). */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EIO: 5,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EBUSY: 16,
  EEXIST: 17,
  EINVAL: 22,
  EOPNOTSUPP: 95,
  ENOBUFS: 105,
  ETIMEDOUT: 110,
} as const;

/** The request an error answered. */
export interface NetlinkRequest {
  /** What the request does, in words ("deleting a conntrack entry"). */
  what: string;
  /** Its sequence number, once one was assigned. */
  seq?: number;
  /** Its netlink message type. */
  type?: number;
}

/**
 * - `kernel`: the kernel answered the request with an `NLMSG_ERROR` carrying a negative errno;
 * - `socket`: the socket failed (`ENOBUFS` when the receive buffer overflowed, a failed send…);
 * - `timeout`: no answer arrived in time ({@link NetlinkTimeoutError}).
 */
export type NetlinkErrorSource = 'kernel' | 'socket' | 'timeout';

export interface NetlinkErrorOptions {
  /** The kernel's extended-ack message, when it sent one. */
  extack?: string;
  /** Replaces the default message (a caller that knows better words, e.g. a batch's). */
  message?: string;
  hint?: string;
  code?: string;
  cause?: unknown;
}

/** A netlink request failed with an errno. */
export class NetlinkError extends SengError {
  /** Positive errno value (22 for EINVAL). */
  readonly errno: number;
  readonly errnoName: string;
  readonly source: NetlinkErrorSource;
  readonly extack: string | undefined;
  readonly request: NetlinkRequest;

  constructor(
    errno: number,
    source: NetlinkErrorSource,
    request: NetlinkRequest,
    opts: NetlinkErrorOptions = {},
  ) {
    const name = errnoName(errno);
    const how = source === 'kernel' ? 'kernel answered' : 'netlink socket failed with';
    super(
      opts.code ?? 'ENETLINK',
      opts.message ?? `${request.what}: ${how} ${name}${opts.extack ? ` (${opts.extack})` : ''}`,
      {
        ...(opts.hint === undefined ? {} : { hint: opts.hint }),
        ...(opts.cause === undefined ? {} : { cause: opts.cause }),
      },
    );
    this.errno = Math.abs(errno);
    this.errnoName = name;
    this.source = source;
    this.extack = opts.extack;
    this.request = request;
  }

  /** Whether the kernel itself answered with this errno (not the socket, not a timeout). */
  isKernel(errno?: number): boolean {
    return this.source === 'kernel' && (errno === undefined || this.errno === errno);
  }
}

/** No reply (ack or dump end) arrived in time: a {@link NetlinkError} with `ETIMEDOUT`. */
export class NetlinkTimeoutError extends NetlinkError {
  readonly timeoutMs: number;
  constructor(request: NetlinkRequest, timeoutMs: number) {
    super(Errno.ETIMEDOUT, 'timeout', request, {
      code: 'ETIMEDOUT',
      message: `${request.what}: no reply from the kernel within ${timeoutMs} ms`,
    });
    this.timeoutMs = timeoutMs;
  }
}

/** A reply that does not parse as netlink (truncated header, attribute overrunning its message…). */
export class NetlinkProtocolError extends SengError {
  constructor(message: string) {
    super('ENLPROTO', message, { hint: 'this is a bug or a kernel incompatibility; please report it' });
  }
}
