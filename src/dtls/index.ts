/**
 * DTLS 1.2 for seng: a server over one UDP socket for many enclaves and a client, both on the
 * OpenSSL inside node (native/dtls addon). See docs/dtls.md.
 */
import { loadAddon, type NativeStats, type NativeTunWriteStats } from './native.js';

export { DtlsServer, type DtlsServerStats } from './server.js';
export { DtlsSession, type DtlsSessionStats, type ForwardStats } from './session.js';
export { TunDispatch, dispatchFromTunToSession, type TunDispatchStats, type RouteStats } from './dispatch.js';
export { dtlsConnect, handOffClientSession } from './client.js';
export {
  DEFAULT_CIPHERS,
  DtlsError,
  type CloseReason,
  type DtlsConnectOptions,
  type DtlsIdentity,
  type DtlsServerOptions,
  type PeerAddress,
  type PeerVerdict,
  type RejectAlert,
} from './types.js';
export type { NativeStats, NativeTunWriteStats };

/** Counts of live native objects (SSL, SSL_CTX, connections) and of datagram send paths; for leak tests. */
export function nativeStats(): NativeStats {
  return loadAddon().nativeStats();
}

/** The OpenSSL version the addon runs on (the one inside node). */
export function opensslVersion(): string {
  return loadAddon().opensslVersion;
}

/**
 * Counters of the enclave → device writes to offload TUN devices (forwardTo with `vnetHdr`): of
 * the device `fd`, or of all of them.
 */
export function tunWriteStats(fd = -1): NativeTunWriteStats {
  return loadAddon().tunWriteStats(fd);
}
