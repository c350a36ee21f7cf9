/**
 * The SENG gateway's session logic (SPEC §1.2, §1.4): two DTLS listeners (P receives
 * enclave packets, P+1 sends packets to the enclave), attestation and admission in the
 * first handshake, IpAssignment/IpAssignACK, the second session bound to the first by
 * client IP and identical quote and key, and packet forwarding between the sessions
 * and the TUN device with anti-spoofing. Every step has a deadline; whatever ends a
 * session frees everything it held, in the order enforcement needs (leave the firewall,
 * purge conntrack, then release the IP).
 */
import { EventEmitter } from 'node:events';
import {
  parseRaTlsCertificate,
  verifyEvidence,
  keyBindingHash,
  quoteFingerprint,
  type AttestationPolicy,
  type Evidence,
} from '../attestation/index.js';
import type { EnclaveRegistration, Enforcer } from '../enforce/types.js';
import { decodeIpAssignAck, encodeIpAssignment } from '../proto/messages.js';
import { errorMessage } from '../util/errors.js';
import { formatIpv4, parseIpv4, toWire, type Ipv4 } from '../util/ipv4.js';
import { silentLogger, type Logger } from '../util/log.js';
import type { EnclaveIndex } from './enclave-index.js';
import type { IpPool } from './ip-pool.js';
import type {
  DeviceDispatch,
  ListenTunnel,
  PacketDevice,
  PeerVerdict,
  TunnelListener,
  TunnelSession,
} from './types.js';

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
  listen: ListenTunnel;
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
  timeouts?: Partial<GatewayTimeouts>;
  logger?: Logger;
}

type EnclaveState = 'assigning' | 'awaiting-send' | 'joining' | 'active' | 'closing';

interface Counters {
  packetsIn: number;
  bytesIn: number;
  packetsOut: number;
  bytesOut: number;
  spoofed: number;
  malformed: number;
}

interface Enclave {
  state: EnclaveState;
  ip: Ipv4;
  pool: IpPool;
  clientIp: Ipv4;
  clientAddress: string;
  clientPort: number;
  evidence: Evidence;
  /** DER of the receive tunnel's client certificate. */
  certDer: Buffer;
  fingerprint: string;
  keyHash: string;
  appName: string | undefined;
  categories: string[];
  recv: TunnelSession;
  send: TunnelSession | undefined;
  since: Date;
  counters: Counters;
  timer: NodeJS.Timeout | undefined;
  joined: boolean;
  /** The enforcer join in flight, awaited by teardown so it can be undone in order. */
  joining: Promise<void> | undefined;
  lastSpoofLog: number;
  ended: Promise<void> | undefined;
}

/** What the first handshake's verification hands to the session handler. */
interface RecvContext {
  kind: 'recv';
  certDer: Buffer;
  evidence: Evidence;
  pool: IpPool;
  appName: string | undefined;
  categories: string[];
}

interface SendContext {
  kind: 'send';
  enclave: Enclave;
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
  packetsIn: number;
  bytesIn: number;
  packetsOut: number;
  bytesOut: number;
  spoofedDropped: number;
}

const MIN_IPV4_HEADER = 20;

export class Gateway extends EventEmitter {
  private readonly opts: GatewayOptions;
  private readonly log: Logger;
  private readonly timeouts: GatewayTimeouts;
  private readonly mtu: number;
  private readonly enclaves = new Set<Enclave>();
  /** Established enclaves by IP: the TUN → enclave dispatch table (O(1)). */
  private readonly routes = new Map<Ipv4, Enclave>();
  /** The native device → enclave path, when the send listener offers one. */
  private dispatch: DeviceDispatch | undefined;
  /** Enclaves whose send tunnel may now be opened, by client address (second-handshake lookup). */
  private readonly awaiting = new Map<string, Set<Enclave>>();
  private recvListener: TunnelListener | undefined;
  private sendListener: TunnelListener | undefined;
  private stopping = false;
  private readonly counts = { admitted: 0, rejected: 0, ended: 0, unroutable: 0, quarantined: 0 };

  /** Gateway-wide counters; `unroutable` includes what the native device path dropped. */
  get stats(): {
    admitted: number;
    rejected: number;
    ended: number;
    unroutable: number;
    quarantined: number;
  } {
    const native = this.dispatch?.stats().unknownDestination ?? 0;
    return { ...this.counts, unroutable: this.counts.unroutable + native };
  }

  constructor(opts: GatewayOptions) {
    super();
    this.opts = opts;
    this.log = opts.logger ?? silentLogger;
    this.timeouts = { ...DEFAULT_TIMEOUTS, ...opts.timeouts };
    this.mtu = opts.mtu ?? 1432;
  }

  async start(): Promise<void> {
    if (!this.opts.enforcerStarted) await this.opts.enforcer?.start();
    this.recvListener = await this.opts.listen(this.opts.port, (chain, peer) => this.verifyRecv(chain, peer));
    try {
      this.sendListener = await this.opts.listen(this.opts.port + 1, (chain, peer) =>
        this.verifySend(chain, peer),
      );
    } catch (err) {
      await this.recvListener.close();
      throw err;
    }
    this.recvListener.on('session', (s: TunnelSession) => this.onRecvSession(s));
    this.sendListener.on('session', (s: TunnelSession) => this.onSendSession(s));
    // Device → enclaves natively when the send listener can (no JS per packet); else read in JS.
    const fd = this.opts.device.fd;
    if ((this.opts.nativeForward ?? true) && fd !== undefined && fd >= 0)
      this.dispatch = this.sendListener.dispatchFromTun?.(fd, this.mtu);
    if (!this.dispatch) this.opts.device.onPackets((packets) => this.fromDevice(packets));
  }

  /** Graceful shutdown: end every session (releasing IPs and firewall state), then stop the backend. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    await Promise.all([...this.enclaves].map((e) => this.end(e, 'server-shutdown')));
    await Promise.all([this.recvListener?.close(), this.sendListener?.close()]);
    // Whoever started the backend stops it (after the device is gone, in serve.ts).
    if (!this.opts.enforcerStarted) await this.opts.enforcer?.stop();
  }

  // ------------------------------------------------------------------ handshake 1 (port P)

  private async verifyRecv(chain: Buffer[], peer: { address: string; port: number }): Promise<PeerVerdict> {
    const client = `${peer.address}:${peer.port}`;
    const reject = (check: string, reason: string): PeerVerdict => {
      this.counts.rejected++;
      this.log.warn({ event: 'rejected', client, check, reason }, `rejected ${client}: ${reason}`);
      return { accept: false, reason };
    };
    if (this.stopping) return reject('shutdown', 'the gateway is shutting down');
    const leaf = chain[0];
    if (!leaf) return reject('certificate', 'no client certificate');
    let evidence: Evidence;
    try {
      evidence = parseRaTlsCertificate(leaf);
    } catch (err) {
      return reject('certificate', `not an RA-TLS certificate: ${errorMessage(err)}`);
    }
    const result = verifyEvidence(evidence, this.opts.attestation);
    if (!result.ok) {
      const details = result.checks
        .filter((c) => c.required && !c.ok)
        .map((c) => `${c.name}: ${c.detail}`)
        .join('; ');
      return reject(result.failed.join(','), `attestation failed (${details})`);
    }
    const admission = this.opts.index.admit(evidence.mrEnclave, evidence.mrSigner, parseIpv4(peer.address));
    if (!admission.ok) return reject(admission.check, admission.reason);
    const context: RecvContext = {
      kind: 'recv',
      certDer: Buffer.from(leaf),
      evidence,
      pool: admission.pool,
      appName: admission.appName,
      categories: admission.categories,
    };
    return { accept: true, context };
  }

  private onRecvSession(session: TunnelSession): void {
    const ctx = session.verifyContext as RecvContext | undefined;
    if (!ctx || ctx.kind !== 'recv' || this.stopping) {
      session.close('not admitted');
      return;
    }
    const ip = ctx.pool.allocate();
    const client = `${session.remoteAddress}:${session.remotePort}`;
    if (ip === undefined) {
      this.counts.rejected++;
      this.log.warn(
        { event: 'rejected', client, check: 'subnet-full', subnet: ctx.pool.label },
        `rejected ${client}: enclave subnet ${ctx.pool.label} is full`,
      );
      session.close('enclave subnet full');
      return;
    }
    const e: Enclave = {
      state: 'assigning',
      ip,
      pool: ctx.pool,
      clientIp: parseIpv4(session.remoteAddress),
      clientAddress: session.remoteAddress,
      clientPort: session.remotePort,
      evidence: ctx.evidence,
      certDer: ctx.certDer,
      fingerprint: quoteFingerprint(ctx.evidence),
      keyHash: keyBindingHash(ctx.evidence.certificate).toString('hex'),
      appName: ctx.appName,
      categories: ctx.categories,
      recv: session,
      send: undefined,
      since: new Date(),
      counters: { packetsIn: 0, bytesIn: 0, packetsOut: 0, bytesOut: 0, spoofed: 0, malformed: 0 },
      timer: undefined,
      joined: false,
      joining: undefined,
      lastSpoofLog: 0,
      ended: undefined,
    };
    this.enclaves.add(e);
    session.on('message', (record: Buffer) => this.fromEnclave(e, record));
    session.on('close', (reason: string) => void this.end(e, `receive tunnel closed: ${reason}`));
    this.sendAssignment(e, 1);
  }

  private sendAssignment(e: Enclave, attempt: number): void {
    if (e.state !== 'assigning') return;
    if (attempt > this.timeouts.ackTries) {
      void this.end(e, `no IpAssignACK after ${this.timeouts.ackTries} IpAssignment(s)`);
      return;
    }
    const gw = e.pool.gateway;
    e.recv.send(
      encodeIpAssignment({ ip: toWire(e.ip), netmask: toWire(e.pool.cidr.mask), gwIp: toWire(gw) }),
    );
    e.timer = setTimeout(() => this.sendAssignment(e, attempt + 1), this.timeouts.ackIntervalMs);
  }

  private onAck(e: Enclave, record: Buffer): void {
    let echoed: number;
    try {
      echoed = decodeIpAssignAck(record);
    } catch (err) {
      void this.end(e, errorMessage(err));
      return;
    }
    if (echoed !== toWire(e.ip)) {
      void this.end(e, `IpAssignACK echoed ${formatIpv4(toWire(echoed))} instead of ${formatIpv4(e.ip)}`);
      return;
    }
    clearTimeout(e.timer);
    e.state = 'awaiting-send';
    this.setAwaiting(e, true);
    e.timer = setTimeout(
      () => void this.end(e, `no send-tunnel handshake within ${this.timeouts.sendSessionMs} ms`),
      this.timeouts.sendSessionMs,
    );
  }

  // ---------------------------------------------------------------- handshake 2 (port P+1)

  private async verifySend(chain: Buffer[], peer: { address: string; port: number }): Promise<PeerVerdict> {
    const client = `${peer.address}:${peer.port}`;
    const reject = (reason: string): PeerVerdict => {
      this.counts.rejected++;
      this.log.warn(
        { event: 'rejected', client, check: 'send-tunnel', reason },
        `rejected send tunnel from ${client}: ${reason}`,
      );
      return { accept: false, reason };
    };
    const leaf = chain[0];
    if (!leaf) return reject('no client certificate');
    const fromHost = [...(this.awaiting.get(peer.address) ?? [])];
    // SENG clients present the very certificate of their first session: equal bytes mean an
    // equal quote and key, with no second parse.
    let enclave = fromHost.find((e) => e.certDer.equals(leaf));
    if (!enclave) {
      let evidence: Evidence;
      try {
        evidence = parseRaTlsCertificate(leaf);
      } catch (err) {
        return reject(`not an RA-TLS certificate: ${errorMessage(err)}`);
      }
      const fingerprint = quoteFingerprint(evidence);
      const keyHash = keyBindingHash(evidence.certificate).toString('hex');
      const sameQuote = fromHost.filter((e) => e.fingerprint === fingerprint);
      if (sameQuote.length === 0) {
        const elsewhere = [...this.awaiting.values()]
          .flatMap((set) => [...set])
          .find((e) => e.fingerprint === fingerprint);
        return reject(
          elsewhere
            ? `the receive tunnel with this quote came from another IP (${elsewhere.clientAddress})`
            : 'no receive tunnel awaits a send tunnel with this quote',
        );
      }
      enclave = sameQuote.find((e) => e.keyHash === keyHash);
      if (!enclave) return reject("the certificate key differs from the receive tunnel's");
    }
    // Claim it now, so two concurrent handshakes cannot both bind to the same enclave.
    enclave.state = 'joining';
    this.setAwaiting(enclave, false);
    const context: SendContext = { kind: 'send', enclave };
    return { accept: true, context };
  }

  private onSendSession(session: TunnelSession): void {
    const ctx = session.verifyContext as SendContext | undefined;
    const e = ctx?.kind === 'send' ? ctx.enclave : undefined;
    if (!e || e.state !== 'joining' || e.send) {
      session.close('not admitted');
      return;
    }
    e.send = session;
    clearTimeout(e.timer);
    // The enclave never sends on its send tunnel; liveness is judged on the receive tunnel.
    session.setIdleTimeout(0);
    session.on('close', (reason: string) => void this.end(e, `send tunnel closed: ${reason}`));
    void this.join(e);
  }

  private async join(e: Enclave): Promise<void> {
    const reg = this.registration(e);
    let failure: unknown;
    e.joining = (async () => {
      try {
        await this.opts.enforcer?.join(reg);
        e.joined = this.opts.enforcer !== undefined;
      } catch (err) {
        failure = err;
      }
    })();
    await e.joining;
    if (failure !== undefined) {
      this.log.error(
        { event: 'enforcement-failed', enclaveIp: formatIpv4(e.ip), err: errorMessage(failure) },
        'firewall registration failed',
      );
      await this.end(e, `firewall registration failed: ${errorMessage(failure)}`);
      return;
    }
    // Ended while joining: finish() waited for the join and undoes it.
    if (e.state !== 'joining') return;
    e.state = 'active';
    e.recv.setIdleTimeout(this.timeouts.idleMs);
    const fd = this.opts.device.fd;
    if ((this.opts.nativeForward ?? true) && fd !== undefined && fd >= 0)
      e.recv.forwardTo?.(fd, e.ip, this.mtu);
    this.routes.set(e.ip, e);
    if (e.send) this.dispatch?.route(e.ip, e.send);
    this.counts.admitted++;
    this.log.info(
      {
        event: 'admitted',
        enclaveIp: formatIpv4(e.ip),
        app: e.appName ?? null,
        mrEnclave: e.evidence.mrEnclave.toString('hex'),
        mrSigner: e.evidence.mrSigner.toString('hex'),
        kind: e.evidence.kind,
        client: `${e.clientAddress}:${e.clientPort}`,
        categories: e.categories,
      },
      `admitted ${e.appName ?? e.evidence.mrEnclave.toString('hex').slice(0, 16)} from ${e.clientAddress} as ${formatIpv4(e.ip)}`,
    );
    this.emit('admitted', formatIpv4(e.ip));
  }

  // ------------------------------------------------------------------------- data path

  private fromEnclave(e: Enclave, record: Buffer): void {
    if (e.state === 'active') {
      this.forwardToDevice(e, record);
    } else if (e.state === 'assigning') {
      this.onAck(e, record);
    }
    // awaiting-send / joining: the client sends nothing meaningful before both tunnels exist.
  }

  private forwardToDevice(e: Enclave, packet: Buffer): void {
    const len = packet.length;
    if (len < MIN_IPV4_HEADER || packet[0]! >> 4 !== 4 || len > this.mtu || packet.readUInt16BE(2) !== len) {
      e.counters.malformed++;
      return;
    }
    if (packet.readUInt32BE(12) !== e.ip) {
      e.counters.spoofed++;
      const now = Date.now();
      if (now - e.lastSpoofLog >= 1000) {
        e.lastSpoofLog = now;
        this.log.warn(
          {
            event: 'spoofed',
            enclaveIp: formatIpv4(e.ip),
            source: formatIpv4(packet.readUInt32BE(12)),
            dropped: e.counters.spoofed,
          },
          `dropped packet with spoofed source ${formatIpv4(packet.readUInt32BE(12))} from enclave ${formatIpv4(e.ip)}`,
        );
      }
      return;
    }
    if (this.opts.device.write(packet)) {
      e.counters.packetsIn++;
      e.counters.bytesIn += len;
    }
  }

  private fromDevice(packets: Buffer[]): void {
    for (const packet of packets) {
      if (packet.length < MIN_IPV4_HEADER) continue;
      const e = this.routes.get(packet.readUInt32BE(16));
      if (e === undefined || e.send === undefined) {
        this.counts.unroutable++;
        continue;
      }
      if (packet.length > this.mtu) continue;
      if (e.send.send(packet)) {
        e.counters.packetsOut++;
        e.counters.bytesOut += packet.length;
      }
    }
  }

  // ------------------------------------------------------------------------- teardown

  private setAwaiting(e: Enclave, awaiting: boolean): void {
    let set = this.awaiting.get(e.clientAddress);
    if (awaiting) {
      if (!set) this.awaiting.set(e.clientAddress, (set = new Set()));
      set.add(e);
    } else if (set?.delete(e) && set.size === 0) {
      this.awaiting.delete(e.clientAddress);
    }
  }

  /** JS-path counters plus what the DTLS layer forwarded natively (both directions). */
  private counters(e: Enclave): Counters {
    const f = e.recv.forwardStats?.();
    const d = this.routes.get(e.ip) === e ? this.dispatch?.routeStats().get(e.ip) : undefined;
    return {
      ...e.counters,
      packetsIn: e.counters.packetsIn + (f?.packets ?? 0),
      bytesIn: e.counters.bytesIn + (f?.bytes ?? 0),
      packetsOut: e.counters.packetsOut + (d?.packets ?? 0),
      bytesOut: e.counters.bytesOut + (d?.bytes ?? 0),
    };
  }

  private registration(e: Enclave): EnclaveRegistration {
    return {
      enclaveIp: e.ip,
      mrEnclave: e.evidence.mrEnclave,
      mrSigner: e.evidence.mrSigner,
      hostIp: e.clientIp,
      ...(e.appName === undefined ? {} : { appName: e.appName }),
      categories: e.categories,
    };
  }

  /** Removes the enclave from the firewall; false if the backend could not confirm it. */
  private async leave(e: Enclave): Promise<boolean> {
    try {
      await this.opts.enforcer?.leave(this.registration(e));
      return true;
    } catch (err) {
      this.log.error(
        { event: 'enforcement-failed', enclaveIp: formatIpv4(e.ip), err: errorMessage(err) },
        'firewall unregistration failed',
      );
      return false;
    } finally {
      e.joined = false;
    }
  }

  /** Ends an enclave's session for `reason`; idempotent. Resolves when its IP is free again. */
  end(e: Enclave, reason: string): Promise<void> {
    if (e.ended) return e.ended;
    // Assign before finishing: closing a session emits 'close' synchronously, which re-enters here.
    let done!: () => void;
    e.ended = new Promise<void>((resolve) => (done = resolve));
    void this.finish(e, reason).finally(done);
    return e.ended;
  }

  private async finish(e: Enclave, reason: string): Promise<void> {
    const wasActive = e.state === 'active';
    e.state = 'closing';
    this.setAwaiting(e, false);
    clearTimeout(e.timer);
    if (this.routes.get(e.ip) === e) {
      this.routes.delete(e.ip);
      const out = this.dispatch?.unroute(e.ip);
      if (out) {
        e.counters.packetsOut += out.packets;
        e.counters.bytesOut += out.bytes;
      }
    }
    e.recv.close(reason);
    e.send?.close(reason);
    // Order matters: leave the firewall (unregister + conntrack purge) before the IP can be reused.
    if (e.joining) await e.joining;
    const left = e.joined ? await this.leave(e) : true;
    if (left) {
      e.pool.release(e.ip);
    } else {
      // The firewall may still attribute this IP to the old app: never hand it out again.
      this.counts.quarantined++;
      this.log.error(
        { event: 'ip-quarantined', enclaveIp: formatIpv4(e.ip) },
        `enclave IP ${formatIpv4(e.ip)} is quarantined until restart: the firewall could not confirm its removal`,
      );
    }
    this.enclaves.delete(e);
    this.counts.ended++;
    const c = this.counters(e);
    this.log.info(
      {
        event: wasActive ? 'session-end' : 'setup-failed',
        enclaveIp: formatIpv4(e.ip),
        app: e.appName ?? null,
        client: `${e.clientAddress}:${e.clientPort}`,
        reason,
        durationMs: Date.now() - e.since.getTime(),
        ...c,
      },
      `${wasActive ? 'session ended' : 'setup failed'} for ${formatIpv4(e.ip)}: ${reason}`,
    );
    this.emit('ended', formatIpv4(e.ip), reason);
  }

  // ------------------------------------------------------------------------- operations

  status(): EnclaveStatus[] {
    return [...this.enclaves].map((e) => this.describe(e));
  }

  private describe(e: Enclave): EnclaveStatus {
    const c = this.counters(e);
    return {
      enclaveIp: formatIpv4(e.ip),
      state: e.state,
      app: e.appName ?? null,
      mrEnclave: e.evidence.mrEnclave.toString('hex'),
      mrSigner: e.evidence.mrSigner.toString('hex'),
      categories: e.categories,
      client: `${e.clientAddress}:${e.clientPort}`,
      since: e.since.toISOString(),
      packetsIn: c.packetsIn,
      bytesIn: c.bytesIn,
      packetsOut: c.packetsOut,
      bytesOut: c.bytesOut,
      spoofedDropped: c.spoofed,
    };
  }

  /** Ends the session of the enclave with this IP; false if there is none. */
  async kick(ip: Ipv4, reason = 'kicked by admin'): Promise<boolean> {
    const e = [...this.enclaves].find((x) => x.ip === ip && x.state !== 'closing');
    if (!e) return false;
    await this.end(e, reason);
    return true;
  }

  /** Re-reads the database; pushes category changes of active apps to the enforcer. */
  async reloadIndex(force = false): Promise<number> {
    const changed = this.opts.index.reload(force);
    for (const change of changed) {
      const active = [...this.enclaves].filter(
        (e) => e.joined && e.evidence.mrEnclave.equals(change.mrEnclave),
      );
      for (const e of active) e.categories = change.categories;
      if (active.length === 0) continue;
      try {
        await this.opts.enforcer?.updateCategories(
          change.mrEnclave,
          change.categories,
          active.map((e) => this.registration(e)),
        );
        this.log.info(
          {
            event: 'categories-updated',
            mrEnclave: change.mrEnclave.toString('hex'),
            categories: change.categories,
            enclaves: active.length,
          },
          'categories of an active app changed',
        );
      } catch (err) {
        this.log.error({ event: 'enforcement-failed', err: errorMessage(err) }, 'category update failed');
      }
    }
    return changed.length;
  }
}
