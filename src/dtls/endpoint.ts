/**
 * A UDP socket owned by the addon: bound here, read by libuv + recvmmsg(2) in batches of up to 32
 * datagrams; the addon's connections write their records to it with sendto(2). Used instead of
 * node's dgram module on the data path: one JS callback per batch instead of one event, Buffer and
 * rinfo object per datagram. IPv4 only, as the tunnel protocol (SPEC §1.1).
 */
import { isIP } from 'node:net';
import { InputError } from '../util/errors.js';
import {
  loadAddon,
  RECORD_FLAG,
  type NativeConn,
  type NativeEndpoint,
  type NativeRecvThreadStats,
} from './native.js';
import { nativeError } from './errors.js';

/** A datagram: bytes [off, off + len) of `arena` (valid only during the call), from ip:port. */
export type DatagramHandler = (arena: Buffer, off: number, len: number, ip: number, port: number) => void;

/** A decrypted record the receive thread left to JavaScript: bytes [off, off + len) of `arena`. */
export type RecordHandler = (arena: Buffer, off: number, len: number, ip: number, port: number) => void;

export interface EndpointThreadOptions {
  /** Decrypted records of routed sessions that the forwarder's rule leaves to JavaScript. */
  onRecord: RecordHandler;
}

export function ipv4ToString(ip: number): string {
  return `${ip >>> 24}.${(ip >>> 16) & 255}.${(ip >>> 8) & 255}.${ip & 255}`;
}

export function ipv4FromString(s: string): number {
  const parts = s.split('.').map(Number);
  if (isIP(s) !== 4 || parts.length !== 4) throw new InputError(`not an IPv4 address: '${s}'`);
  return (((parts[0]! << 24) >>> 0) + (parts[1]! << 16) + (parts[2]! << 8) + parts[3]!) >>> 0;
}

export class UdpEndpoint {
  readonly fd: number;
  readonly port: number;
  private readonly native: NativeEndpoint;
  private closed: Promise<void> | undefined;

  private constructor(native: NativeEndpoint, fd: number, port: number) {
    this.native = native;
    this.fd = fd;
    this.port = port;
  }

  /**
   * Binds host:port (0: any free port) and starts delivering datagrams to `onDatagram`, reading up
   * to `batch` (1..32) per system call; each slot of the receive arena is 18 KiB. With `thread`,
   * a native receive thread reads the socket (native/dtls/src/recv_thread.h): it forwards the
   * application data of routed sessions itself (route()) and queues everything else for
   * `onDatagram` (and `thread.onRecord`) on this thread.
   */
  static open(
    host: string,
    port: number,
    bufferBytes: number,
    onDatagram: DatagramHandler,
    batch = 32,
    thread?: EndpointThreadOptions,
  ): UdpEndpoint {
    if (isIP(host) !== 4) {
      throw new InputError(`DTLS endpoints are IPv4 (SPEC §1.1); '${host}' is not an IPv4 address`);
    }
    const addon = loadAddon();
    let bound: { fd: number; port: number };
    try {
      bound = addon.openUdp(host, port, bufferBytes);
    } catch (err) {
      throw nativeError(err, `cannot listen on ${host}:${port}`);
    }
    let native: NativeEndpoint | undefined;
    try {
      let arena: Buffer = Buffer.alloc(0);
      let meta: Uint32Array = new Uint32Array(0);
      native = new addon.Endpoint(
        bound.fd,
        (n: number) => {
          for (let i = 0; i < n; i++) {
            const len = meta[4 * i + 1] ?? 0;
            if (len === 0) continue;
            const port = meta[4 * i + 3] ?? 0;
            if (port & RECORD_FLAG) {
              thread?.onRecord(arena, meta[4 * i] ?? 0, len, meta[4 * i + 2] ?? 0, port & 0xffff);
              continue;
            }
            onDatagram(arena, meta[4 * i] ?? 0, len, meta[4 * i + 2] ?? 0, port);
          }
        },
        batch,
        thread !== undefined,
      );
      arena = native.arena;
      meta = native.meta;
      native.start();
    } catch (err) {
      // Once the Endpoint exists it owns the descriptor.
      if (native) native.close();
      else addon.closeFd(bound.fd);
      throw nativeError(err, 'cannot poll the UDP socket');
    }
    return new UdpEndpoint(native, bound.fd, bound.port);
  }

  /** Whether a native receive thread reads the socket. */
  get threaded(): boolean {
    return this.native.threadStats() !== undefined;
  }

  /**
   * Threaded: the receive thread opens and forwards the application data of the session at
   * ip:port (host order) with its connection's forwarder settings (forwarding must be on).
   */
  route(ip: number, port: number, conn: NativeConn): boolean {
    return this.native.route(ip, port, conn);
  }

  /** Removes a route; its final counters (RECV_ROUTE indices), undefined when there was none. */
  unroute(ip: number, port: number): number[] | undefined {
    return this.native.unroute(ip, port);
  }

  /** One route's counters (RECV_ROUTE indices), undefined when there is none. */
  routeStats(ip: number, port: number): number[] | undefined {
    return this.native.routeStats(ip, port);
  }

  /** The receive thread's counters, undefined when the endpoint is not threaded. */
  threadStats(): NativeRecvThreadStats | undefined {
    return this.native.threadStats();
  }

  /** Stops reading and closes the socket; resolves once the descriptor is closed. */
  close(): Promise<void> {
    this.closed ??= new Promise<void>((resolve) => this.native.close(() => resolve()));
    return this.closed;
  }
}
