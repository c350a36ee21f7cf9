/**
 * The socket boundary: {@link NetlinkTransport} moves whole datagrams between this process
 * and the kernel. The real one ({@link RawSocketTransport}) sits on the `netlink` package's
 * raw socket (`socket(AF_NETLINK, SOCK_RAW, protocol)`), bound in the network namespace of
 * the process when it is opened; tests inject a fake kernel at this boundary.
 */
import { RawNetlinkSocket } from 'netlink';
import { Errno, NetlinkError } from './errors.js';

/** Moves whole netlink datagrams between this process and the kernel. */
export interface NetlinkTransport {
  /** The local port id (`nl_pid`) to put in request headers. */
  readonly portId: number;
  /** Sends one datagram to the kernel; rejects with a {@link NetlinkError} if sendmsg fails. */
  send(datagram: Buffer): Promise<void>;
  /** Installs the receiver of every datagram from the kernel and of socket-level errors. */
  setReceiver(onDatagram: (datagram: Buffer) => void, onError: (err: NetlinkError) => void): void;
  /** Keeps the event loop alive while true (requests pending). */
  setActive(active: boolean): void;
  close(): void;
}

export interface RawSocketOptions {
  recvBufferSize?: number;
  sendBufferSize?: number;
}

/** The errno of a failed system call as Node reports it (EIO when it does not say). */
function toErrno(err: unknown): number {
  const e = err as { errno?: unknown };
  return typeof e.errno === 'number' ? Math.abs(e.errno) : Errno.EIO;
}

function socketError(err: unknown, what: string): NetlinkError {
  return new NetlinkError(toErrno(err), 'socket', { what }, { cause: err });
}

/** A real netlink socket from the `netlink` package. */
export class RawSocketTransport implements NetlinkTransport {
  private readonly socket: RawNetlinkSocket;
  readonly portId: number;
  private closed = false;

  /** Throws a {@link NetlinkError} (source `socket`) when the socket cannot be opened. */
  constructor(protocol: number, opts: RawSocketOptions = {}) {
    try {
      this.socket = new RawNetlinkSocket(protocol, {
        ...(opts.recvBufferSize ? { recvBufferSize: opts.recvBufferSize } : {}),
        ...(opts.sendBufferSize ? { sendBufferSize: opts.sendBufferSize } : {}),
      } as ConstructorParameters<typeof RawNetlinkSocket>[1]);
    } catch (err) {
      throw socketError(err, `cannot open netlink socket (protocol ${protocol})`);
    }
    this.portId = this.socket.address().port;
    this.socket.unref();
  }

  send(datagram: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.closed) {
        reject(new NetlinkError(Errno.EBADF, 'socket', { what: 'netlink socket already closed' }));
        return;
      }
      this.socket.send(datagram, { port: 0 }, (err) => {
        if (err) reject(socketError(err, 'sending to the kernel'));
        else resolve();
      });
    });
  }

  setReceiver(onDatagram: (datagram: Buffer) => void, onError: (err: NetlinkError) => void): void {
    this.socket.on('message', (msg) => onDatagram(msg));
    this.socket.on('truncatedMessage', () =>
      onError(new NetlinkError(Errno.ENOBUFS, 'socket', { what: 'a reply was truncated' })),
    );
    this.socket.on('error', (err) => onError(socketError(err, 'receiving from the kernel')));
  }

  setActive(active: boolean): void {
    if (this.closed) return;
    if (active) this.socket.ref();
    else this.socket.unref();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.close();
  }
}
