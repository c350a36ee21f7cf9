/**
 * The gateway's side of the socket-blocker link (SPEC §6.1, §6.4, §6.8): a TLS 1.2 client
 * of `<host IP>:2834` that accepts any certificate and presents none (the blocker runs on
 * the untrusted host: its replies are treated as untrusted input). One transaction per
 * connection; every step (connect + handshake, each read) has a deadline.
 */
import tls from 'node:tls';
import { errorMessage, SengError } from '../util/errors.js';
import { formatIpv4, type Ipv4 } from '../util/ipv4.js';
import {
  BLOCKER_PORT,
  FrameReader,
  MAX_BLOCKER_REPLY_BODY,
  decodeBlockerReply,
  encodeBlockerMessage,
  encodeListenConfirm,
  frame,
  type BlockerMessage,
  type BlockerReplyCode,
  type ShadowProto,
} from './protocol.js';

export class BlockerError extends SengError {
  constructor(message: string, cause?: unknown) {
    super('EBLOCKER', message, { cause });
  }
}

export interface BlockerClientOptions {
  /** Blocker port (default 2834). */
  port?: number;
  /** Deadline of each step in ms. */
  timeoutMs: number;
  /** Aborting closes the connection at once (e.g. the enclave is disconnecting). */
  signal?: AbortSignal;
}

/** mbedTLS 2.x (the original blocker) offers these; so does `seng blocker`. */
export const BLOCKER_CIPHERS = [
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'DHE-RSA-AES256-GCM-SHA384',
  'DHE-RSA-AES128-GCM-SHA256',
].join(':');

/** One open transaction with a blocker. */
export class BlockerConnection {
  private readonly reader: FrameReader;

  private constructor(
    private readonly socket: tls.TLSSocket,
    private readonly timeoutMs: number,
    readonly peer: string,
  ) {
    this.reader = new FrameReader(socket);
  }

  static open(hostIp: Ipv4, opts: BlockerClientOptions): Promise<BlockerConnection> {
    const host = formatIpv4(hostIp);
    const port = opts.port ?? BLOCKER_PORT;
    const peer = `${host}:${port}`;
    return new Promise((resolve, reject) => {
      if (opts.signal?.aborted) {
        reject(new BlockerError(`socket blocker ${peer}: aborted`));
        return;
      }
      // No SNI (host is an address), no client certificate, no verification (SPEC §6.8).
      const socket = tls.connect({
        host,
        port,
        rejectUnauthorized: false,
        minVersion: 'TLSv1.2',
        maxVersion: 'TLSv1.2',
        ciphers: BLOCKER_CIPHERS,
      });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new BlockerError(`socket blocker ${peer}: no TLS handshake within ${opts.timeoutMs} ms`));
      }, opts.timeoutMs);
      const onAbort = (): void => {
        clearTimeout(timer);
        socket.destroy();
        reject(new BlockerError(`socket blocker ${peer}: aborted`));
      };
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      socket.once('close', () => opts.signal?.removeEventListener('abort', onAbort));
      socket.once('secureConnect', () => {
        clearTimeout(timer);
        socket.off('error', onError);
        socket.on('error', () => undefined);
        resolve(new BlockerConnection(socket, opts.timeoutMs, peer));
      });
      const onError = (err: Error): void => {
        clearTimeout(timer);
        socket.destroy();
        reject(new BlockerError(`socket blocker ${peer}: ${errorMessage(err)}`, err));
      };
      socket.once('error', onError);
    });
  }

  /** Sends one CliBlockerMsg and reads the reply. */
  async ask(msg: BlockerMessage): Promise<BlockerReplyCode> {
    this.socket.write(frame(encodeBlockerMessage(msg)));
    try {
      return decodeBlockerReply(
        await this.reader.read(MAX_BLOCKER_REPLY_BODY, this.timeoutMs, 'blocker reply'),
      );
    } catch (err) {
      throw new BlockerError(`socket blocker ${this.peer}: ${errorMessage(err)}`, err);
    }
  }

  /** Relays the enclave's ListenStartConfirm and closes (close_notify) without waiting for the blocker. */
  confirm(listening: boolean): void {
    this.socket.end(frame(encodeListenConfirm(listening)));
    this.closeSoon();
  }

  /** Sends close_notify and closes. */
  close(): void {
    this.socket.end();
    this.closeSoon();
  }

  private closeSoon(): void {
    // A peer that never closes its side must not keep the socket forever.
    setTimeout(() => this.socket.destroy(), this.timeoutMs).unref();
  }
}

/**
 * Asks the blocker to release a reservation (a correct CloseNotify{port, proto}, which the
 * original gateway never sent). Resolves with the reply; NOW_UNLBOCKED and WAS_NOT_BLOCKED
 * both mean the port is not reserved any more.
 */
export async function releaseAtBlocker(
  hostIp: Ipv4,
  port: number,
  proto: ShadowProto,
  opts: BlockerClientOptions,
): Promise<BlockerReplyCode> {
  const conn = await BlockerConnection.open(hostIp, opts);
  try {
    return await conn.ask({ kind: 'close', port, proto });
  } finally {
    conn.close();
  }
}
