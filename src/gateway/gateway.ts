/**
 * The SENG gateway (SPEC §1.2, §1.4): the coordinator of one running gateway. It owns the
 * two DTLS listeners (P receives enclave packets, P+1 sends packets to the enclave) and wires
 * the parts together, each in its own file:
 *
 *   admission.ts   handshake 1/2, attestation, enclave index, IP assignment, firewall join
 *   forwarding.ts  the data path (enclave ⇄ TUN), packet checks, traffic counters
 *   teardown.ts    ending a session and freeing what it held, in order
 *   operations.ts  status, kick, reload (revocation and category changes)
 *   enclave.ts     the per-enclave record and the table of enclaves; context.ts the shared state
 */
import { EventEmitter } from 'node:events';
import { AttestationCache } from '../attestation/index.js';
import { formatIpv4, type Ipv4 } from '../util/ipv4.js';
import type { ShadowEnclave } from '../shadow/types.js';
import { silentLogger } from '../util/log.js';
import { Admission } from './admission.js';
import {
  DEFAULT_TIMEOUTS,
  type GatewayContext,
  type GatewayOptions,
  type GatewayStats,
  type GatewayTimeouts,
} from './context.js';
import {
  EnclaveTable,
  newCounters,
  observeActivity,
  totalCounters,
  type Counters,
  type EnclaveStatus,
} from './enclave.js';
import { Forwarding } from './forwarding.js';
import { Operations, type KickSelector, type ReloadResult } from './operations.js';
import { Teardown } from './teardown.js';
import type { ChannelListener, EnclaveChannel } from './types.js';

export {
  DEFAULT_TIMEOUTS,
  type GatewayObserver,
  type GatewayOptions,
  type GatewayStats,
  type GatewayTimeouts,
  type Rejection,
} from './context.js';
export type { Counters } from './enclave.js';
export type { EnclaveStatus, EnclaveState } from './enclave.js';
export type { KickSelector, ReloadResult } from './operations.js';

/** The app label of enclaves the database does not name (keeps metric labels bounded). */
export const UNREGISTERED_APP = '(unregistered)';

/** Emits 'admitted' (enclaveIp) and 'ended' (enclaveIp, reason). */
export class Gateway extends EventEmitter {
  /** JS-counted figures; `stats` adds what the native data path counted. */
  private readonly counts: GatewayStats = {
    admitted: 0,
    rejected: 0,
    ended: 0,
    quarantined: 0,
    oversize: 0,
    malformed: 0,
    spoofed: 0,
    unknownDestination: 0,
  };
  private readonly ctx: GatewayContext;
  private readonly admission: Admission;
  private readonly forwarding: Forwarding;
  private readonly teardown: Teardown;
  private readonly operations: Operations;
  private recvListener: ChannelListener | undefined;
  private sendListener: ChannelListener | undefined;

  constructor(opts: GatewayOptions) {
    super();
    this.ctx = {
      opts,
      log: opts.logger ?? silentLogger,
      timeouts: { ...DEFAULT_TIMEOUTS, ...opts.timeouts },
      mtu: opts.mtu ?? 1432,
      stats: this.counts,
      table: new EnclaveTable(),
      endedTraffic: newCounters(),
      attestations: new AttestationCache(),
      stopping: false,
    };
    this.forwarding = new Forwarding(this.ctx);
    this.teardown = new Teardown(
      this.ctx,
      (e, reason) => this.emit('ended', formatIpv4(e.ip), reason),
      (e) => this.forwarding.deactivate(e),
    );
    this.operations = new Operations(this.ctx, this.teardown);
    this.admission = new Admission(this.ctx, {
      fromEnclave: (e, record) => this.forwarding.fromEnclave(e, record),
      activate: (e) => this.forwarding.activate(e),
      end: (e, reason) => this.teardown.end(e, reason),
      admitted: (e) => this.emit('admitted', formatIpv4(e.ip)),
    });
  }

  /** Changes timeouts for sessions admitted from now on (SIGHUP with a config file). */
  setTimeouts(timeouts: Partial<GatewayTimeouts>): void {
    Object.assign(this.ctx.timeouts, timeouts);
  }

  async start(): Promise<void> {
    const { opts } = this.ctx;
    if (!opts.enforcerStarted) await opts.enforcer?.start();
    this.recvListener = await opts.listen(opts.port, (chain, peer) => this.admission.verifyRecv(chain, peer));
    try {
      this.sendListener = await opts.listen(opts.port + 1, (chain, peer) =>
        this.admission.verifySend(chain, peer),
      );
    } catch (err) {
      await this.recvListener.close();
      throw err;
    }
    this.recvListener.on('session', (c: EnclaveChannel) => this.admission.onRecvSession(c));
    this.sendListener.on('session', (c: EnclaveChannel) => this.admission.onSendSession(c));
    this.forwarding.attachDevice(this.sendListener);
  }

  /** Graceful shutdown: end every session (releasing IPs and firewall state), then stop the backend. */
  async stop(): Promise<void> {
    if (this.ctx.stopping) return;
    this.ctx.stopping = true;
    await Promise.all([...this.ctx.table.all].map((e) => this.teardown.end(e, 'server-shutdown')));
    this.forwarding.detachDevice();
    await Promise.all([this.recvListener?.close(), this.sendListener?.close()]);
    // Whoever started the backend stops it (after the device is gone, in serve.ts).
    if (!this.ctx.opts.enforcerStarted) await this.ctx.opts.enforcer?.stop();
  }

  /** Gateway-wide counters, the native data path's device-side drops included. */
  get stats(): GatewayStats {
    const n = this.forwarding.nativeDrops();
    const offload = this.forwarding.offloadStats();
    return {
      ...this.counts,
      malformed: this.counts.malformed + n.malformed,
      unknownDestination: this.counts.unknownDestination + n.unknownDestination,
      oversize: this.counts.oversize + n.oversize,
      ...(offload ? { offload } : {}),
    };
  }

  status(): EnclaveStatus[] {
    return this.operations.status();
  }

  /** Gateway-wide traffic and drops since start (ended sessions plus live ones). */
  traffic(): Counters {
    return this.operations.traffic();
  }

  /**
   * Active sessions per app label (app name, or the start of MRENCLAVE when the database does
   * not know it), for metrics; also refreshes every enclave's "last seen".
   */
  activeByApp(): Map<string, number> {
    const byApp = new Map<string, number>();
    const now = new Date();
    for (const e of this.ctx.table.all) {
      observeActivity(e, totalCounters(e), now);
      if (e.state !== 'active') continue;
      const app = e.appName ?? UNREGISTERED_APP;
      byApp.set(app, (byApp.get(app) ?? 0) + 1);
    }
    return byApp;
  }

  /** Ends the sessions the selector matches (by enclave IP, app, client host, or all). */
  kick(selector: KickSelector, reason?: string): Promise<EnclaveStatus[]> {
    return this.operations.kick(selector, reason);
  }

  /** The established enclave holding `ip`, as the ShadowServer sees it. */
  activeEnclave(ip: Ipv4): ShadowEnclave | undefined {
    const e = this.ctx.table.byDestination(ip);
    if (!e || e.state !== 'active') return undefined;
    return {
      enclaveIp: e.ip,
      hostIp: e.clientIp,
      mrEnclave: e.identity.mrEnclave,
      mrSigner: e.identity.mrSigner,
      appName: e.appName,
      gatewayIp: e.pool.gateway,
    };
  }

  /** Re-reads the database: ends revoked sessions, pushes category changes (see operations.ts). */
  reloadIndex(force = false): Promise<ReloadResult> {
    return this.operations.reload(force);
  }
}
