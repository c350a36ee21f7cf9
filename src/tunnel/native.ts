/**
 * Loader and typings for the native TUN addon (native/tun, built by `npm run build:native`).
 */
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EnvironmentError, errorMessage } from '../util/errors.js';

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

let cached: NativeTunAddon | undefined;

/** The repository (package) root: the nearest ancestor holding seng's package.json. */
export function packageRoot(from: string = dirname(fileURLToPath(import.meta.url))): string {
  let dir = from;
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'seng') return dir;
      } catch {
        /* not ours; keep walking */
      }
    }
    const up = dirname(dir);
    if (up === dir) throw new EnvironmentError('ENOPKG', `cannot find seng's package.json above ${from}`);
    dir = up;
  }
}

export function loadTunAddon(): NativeTunAddon {
  if (cached) return cached;
  const file = join(packageRoot(), 'native', 'tun', 'build', 'Release', 'tun.node');
  if (!existsSync(file)) {
    throw new EnvironmentError(
      'ETUN_ADDON',
      `the TUN addon is not built (${file} missing)`,
      'run `npm run build:native` (needs g++ and the Node headers)',
    );
  }
  try {
    cached = createRequire(import.meta.url)(file) as NativeTunAddon;
  } catch (err) {
    throw new EnvironmentError(
      'ETUN_ADDON',
      `cannot load the TUN addon ${file}: ${errorMessage(err)}`,
      'rebuild it for this Node version: npm run build:native',
      err,
    );
  }
  return cached;
}

/** Live native handles (fds, poll handles, wrapper objects), for leak tests. */
export function liveTunHandles(): { fds: number; polls: number; objects: number } {
  return loadTunAddon().liveHandles();
}
