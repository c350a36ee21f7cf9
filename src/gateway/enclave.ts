/**
 * One enclave's session as the gateway tracks it (both DTLS channels, its IP, attested
 * identity, counters), and the table that finds enclaves by IP (the TUN → enclave dispatch)
 * and by client address (the second-handshake lookup).
 */
import type { AttestedIdentity } from '../attestation/index.js';
import type { EnclaveRegistration } from '../enforce/types.js';
import { formatIpv4, type Ipv4 } from '../util/ipv4.js';
import type { IpPool } from './ip-pool.js';
import type { DispatchRouteStats, EnclaveChannel } from './types.js';

/**
 * assigning: receive channel up, IpAssignment sent; awaiting-send: ACK received, waiting for
 * the send channel; joining: send channel accepted, firewall registration in flight; active:
 * forwarding; closing: being torn down.
 */
export type EnclaveState = 'assigning' | 'awaiting-send' | 'joining' | 'active' | 'closing';

export interface Counters {
  packetsIn: number;
  bytesIn: number;
  packetsOut: number;
  bytesOut: number;
  /** Drops by reason (SPEC §1.4). */
  spoofed: number;
  malformed: number;
  oversize: number;
}

export interface Enclave {
  /** Random 64-bit hex id, given at the first handshake; names the session in logs and leases. */
  sessionId: string;
  /** When the first handshake was verified (ms since the epoch): start of the setup latency. */
  setupStartMs: number;
  state: EnclaveState;
  ip: Ipv4;
  pool: IpPool;
  clientIp: Ipv4;
  clientAddress: string;
  clientPort: number;
  /**
   * What attestation established (measurements, quote fingerprint, key hash, SHA-256 of the
   * certificate DER): the parsed evidence and the DER itself are not kept per enclave.
   */
  identity: AttestedIdentity;
  appName: string | undefined;
  categories: string[];
  recv: EnclaveChannel;
  send: EnclaveChannel | undefined;
  since: Date;
  counters: Counters;
  timer: NodeJS.Timeout | undefined;
  joined: boolean;
  /** The enforcer join in flight, awaited by teardown so it can be undone in order. */
  joining: Promise<void> | undefined;
  lastSpoofLog: number;
  ended: Promise<void> | undefined;
  /** While the native dispatch routes to this enclave: its live counters (forwarding.ts). */
  nativeOut?: (() => DispatchRouteStats | undefined) | undefined;
  /**
   * Last seen, derived from counter changes at status calls / scrapes (see observeActivity);
   * absent until a change was first noticed (last seen = `since`), so an idle enclave holds none.
   */
  activity?: { packetsIn: number; lastSeen: Date } | undefined;
}

export interface EnclaveStatus {
  enclaveIp: string;
  state: EnclaveState;
  app: string | null;
  mrEnclave: string;
  mrSigner: string;
  categories: string[];
  client: string;
  since: string;
  sessionId: string;
  /** Seconds since the session began. */
  ageSeconds: number;
  /**
   * When a packet from the enclave was last noticed (at the resolution of status calls and
   * metrics scrapes); the session start if none was seen yet.
   */
  lastSeen: string;
  packetsIn: number;
  bytesIn: number;
  packetsOut: number;
  bytesOut: number;
  spoofedDropped: number;
  malformedDropped: number;
  oversizeDropped: number;
}

export function newCounters(): Counters {
  return { packetsIn: 0, bytesIn: 0, packetsOut: 0, bytesOut: 0, spoofed: 0, malformed: 0, oversize: 0 };
}

/** JS-path counters plus what the DTLS layer forwarded natively, in both directions. */
export function totalCounters(e: Enclave): Counters {
  const f = e.recv.forwardStats?.();
  const d = e.nativeOut?.();
  if (!f && !d) return e.counters;
  return {
    ...e.counters,
    packetsIn: e.counters.packetsIn + (f?.packets ?? 0),
    bytesIn: e.counters.bytesIn + (f?.bytes ?? 0),
    packetsOut: e.counters.packetsOut + (d?.packets ?? 0),
    bytesOut: e.counters.bytesOut + (d?.bytes ?? 0),
    oversize: e.counters.oversize + (d?.oversize ?? 0),
  };
}

/**
 * Updates the enclave's "last seen" from its packet counter: the native forwarder counts
 * packets without telling JS, so a change of the counter since the previous look (a status
 * call or a metrics scrape) means the enclave sent something in between. Costs nothing per packet.
 */
export function observeActivity(e: Enclave, c: Counters = totalCounters(e), now = new Date()): void {
  if (c.packetsIn !== (e.activity?.packetsIn ?? 0)) e.activity = { packetsIn: c.packetsIn, lastSeen: now };
}

/** When a packet from the enclave was last noticed; the session start if none was yet. */
export function lastSeen(e: Enclave): Date {
  return e.activity?.lastSeen ?? e.since;
}

/** The identity of a session as every audit event names it. */
export function auditIdentity(e: Enclave): Record<string, string | null> {
  return {
    sessionId: e.sessionId,
    enclaveIp: formatIpv4(e.ip),
    hostIp: e.clientAddress,
    app: e.appName ?? null,
    mrEnclave: e.identity.mrEnclave.toString('hex'),
    mrSigner: e.identity.mrSigner.toString('hex'),
  };
}

/** The app's name, or the start of its MRENCLAVE when the database does not know it. */
export function appLabel(e: Enclave): string {
  return e.appName ?? e.identity.mrEnclave.toString('hex').slice(0, 16);
}

export function registration(e: Enclave): EnclaveRegistration {
  return {
    enclaveIp: e.ip,
    mrEnclave: e.identity.mrEnclave,
    mrSigner: e.identity.mrSigner,
    hostIp: e.clientIp,
    ...(e.appName === undefined ? {} : { appName: e.appName }),
    categories: e.categories,
  };
}

export function describeEnclave(e: Enclave, now = new Date()): EnclaveStatus {
  const c = totalCounters(e);
  observeActivity(e, c, now);
  return {
    enclaveIp: formatIpv4(e.ip),
    state: e.state,
    app: e.appName ?? null,
    mrEnclave: e.identity.mrEnclave.toString('hex'),
    mrSigner: e.identity.mrSigner.toString('hex'),
    categories: e.categories,
    client: `${e.clientAddress}:${e.clientPort}`,
    since: e.since.toISOString(),
    sessionId: e.sessionId,
    ageSeconds: Math.max(0, Math.round((now.getTime() - e.since.getTime()) / 1000)),
    lastSeen: lastSeen(e).toISOString(),
    packetsIn: c.packetsIn,
    bytesIn: c.bytesIn,
    packetsOut: c.packetsOut,
    bytesOut: c.bytesOut,
    spoofedDropped: c.spoofed,
    malformedDropped: c.malformed,
    oversizeDropped: c.oversize,
  };
}

export class EnclaveTable {
  /** Every enclave from its first handshake until its teardown finished. */
  readonly all = new Set<Enclave>();
  /** Established enclaves by IP: the TUN → enclave dispatch table (O(1)). */
  private readonly routes = new Map<Ipv4, Enclave>();
  /**
   * Enclaves whose receive channel is up and whose send channel is not yet (assigning or
   * awaiting-send), by client address: what a second handshake may bind to.
   */
  private readonly awaiting = new Map<string, Set<Enclave>>();

  /** Enclaves not being torn down. */
  live(): Enclave[] {
    return [...this.all].filter((e) => e.state !== 'closing');
  }

  route(e: Enclave): void {
    this.routes.set(e.ip, e);
  }

  unroute(e: Enclave): void {
    if (this.routes.get(e.ip) === e) this.routes.delete(e.ip);
  }

  /** The established enclave that owns this destination IP, if any. */
  byDestination(ip: Ipv4): Enclave | undefined {
    return this.routes.get(ip);
  }

  setAwaiting(e: Enclave, awaiting: boolean): void {
    let set = this.awaiting.get(e.clientAddress);
    if (awaiting) {
      if (!set) this.awaiting.set(e.clientAddress, (set = new Set()));
      set.add(e);
    } else if (set?.delete(e) && set.size === 0) {
      this.awaiting.delete(e.clientAddress);
    }
  }

  awaitingFrom(address: string): Enclave[] {
    return [...(this.awaiting.get(address) ?? [])];
  }

  awaitingAnywhere(): Enclave[] {
    return [...this.awaiting.values()].flatMap((set) => [...set]);
  }
}
