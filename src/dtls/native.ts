/**
 * Loader and typings of the `seng_dtls` N-API addon (native/dtls). The addon drives the OpenSSL
 * that is linked into the node binary; the contract of each call is documented where it is
 * implemented (native/dtls/src/conn.cc, context.cc, endpoint.cc).
 */
import { loadNativeAddon } from '../util/native-addon.js';

/** Flags in the low byte of the numbers returned by Conn.input()/timeout()/release()/... */
export const F_HANDSHAKE_DONE = 2;
export const F_PEER_CLOSED = 4;
export const F_FATAL = 8;
export const F_MORE = 16;
export const F_CLOSED = 32;

export interface NativeAlert {
  level: 'fatal' | 'warning';
  code: number;
  name: string;
}

export interface NativeConnInfo {
  state: 'handshaking' | 'held' | 'open' | 'closed';
  error: string;
  maxRecord: number;
  cipher?: string;
  version?: string;
  alertReceived?: NativeAlert | null;
  alertSent?: NativeAlert | null;
  sendError?: string;
  /** Who seals and opens records: OpenSSL (handshake, client side) or the addon (server after release(), client after handOff()). */
  recordLayer: 'openssl' | 'native' | 'none';
  /** Received records the native record layer discarded: replayed, forged (tag), other (epoch, version, framing). */
  discarded: { replayed: number; forged: number; other: number };
  /** Native record layer: which directions hold a persistent cipher context (created lazily). */
  cipherContexts?: { seal: boolean; open: boolean };
  /** Native record layer: bytes of our final flight still kept for a retransmitted client Finished. */
  finalFlightBytes?: number;
}

export interface NativeConn {
  /**
   * Feeds one datagram (or null to continue); returns flags | (records << 8). With the last two
   * arguments the datagram is bytes [datagramOffset, +datagramLength) of the first argument.
   */
  input(
    datagram: Buffer | null,
    slab: Buffer,
    slabOffset: number,
    lens: Uint32Array,
    datagramOffset?: number,
    datagramLength?: number,
  ): number;
  timeout(): number;
  /** ms until the retransmission timer fires, -1 when not running. */
  nextTimeout(): number;
  /** Server, verdict accepted: sends the held final flight and hands off to the native record layer (F_FATAL: failed). */
  release(): number;
  /**
   * Client, established and with no unread record: continue on the native record layer (true),
   * else stay on OpenSSL (false).
   */
  handOff(): boolean;
  reject(alertDescription: number): number;
  /** 1 sent, 0 closed, -1 empty/too large, -2 failed. */
  send(record: Uint8Array): number;
  shutdown(): number;
  peerChain(): Buffer[];
  info(): NativeConnInfo;
  /**
   * Write valid IPv4 records from sourceIp (host order, ≤ mtu bytes) to fd natively; fd < 0: off.
   * dropInvalid: drop invalid records natively (counted by reason) instead of handing them to JS.
   * checkDestination (client role): the address is the packets' destination, not their source.
   */
  setForward(
    fd: number,
    sourceIp: number,
    mtu: number,
    dropInvalid?: boolean,
    vnetHdr?: boolean,
    checkDestination?: boolean,
  ): void;
  /** [packets, bytes, dropped, oversize, malformed, spoofed, lastSpoofedSource] of the fast path. */
  forwardStats(): number[];
  free(): void;
}

export interface NativeContextOptions {
  server: boolean;
  identities: { certPem: string; keyPem: string }[];
  cipherList: string;
  caPem?: string;
  mtu: number;
}

export interface NativeContext {
  /** A Conn for a ClientHello with a valid cookie, else 0 dropped / 1 HelloVerifyRequest sent. */
  listen(
    datagram: Buffer,
    address: string,
    port: number,
    datagramOffset?: number,
    datagramLength?: number,
  ): NativeConn | number;
  /**
   * True when bytes [offset, +length) of `cookie` are the cookie this server issued to
   * address:port (current or previous secret); nothing is sent or kept.
   */
  cookieValid(address: string, port: number, cookie: Buffer, offset: number, length: number): boolean;
  /** A client connection that sends on the UDP socket fd. */
  connect(address: string, port: number, fd: number): NativeConn;
  rotateCookieSecret(): void;
  /** The server's UDP socket: HelloVerifyRequests and every connection made from now on send on it. */
  setFd(fd: number): void;
  free(): void;
}

export interface NativeEndpoint {
  /**
   * Datagram i of a batch is arena[meta[4i], +meta[4i+1]) from IPv4 meta[4i+2] (host order), port
   * meta[4i+3] & 0xffff; bit 16 of the port word (threaded only): a decrypted record the receive
   * thread left to JavaScript (RECORD_FLAG).
   */
  readonly arena: Buffer;
  readonly meta: Uint32Array;
  readonly fd: number;
  start(): void;
  close(onClosed?: () => void): void;
  /** Threaded: the receive thread takes ip:port's application data (conn's forwarder settings). */
  route(ip: number, port: number, conn: NativeConn): boolean;
  /** Threaded: removes the route; its final counters (RECV_ROUTE_* indices), undefined if none. */
  unroute(ip: number, port: number): number[] | undefined;
  /** One route's counters, or all as [ip * 65536 + port, ...counters] per route. */
  routeStats(ip: number, port: number): number[] | undefined;
  routeStats(): Float64Array;
  threadStats(): NativeRecvThreadStats | undefined;
}

/** Bit 16 of a datagram's port word: a decrypted record from the receive thread. */
export const RECORD_FLAG = 0x10000;

/** Indices into a receive route's counters (native/dtls/src/endpoint.cc, routeValues). */
export const RECV_ROUTE = {
  lastRxMs: 0,
  packets: 1,
  bytes: 2,
  dropped: 3,
  oversize: 4,
  malformed: 5,
  spoofed: 6,
  lastSpoofedSource: 7,
  replayed: 8,
  forged: 9,
  other: 10,
  toJs: 11,
} as const;

/** A forwarding thread's id and scheduling priority (docs/dtls.md "Thread priorities"). */
export interface NativeThreadPriority {
  /** Kernel thread id (0 until the thread runs). */
  tid: number;
  /** The thread's nice value, and whether it was lowered below the process's (needs CAP_SYS_NICE). */
  nice: number;
  priorityRaised: boolean;
}

export interface NativeRecvThreadStats extends NativeThreadPriority {
  /** recvmmsg batches, datagrams read. */
  wakeups: number;
  datagrams: number;
  /** Application-data datagrams of routed sessions opened on the thread. */
  opened: number;
  /** Items queued for JavaScript (datagrams, decrypted records), and dropped because the queue was full. */
  queued: number;
  queueDropped: number;
  /** Decrypted records the forwarder's rule left to JavaScript. */
  plainToJs: number;
  /** Datagrams of routes whose session had ended (went to JavaScript). */
  expired: number;
  routes: number;
  reading: boolean;
  readError?: string;
}

export interface NativeTunDispatchStats extends NativeThreadPriority {
  /** Packets read from the device. */
  reads: number;
  /** Packets sealed and handed to sendmmsg(2), and their bytes (inner packet sizes). */
  packets: number;
  bytes: number;
  malformed: number;
  unknownDestination: number;
  oversize: number;
  /** Records the socket refused (full buffer, EPERM, ...). */
  sendFailed: number;
  wakeups: number;
  /** Offload devices: frames that were TSO super-packets, the segments cut from them, and frames
   * refused as malformed or of an unsupported GSO type (also counted in `malformed`). */
  gsoFrames: number;
  gsoSegments: number;
  badFrames: number;
  /** sendmmsg(2) calls; messages that carried a UDP GSO run (same peer, same record size) and the
   * records in them; whether GSO is still on (off after the kernel refused it, or SENG_UDP_GSO=0). */
  sendCalls: number;
  udpGsoSends: number;
  udpGsoRecords: number;
  udpGso: boolean;
  /** Whether the device is read with a virtio_net_hdr (opened with offload). */
  offload: boolean;
  routes: number;
  /** Whether packets without a route go to one session (routeDefault, the enclave simulator). */
  defaultRoute: boolean;
  reading: boolean;
  /** Why reading stopped, e.g. the device was deleted. */
  readError?: string;
}

export interface NativeTunDispatch {
  start(): void;
  close(): void;
  route(ip: number, conn: NativeConn): boolean;
  /** [packets, bytes, oversize] of the route removed, undefined if there was none. */
  unroute(ip: number): [number, number, number] | undefined;
  /** Packets no route claims go to conn (false: conn is not open on the native record layer). */
  routeDefault(conn: NativeConn): boolean;
  unrouteDefault(): [number, number, number] | undefined;
  stats(): NativeTunDispatchStats;
  /** [ip, packets, bytes, oversize] per route. */
  routeStats(): Float64Array;
}

export interface NativeStats {
  liveSsl: number;
  /** Open UDP sockets of the addon (server and client endpoints). */
  liveEndpoint: number;
  /** Native record layers (server sessions after the handoff). */
  liveRecordLayer: number;
  /** TunDispatch objects (freed by the garbage collector once closed). */
  liveDispatch: number;
  liveCtx: number;
  liveConn: number;
  livePipe: number;
  /** Datagrams sent with sendto(2) by the addon. */
  directSends: number;
  /** Datagrams the socket refused (full buffer, EPERM from a firewall, ...): treated as loss. */
  droppedSends: number;
  /** UDP GSO messages sent (two or more records each, cut back into datagrams by the kernel) and their records. */
  gsoSends: number;
  gsoRecords: number;
  /** UDP GRO reads of the receive thread that held two or more datagrams, and those datagrams. */
  groReads: number;
  groDatagrams: number;
  /** UDP GRO reads dropped because their gso_size could not split them. */
  groMalformed: number;
}

/** Counters of the offload TUN writers (enclave → device, one recvmmsg batch coalesced per write). */
export interface NativeTunWriteStats {
  /** write(2)s the kernel accepted, and of those the GSO frames (two or more TCP segments). */
  frames: number;
  gsoFrames: number;
  /** Packets in the accepted frames, and their bytes. */
  packets: number;
  bytes: number;
  /** Packets in frames the device refused (full queue, link down). */
  dropped: number;
  /** Batches written. */
  flushes: number;
}

export interface DtlsAddon {
  Context: new (opts: NativeContextOptions) => NativeContext;
  Endpoint: new (
    fd: number,
    onBatch: (count: number) => void,
    batch?: number,
    threaded?: boolean,
  ) => NativeEndpoint;
  TunDispatch: new (
    tunFd: number,
    udpFd: number,
    mtu: number,
    batch?: number,
    vnetHdr?: boolean,
  ) => NativeTunDispatch;
  nativeStats(): NativeStats;
  tunWriteStats(fd?: number): NativeTunWriteStats;
  openUdp(address: string, port: number, bufferBytes: number): { fd: number; port: number };
  closeFd(fd: number): void;
  alertName(code: number): string;
  opensslVersion: string;
}

/** The addon, loaded on first use. */
export function loadAddon(): DtlsAddon {
  return loadNativeAddon<DtlsAddon>({
    dir: 'dtls',
    file: 'seng_dtls.node',
    code: 'EDTLS_NATIVE',
    what: 'DTLS',
  });
}
