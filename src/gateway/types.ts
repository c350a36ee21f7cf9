/**
 * The narrow views of the DTLS layer and the TUN device the gateway needs. Keeping
 * them structural lets tests drive the gateway with in-memory fakes, and keeps the
 * session logic independent of how packets are moved.
 */
import type { EventEmitter } from 'node:events';

export type PeerVerdict = { accept: true; context?: unknown } | { accept: false; reason: string };
export type VerifyPeer = (
  chainDer: Buffer[],
  peer: { address: string; port: number },
) => Promise<PeerVerdict>;

/** One DTLS session: 'message' (record: Buffer) and 'close' (reason: string) events. */
export interface TunnelSession extends EventEmitter {
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly verifyContext: unknown;
  send(record: Buffer): boolean;
  close(reason?: string): void;
  setIdleTimeout(ms: number): void;
  /** Optional fast path: write valid packets from sourceIp straight to a device fd (see DtlsSession). */
  forwardTo?(fd: number, sourceIp: number, mtu: number): void;
  forwardStats?(): { packets: number; bytes: number; dropped: number };
}

/** The native gateway → enclave path (DtlsServer.dispatchFromTun): routes by destination IP. */
export interface DeviceDispatch {
  route(ip: number, session: TunnelSession): boolean;
  unroute(ip: number): { packets: number; bytes: number } | undefined;
  routeStats(): Map<number, { packets: number; bytes: number }>;
  stats(): { unknownDestination: number };
  close(): void;
}

/** A DTLS listener: 'session' (s: TunnelSession) events. */
export interface TunnelListener extends EventEmitter {
  close(): Promise<void>;
  /** Optional fast path: read the device fd natively and send to routed sessions (see DtlsServer). */
  dispatchFromTun?(fd: number, mtu: number): DeviceDispatch;
}

export type ListenTunnel = (port: number, verifyPeer: VerifyPeer) => Promise<TunnelListener>;

/** The gateway side of the TUN interface. */
export interface PacketDevice {
  /** The device fd for native forwarding, when the device has one (-1 once closed). */
  readonly fd?: number;
  /** Writes one IPv4 packet into the kernel; false if it was dropped. */
  write(packet: Buffer): boolean;
  /** Registers the handler for packets the kernel routes into the device (batched). */
  onPackets(handler: (packets: Buffer[]) => void): void;
  close(): Promise<void> | void;
}
