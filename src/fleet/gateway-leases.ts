/**
 * A gateway's side of the enclave registry (docs/fleet.md): IP claims for admission, lease
 * releases from teardown, the heartbeat, and reclaiming the leases of lost gateways.
 *
 * - claim: the local IpPool proposes next-fit candidates; the database decides
 *   (INSERT … ON CONFLICT DO NOTHING). An IP another gateway holds is kept marked as used
 *   locally ("foreign"); after a few conflicts, or when the pool looks full, the subnet's
 *   taken IPs are read in one query instead of being discovered one by one.
 * - release: queued off the session's path; the IP returns to the local pool only once the
 *   registry has let go of it, so it is never handed out while the database still says it is
 *   taken.
 * - claims and releases are written together in batches, one statement per write and one
 *   write in flight (scheduleWrite): a statement costs the gateway CPU whatever its size.
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
/** A session end waits at most this long (ms) for the write that carries it. */
const RELEASE_GATHER_MS = 20;
/**
 * Writes carrying claims start at most this often (ms): the claims that arrive meanwhile go
 * in the next one. A claim after a quiet spell is sent at once; under load each waits ≤ this.
 */
const CLAIM_INTERVAL_MS = 20;
/** Most claims in one statement. */
const CLAIM_BATCH_MAX = 256;
/** Most releases in one statement. */
const RELEASE_BATCH_MAX = 1000;

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
  private stopped = false;
  private readonly held = new Map<Ipv4, Held>();
  /** Claims and session ends waiting for the next write (see write()). */
  private claims: PendingClaim[] = [];
  private releasing: Releasing[] = [];
  /** Date.now() when the oldest queued release arrived. */
  private releasingSinceMs = 0;
  /** A failed write's releases wait for flushReleases() (the heartbeat) instead of a timer. */
  private releasesHeld = false;
  /** The write in flight (one at a time; the next gathers what came meanwhile) and its releases. */
  private writing: Promise<void> | undefined;
  private writingReleases: Releasing[] = [];
  private writeTimer: NodeJS.Timeout | undefined;
  /** Date.now() the pending writeTimer fires at. */
  private writeDueMs = 0;
  /** Date.now() when the last write carrying claims started. */
  private lastClaimWriteMs = 0;
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
    clearTimeout(this.writeTimer);
    this.writeTimer = undefined;
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
   * Queues a claim for the next write; settles with whether the registry gave the IP to this
   * session, or rejects when the write failed.
   */
  private queueClaim(claim: LeaseClaim): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      if (this.stopped) return reject(new Error('the gateway is stopping'));
      this.claims.push({ claim, resolve, reject });
      this.scheduleWrite();
    });
  }

  release(pool: IpPool, ip: Ipv4, sessionId: string, reason: string): void {
    const held = this.held.get(ip);
    if (held?.claim.sessionId === sessionId) this.held.delete(ip);
    if (this.releasing.length === 0) this.releasingSinceMs = Date.now();
    this.releasing.push({ pool, item: { ip, sessionId, reason } });
    // The IP stays taken meanwhile: it returns to the pool only after the write.
    this.scheduleWrite();
  }

  /**
   * Writes the queued releases now (and the claims waiting, in the same statement); on
   * success their IPs return to the local pools. A failure is logged, not thrown: they stay
   * queued for the next heartbeat.
   */
  async flushReleases(): Promise<void> {
    this.releasesHeld = false;
    for (;;) {
      while (this.writing) await this.writing;
      if (this.releasing.length === 0 || this.releasesHeld) return;
      clearTimeout(this.writeTimer);
      this.writeTimer = undefined;
      await this.write();
    }
  }

  /**
   * Claims and session ends go to the registry together, in batches: one statement per write
   * (claimAndRelease), as every statement costs the gateway CPU (encoding, a socket write
   * and read, promise turns) whatever its size. A write starts when the oldest release has
   * waited RELEASE_GATHER_MS, or for claims CLAIM_INTERVAL_MS after the previous write with
   * claims (at once after a quiet spell), and never while another one is in flight.
   */
  private scheduleWrite(): void {
    if (this.writing) return;
    const now = Date.now();
    let due = Infinity;
    if (this.claims.length > 0)
      due =
        this.claims.length >= CLAIM_BATCH_MAX
          ? now
          : Math.max(now, this.lastClaimWriteMs + CLAIM_INTERVAL_MS);
    if (this.releasing.length > 0 && !this.releasesHeld)
      due = Math.min(due, this.releasingSinceMs + RELEASE_GATHER_MS);
    if (due === Infinity) return;
    // A claim must not wait for the timer of a session end that came just before it.
    if (this.writeTimer) {
      if (this.writeDueMs <= due) return;
      clearTimeout(this.writeTimer);
    }
    this.writeDueMs = due;
    // Even without waiting, the claims of this event-loop turn go together.
    this.writeTimer = setTimeout(() => {
      this.writeTimer = undefined;
      void this.write();
    }, due - now);
  }

  private write(): Promise<void> {
    const claims = this.claims.splice(0, CLAIM_BATCH_MAX);
    const releases = this.releasesHeld ? [] : this.releasing.splice(0, RELEASE_BATCH_MAX);
    if (this.releasing.length > 0) this.releasingSinceMs = Date.now() - RELEASE_GATHER_MS;
    if (claims.length > 0) this.lastClaimWriteMs = Date.now();
    this.writingReleases = releases;
    this.writing = this.writeBatch(claims, releases).finally(() => {
      this.writing = undefined;
      this.writingReleases = [];
      this.scheduleWrite();
    });
    return this.writing;
  }

  private async writeBatch(claims: PendingClaim[], releases: Releasing[]): Promise<void> {
    if (claims.length === 0 && releases.length === 0) return;
    if (!this.registry && this.stopped) {
      // Stopped: what is left is the TTL's job (stop() already tried to write it).
      for (const c of claims) c.reject(new Error('the gateway is stopping'));
      return;
    }
    try {
      if (!this.registry) throw new Error('not connected');
      const lost = await this.registry.claimAndRelease(
        claims.map((c) => c.claim),
        releases.map((r) => r.item),
      );
      this.contact();
      for (const r of releases) r.pool.release(r.item.ip);
      for (const c of claims) c.resolve(!lost.has(c.claim.ip));
    } catch (err) {
      this.failed(claims.length > 0 ? 'claim' : 'release', err);
      for (const c of claims) c.reject(err);
      // Kept queued (first, in their order); the next heartbeat retries them.
      this.releasing.unshift(...releases);
      if (this.releasing.length > 0) this.releasesHeld = true;
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
    const releasing = new Set([...this.releasing, ...this.writingReleases].map((r) => r.item.ip));
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
