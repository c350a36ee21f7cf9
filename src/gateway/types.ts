/**
 * The narrow views of the DTLS layer and the TUN device the gateway needs. Keeping
 * them structural lets tests drive the gateway with in-memory fakes, and keeps the
 * session logic independent of how packets are moved.
 *
 * Naming: a *channel* is one DTLS session between the gateway and an enclave (each enclave
 * has two: the receive channel on port P and the send channel on P+1). The word *tunnel*
 * is kept for the TUN device side (src/tunnel/), so the two are never confused.
 */
import type { EventEmitter } from 'node:events';

export type PeerVerdict = { accept: true; context?: unknown } | { accept: false; reason: string };
export type VerifyPeer = (
  chainDer: Buffer[],
  peer: { address: string; port: number },
) => Promise<PeerVerdict>;

/** One DTLS session with an enclave: 'message' (record: Buffer) and 'close' (reason: string) events. */
export interface EnclaveChannel extends EventEmitter {
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly verifyContext: unknown;
  send(record: Buffer): boolean;
  close(reason?: string): void;
  setIdleTimeout(ms: number): void;
  /** Optional fast path: write valid packets from sourceIp straight to a device fd (see DtlsSession). */
  forwardTo?(fd: number, sourceIp: number, mtu: number, opts?: { vnetHdr?: boolean }): void;
  forwardStats?(): { packets: number; bytes: number; dropped: number };
}

/** The native gateway → enclave path (DtlsServer.dispatchFromTun): routes by destination IP. */
export interface DeviceDispatch {
  /** Packets for `ip` go to `channel` from now on; false if the channel cannot take them. */
  route(ip: number, channel: EnclaveChannel): boolean;
  /** Stops routing `ip`; the route's final counters. */
  unroute(ip: number): DispatchRouteStats | undefined;
  /** Counters of every route, in one call. */
  routeStats(): Map<number, DispatchRouteStats>;
  /** Device-side drops of the whole dispatch (SPEC §1.4 order: malformed, unknown, oversize). */
  stats(): {
    malformed: number;
    unknownDestination: number;
    oversize: number;
    /** Offload device: TSO super-packets read and the segments cut from them. */
    gsoFrames?: number;
    gsoSegments?: number;
  };
  /** Offload device: the enclave → device writes (GSO frames coalesced from TCP segments). */
  writeStats?(): { frames: number; gsoFrames: number; packets: number };
  close(): void;
}

/** Packets and bytes sent to one enclave by the native dispatch, and its oversize drops. */
export interface DispatchRouteStats {
  packets: number;
  bytes: number;
  oversize: number;
}

/** A DTLS listener: 'session' (channel: EnclaveChannel) events. */
export interface ChannelListener extends EventEmitter {
  close(): Promise<void>;
  /** Optional fast path: read the device fd natively and send to routed sessions (see DtlsServer). */
  dispatchFromTun?(fd: number, mtu: number, batch?: number, vnetHdr?: boolean): DeviceDispatch;
}

/** Opens a DTLS listener on `port` whose handshakes are judged by `verifyPeer`. */
export type ListenChannels = (port: number, verifyPeer: VerifyPeer) => Promise<ChannelListener>;

/** The gateway side of the TUN interface. */
export interface PacketDevice {
  /** The device fd for native forwarding, when the device has one (-1 once closed). */
  readonly fd?: number;
  /** The fd carries a virtio_net_hdr (TUN offload: TSO reads, GSO writes); the native paths need to know. */
  readonly offload?: boolean;
  /** Writes one IPv4 packet into the kernel; false if it was dropped. */
  write(packet: Buffer): boolean;
  /** Registers the handler for packets the kernel routes into the device (batched). */
  onPackets(handler: (packets: Buffer[]) => void): void;
  close(): Promise<void> | void;
}
