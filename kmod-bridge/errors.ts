/**
 * Typed errors of the netlink layer and of the seng kernel-module bridge. Every one
 * carries a stable `code` for scripts and, where we know one, a hint for the operator.
 */
import { getSystemErrorName } from 'node:util';
import { EnvironmentError, SengError } from '../src/util/errors.js';

/** `ENOENT` for 2, `E123` when the platform does not know the number. */
export function errnoName(errno: number): string {
  try {
    return getSystemErrorName(-Math.abs(errno));
  } catch {
    return `E${Math.abs(errno)}`;
  }
}

/**
 * A netlink operation failed with an errno: either the kernel answered a request with
 * an `NLMSG_ERROR` carrying a negative errno (`source: 'kernel'`), or the socket itself
 * failed (`source: 'socket'`, e.g. `ENOBUFS` when the receive buffer overflowed).
 */
export class NetlinkErrnoError extends SengError {
  /** Positive errno value (22 for EINVAL). */
  readonly errno: number;
  readonly errnoName: string;
  readonly source: 'kernel' | 'socket';
  /** The kernel's extended-ack message, when it sent one. */
  readonly extack: string | undefined;

  constructor(errno: number, source: 'kernel' | 'socket', what: string, extack?: string) {
    const name = errnoName(errno);
    super(
      'ENETLINK',
      `${what}: ${source === 'kernel' ? 'kernel answered' : 'netlink socket failed with'} ${name}${extack ? ` (${extack})` : ''}`,
    );
    this.errno = Math.abs(errno);
    this.errnoName = name;
    this.source = source;
    this.extack = extack;
  }
}

/** No reply (ack or dump end) arrived in time. */
export class NetlinkTimeoutError extends SengError {
  readonly timeoutMs: number;
  constructor(what: string, timeoutMs: number) {
    super('ETIMEDOUT', `${what}: no reply from the kernel within ${timeoutMs} ms`);
    this.timeoutMs = timeoutMs;
  }
}

/** A reply that does not parse as netlink (truncated header, attribute overrunning its message…). */
export class NetlinkProtocolError extends SengError {
  constructor(message: string) {
    super('ENLPROTO', message, { hint: 'this is a bug or a kernel incompatibility; please report it' });
  }
}

/** The generic-netlink family `seng_family` is not registered: the module is not loaded. */
export class KmodFamilyMissingError extends EnvironmentError {
  readonly family: string;
  constructor(family: string) {
    super(
      'EKMOD_MISSING',
      `family ${family} not found: is the seng kernel module loaded?`,
      'load it with `modprobe seng` (or `insmod seng.ko`) and check `seng kmod status`; ' +
        'kernel modules cannot be loaded inside most containers',
    );
    this.family = family;
  }
}

/** The kernel module answered a request with a negative errno. */
export class KmodRejectedError extends SengError {
  readonly errno: number;
  readonly errnoName: string;
  /** Which request was rejected: register, unregister, category-add, category-remove, flush. */
  readonly request: string;

  constructor(
    request: string,
    errno: number,
    opts: { allEinval?: boolean; extack?: string; detail?: string } = {},
  ) {
    const name = errnoName(errno);
    const hint =
      Math.abs(errno) === 22 && opts.allEinval
        ? 'every request to the module has been rejected with EINVAL: on Linux >= 6.0 the published seng module ' +
          'needs a one-line patch (set `resv_start_op` past GENL_XT_SENG_MSG in its genl_family) because it ' +
          'declares no attribute policy; rebuild and reload the patched module'
        : Math.abs(errno) === 22
          ? 'the module rejects a register of an IP that is already registered, an unregister of an unknown IP and a ' +
            'category change for an app with no active enclave; `seng kmod flush` resets it'
          : undefined;
    super(
      'EKMOD_REJECTED',
      `seng kernel module rejected ${request}${opts.detail ? ` (${opts.detail})` : ''}: ${name}` +
        `${opts.extack ? ` (${opts.extack})` : ''}`,
      hint === undefined ? {} : { hint },
    );
    this.errno = Math.abs(errno);
    this.errnoName = name;
    this.request = request;
  }
}

/** The module did not acknowledge a request in time (after the bounded retries). */
export class KmodTimeoutError extends SengError {
  readonly request: string;
  constructor(request: string, timeoutMs: number, attempts: number) {
    super(
      'EKMOD_TIMEOUT',
      `seng kernel module did not acknowledge ${request} within ${timeoutMs} ms (${attempts} attempt${attempts === 1 ? '' : 's'})`,
      { hint: 'the kernel may be overloaded; check `dmesg` for seng messages and retry' },
    );
    this.request = request;
  }
}

/** Conntrack maintenance over ctnetlink failed. */
export class ConntrackError extends EnvironmentError {
  constructor(message: string, cause?: unknown) {
    super(
      'ECONNTRACK',
      message,
      'conntrack over netlink needs CAP_NET_ADMIN and the nf_conntrack_netlink support in the kernel',
      cause,
    );
  }
}
