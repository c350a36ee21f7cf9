/**
 * The firewall agent (`seng agent`, docs/fleet.md): keeps this host's enforcement backend
 * (nftables sets or the seng kernel module, through src/enforce) equal to the fleet's live
 * leases.
 *
 *   LISTEN seng_leases ─▶ add / del / upd of one lease ─▶ join / leave / updateCategories
 *   LISTEN seng_policy ─▶ app categories re-read       ─▶ full resync
 *   (re)connected      ─▶ full resync: desired = every live lease; what the backend holds
 *                         and nobody leases any more is removed (conntrack purged by leave),
 *                         what is missing is added, changed categories are updated
 *
 * Every change goes through one queue, so the backend sees them in order; batches of joins
 * or leaves are issued together (the nftables backend turns each batch into one kernel
 * transaction). The agent also reclaims the leases of lost gateways, so a fleet whose
 * gateways all died is cleaned up by its agents.
 */
import type pg from 'pg';
import { PgListener, backoffDelay, openPool, redactUrl } from '../pg/index.js';
import type { Enforcer, EnclaveRegistration } from '../enforce/types.js';
import { errorMessage } from '../util/errors.js';
import { formatIpv4, parseIpv4, type Ipv4 } from '../util/ipv4.js';
import type { Logger } from '../util/log.js';
import { readAppCategories, type AppPolicy } from './policy-read.js';
import { Registry, type RegistryLease } from './registry.js';
import { LEASES_CHANNEL } from './schema.js';

const POLICY_CHANNEL = 'seng_policy';
const DEFAULT_BATCH = 500;
const DEFAULT_RECLAIM_MS = 5_000;
/** After a failed backend operation, a full resync is retried after this long. */
const RETRY_RESYNC_MS = 2_000;

export interface AgentOptions {
  /** The enclave registry. */
  url: string;
  /**
   * The policy store (netfilter layout) whose apps and categories apply; default: the
   * registry's database.
   */
  policyUrl?: string;
  enforcer: Enforcer;
  log: Logger;
  /** How often expired leases are reclaimed (ms). */
  reclaimEveryMs?: number;
  /** Joins or leaves issued together (one backend transaction). */
  batchSize?: number;
}

/** One lease as the backend holds it. */
interface Entry {
  sessionId: string;
  reg: EnclaveRegistration;
}

/** A lease change announced on seng_leases (see the trigger in schema.ts). */
interface LeaseEvent {
  op: 'add' | 'del' | 'upd';
  ip: number;
  session: string;
  partial?: boolean;
  app?: string | null;
  mrEnclave?: string;
  mrSigner?: string;
  hostIp?: string;
  categories?: string[];
}

export interface AgentStats {
  resyncs: number;
  joins: number;
  leaves: number;
  updates: number;
  failures: number;
  reclaimed: number;
}

export class FleetAgent {
  readonly stats: AgentStats = { resyncs: 0, joins: 0, leaves: 0, updates: 0, failures: 0, reclaimed: 0 };
  private registry: Registry | undefined;
  private listener: PgListener | undefined;
  /** Only when the policy lives in another database than the registry. */
  private policyListener: PgListener | undefined;
  private policyPool: pg.Pool | undefined;
  /** What the backend holds, by enclave IP. */
  private readonly applied = new Map<Ipv4, Entry>();
  /** App names and categories from a netfilter policy in the same database, if any. */
  private policy: Map<string, AppPolicy> | undefined;
  private queue: Promise<void> = Promise.resolve();
  private events: LeaseEvent[] = [];
  private resyncWanted = false;
  private scheduled = false;
  private stopped = false;
  private backendStarted = false;
  private timers: NodeJS.Timeout[] = [];
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly log: Logger;
  private readonly batch: number;

  constructor(private readonly opts: AgentOptions) {
    this.log = opts.log.child({ component: 'agent' });
    this.batch = opts.batchSize ?? DEFAULT_BATCH;
  }

  /** Enclave IPs the backend holds now (status and tests). */
  appliedIps(): string[] {
    return [...this.applied.keys()].sort((a, b) => a - b).map(formatIpv4);
  }

  /**
   * Reads the live leases, then starts the backend with them in the same transaction as its
   * reconcile (nftables), then follows the registry. An unreachable database is retried with
   * backoff (logged) until it answers or stop() is called; the backend is not touched (not
   * even flushed) until the first successful read.
   */
  async start(): Promise<void> {
    const separatePolicy = this.opts.policyUrl !== undefined && this.opts.policyUrl !== this.opts.url;
    let first: { entries: Entry[]; count: number } | undefined;
    for (let attempt = 1; !this.stopped; attempt++) {
      try {
        this.registry ??= await Registry.open(this.opts.url, {
          applicationName: 'seng-agent',
          onIdleError: (err) =>
            this.log.warn({ event: 'pg-idle-error', err: errorMessage(err) }, 'idle error'),
        });
        if (separatePolicy) this.openPolicyPool(this.opts.policyUrl!);
        first = await this.desiredEntries(this.registry);
        break;
      } catch (err) {
        const delay = backoffDelay(attempt, 200, 10_000);
        this.log.error(
          {
            event: 'registry-unreachable',
            registry: redactUrl(this.opts.url),
            err: errorMessage(err),
            attempt,
          },
          `enclave registry unreachable (${errorMessage(err)}); retrying in ${delay} ms`,
        );
        await new Promise((r) => setTimeout(r, delay));
      }
    }
    if (this.stopped || !this.registry || !first) return;
    await this.startBackend(first.entries, first.count);
    const listener = new PgListener(this.opts.url, [LEASES_CHANNEL, POLICY_CHANNEL], {
      log: this.log,
      applicationName: 'seng-agent-listen',
    });
    this.listener = listener;
    // Every (re)connection may have missed notifications: resynchronise completely.
    listener.on('connected', (first) => {
      this.log.info({ event: 'following', first }, first ? 'following the registry' : 'reconnected');
      this.requestResync();
    });
    listener.on('notification', (channel, payload) => this.onNotification(channel, payload));
    for (let attempt = 1; !this.stopped; attempt++) {
      try {
        await listener.start();
        break;
      } catch (err) {
        const delay = backoffDelay(attempt, 200, 10_000);
        this.log.error(
          { event: 'registry-unreachable', err: errorMessage(err), attempt },
          `cannot LISTEN on the registry (${errorMessage(err)}); retrying in ${delay} ms`,
        );
        await new Promise((r) => setTimeout(r, delay));
      }
    }
    await this.followSeparatePolicy();
    const reclaim = setInterval(() => void this.reclaim(), this.opts.reclaimEveryMs ?? DEFAULT_RECLAIM_MS);
    reclaim.unref();
    this.timers.push(reclaim);
  }

  /** Resolves when every change queued so far has reached the backend (tests, shutdown). */
  async settled(): Promise<void> {
    for (;;) {
      const q = this.queue;
      await q;
      if (q === this.queue && !this.scheduled) return;
      // A flush scheduled on a timer runs only when the event loop turns: yield to it
      // (awaiting the settled queue again would spin on microtasks and starve the timer).
      if (this.scheduled) await new Promise((r) => setImmediate(r));
    }
  }

  /** Stops following, then empties what this agent put into the backend. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    clearTimeout(this.retryTimer);
    await this.listener?.stop();
    await this.policyListener?.stop();
    await this.queue;
    // A backend never started (registry unreachable so far) keeps what it holds.
    if (this.backendStarted) await this.opts.enforcer.stop();
    this.applied.clear();
    await this.registry?.close();
    await this.policyPool?.end().catch(() => {});
  }

  private openPolicyPool(url: string): void {
    this.policyPool ??= openPool(url, {
      applicationName: 'seng-agent-policy',
      onIdleError: (err) => this.log.warn({ event: 'pg-idle-error', err: errorMessage(err) }, 'idle error'),
    });
  }

  /**
   * The backend's start after the first read of the live leases: the initial entries go into
   * the start itself (nftables: the start transaction, the sets never empty in between; the
   * kernel module: registered right after its flush), so the backend holds the live enclaves
   * when start resolves; the first resync then finds nothing to do.
   */
  private async startBackend(entries: Entry[], count: number): Promise<void> {
    await this.opts.enforcer.start({ initial: entries.map((e) => e.reg) });
    this.backendStarted = true;
    for (const e of entries) this.applied.set(e.reg.enclaveIp, e);
    this.stats.joins += entries.length;
    this.log.info(
      { event: 'backend-started', leases: count, enclaves: this.applied.size, ...this.backendBatches() },
      `backend started with ${this.applied.size} live enclave(s)`,
    );
  }

  /** Every live lease as the backend's entry (categories from the policy where it names the app). */
  private async desiredEntries(registry: Registry): Promise<{ entries: Entry[]; count: number }> {
    this.policy = await readAppCategories(this.policyPool ?? registry.pool);
    const leases = await registry.liveLeases();
    const entries: Entry[] = [];
    for (const l of leases) {
      const e = this.entryOf(l);
      if (e) entries.push(e);
    }
    return { entries, count: leases.length };
  }

  /**
   * A policy store in another database than the registry: read from its own pool and
   * LISTEN there too (every reconnection resyncs, as for the registry).
   */
  private async followSeparatePolicy(): Promise<void> {
    const url = this.opts.policyUrl;
    if (url === undefined || url === this.opts.url || this.stopped) return;
    this.openPolicyPool(url);
    const listener = new PgListener(url, [POLICY_CHANNEL], {
      log: this.log,
      applicationName: 'seng-agent-policy-listen',
    });
    this.policyListener = listener;
    listener.on('connected', () => this.requestResync());
    listener.on('notification', () => this.requestResync());
    for (let attempt = 1; !this.stopped; attempt++) {
      try {
        await listener.start();
        return;
      } catch (err) {
        const delay = backoffDelay(attempt, 200, 10_000);
        this.log.error(
          { event: 'policy-unreachable', policy: redactUrl(url), err: errorMessage(err), attempt },
          `cannot LISTEN on the policy store (${errorMessage(err)}); retrying in ${delay} ms`,
        );
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  // ------------------------------------------------------------------ inputs

  private onNotification(channel: string, payload: string): void {
    if (channel === POLICY_CHANNEL) {
      this.requestResync();
      return;
    }
    let ev: LeaseEvent;
    try {
      ev = JSON.parse(payload) as LeaseEvent;
      if (typeof ev.ip !== 'number' || typeof ev.session !== 'string') throw new Error('no ip/session');
    } catch (err) {
      this.log.warn(
        { event: 'bad-notification', err: errorMessage(err) },
        'unreadable lease notification; resyncing',
      );
      this.requestResync();
      return;
    }
    this.events.push(ev);
    this.schedule();
  }

  private requestResync(): void {
    this.resyncWanted = true;
    this.schedule();
  }

  /** Gathers everything that arrives in one event-loop turn into one step of the queue. */
  private schedule(): void {
    if (this.scheduled || this.stopped) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      const resync = this.resyncWanted;
      const events = this.events;
      this.resyncWanted = false;
      this.events = [];
      this.queue = this.queue.then(() =>
        (resync ? this.resync() : this.applyEvents(events)).catch((err: unknown) => {
          this.stats.failures++;
          this.log.error({ event: 'agent-sync-failed', err: errorMessage(err) }, 'sync failed; retrying');
          this.retryLater();
        }),
      );
    });
  }

  private retryLater(): void {
    if (this.stopped || this.retryTimer) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.requestResync();
    }, RETRY_RESYNC_MS);
    this.retryTimer.unref();
  }

  private async reclaim(): Promise<void> {
    try {
      const gone = (await this.registry?.reclaimExpired()) ?? [];
      if (gone.length === 0) return;
      this.stats.reclaimed += gone.length;
      this.log.warn(
        {
          event: 'leases-reclaimed',
          count: gone.length,
          gateways: [...new Set(gone.map((l) => l.gatewayId))],
        },
        `reclaimed ${gone.length} lease(s) of lost gateway(s)`,
      );
    } catch (err) {
      this.log.debug({ event: 'reclaim-failed', err: errorMessage(err) }, 'reclaim failed (retried)');
    }
  }

  // ------------------------------------------------------------------ reconciliation

  /** desired = every live lease (categories from the policy where it names the app). */
  private async resync(): Promise<void> {
    const registry = this.registry;
    if (!registry) return;
    const started = Date.now();
    const { entries, count } = await this.desiredEntries(registry);
    const desired = new Map<Ipv4, Entry | null>();
    for (const e of entries) desired.set(e.reg.enclaveIp, e);
    for (const ip of this.applied.keys()) if (!desired.has(ip)) desired.set(ip, null);
    const changed = await this.reconcile(desired);
    this.stats.resyncs++;
    this.log.info(
      {
        event: 'resynced',
        leases: count,
        ...changed,
        ms: Date.now() - started,
        ...this.backendBatches(),
      },
      `resynchronised with ${count} live lease(s)`,
    );
  }

  private async applyEvents(events: LeaseEvent[]): Promise<void> {
    const desired = new Map<Ipv4, Entry | null>();
    const current = (ip: Ipv4): Entry | undefined => {
      const d = desired.get(ip);
      return d === undefined ? this.applied.get(ip) : (d ?? undefined);
    };
    for (const ev of events) {
      if (ev.op === 'del') {
        // Only the session that held the IP: a stale delete must not remove its successor.
        if (current(ev.ip)?.sessionId === ev.session) desired.set(ev.ip, null);
        continue;
      }
      let lease: RegistryLease | undefined;
      if (ev.partial) {
        lease = await this.registry?.liveLease(ev.ip);
        if (!lease || lease.sessionId !== ev.session) continue;
      } else {
        lease = {
          ip: ev.ip,
          subnet: '',
          sessionId: ev.session,
          gatewayId: '',
          app: ev.app ?? null,
          mrEnclave: ev.mrEnclave ?? '',
          mrSigner: ev.mrSigner ?? '',
          hostIp: ev.hostIp ?? '',
          categories: ev.categories ?? [],
          startedAt: new Date(),
          endedAt: null,
          endReason: null,
        };
      }
      const e = this.entryOf(lease);
      if (e) desired.set(ev.ip, e);
    }
    const changed = await this.reconcile(desired);
    // One line per step of the queue (debug): the bench measures bursts at the agent with it.
    this.log.debug(
      {
        event: 'applied',
        events: events.length,
        ...changed,
        enclaves: this.applied.size,
        ...this.backendBatches(),
      },
      'lease changes applied',
    );
  }

  /** Kernel transactions the backend made so far, when it counts them (nftables). */
  private backendBatches(): { backendBatches?: number } {
    const stats = (this.opts.enforcer as { stats?: { batches?: unknown } }).stats;
    return typeof stats?.batches === 'number' ? { backendBatches: stats.batches } : {};
  }

  /** The backend's registration for a lease; undefined (logged) for a malformed row. */
  private entryOf(l: RegistryLease): Entry | undefined {
    try {
      const mrEnclave = Buffer.from(l.mrEnclave, 'hex');
      const mrSigner = Buffer.from(l.mrSigner, 'hex');
      if (mrEnclave.length !== 32 || mrSigner.length !== 32) throw new Error('measurements are not 32 bytes');
      const policy = this.policy?.get(l.mrEnclave.toLowerCase());
      const app = policy?.name ?? l.app ?? undefined;
      return {
        sessionId: l.sessionId,
        reg: {
          enclaveIp: l.ip,
          mrEnclave,
          mrSigner,
          hostIp: parseIpv4(l.hostIp),
          ...(app === undefined ? {} : { appName: app }),
          categories: [...(policy?.categories ?? l.categories)].sort(),
        },
      };
    } catch (err) {
      this.log.warn(
        { event: 'bad-lease', enclaveIp: formatIpv4(l.ip), err: errorMessage(err) },
        'lease row not usable; ignored',
      );
      return undefined;
    }
  }

  /**
   * Brings the backend to `desired` for the IPs it names (null: no lease). Leaves first (a
   * reused IP must lose its old sets and conntrack state before it joins again), then joins,
   * then category updates; each in batches issued together.
   */
  private async reconcile(
    desired: Map<Ipv4, Entry | null>,
  ): Promise<{ joined: number; left: number; updated: number }> {
    const leave: Entry[] = [];
    const join: Entry[] = [];
    const update: { before: Entry; after: Entry }[] = [];
    for (const [ip, want] of desired) {
      const have = this.applied.get(ip);
      if (!want) {
        if (have) leave.push(have);
      } else if (!have) {
        join.push(want);
      } else if (!sameEnclave(have, want)) {
        leave.push(have);
        join.push(want);
      } else if (have.reg.categories.join('\n') !== want.reg.categories.join('\n')) {
        update.push({ before: have, after: want });
      }
    }
    let failed = 0;
    failed += await this.inGroups(leave, (group) => this.leaveGroup(group));
    failed += await this.inGroups(join, (group) => this.joinGroup(group));
    failed += await this.inBatches(update, async ({ before, after }) => {
      await this.opts.enforcer.updateCategories(after.reg.mrEnclave, after.reg.categories, [before.reg]);
      this.applied.set(after.reg.enclaveIp, after);
      this.stats.updates++;
    });
    if (failed > 0) {
      this.stats.failures += failed;
      this.retryLater();
    }
    return { joined: join.length, left: leave.length, updated: update.length };
  }

  /**
   * Leaves of one batch: ONE kernel transaction with a backend that has leaveMany (nftables),
   * else one leave per enclave, issued together.
   */
  private async leaveGroup(group: Entry[]): Promise<number> {
    const enforcer = this.opts.enforcer;
    if (!enforcer.leaveMany) {
      return this.settle(group, async (e) => {
        await enforcer.leave(e.reg);
        this.leftOne(e);
      });
    }
    try {
      await enforcer.leaveMany(group.map((e) => e.reg));
    } catch (err) {
      return this.groupFailed(group.length, err);
    }
    for (const e of group) this.leftOne(e);
    return 0;
  }

  /** Joins of one batch, as leaveGroup. */
  private async joinGroup(group: Entry[]): Promise<number> {
    const enforcer = this.opts.enforcer;
    if (!enforcer.joinMany) {
      return this.settle(group, async (e) => {
        await enforcer.join(e.reg);
        this.joinedOne(e);
      });
    }
    try {
      await enforcer.joinMany(group.map((e) => e.reg));
    } catch (err) {
      return this.groupFailed(group.length, err);
    }
    for (const e of group) this.joinedOne(e);
    return 0;
  }

  private leftOne(e: Entry): void {
    this.applied.delete(e.reg.enclaveIp);
    this.stats.leaves++;
  }

  private joinedOne(e: Entry): void {
    this.applied.set(e.reg.enclaveIp, e);
    this.stats.joins++;
  }

  private groupFailed(count: number, err: unknown): number {
    this.log.error(
      { event: 'enforcement-failed', enclaves: count, err: errorMessage(err) },
      `backend update of ${count} enclave(s) failed: ${errorMessage(err)} (retried by a resync)`,
    );
    return count;
  }

  /** `fn` for every item of `group` concurrently; returns how many failed (logged). */
  private async settle<T>(group: T[], fn: (item: T) => Promise<void>): Promise<number> {
    let failed = 0;
    for (const r of await Promise.allSettled(group.map(fn))) {
      if (r.status === 'fulfilled') continue;
      failed++;
      this.log.error(
        { event: 'enforcement-failed', err: errorMessage(r.reason) },
        `backend update failed: ${errorMessage(r.reason)} (retried by a resync)`,
      );
    }
    return failed;
  }

  /** `fn` for every group of `batch` items, one group after the other; returns the failures. */
  private async inGroups<T>(items: T[], fn: (group: T[]) => Promise<number>): Promise<number> {
    let failed = 0;
    for (let i = 0; i < items.length; i += this.batch) failed += await fn(items.slice(i, i + this.batch));
    return failed;
  }

  /** Runs `fn` for every item, `batch` at a time concurrently; returns how many failed (logged). */
  private async inBatches<T>(items: T[], fn: (item: T) => Promise<void>): Promise<number> {
    let failed = 0;
    for (let i = 0; i < items.length; i += this.batch) {
      const results = await Promise.allSettled(items.slice(i, i + this.batch).map(fn));
      for (const r of results) {
        if (r.status === 'fulfilled') continue;
        failed++;
        this.log.error(
          { event: 'enforcement-failed', err: errorMessage(r.reason) },
          `backend update failed: ${errorMessage(r.reason)} (retried by a resync)`,
        );
      }
    }
    return failed;
  }
}

function sameEnclave(a: Entry, b: Entry): boolean {
  return (
    a.sessionId === b.sessionId &&
    a.reg.mrEnclave.equals(b.reg.mrEnclave) &&
    a.reg.mrSigner.equals(b.reg.mrSigner) &&
    a.reg.hostIp === b.reg.hostIp &&
    a.reg.appName === b.reg.appName
  );
}
