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
  open: boolean;
  reading: boolean;
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
  setBatch(n: number): void;
  ref(): void;
  unref(): void;
  stats(): NativeTunStats;
  /** The device fd, or -1 once closed. */
  fd(): number;
  close(): void;
}

export interface NativeTunAddon {
  TunHandle: new (name: string, mode: 0 | 1, batchMax?: number) => NativeTunHandle;
  liveHandles(): { fds: number; polls: number; objects: number };
  ifIndex(name: string): number;
}

/** Error thrown by the addon: an Error with the errno name as code. */
export interface NativeErrnoError extends Error {
  code: string;
  errno?: number;
  syscall?: string;
}

export { packageRoot } from '../util/native-addon.js';

export function loadTunAddon(): NativeTunAddon {
  return loadNativeAddon<NativeTunAddon>({ dir: 'tun', file: 'tun.node', code: 'ETUN_ADDON', what: 'TUN' });
}

/** Live native handles (fds, poll handles, wrapper objects), for leak tests. */
export function liveTunHandles(): { fds: number; polls: number; objects: number } {
  return loadTunAddon().liveHandles();
}
