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
  forwardTo?(fd: number, sourceIp: number, mtu: number): void;
  forwardStats?(): { packets: number; bytes: number; dropped: number };
}

/** A DTLS listener: 'session' (channel: EnclaveChannel) events. */
export interface ChannelListener extends EventEmitter {
  close(): Promise<void>;
}

/** Opens a DTLS listener on `port` whose handshakes are judged by `verifyPeer`. */
export type ListenChannels = (port: number, verifyPeer: VerifyPeer) => Promise<ChannelListener>;

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
