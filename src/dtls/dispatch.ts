/**
 * The gateway → enclave data path without JavaScript per packet and off the JavaScript thread
 * (native/dtls/src/tun_dispatch.cc): a thread of the addon reads the TUN device, routes each
 * packet by destination IPv4 address to the session JavaScript registered for it, seals it with
 * that session's native record layer and sends the batch with sendmmsg(2) on the send tunnel's
 * socket. JavaScript decides who is routed (route / unroute) and reads the counters in bulk.
 * Made by DtlsServer.dispatchFromTun(), or for a client session by dispatchFromTunToSession() (the
 * enclave simulator: every packet of its device goes to its one session, a default route).
 */
import { InputError } from '../util/errors.js';
import { clientSocketFd } from './client.js';
import { nativeError } from './errors.js';
import {
  loadAddon,
  type NativeTunDispatch,
  type NativeTunDispatchStats,
  type NativeTunWriteStats,
} from './native.js';
import type { DtlsSession } from './session.js';

export type TunDispatchStats = NativeTunDispatchStats;

/** Per-route counters: packets and bytes sent to the enclave, packets dropped as oversize. */
export interface RouteStats {
  packets: number;
  bytes: number;
  oversize: number;
}

export class TunDispatch {
  private closed = false;

  /** @internal made by DtlsServer.dispatchFromTun(). */
  constructor(
    private readonly native: NativeTunDispatch,
    private readonly tunFd: number,
  ) {}

  /**
   * Packets for `ip` (host order) go to `session` from now on (replacing an earlier route).
   * False when the session cannot take them (closed, or not a server session of this addon).
   */
  route(ip: number, session: DtlsSession): boolean {
    const conn = session.nativeConn();
    if (this.closed || !conn) return false;
    return this.native.route(ip >>> 0, conn);
  }

  /**
   * Packets for which no route was given go to `session` (replacing an earlier default route).
   * False when the session cannot take them (closed, or not on the native record layer).
   */
  routeDefault(session: DtlsSession): boolean {
    const conn = session.nativeConn();
    if (this.closed || !conn) return false;
    return this.native.routeDefault(conn);
  }

  /** Stops the default route; returns its final counters (undefined if there was none). */
  unrouteDefault(): RouteStats | undefined {
    if (this.closed) return undefined;
    const r = this.native.unrouteDefault();
    return r && { packets: r[0], bytes: r[1], oversize: r[2] };
  }

  /** Stops routing `ip`; returns the route's final counters (undefined if it had none). */
  unroute(ip: number): RouteStats | undefined {
    if (this.closed) return undefined;
    const r = this.native.unroute(ip >>> 0);
    return r && { packets: r[0], bytes: r[1], oversize: r[2] };
  }

  /** Counters of the whole dispatch. */
  stats(): TunDispatchStats {
    return this.native.stats();
  }

  /**
   * The other direction's writes into the same device when it has offload (sessions forwarding
   * to it with `vnetHdr`): frames, GSO frames, packets, drops (native/dtls/src/tun_writer.cc).
   */
  writeStats(): NativeTunWriteStats {
    return loadAddon().tunWriteStats(this.tunFd);
  }

  /** Counters of every route, in one call. */
  routeStats(): Map<number, RouteStats> {
    const a = this.native.routeStats();
    const out = new Map<number, RouteStats>();
    for (let i = 0; i + 3 < a.length; i += 4) {
      out.set(a[i]!, { packets: a[i + 1]!, bytes: a[i + 2]!, oversize: a[i + 3]! });
    }
    return out;
  }

  /** Stops reading the device (at once). Close the dispatch before the device. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.native.close();
  }
}

/**
 * Client role: a dispatch thread that reads `tunFd` and sends every packet (≤ `mtu`) as a record
 * of `session` on the session's own socket. The session must be a client session handed off to
 * the native record layer (handOffClientSession). Close the dispatch before the device.
 */
export function dispatchFromTunToSession(
  session: DtlsSession,
  tunFd: number,
  mtu: number,
  opts: { batch?: number; vnetHdr?: boolean } = {},
): TunDispatch {
  const udpFd = clientSocketFd(session);
  const conn = session.nativeConn();
  if (udpFd === undefined || !conn) throw new InputError('the session is not an open client session');
  let native: NativeTunDispatch;
  try {
    native = new (loadAddon().TunDispatch)(tunFd, udpFd, mtu, opts.batch ?? 64, opts.vnetHdr === true);
  } catch (err) {
    throw nativeError(err, 'cannot dispatch from the TUN device');
  }
  if (!native.routeDefault(conn)) {
    native.close();
    throw new InputError(
      'the session is not on the native record layer',
      'hand it off first (handOffClientSession)',
    );
  }
  try {
    native.start();
  } catch (err) {
    native.close();
    throw nativeError(err, 'cannot dispatch from the TUN device');
  }
  return new TunDispatch(native, tunFd);
}
