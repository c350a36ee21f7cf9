/**
 * Enforcement through the seng kernel module (SPEC §5.1, `seng serve -n`).
 *
 * `KmodEnforcer` keeps the module's view equal to the set of live sessions:
 * - start: resolve `seng_family` (fail fast if the module is missing), flush stale state, and
 *   register the initial enclaves given (a firewall agent's live leases) right after;
 * - join: register the enclave; for the first live enclave of an app, add each category
 *   of the app (the module frees an app with its categories when its last enclave leaves);
 * - leave: unregister, then purge the IP's conntrack entries (the gateway releases the IP
 *   only after this resolves);
 * - updateCategories: push the difference for an app with live enclaves (hot reload);
 * - stop: flush.
 * Kernel calls are serialized. When a call fails half-way (e.g. registered but a category
 * push failed), the enforcer undoes what it did, and if even that fails it resynchronizes
 * the module from scratch (flush, re-register every live enclave, re-push categories), so
 * the module never authorizes anything no live session stands behind.
 */
import type { Logger } from 'pino';
import {
  KmodFamilyMissingError,
  SengKmodClient,
  validateCategory,
  type GenlFamily,
  type RegisterRequest,
} from '../../kmod-bridge/index.js';
import { SengError, errorMessage } from '../util/errors.js';
import { formatIpv4, type Ipv4 } from '../util/ipv4.js';
import { silentLogger } from '../util/log.js';
import { purgeConntrack } from './conntrack.js';
import type { EnclaveRegistration, Enforcer } from './types.js';

/** The subset of {@link SengKmodClient} the enforcer uses (injectable for tests). */
export interface KmodClientLike {
  resolve(): Promise<GenlFamily>;
  flush(): Promise<void>;
  register(r: RegisterRequest): Promise<void>;
  unregister(enclaveIp: Ipv4): Promise<void>;
  addCategory(mrEnclave: Buffer, category: string): Promise<void>;
  removeCategory(mrEnclave: Buffer, category: string): Promise<void>;
  close(): void;
}

export interface KmodEnforcerOptions {
  /** Default: a {@link SengKmodClient} on a real generic-netlink socket. */
  client?: KmodClientLike;
  /** Default: {@link purgeConntrack} in the process's network namespace. */
  purge?: (ip: Ipv4) => Promise<number>;
  logger?: Logger;
}

/** The module could not be brought back in line with the live sessions. */
export class KmodInconsistentError extends SengError {
  constructor(message: string, cause: unknown) {
    super('EKMOD_INCONSISTENT', message, {
      cause,
      hint:
        'the kernel module may hold entries of ended sessions: do not reuse the affected enclave IPs; ' +
        'restart `seng serve` (it flushes the module at start) or run `seng kmod flush`',
    });
  }
}

interface AppState {
  mrEnclave: Buffer;
  /** Live enclaves of the app registered in the module. */
  count: number;
  /** Categories the module currently holds for the app. */
  pushed: Set<string>;
  /** Categories the database says the app has (what `pushed` should be). */
  desired: string[];
}

function uniqueValidCategories(categories: string[]): string[] {
  return [...new Set(categories)].map(validateCategory);
}

export class KmodEnforcer implements Enforcer {
  readonly name = 'kmod';
  private readonly client: KmodClientLike;
  private readonly purge: (ip: Ipv4) => Promise<number>;
  private readonly log: Logger;
  private readonly enclaves = new Map<Ipv4, EnclaveRegistration>();
  private readonly apps = new Map<string, AppState>();
  private queue: Promise<unknown> = Promise.resolve();

  constructor(opts: KmodEnforcerOptions = {}) {
    this.log = opts.logger ?? silentLogger;
    this.client = opts.client ?? new SengKmodClient({ logger: this.log });
    this.purge = opts.purge ?? ((ip) => purgeConntrack(ip));
  }

  /** Live registrations and the categories pushed per app (for status output and tests). */
  snapshot(): { enclaves: string[]; apps: Array<{ app: string; enclaves: number; categories: string[] }> } {
    return {
      enclaves: [...this.enclaves.keys()].sort((a, b) => a - b).map(formatIpv4),
      apps: [...this.apps.entries()].map(([app, s]) => ({
        app,
        enclaves: s.count,
        categories: [...s.pushed].sort(),
      })),
    };
  }

  /**
   * Flushes what an earlier run left in the module and, with `initial` (a firewall agent's
   * live leases read before the start), registers those enclaves and their apps' categories
   * right after the flush, before any other call: the module holds the live enclaves when
   * start resolves instead of filling up with the first resync. The module has no
   * transactions, so the flush and the registrations are back-to-back requests; a failure
   * among them flushes again (nothing half-known stays authorised) and rejects.
   */
  start(opts: { initial?: EnclaveRegistration[] } = {}): Promise<void> {
    return this.serial(async () => {
      await this.client.resolve();
      this.enclaves.clear();
      this.apps.clear();
      for (const reg of opts.initial ?? []) this.remember(reg);
      if (this.enclaves.size === 0) {
        await this.client.flush();
        this.log.info('seng kernel module flushed at start');
        return;
      }
      try {
        await this.resyncNow();
      } catch (err) {
        this.enclaves.clear();
        this.apps.clear();
        await this.client.flush().catch(() => undefined);
        throw err;
      }
    });
  }

  /** Adds a registration to our state only (start with initial entries). */
  private remember(reg: EnclaveRegistration): void {
    if (this.enclaves.has(reg.enclaveIp)) return;
    const categories = uniqueValidCategories(reg.categories);
    const key = reg.mrEnclave.toString('hex');
    const app = this.apps.get(key);
    if (app) {
      app.count++;
      app.desired = categories;
    } else {
      this.apps.set(key, {
        mrEnclave: Buffer.from(reg.mrEnclave),
        count: 1,
        pushed: new Set(),
        desired: categories,
      });
    }
    this.enclaves.set(reg.enclaveIp, { ...reg, categories });
  }

  join(reg: EnclaveRegistration): Promise<void> {
    return this.serial(async () => {
      const categories = uniqueValidCategories(reg.categories);
      if (this.enclaves.has(reg.enclaveIp)) {
        throw new SengError(
          'EKMOD_DUPLICATE',
          `enclave IP ${formatIpv4(reg.enclaveIp)} is already registered`,
          {
            hint: 'the gateway must end the previous session (leave) before reusing its IP',
          },
        );
      }
      const key = reg.mrEnclave.toString('hex');
      const req: RegisterRequest = { enclaveIp: reg.enclaveIp, mrEnclave: reg.mrEnclave, hostIp: reg.hostIp };
      try {
        await this.client.register(req);
      } catch (err) {
        // A timeout leaves it open whether the module applied it: make sure it did not.
        await this.undoRegister(reg, err);
        throw err;
      }
      const existing = this.apps.get(key);
      if (existing) {
        existing.count++;
        this.enclaves.set(reg.enclaveIp, { ...reg, categories });
        // The database may have changed since the app's first enclave: bring the module along.
        try {
          await this.applyCategories(existing, categories);
        } catch (err) {
          this.forget(reg);
          await this.undoRegister(reg, err).catch(() => undefined);
          throw err;
        }
      } else {
        const pushed = new Set<string>();
        try {
          for (const c of categories) {
            await this.client.addCategory(reg.mrEnclave, c);
            pushed.add(c);
          }
        } catch (err) {
          this.log.warn(
            { enclave: formatIpv4(reg.enclaveIp), err: errorMessage(err) },
            'category push failed; unregistering the enclave',
          );
          await this.undoRegister(reg, err);
          throw err;
        }
        this.apps.set(key, { mrEnclave: Buffer.from(reg.mrEnclave), count: 1, pushed, desired: categories });
      }
      this.enclaves.set(reg.enclaveIp, { ...reg, categories });
      this.log.info(
        { enclave: formatIpv4(reg.enclaveIp), app: reg.appName ?? key, host: formatIpv4(reg.hostIp) },
        'enclave registered with the seng module',
      );
    });
  }

  leave(reg: EnclaveRegistration): Promise<void> {
    return this.serial(async () => {
      const ip = reg.enclaveIp;
      const live = this.enclaves.get(ip);
      let failure: unknown;
      if (live) {
        this.forget(live);
        try {
          await this.client.unregister(ip);
        } catch (err) {
          this.log.warn(
            { enclave: formatIpv4(ip), err: errorMessage(err) },
            'unregister failed; resynchronizing',
          );
          try {
            await this.resyncNow();
          } catch (err2) {
            failure = new KmodInconsistentError(
              `could not remove enclave ${formatIpv4(ip)} from the seng module: ${errorMessage(err)}; ` +
                `resynchronizing failed too: ${errorMessage(err2)}`,
              err2,
            );
          }
        }
      }
      // Purge even when the module call failed: stale connections must not survive the session.
      const deleted = await this.purge(ip);
      this.log.info(
        { enclave: formatIpv4(ip), conntrackDeleted: deleted },
        'enclave unregistered, conntrack purged',
      );
      if (failure) throw failure;
    });
  }

  updateCategories(mrEnclave: Buffer, categories: string[], active: EnclaveRegistration[]): Promise<void> {
    return this.serial(async () => {
      const desired = uniqueValidCategories(categories);
      const key = mrEnclave.toString('hex');
      const app = this.apps.get(key);
      for (const r of active) {
        const e = this.enclaves.get(r.enclaveIp);
        if (e) e.categories = desired;
      }
      if (!app) return; // no live enclave of this app in the module: the next join pushes them
      await this.applyCategories(app, desired);
    });
  }

  /** Removes dropped and adds new categories of an app in the module; resyncs on failure. */
  private async applyCategories(app: AppState, desired: string[]): Promise<void> {
    app.desired = desired;
    const key = app.mrEnclave.toString('hex');
    const toRemove = [...app.pushed].filter((c) => !desired.includes(c));
    const toAdd = desired.filter((c) => !app.pushed.has(c));
    if (toAdd.length === 0 && toRemove.length === 0) return;
    try {
      for (const c of toRemove) {
        await this.client.removeCategory(app.mrEnclave, c);
        app.pushed.delete(c);
      }
      for (const c of toAdd) {
        await this.client.addCategory(app.mrEnclave, c);
        app.pushed.add(c);
      }
    } catch (err) {
      this.log.warn({ app: key, err: errorMessage(err) }, 'category update failed; resynchronizing');
      try {
        await this.resyncNow();
      } catch (err2) {
        throw new KmodInconsistentError(
          `could not update the categories of app ${key}: ${errorMessage(err)}; resynchronizing failed too: ${errorMessage(err2)}`,
          err2,
        );
      }
    }
    this.log.info({ app: key, added: toAdd, removed: toRemove }, 'app categories updated in the seng module');
  }

  stop(): Promise<void> {
    return this.serial(async () => {
      try {
        await this.client.flush();
        this.log.info('seng kernel module flushed at shutdown');
      } finally {
        this.enclaves.clear();
        this.apps.clear();
        this.client.close();
      }
    });
  }

  /**
   * Flushes the module and registers every live enclave again with its app's categories.
   * Used when a partial failure left the module's state unknown.
   */
  resync(): Promise<void> {
    return this.serial(() => this.resyncNow());
  }

  private async resyncNow(): Promise<void> {
    await this.client.flush();
    for (const app of this.apps.values()) app.pushed.clear();
    for (const e of this.enclaves.values()) {
      await this.client.register({ enclaveIp: e.enclaveIp, mrEnclave: e.mrEnclave, hostIp: e.hostIp });
      const app = this.apps.get(e.mrEnclave.toString('hex'));
      if (app && app.pushed.size === 0) {
        for (const c of app.desired) {
          await this.client.addCategory(app.mrEnclave, c);
          app.pushed.add(c);
        }
      }
    }
    this.log.info({ enclaves: this.enclaves.size }, 'seng module resynchronized with the live sessions');
  }

  /** Removes a live registration from our state (the app goes away with its last enclave). */
  private forget(reg: EnclaveRegistration): void {
    this.enclaves.delete(reg.enclaveIp);
    const key = reg.mrEnclave.toString('hex');
    const app = this.apps.get(key);
    if (app && --app.count <= 0) this.apps.delete(key);
  }

  /** Best-effort unregister of an enclave whose join failed; resync if that fails too. */
  private async undoRegister(reg: EnclaveRegistration, cause: unknown): Promise<void> {
    if (cause instanceof KmodFamilyMissingError) return; // no module, nothing registered
    try {
      await this.client.unregister(reg.enclaveIp);
      return;
    } catch {
      // Either it was never registered (the module answers EINVAL) or the module is in
      // trouble; only a resync tells us the module state for sure.
    }
    try {
      await this.resyncNow();
    } catch (err) {
      throw new KmodInconsistentError(
        `admission of ${formatIpv4(reg.enclaveIp)} failed (${errorMessage(cause)}) and the seng module could ` +
          `not be resynchronized: ${errorMessage(err)}`,
        err,
      );
    }
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }
}
