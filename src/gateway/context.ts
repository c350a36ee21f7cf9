/**
 * What the parts of the gateway share: its options, timeouts, global counters and the
 * table of enclaves. Gateway (gateway.ts) builds one GatewayContext and hands it to
 * admission.ts, forwarding.ts, teardown.ts and operations.ts.
 */
import type { AttestationCache, AttestationPolicy } from '../attestation/index.js';
import type { Enforcer } from '../enforce/types.js';
import type { ShadowHooks } from '../shadow/types.js';
import type { Logger } from '../util/log.js';
import type { EnclaveIndex } from './enclave-index.js';
import type { EnclaveTable } from './enclave.js';
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
}

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
}

export interface GatewayContext {
  readonly opts: GatewayOptions;
  readonly log: Logger;
  readonly timeouts: GatewayTimeouts;
  readonly mtu: number;
  readonly stats: GatewayStats;
  readonly table: EnclaveTable;
  /** Passing attestations by certificate hash (cleared on reload). */
  readonly attestations: AttestationCache;
  /** True once stop() began: no new admissions. */
  stopping: boolean;
}
