/**
 * Loader and typings of the `seng_dtls` N-API addon (native/dtls). The addon drives the OpenSSL
 * that is linked into the node binary; see native/dtls/src/dtls.cc for the contract of each call.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EnvironmentError, errorMessage } from '../util/errors.js';

/** Flags in the low byte of the numbers returned by Conn.input()/timeout()/release()/... */
export const F_OUTPUT = 1;
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
  release(): number;
  reject(alertDescription: number): number;
  /** 1 (+2 when output got queued) sent, 0 closed, -1 empty/too large, -2 failed. */
  send(record: Uint8Array): number;
  shutdown(): number;
  takeOutput(): Buffer[] | undefined;
  peerChain(): Buffer[];
  info(): NativeConnInfo;
  setFd(fd: number): void;
  /** Write well-formed IPv4 records from sourceIp (host order, ≤ mtu bytes) to fd natively; fd < 0: off. */
  setForward(fd: number, sourceIp: number, mtu: number): void;
  /** [packets, bytes, dropped] forwarded natively. */
  forwardStats(): [number, number, number];
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
  /** A Conn for a ClientHello with a valid cookie, else 0 dropped / 1 HelloVerifyRequest sent / 2 queued. */
  listen(
    datagram: Buffer,
    address: string,
    port: number,
    datagramOffset?: number,
    datagramLength?: number,
  ): NativeConn | number;
  connect(address: string, port: number, fd: number): NativeConn;
  rotateCookieSecret(): void;
  setFd(fd: number): void;
  takeOutput(): Buffer[] | undefined;
  free(): void;
}

export interface NativeEndpoint {
  /** Datagram i of a batch is arena[meta[4i], +meta[4i+1]) from IPv4 meta[4i+2] (host order), port meta[4i+3]. */
  readonly arena: Buffer;
  readonly meta: Uint32Array;
  readonly fd: number;
  start(): void;
  close(onClosed?: () => void): void;
  sendTo(datagram: Buffer, ipv4: number, port: number): boolean;
}

export interface NativeStats {
  liveSsl: number;
  /** Open UDP sockets of the addon (server and client endpoints). */
  liveEndpoint: number;
  liveCtx: number;
  liveConn: number;
  livePipe: number;
  directSends: number;
  queuedSends: number;
  droppedSends: number;
}

export interface DtlsAddon {
  Context: new (opts: NativeContextOptions) => NativeContext;
  Endpoint: new (fd: number, onBatch: (count: number) => void, batch?: number) => NativeEndpoint;
  nativeStats(): NativeStats;
  openUdp(address: string, port: number, bufferBytes: number): { fd: number; port: number };
  closeFd(fd: number): void;
  alertName(code: number): string;
  opensslVersion: string;
}

function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'native'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new EnvironmentError('EDTLS_NATIVE', 'cannot find the seng installation directory');
    dir = up;
  }
}

let addon: DtlsAddon | undefined;

/** The addon, loaded on first use. */
export function loadAddon(): DtlsAddon {
  if (addon) return addon;
  const root = repoRoot();
  const path = join(root, 'native', 'dtls', 'build', 'Release', 'seng_dtls.node');
  if (!existsSync(path)) {
    throw new EnvironmentError(
      'EDTLS_NATIVE',
      `the DTLS addon is not built (${path} is missing)`,
      'run `npm run build:native` (needs g++, make and python3)',
    );
  }
  try {
    const req = createRequire(join(root, 'package.json'));
    addon = req(path) as DtlsAddon;
  } catch (err) {
    throw new EnvironmentError(
      'EDTLS_NATIVE',
      `cannot load the DTLS addon: ${errorMessage(err)}`,
      'rebuild it with `npm run build:native` for this node version',
      err,
    );
  }
  return addon;
}
