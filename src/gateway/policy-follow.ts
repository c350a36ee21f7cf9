/**
 * Live policy changes from a PostgreSQL store (docs/fleet.md "Policy store"). The store's
 * trigger sends NOTIFY seng_policy on every committed change; the follower refreshes the
 * in-memory policy (debounced, so a burst of statements costs one load) and then lets the
 * gateway reload its index, which ends revoked enclaves and pushes category changes exactly
 * as the SQLite watch does. Every (re)connection of the LISTEN session reloads completely,
 * since notifications sent while it was away are lost, and a slow poll of the policy version
 * catches a notification missed for any other reason. While the server is unreachable the
 * gateway keeps serving with the last policy it loaded.
 */
import { PgListener } from '../pg/index.js';
import { POLICY_CHANNEL } from '../store/pg-schema.js';
import type { PgPolicyMirror } from '../store/index.js';
import { errorMessage } from '../util/errors.js';
import type { Logger } from '../util/log.js';

export interface PolicyFollowerOptions {
  /** Wait after a notification before loading, to fold a burst into one load (ms). */
  debounceMs?: number;
  /** Fallback poll of the policy version (ms). */
  pollMs?: number;
}

export class PgPolicyFollower {
  private readonly listener: PgListener;
  private readonly debounceMs: number;
  private readonly pollMs: number;
  private debounce: NodeJS.Timeout | undefined;
  private poll: NodeJS.Timeout | undefined;
  private forcePending = false;
  private stopped = false;
  /** True while loads fail: logged once per outage. */
  private failing = false;
  private chain: Promise<void> = Promise.resolve();

  /**
   * @param apply runs after every load that changed the policy (or after a reconnection, with
   *   `force`): the gateway's index reload.
   */
  constructor(
    private readonly mirror: PgPolicyMirror,
    private readonly apply: (force: boolean) => Promise<unknown>,
    private readonly log: Logger,
    opts: PolicyFollowerOptions = {},
  ) {
    this.debounceMs = opts.debounceMs ?? 50;
    this.pollMs = opts.pollMs ?? 5_000;
    this.listener = new PgListener(mirror.store.url, [POLICY_CHANNEL], {
      log,
      applicationName: 'seng-gateway-listen',
    });
    this.listener.on('notification', () => this.schedule(false));
    // A reconnection may have missed notifications: load everything again.
    this.listener.on('connected', (first) => {
      if (!first) this.schedule(true);
    });
  }

  /** LISTENs, then loads once more (a change between the first load and LISTEN is not lost). */
  async start(): Promise<void> {
    await this.listener.start();
    this.schedule(false);
    this.poll = setInterval(() => void this.checkVersion(), this.pollMs);
    this.poll.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.debounce);
    clearInterval(this.poll);
    await this.listener.stop();
    await this.chain;
  }

  /** Loads the policy and reloads the index now (SIGHUP, `seng reload`). */
  refreshNow(): Promise<void> {
    return this.enqueue(true);
  }

  private schedule(force: boolean): void {
    if (this.stopped) return;
    this.forcePending ||= force;
    clearTimeout(this.debounce);
    this.debounce = setTimeout(() => {
      const f = this.forcePending;
      this.forcePending = false;
      void this.enqueue(f);
    }, this.debounceMs);
    this.debounce.unref();
  }

  /** One load (and index reload) after the other. */
  private enqueue(force: boolean): Promise<void> {
    this.chain = this.chain.then(() => this.load(force));
    return this.chain;
  }

  private async load(force: boolean): Promise<void> {
    if (this.stopped) return;
    let changed: boolean;
    try {
      changed = await this.mirror.refresh();
    } catch (err) {
      this.lost(err);
      return;
    }
    this.restored();
    if (!changed && !force) return;
    try {
      await this.apply(force);
      // The moment a change is in force here (the fleet bench measures propagation with it).
      this.log.info(
        { event: 'policy-applied', version: this.mirror.dataVersion(), force },
        'policy change applied',
      );
    } catch (err) {
      this.log.error({ event: 'policy-reload-failed', err: errorMessage(err) }, 'policy reload failed');
    }
  }

  private async checkVersion(): Promise<void> {
    if (this.stopped) return;
    try {
      const version = await this.mirror.store.policyVersion();
      this.restored();
      if (version !== this.mirror.dataVersion()) this.schedule(false);
    } catch (err) {
      this.lost(err);
    }
  }

  private lost(err: unknown): void {
    if (this.failing) return;
    this.failing = true;
    this.log.warn(
      { event: 'pg-disconnected', err: errorMessage(err) },
      'cannot load the policy from PostgreSQL; serving with the last one loaded',
    );
  }

  private restored(): void {
    if (!this.failing) return;
    this.failing = false;
    this.log.info({ event: 'pg-reconnected' }, 'policy store reachable again');
  }
}
