/**
 * The client socket blocker (`seng blocker`, SPEC §6.1, §6.4): runs on the untrusted host
 * of shielded apps and reserves the ports the gateway shadows, so no host process can
 * squat `<host IP>:X` while the gateway DNATs it to the enclave.
 *
 * Wire-compatible with the original gateway: TLS 1.2 server (ECDHE-RSA-AES-GCM, no client
 * certificate) on port 2834, one transaction per connection. A `sockBlock` reserves
 * (proto, port) by binding `0.0.0.0:port` (TCP: Node cannot bind without listening, so the
 * socket listens with a connection limit of 0 and every connection is closed at once;
 * UDP: a bound socket that discards datagrams), answers GRANTED or IN_USE, then waits
 * for the relayed ListenStartConfirm: NOW_LISTENING keeps the reservation, FAILED, EOF or
 * the deadline release it. A `closeNotify` releases (proto, port), keyed correctly (the
 * original looked up the protocol as the port, §6.7 bug 5).
 *
 * Connections are served concurrently; every read has a deadline.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import tls from 'node:tls';
import { EventEmitter } from 'node:events';
import { errorMessage } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import { BLOCKER_CIPHERS } from './blocker-client.js';
import {
  BlockerReply,
  FrameReader,
  MAX_BLOCKER_CONFIRM_BODY,
  MAX_BLOCKER_REQUEST_BODY,
  blockerReplyName,
  decodeBlockerMessage,
  decodeListenConfirm,
  encodeBlockerReply,
  frame,
  protoName,
  type BlockerReplyCode,
  type ShadowProto,
} from './protocol.js';

export interface BlockerServerOptions {
  /** Address to listen on (default 0.0.0.0). */
  host?: string;
  /** Port (default 2834). */
  port?: number;
  certPem: string;
  keyPem: string;
  /** Address the reservations bind (default 0.0.0.0: every address of the host). */
  reserveAddress?: string;
  /** Deadline for the request after the handshake, in ms (default 5000). */
  requestTimeoutMs?: number;
  /** Deadline for the relayed confirmation after GRANTED, in ms (default 30000). */
  confirmTimeoutMs?: number;
  /** Only these gateway addresses may connect (default: anyone, like the original). */
  allowedPeers?: string[];
  logger?: Logger;
}

export interface Reservation {
  proto: 'tcp' | 'udp';
  port: number;
  state: 'pending' | 'reserved';
  gateway: string;
  mrEnclave: string;
  since: string;
}

interface Held {
  info: Reservation;
  release(): Promise<void>;
}

const key = (proto: ShadowProto, port: number): string => `${protoName(proto)}/${port}`;

export class BlockerServer extends EventEmitter {
  private server: tls.Server | undefined;
  private readonly held = new Map<string, Held>();
  private readonly sockets = new Set<tls.TLSSocket>();
  private readonly log: Logger;
  private readonly requestTimeoutMs: number;
  private readonly confirmTimeoutMs: number;

  constructor(private readonly opts: BlockerServerOptions) {
    super();
    this.log = opts.logger ?? silentLogger;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 5000;
    this.confirmTimeoutMs = opts.confirmTimeoutMs ?? 30_000;
  }

  /** Starts listening; resolves with the bound address. */
  listen(): Promise<{ address: string; port: number }> {
    const server = tls.createServer(
      {
        cert: this.opts.certPem,
        key: this.opts.keyPem,
        minVersion: 'TLSv1.2',
        maxVersion: 'TLSv1.2',
        ciphers: BLOCKER_CIPHERS,
        requestCert: false,
        handshakeTimeout: this.requestTimeoutMs,
      },
      (socket) => void this.serve(socket),
    );
    server.on('tlsClientError', (err) => this.log.debug({ err: errorMessage(err) }, 'TLS handshake failed'));
    server.on('connection', (raw: net.Socket) => {
      const allowed = this.opts.allowedPeers;
      if (allowed && !allowed.includes(raw.remoteAddress?.replace(/^::ffff:/, '') ?? '')) {
        this.log.warn(
          { event: 'peer-refused', peer: raw.remoteAddress },
          'connection from a non-gateway address',
        );
        raw.destroy();
      }
    });
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: this.opts.host ?? '0.0.0.0', port: this.opts.port ?? 2834 }, () => {
        server.off('error', reject);
        const a = server.address() as net.AddressInfo;
        resolve({ address: a.address, port: a.port });
      });
    });
  }

  reservations(): Reservation[] {
    return [...this.held.values()].map((h) => h.info);
  }

  /** Stops serving and releases every reservation. */
  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    await Promise.all([...this.held.values()].map((h) => h.release()));
    this.held.clear();
  }

  private async serve(socket: tls.TLSSocket): Promise<void> {
    this.sockets.add(socket);
    socket.on('error', () => undefined);
    const gateway = `${socket.remoteAddress?.replace(/^::ffff:/, '')}:${socket.remotePort}`;
    const reader = new FrameReader(socket);
    try {
      const msg = decodeBlockerMessage(
        await reader.read(MAX_BLOCKER_REQUEST_BODY, this.requestTimeoutMs, 'request'),
      );
      if (msg.kind === 'close') {
        const reply = await this.release(msg.proto, msg.port);
        socket.write(frame(encodeBlockerReply(reply)));
        this.log.info(
          {
            event: 'released',
            gateway,
            proto: protoName(msg.proto),
            port: msg.port,
            reply: blockerReplyName(reply),
          },
          `close notify for ${key(msg.proto, msg.port)}: ${blockerReplyName(reply)}`,
        );
        return;
      }
      const k = key(msg.proto, msg.port);
      if (this.held.has(k)) {
        socket.write(frame(encodeBlockerReply(BlockerReply.IN_USE)));
        this.log.info(
          { event: 'in-use', gateway, port: msg.port, proto: protoName(msg.proto) },
          `${k} is already reserved`,
        );
        return;
      }
      const release = await this.reserve(msg.proto, msg.port);
      if (!release) {
        socket.write(frame(encodeBlockerReply(BlockerReply.IN_USE)));
        this.log.info(
          { event: 'in-use', gateway, port: msg.port, proto: protoName(msg.proto) },
          `${k} is in use on this host`,
        );
        return;
      }
      const held: Held = {
        info: {
          proto: protoName(msg.proto),
          port: msg.port,
          state: 'pending',
          gateway,
          mrEnclave: msg.mrEnclave.toString('hex'),
          since: new Date().toISOString(),
        },
        release,
      };
      this.held.set(k, held);
      socket.write(frame(encodeBlockerReply(BlockerReply.GRANTED)));
      let listening = false;
      try {
        listening = decodeListenConfirm(
          await reader.read(MAX_BLOCKER_CONFIRM_BODY, this.confirmTimeoutMs, 'confirmation'),
        );
      } catch (err) {
        this.log.warn(
          { event: 'no-confirmation', gateway, port: msg.port, err: errorMessage(err) },
          `${k}: ${errorMessage(err)}`,
        );
      }
      if (this.held.get(k) !== held) return; // released by a close notify meanwhile
      if (listening) {
        held.info.state = 'reserved';
        this.log.info(
          { event: 'reserved', gateway, proto: held.info.proto, port: msg.port },
          `reserved ${k}`,
        );
        this.emit('reserved', k);
      } else {
        this.held.delete(k);
        await release();
        this.log.info(
          { event: 'not-listening', gateway, port: msg.port },
          `${k} released: the app did not listen`,
        );
        this.emit('released', k);
      }
    } catch (err) {
      this.log.warn(
        { event: 'bad-request', gateway, err: errorMessage(err) },
        `request from ${gateway} refused: ${errorMessage(err)}`,
      );
    } finally {
      socket.end();
      setTimeout(() => socket.destroy(), this.requestTimeoutMs).unref();
      socket.once('close', () => this.sockets.delete(socket));
    }
  }

  private async release(proto: ShadowProto, port: number): Promise<BlockerReplyCode> {
    const k = key(proto, port);
    const held = this.held.get(k);
    if (!held) return BlockerReply.WAS_NOT_BLOCKED;
    this.held.delete(k);
    await held.release();
    this.emit('released', k);
    return BlockerReply.NOW_UNLBOCKED;
  }

  /** Binds the port; resolves with its release function, or undefined if it is in use. */
  private reserve(proto: ShadowProto, port: number): Promise<(() => Promise<void>) | undefined> {
    const address = this.opts.reserveAddress ?? '0.0.0.0';
    return new Promise((resolve) => {
      if (proto === 17) {
        const sock = dgram.createSocket({ type: 'udp4', reuseAddr: false });
        sock.once('error', () => {
          sock.close();
          resolve(undefined);
        });
        sock.on('message', () => undefined);
        sock.bind({ port, address, exclusive: true }, () => {
          sock.removeAllListeners('error');
          sock.on('error', () => undefined);
          resolve(() => new Promise<void>((r) => sock.close(() => r())));
        });
        return;
      }
      const server = net.createServer();
      // Reserved, not served: every connection is closed at once.
      server.maxConnections = 0;
      server.once('error', () => resolve(undefined));
      server.listen({ port, host: address, exclusive: true, backlog: 1 }, () => {
        server.removeAllListeners('error');
        server.on('error', () => undefined);
        resolve(() => new Promise<void>((r) => server.close(() => r())));
      });
    });
  }
}
