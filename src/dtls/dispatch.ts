/**
 * The gateway → enclave data path without JavaScript per packet and off the JavaScript thread
 * (native/dtls/src/tun_dispatch.cc): a thread of the addon reads the TUN device, routes each
 * packet by destination IPv4 address to the session JavaScript registered for it, seals it with
 * that session's native record layer and sends the batch with sendmmsg(2) on the send tunnel's
 * socket. JavaScript decides who is routed (route / unroute) and reads the counters in bulk.
 * Made by DtlsServer.dispatchFromTun().
 */
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
