import type { Logger } from 'pino';
import { SengError } from '../util/errors.js';

/** A certificate (PEM, leaf first, optionally followed by its chain) and its unencrypted private key. */
export interface DtlsIdentity {
  certPem: string;
  keyPem: string;
}

/** Fatal alerts a verification hook may ask for when it rejects a peer. */
export type RejectAlert =
  | 'access_denied'
  | 'bad_certificate'
  | 'unsupported_certificate'
  | 'certificate_revoked'
  | 'certificate_expired'
  | 'certificate_unknown'
  | 'handshake_failure'
  | 'internal_error';

export const ALERT_CODES: Record<RejectAlert, number> = {
  handshake_failure: 40,
  bad_certificate: 42,
  unsupported_certificate: 43,
  certificate_revoked: 44,
  certificate_expired: 45,
  certificate_unknown: 46,
  access_denied: 49,
  internal_error: 80,
};

export type PeerVerdict =
  | { accept: true; context?: unknown }
  | { accept: false; reason: string; /** default access_denied */ alert?: RejectAlert };

export interface PeerAddress {
  address: string;
  port: number;
}

export interface DtlsServerOptions {
  host: string;
  port: number;
  /** RSA and/or ECDSA identities; give both to serve both cipher suites. */
  identities: DtlsIdentity[];
  /** OpenSSL cipher list; default ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256. */
  cipherList?: string;
  /** Decides whether a client (certificate chain as DER, leaf first) is accepted. */
  verifyPeer: (chainDer: Buffer[], peer: PeerAddress) => Promise<PeerVerdict>;
  /** Link MTU (IP packet size) the records and handshake fragments must fit; default 1500. */
  mtu?: number;
  /** Deadline of the whole handshake, verification hook included; default 5000 ms. */
  handshakeTimeoutMs?: number;
  /** A session that receives nothing for this long ends with reason 'idle'; default 120000 ms. */
  idleTimeoutMs?: number;
  /** Concurrent handshakes (verification included); further new peers are dropped. Default 256. */
  maxHandshakes?: number;
  /**
   * Latency a handshake should finish its cryptographic part within (src/dtls/pacer.ts): below
   * maxHandshakes, the server runs only as many handshakes at once as finish within it, and new
   * peers wait in the hello queue meanwhile. Default handshakeTimeoutMs / 2.
   */
  handshakeLatencyTargetMs?: number;
  /**
   * Cookie-verified ClientHellos that wait for a handshake slot (src/dtls/hello-queue.ts): the
   * oldest starts as soon as one frees. Default 0 (no queue: such hellos are dropped and the
   * clients retransmit; SENG_HELLO_QUEUE=1 makes the default 16 × maxHandshakes).
   */
  handshakeQueueSize?: number;
  /**
   * A queued ClientHello older than this is dropped, never started: its client has used up much of
   * its patience, and under overload the oldest should make room (their clients retransmit) rather
   * than every client waiting its whole timeout in line. Default min(handshakeLatencyTargetMs,
   * cookieRotationMs / 2).
   */
  handshakeQueueMs?: number;
  /** Concurrent sessions plus handshakes; further new peers are dropped. Default 10000. */
  maxSessions?: number;
  /**
   * Concurrent handshakes from one IPv4 address (all its ports), so that one host cannot take all
   * of maxHandshakes. Default 32.
   */
  maxHandshakesPerAddress?: number;
  /** How often the cookie secret rotates (cookies stay valid for up to two periods); default 30000 ms. */
  cookieRotationMs?: number;
  /** SO_RCVBUF / SO_SNDBUF of the socket; default 4 MiB (the kernel may cap it). */
  socketBufferBytes?: number;
  /**
   * Keep the peer's certificate chain (DER) on each session as peerCertificate / peerChain
   * (default true). A server whose verifyPeer hook keeps what it needs (the gateway keeps the
   * attested identity) passes false, so an idle session does not hold the ≈ 5–12 KB RA-TLS
   * certificate for its lifetime; the hook always receives the chain.
   */
  retainPeerChain?: boolean;
  /**
   * Read the socket on a native receive thread (default: on, unless SENG_NATIVE_RECV_THREAD=0):
   * the application data of sessions that forward natively (forwardTo) is opened and forwarded
   * there, so a busy JavaScript thread does not stall it; everything else reaches JavaScript
   * through a bounded queue. Off: the socket is read on the JavaScript thread (libuv poll).
   */
  receiveThread?: boolean;
  logger?: Logger;
}

export interface DtlsConnectOptions {
  host: string;
  port: number;
  certPem: string;
  keyPem: string;
  /** The server certificate(s) to pin (trusted as CA file; need not be self-signed). */
  caPem: string;
  cipherList?: string;
  mtu?: number;
  handshakeTimeoutMs?: number;
  localAddress?: string;
  idleTimeoutMs?: number;
  socketBufferBytes?: number;
  /** Datagrams read per recvmmsg(2) (1..32, default 8; a streaming client wants 32). */
  receiveBatch?: number;
  /**
   * Read the socket with a native receive thread (UDP GRO reads; native/dtls/src/recv_thread.h):
   * once the session is handed off (handOffClientSession) and forwards natively (forwardTo), the
   * thread opens its application data and writes it to the device without the JavaScript thread;
   * records the forwarder's rule leaves to JavaScript still arrive as 'message' events.
   */
  receiveThread?: boolean;
  logger?: Logger;
}

/**
 * Why a session ended: 'close_notify' (peer closed), 'alert' (peer sent a fatal alert), 'idle'
 * (nothing received within the idle timeout), 'local' (close() here), 'server-shutdown',
 * 'replaced' (the same address and port started a new handshake), 'error' (protocol or I/O error).
 */
export type CloseReason =
  'close_notify' | 'alert' | 'idle' | 'local' | 'server-shutdown' | 'replaced' | 'error' | string;

export const DEFAULT_CIPHERS = 'ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256';

export class DtlsError extends SengError {
  /** Alert received from the peer, when that is what ended the handshake. */
  readonly alert: string | undefined;
  constructor(
    code: string,
    message: string,
    options: { hint?: string; cause?: unknown; alert?: string } = {},
  ) {
    super(code, message, options);
    this.alert = options.alert;
  }
}
