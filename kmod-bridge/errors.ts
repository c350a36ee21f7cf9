/**
 * Typed errors of the seng kernel-module bridge (the netlink layer's own are in
 * src/netlink/errors.ts). Every one carries a stable `code` for scripts and, where we
 * know one, a hint for the operator.
 */
import { errnoName } from '../src/netlink/index.js';
import { EnvironmentError, SengError } from '../src/util/errors.js';

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
