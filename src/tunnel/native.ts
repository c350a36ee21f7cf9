/**
 * Loader and typings for the native TUN addon (native/tun, built by `npm run build:native`).
 */
import { loadNativeAddon } from '../util/native-addon.js';

export interface NativeTunStats {
  rxPackets: number;
  rxBytes: number;
  /** Poll wakeups that delivered packets (rxPackets / rxWakeups = average batch). */
  rxWakeups: number;
  /** Wakeups that stopped at the batch cap (or slab room) with packets possibly still waiting. */
  rxFullBatches: number;
  txPackets: number;
  txBytes: number;
  /** Writes refused because the device queue was full (packet dropped). */
  txEagain: number;
  /** Writes the kernel rejected for another reason (packet dropped). */
  txErrors: number;
  /** Offload: TSO and USO super-packets read and segmented (each counted once). */
  rxGso: number;
  /** Offload: frames from the kernel that could not be segmented (malformed/unsupported). */
  rxDropped: number;
  /** Offload: GSO frames written (each carrying two or more coalesced TCP segments). */
  txGso: number;
  open: boolean;
  reading: boolean;
  /**
   * Offload: the kernel may also hand over UDP super-packets (TUN_F_USO4, Linux ≥ 6.2, unless
   * SENG_TUN_USO=0): a local sender's UDP_SEGMENT runs or datagrams merged by GRO forwarding.
   */
  uso: boolean;
}

export interface NativeTunHandle {
  readonly name: string;
  /**
   * cb once per wakeup: `slab` holds the packets back to back, `ends` each packet's end offset
   * (uint32 little-endian); both null when only reporting an error (errno ≠ 0, reading stopped).
   */
  start(cb: (this: NativeTunHandle, slab: Buffer | null, ends: Buffer | null, errno: number) => void): void;
  stop(): void;
  /** Bytes written, or -errno (-11 = EAGAIN). */
  write(packet: Uint8Array): number;
  /**
   * Packets written, or -errno when the device is closed/gone. With OFFLOAD the TCP segments of
   * one flow are coalesced into GSO frames (one write each).
   */
  writeBatch(packets: readonly Uint8Array[]): number;
  /** OFFLOAD: the largest packet (bytes) that super-packets are segmented into. */
  setMtu(mtu: number): void;
  setBatch(n: number): void;
  ref(): void;
  unref(): void;
  stats(): NativeTunStats;
  /** The device fd, or -1 once closed. */
  fd(): number;
  close(): void;
}

/** TunHandle flags: IFF_VNET_HDR + TSO4/CSUM offloads; IFF_MULTI_QUEUE. */
export const TUN_FLAG_OFFLOAD = 1;
export const TUN_FLAG_MULTI_QUEUE = 2;

export interface NativeTunAddon {
  TunHandle: new (
    name: string,
    mode: 0 | 1,
    batchMax?: number,
    flags?: number,
    mtu?: number,
  ) => NativeTunHandle;
  liveHandles(): { fds: number; polls: number; objects: number };
  ifIndex(name: string): number;
  /**
   * native/common's seng_gso_split() on one frame (virtio_net_hdr + packet): the packets back
   * to back and their uint32 LE end offsets, or a negative errno. For tests and tools.
   */
  gsoSplit(frame: Uint8Array, mtu: number): { slab: Buffer; ends: Buffer } | number;
  /** The frames (virtio_net_hdr + packet) seng_gro_write() would write for these packets. */
  groCoalesce(packets: readonly Uint8Array[]): Buffer[];
  /** seng_ipv4_check(): the codes of Ipv4Check. */
  ipv4Check(packet: Uint8Array): number;
  /** Whether an IPv4 TCP/UDP packet's transport checksum is right. */
  l4ChecksumOk(packet: Uint8Array): boolean;
  /** seng_udp_gro_split(): end offsets of the datagrams of a UDP GRO read, or a negative errno. */
  udpGroSplit(len: number, gsoSize: number): number[] | number;
}

/** Error thrown by the addon: an Error with the errno name as code. */
export interface NativeErrnoError extends Error {
  code: string;
  errno?: number;
  syscall?: string;
}

export { nativeRoot, packageRoot } from '../util/native-addon.js';

export function loadTunAddon(): NativeTunAddon {
  return loadNativeAddon<NativeTunAddon>({ dir: 'tun', file: 'tun.node', code: 'ETUN_ADDON', what: 'TUN' });
}

/** Live native handles (fds, poll handles, wrapper objects), for leak tests. */
export function liveTunHandles(): { fds: number; polls: number; objects: number } {
  return loadTunAddon().liveHandles();
}
