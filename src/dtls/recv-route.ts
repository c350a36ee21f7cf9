/**
 * A server session's entry in the endpoint's native receive thread (native/dtls/src/recv_thread.h):
 * routed while the session forwards natively (forwardTo), so that the thread opens and forwards its
 * application data without the JavaScript thread; removed when forwarding stops or the session
 * ends. It also keeps the counters of earlier routes of the session (forwardTo called again), so
 * that the session's forwardStats() and idle timer see everything the thread did for it.
 */
import type { UdpEndpoint } from './endpoint.js';
import { RECV_ROUTE, type NativeConn } from './native.js';

/** What the thread did for one session: forwarding counters, discards, last datagram. */
export interface ReceiveRouteStats {
  packets: number;
  bytes: number;
  dropped: number;
  oversize: number;
  malformed: number;
  spoofed: number;
  lastSpoofedSource: number;
  /** Records the thread discarded: replayed, forged (tag), other (epoch, version, framing). */
  replayed: number;
  forged: number;
  other: number;
  /** Datagrams of the routed session the thread handed to JavaScript (alerts, handshake records). */
  toJs: number;
  /** Wall-clock ms of the last datagram the thread took for the session, 0 if none. */
  lastRxMs: number;
}

const ZERO: ReceiveRouteStats = {
  packets: 0,
  bytes: 0,
  dropped: 0,
  oversize: 0,
  malformed: 0,
  spoofed: 0,
  lastSpoofedSource: 0,
  replayed: 0,
  forged: 0,
  other: 0,
  toJs: 0,
  lastRxMs: 0,
};

export class ReceiveRoute {
  private routed = false;
  /** Counters of the routes already removed. */
  private readonly base: ReceiveRouteStats = { ...ZERO };

  constructor(
    private readonly endpoint: UdpEndpoint,
    private readonly ip: number,
    private readonly port: number,
  ) {}

  /** Forwarding was (re)configured on `conn`: route it again (on) or stop (off). */
  update(conn: NativeConn, on: boolean): void {
    this.remove();
    if (on) this.routed = this.endpoint.route(this.ip, this.port, conn);
  }

  /** Removes the route (the session ended); its counters stay. */
  remove(): void {
    if (!this.routed) return;
    this.routed = false;
    const last = this.endpoint.unroute(this.ip, this.port);
    if (last) add(this.base, last);
  }

  /** Wall-clock ms of the last datagram the thread took for the session, 0 if none. */
  lastReceived(): number {
    const live = this.routed ? this.endpoint.routeStats(this.ip, this.port) : undefined;
    return Math.max(this.base.lastRxMs, live?.[RECV_ROUTE.lastRxMs] ?? 0);
  }

  stats(): ReceiveRouteStats {
    const out = { ...this.base };
    const live = this.routed ? this.endpoint.routeStats(this.ip, this.port) : undefined;
    if (live) add(out, live);
    return out;
  }
}

function add(into: ReceiveRouteStats, v: number[]): void {
  const at = (i: number): number => v[i] ?? 0;
  into.packets += at(RECV_ROUTE.packets);
  into.bytes += at(RECV_ROUTE.bytes);
  into.dropped += at(RECV_ROUTE.dropped);
  into.oversize += at(RECV_ROUTE.oversize);
  into.malformed += at(RECV_ROUTE.malformed);
  into.spoofed += at(RECV_ROUTE.spoofed);
  if (at(RECV_ROUTE.lastSpoofedSource) !== 0) into.lastSpoofedSource = at(RECV_ROUTE.lastSpoofedSource);
  into.replayed += at(RECV_ROUTE.replayed);
  into.forged += at(RECV_ROUTE.forged);
  into.other += at(RECV_ROUTE.other);
  into.toJs += at(RECV_ROUTE.toJs);
  into.lastRxMs = Math.max(into.lastRxMs, at(RECV_ROUTE.lastRxMs));
}
