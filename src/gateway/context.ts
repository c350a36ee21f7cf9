/**
 * What the parts of the gateway share: its options, timeouts, global counters and the
 * table of enclaves. Gateway (gateway.ts) builds one GatewayContext and hands it to
 * admission.ts, forwarding.ts, teardown.ts and operations.ts.
 */
import type { AttestationCache, AttestationPolicy } from '../attestation/index.js';
import type { Enforcer } from '../enforce/types.js';
import type { ShadowHooks } from '../shadow/types.js';
import type { Logger } from '../util/log.js';
import type { Ipv4 } from '../util/ipv4.js';
import type { EnclaveIndex } from './enclave-index.js';
import type { IpPool } from './ip-pool.js';
import type { Counters, Enclave, EnclaveTable } from './enclave.js';
import type { ListenChannels, PacketDevice } from './types.js';

export interface GatewayTimeouts {
  /** Interval between IpAssignment sends while waiting for the ACK. */
  ackIntervalMs: number;
  /** How many times IpAssignment is sent before giving up. */
  ackTries: number;
  /** Deadline for the second (send) session after the ACK. */
  sendSessionMs: number;
  /** Idle timeout of an established enclave (no packet from it). */
  idleMs: number;
}

export const DEFAULT_TIMEOUTS: GatewayTimeouts = {
  ackIntervalMs: 1000,
  ackTries: 3,
  sendSessionMs: 5000,
  idleMs: 120_000,
};

export interface GatewayOptions {
  port: number;
  listen: ListenChannels;
  attestation: AttestationPolicy;
  index: EnclaveIndex;
  device: PacketDevice;
  enforcer?: Enforcer;
  /** The caller runs enforcer.start()/stop() itself (e.g. to fail fast before creating devices). */
  enforcerStarted?: boolean;
  /**
   * Let the DTLS layer write the enclave's valid packets straight into the device (no JS per
   * packet); packets it does not forward (spoofed, malformed, too large) still reach the
   * gateway's checks. Default true when both sides support it.
   */
  nativeForward?: boolean;
  mtu?: number;
  /** Port shadowing (seng serve -s): awaited on every session end, before the IP is released. */
  shadowHooks?: ShadowHooks;
  timeouts?: Partial<GatewayTimeouts>;
  logger?: Logger;
  /** Metrics and the lease audit (src/audit/): told of admissions, rejections, session ends. */
  observer?: GatewayObserver;
  /**
   * A shared enclave registry (src/fleet, seng serve --registry): every IP is claimed there
   * before it is assigned, so gateways of a fleet never hand out the same one. Without it
   * the local pool alone decides.
   */
  leases?: LeaseAuthority;
}

/** Who the lease of a claimed IP is for. */
export interface LeaseRequest {
  sessionId: string;
  app: string | null;
  /** Hex. */
  mrEnclave: string;
  mrSigner: string;
  /** The untrusted host (dotted quad). */
  hostIp: string;
  categories: string[];
}

export type LeaseClaimResult =
  { ok: true; ip: Ipv4 } | { ok: false; check: 'subnet-full' | 'registry'; reason: string };

/** Decides which enclave IPs a gateway may assign (implemented by src/fleet/gateway-leases.ts). */
export interface LeaseAuthority {
  /** Takes an IP of `pool` for the session, if the registry agrees; never throws. */
  claim(pool: IpPool, req: LeaseRequest): Promise<LeaseClaimResult>;
  /**
   * The session ended: its lease ends. Returns at once; the IP goes back to `pool` once the
   * registry has let go of it.
   */
  release(pool: IpPool, ip: Ipv4, sessionId: string, reason: string): void;
}

/** A refused handshake: what the gateway knew of the peer when it said no. */
export interface Rejection {
  /** The session id the attempt was given at its first handshake. */
  sessionId: string;
  /** The bounded name of the failed check (allowlist, host-subnet, certificate, …). */
  check: string;
  reason: string;
  hostIp: string;
  client: string;
  mrEnclave?: string;
  mrSigner?: string;
  app?: string | null;
}

/**
 * Hooks for observability. Called once per admission, rejection, session end and enforcement
 * operation — never per packet — and must not throw or block (they run on the admission path).
 */
export interface GatewayObserver {
  rejected?(r: Rejection): void;
  /** The enclave became active `setupMs` after its first handshake was verified. */
  admitted?(e: Enclave, setupMs: number): void;
  /** The session ended; `wasActive` false for a setup that never completed. */
  ended?(e: Enclave, reason: string, wasActive: boolean): void;
  /** One firewall-backend operation and how long it took. */
  enforcement?(op: EnforcementOp, ms: number, ok: boolean): void;
}

export type EnforcementOp = 'join' | 'leave' | 'update';

/** Gateway-wide counters (`seng status`). */
export interface GatewayStats {
  admitted: number;
  rejected: number;
  ended: number;
  quarantined: number;
  /** Data-path drops by reason (SPEC §1.4; see classifyEnclavePacket in src/tunnel/packet.ts). */
  oversize: number;
  malformed: number;
  spoofed: number;
  unknownDestination: number;
  /** With TUN offload on the native data path (docs/dtls.md): what the offloads did. */
  offload?: OffloadStats;
}

/** TUN offload counters: TSO super-packets read and split, GSO frames written. */
export interface OffloadStats {
  /** Device → enclaves: TSO super-packets read and the segments (one record each) cut from them. */
  tsoFramesRead: number;
  tsoSegments: number;
  /** Enclaves → device: write(2)s, those that were GSO frames, and the packets they carried. */
  framesWritten: number;
  gsoFramesWritten: number;
  packetsWritten: number;
}

export interface GatewayContext {
  readonly opts: GatewayOptions;
  readonly log: Logger;
  readonly timeouts: GatewayTimeouts;
  readonly mtu: number;
  readonly stats: GatewayStats;
  readonly table: EnclaveTable;
  /** Traffic of the sessions that ended (so gateway-wide counters never go backwards). */
  readonly endedTraffic: Counters;
  /** Passing attestations by certificate hash (cleared on reload). */
  readonly attestations: AttestationCache;
  /** True once stop() began: no new admissions. */
  stopping: boolean;
}
