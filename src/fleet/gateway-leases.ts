/**
 * A gateway's side of the enclave registry (docs/fleet.md): IP claims for admission, lease
 * releases from teardown, the heartbeat, and reclaiming the leases of lost gateways.
 *
 * - claim: the local IpPool proposes next-fit candidates; the database decides
 *   (INSERT … ON CONFLICT DO NOTHING). An IP another gateway holds is kept marked as used
 *   locally ("foreign"); after a few conflicts, or when the pool looks full, the subnet's
 *   taken IPs are read in one query instead of being discovered one by one.
 * - release: queued and written in batches off the session's path; the IP returns to the
 *   local pool only once the registry has let go of it, so it is never handed out while the
 *   database still says it is taken.
 * - heartbeat every TTL/3; admissions are refused while the last successful contact is older
 *   than the TTL (other gateways may have reclaimed our leases by then). When the registry
 *   counts fewer leases for us than we hold, ours were reclaimed while we were cut off: we
 *   claim them again, and end the sessions whose IP went to someone else (onLeaseLost).
 * - The registry being unreachable never throws into the gateway: admissions are refused
 *   with a clear reason, established sessions keep forwarding, and contact is retried with
 *   backoff.
 */
import { backoffDelay, isConnectionError, redactUrl } from '../pg/index.js';
import { errorMessage } from '../util/errors.js';
import { formatIpv4, hostCount, type Ipv4 } from '../util/ipv4.js';
import type { Logger } from '../util/log.js';
import type { IpPool } from '../gateway/ip-pool.js';
import type { LeaseAuthority, LeaseClaimResult, LeaseRequest } from '../gateway/context.js';
import { Registry, type LeaseClaim, type ReleaseItem } from './registry.js';

export const DEFAULT_LEASE_TTL_MS = 30_000;
/** Conflicts within one claim before the subnet's taken IPs are read in one query. */
const CONFLICTS_BEFORE_REFRESH = 4;
/** How long a graceful stop waits for the registry before leaving the rest to the TTL. */
const STOP_TIMEOUT_MS = 5_000;
/** Session ends gathered into one release statement (ms). */
const RELEASE_GATHER_MS = 20;
/**
 * Claim statements start at most this often (ms): the claims that arrive meanwhile go in the
 * next one. A claim after a quiet spell is sent at once; under load each waits ≤ this long.
 */
const CLAIM_INTERVAL_MS = 20;
/** Most claims in one statement. */
const CLAIM_BATCH_MAX = 256;

export interface GatewayLeasesOptions {
  url: string;
  gatewayId: string;
  /** The gateway's listen address (shown by seng status --fleet). */
  address: string;
  leaseTtlMs?: number;
  log: Logger;
}

interface Held {
  claim: LeaseClaim;
  startedAt: Date;
}

interface PendingClaim {
  claim: LeaseClaim;
  /** Settled with whether the registry gave this session the IP. */
  resolve: (won: boolean) => void;
  reject: (err: unknown) => void;
}

interface Releasing {
  pool: IpPool;
  item: ReleaseItem;
}

export class GatewayLeases implements LeaseAuthority {
  readonly ttlMs: number;
  private registry: Registry | undefined;
  private connecting: Promise<void> | undefined;
  /** Date.now() of the last successful statement (heartbeat or claim). */
  private lastContactMs = 0;
  private failures = 0;
  private timer: NodeJS.Timeout | undefined;
  private releaseTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly held = new Map<Ipv4, Held>();
  private releasing: Releasing[] = [];
  private claims: PendingClaim[] = [];
  private claimTimer: NodeJS.Timeout | undefined;
  /** A claim statement is in flight (one at a time; the next gathers what came meanwhile). */
  private claiming = false;
  /** Date.now() when the last claim statement started. */
  private lastClaimMs = 0;
  private flushing: Promise<void> | undefined;
  private readonly foreign = new Map<IpPool, Set<Ipv4>>();
  private readonly log: Logger;
  /** Told of a live session whose IP another gateway holds now (end that session). */
  onLeaseLost: ((ip: Ipv4) => void) | undefined;

  constructor(private readonly opts: GatewayLeasesOptions) {
    this.ttlMs = opts.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS;
    this.log = opts.log.child({ component: 'registry', gatewayId: opts.gatewayId });
  }

  /** True while admissions may claim IPs (recent contact with the registry). */
  get available(): boolean {
    return this.registry !== undefined && Date.now() - this.lastContactMs < this.ttlMs;
  }

  /** Leases this gateway holds (for status and tests). */
  get heldCount(): number {
    return this.held.size;
  }

  /**
   * First contact (schema, registration, the previous run's leases ended), then the heartbeat.
   * An unreachable registry is logged and retried in the background: the gateway still starts.
   */
  async start(): Promise<void> {
    await this.tick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.releaseTimer);
    this.releaseTimer = undefined;
    clearTimeout(this.claimTimer);
    this.claimTimer = undefined;
    // Admissions still waiting for a claim are refused (the gateway is stopping anyway).
    for (const c of this.claims.splice(0)) c.reject(new Error('the gateway is stopping'));
    const registry = this.registry;
    if (!registry) return;
    const done = (async () => {
      await this.flushReleases();
      const ended = await registry.unregisterGateway(this.opts.gatewayId);
      if (ended > 0)
        this.log.info(
          { event: 'leases-ended', count: ended },
          `${ended} lease(s) still held at shutdown moved to history`,
        );
    })();
    let timeout: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        done,
        new Promise((_, reject) => {
          timeout = setTimeout(() => reject(new Error('timed out')), STOP_TIMEOUT_MS);
        }),
      ]);
    } catch (err) {
      this.log.warn(
        { event: 'registry-stop-failed', err: errorMessage(err) },
        `could not remove this gateway's leases from the registry (${errorMessage(err)}); other gateways reclaim them after the lease TTL`,
      );
    } finally {
      clearTimeout(timeout);
      this.registry = undefined;
      await registry.close();
    }
  }

  // ------------------------------------------------------------------ admission / teardown

  async claim(pool: IpPool, req: LeaseRequest): Promise<LeaseClaimResult> {
    const registry = this.registry;
    if (!registry || !this.available) return this.unreachable();
    let conflicts = 0;
    let refreshed = false;
    for (;;) {
      const ip = pool.allocate();
      if (ip === undefined) {
        if (!refreshed && (this.foreign.get(pool)?.size ?? 0) > 0) {
          refreshed = true;
          const ok = await this.refreshForeign(registry, pool);
          if (ok) continue;
          return this.unreachable();
        }
        return { ok: false, check: 'subnet-full', reason: `enclave subnet ${pool.label} is full` };
      }
      const claim: LeaseClaim = {
        ip,
        subnet: pool.label,
        sessionId: req.sessionId,
        gatewayId: this.opts.gatewayId,
        app: req.app,
        mrEnclave: req.mrEnclave,
        mrSigner: req.mrSigner,
        hostIp: req.hostIp,
        categories: req.categories,
      };
      let won: boolean;
      try {
        won = await this.queueClaim(claim);
      } catch (err) {
        pool.release(ip);
        return this.unreachable(err);
      }
      if (won) {
        this.held.set(ip, { claim, startedAt: new Date() });
        return { ok: true, ip };
      }
      // Another gateway holds it: keep it marked as used here until a refresh says otherwise.
      this.foreignOf(pool).add(ip);
      this.log.debug({ event: 'lease-conflict', enclaveIp: formatIpv4(ip) }, 'enclave IP held elsewhere');
      if (++conflicts === CONFLICTS_BEFORE_REFRESH && !refreshed) {
        refreshed = true;
        if (!(await this.refreshForeign(registry, pool))) return this.unreachable();
      }
    }
  }

  /**
   * Claims go to the registry in batches (one INSERT for all the claims gathered, see
   * CLAIM_INTERVAL_MS): each statement costs the gateway CPU (encoding, a socket write and
   * read, promise turns) whatever its size. Each claim still gets its own answer from the
   * database. Rejects when the statement failed.
   */
  private queueClaim(claim: LeaseClaim): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      if (this.stopped) return reject(new Error('the gateway is stopping'));
      this.claims.push({ claim, resolve, reject });
      this.scheduleClaims();
    });
  }

  private scheduleClaims(): void {
    if (this.claimTimer || this.claiming || this.claims.length === 0 || this.stopped) return;
    const wait =
      this.claims.length >= CLAIM_BATCH_MAX
        ? 0
        : Math.max(0, this.lastClaimMs + CLAIM_INTERVAL_MS - Date.now());
    // Even without waiting, the claims of this event-loop turn go together.
    this.claimTimer = setTimeout(() => {
      this.claimTimer = undefined;
      void this.writeClaims();
    }, wait);
  }

  private async writeClaims(): Promise<void> {
    const batch = this.claims.splice(0, CLAIM_BATCH_MAX);
    const registry = this.registry;
    this.claiming = true;
    this.lastClaimMs = Date.now();
    try {
      if (!registry) throw new Error('not connected');
      const lost = await registry.claimMany(batch.map((c) => c.claim));
      this.contact();
      for (const c of batch) c.resolve(!lost.has(c.claim.ip));
    } catch (err) {
      this.failed('claim', err);
      for (const c of batch) c.reject(err);
    } finally {
      this.claiming = false;
      this.scheduleClaims();
    }
  }

  release(pool: IpPool, ip: Ipv4, sessionId: string, reason: string): void {
    const held = this.held.get(ip);
    if (held?.claim.sessionId === sessionId) this.held.delete(ip);
    this.releasing.push({ pool, item: { ip, sessionId, reason } });
    // Batched: the releases of the next RELEASE_GATHER_MS go in one statement (a burst of
    // session ends costs one round trip). The IP stays taken meanwhile: it returns to the
    // pool only after the write.
    if (this.releasing.length === 1 && !this.releaseTimer) {
      this.releaseTimer = setTimeout(() => {
        this.releaseTimer = undefined;
        void this.flushReleases();
      }, RELEASE_GATHER_MS);
    }
  }

  /** Writes queued releases; on success their IPs return to the local pools. */
  flushReleases(): Promise<void> {
    if (!this.flushing) {
      this.flushing = this.writeReleases().finally(() => {
        this.flushing = undefined;
      });
    }
    return this.flushing;
  }

  private async writeReleases(): Promise<void> {
    while (this.releasing.length > 0 && this.registry) {
      const batch = this.releasing.slice(0, 1000);
      try {
        await this.registry.release(batch.map((r) => r.item));
      } catch (err) {
        this.failed('release', err);
        return; // kept queued; the next heartbeat retries
      }
      this.releasing.splice(0, batch.length);
      for (const r of batch) r.pool.release(r.item.ip);
    }
  }

  // ------------------------------------------------------------------ heartbeat

  private async tick(): Promise<void> {
    if (this.stopped) return;
    try {
      if (!this.registry) await this.connect();
      const registry = this.registry!;
      const counted = await registry.heartbeat({
        id: this.opts.gatewayId,
        address: this.opts.address,
        leaseTtlMs: this.ttlMs,
      });
      const wasDown = this.failures > 0;
      this.contact();
      if (wasDown)
        this.log.info({ event: 'registry-restored' }, 'enclave registry reachable again; admissions resume');
      // Releases still queued are counted by the registry too.
      if (counted < this.held.size) await this.reassert(registry);
      await this.flushReleases();
      const reclaimed = await registry.reclaimExpired();
      if (reclaimed.length > 0) {
        this.log.warn(
          {
            event: 'leases-reclaimed',
            count: reclaimed.length,
            gateways: [...new Set(reclaimed.map((l) => l.gatewayId))],
          },
          `reclaimed ${reclaimed.length} lease(s) of lost gateway(s)`,
        );
      }
    } catch (err) {
      this.failed('heartbeat', err);
    }
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    const interval = Math.max(50, Math.floor(this.ttlMs / 3));
    const delay =
      this.failures > 0 ? Math.min(interval, backoffDelay(this.failures, 200, interval)) : interval;
    this.timer = setTimeout(() => void this.tick(), delay);
    this.timer.unref();
  }

  private async connect(): Promise<void> {
    this.connecting ??= (async () => {
      const registry = await Registry.open(this.opts.url, {
        applicationName: 'seng-gateway',
        onIdleError: (err) => this.failed('idle', err),
      });
      try {
        const ended = await registry.registerGateway({
          id: this.opts.gatewayId,
          address: this.opts.address,
          leaseTtlMs: this.ttlMs,
        });
        if (ended > 0)
          this.log.warn(
            { event: 'leases-recovered', count: ended },
            `${ended} lease(s) of this gateway's previous run moved to history`,
          );
      } catch (err) {
        await registry.close();
        throw err;
      }
      this.registry = registry;
      this.log.info(
        { event: 'registry-connected', registry: redactUrl(this.opts.url), leaseTtlMs: this.ttlMs },
        'enclave registry connected',
      );
    })().finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  /** Claims again the leases the registry no longer holds for us; ends sessions whose IP is gone. */
  private async reassert(registry: Registry): Promise<void> {
    let lost = 0;
    for (const [ip, h] of [...this.held]) {
      if (await registry.holds(ip, h.claim.sessionId)) continue;
      if (await registry.reassert(h.claim, h.startedAt)) continue;
      lost++;
      this.held.delete(ip);
      this.log.error(
        { event: 'lease-lost', enclaveIp: formatIpv4(ip), sessionId: h.claim.sessionId },
        `the lease of ${formatIpv4(ip)} was reclaimed and the IP is held by another session: ending this one`,
      );
      this.onLeaseLost?.(ip);
    }
    this.log.warn(
      { event: 'leases-reasserted', lost },
      'leases of this gateway had been reclaimed while it was cut off; claimed them again',
    );
  }

  /** Re-reads which IPs of the pool's subnet other sessions hold; false on a connection error. */
  private async refreshForeign(registry: Registry, pool: IpPool): Promise<boolean> {
    const first = (pool.cidr.network + 1) >>> 0;
    const last = (pool.cidr.network + hostCount(pool.cidr.prefix)) >>> 0;
    let taken: { ip: Ipv4; sessionId: string }[];
    try {
      taken = await registry.takenBetween(first, last);
    } catch (err) {
      this.failed('refresh', err);
      return false;
    }
    this.contact();
    const foreign = this.foreignOf(pool);
    for (const ip of foreign) pool.release(ip);
    foreign.clear();
    const releasing = new Set(this.releasing.map((r) => r.item.ip));
    for (const t of taken) {
      if (this.held.has(t.ip) || releasing.has(t.ip)) continue;
      if (pool.reserve(t.ip)) foreign.add(t.ip);
    }
    return true;
  }

  private foreignOf(pool: IpPool): Set<Ipv4> {
    let s = this.foreign.get(pool);
    if (!s) this.foreign.set(pool, (s = new Set()));
    return s;
  }

  private contact(): void {
    this.lastContactMs = Date.now();
    this.failures = 0;
  }

  private failed(op: string, err: unknown): void {
    this.failures++;
    // A lost connection: refuse admissions at once instead of letting each one time out.
    if (isConnectionError(err)) this.lastContactMs = 0;
    // The first failure of a run of failures is an error; the rest are quieter.
    const level = this.failures === 1 ? 'error' : 'debug';
    this.log[level](
      {
        event: 'registry-unreachable',
        op,
        err: errorMessage(err),
        connection: isConnectionError(err),
        attempt: this.failures,
      },
      `enclave registry ${op} failed: ${errorMessage(err)} (new admissions are refused while it is unreachable; retrying)`,
    );
  }

  private unreachable(err?: unknown): LeaseClaimResult {
    return {
      ok: false,
      check: 'registry',
      reason:
        'the enclave registry is unreachable, so a unique enclave IP cannot be guaranteed' +
        (err === undefined ? '' : ` (${errorMessage(err)})`),
    };
  }
}
