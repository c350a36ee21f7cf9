/**
 * The policy store every caller uses: a SQLite file or a PostgreSQL database, chosen by the
 * target (`postgres://` / `postgresql://` URL, else a file path). Both implementations share
 * their checks and errors (logic.ts); the SQLite one stays synchronous inside and is wrapped.
 */
import { existsSync, rmSync } from 'node:fs';
import { isPostgresUrl } from '../pg/index.js';
import type { Cidr, Ipv4 } from '../util/ipv4.js';
import type { PolicyDump, ValidDump } from './dump.js';
import { Store } from './index.js';
import type { AppChange, AppRecord, ImportCounts, NewApp, SubnetRecord } from './logic.js';
import { PgStore, type PolicySnapshot } from './pg-store.js';
import type { SchemaKind } from './schema.js';

export interface PolicyStore {
  readonly kind: 'sqlite' | 'postgres';
  /** Path, or URL without password: for messages. */
  readonly target: string;
  readonly schema: SchemaKind;
  close(): Promise<void>;
  listSubnets(): Promise<SubnetRecord[]>;
  listApps(): Promise<AppRecord[]>;
  appsByName(name: string): Promise<AppRecord[]>;
  addSubnet(cidr: Cidr, gateway: Ipv4): Promise<SubnetRecord>;
  removeSubnet(cidr: Cidr): Promise<SubnetRecord>;
  addApp(app: NewApp): Promise<AppRecord>;
  updateApp(name: string, change: AppChange): Promise<AppRecord[]>;
  removeApp(name: string, opts?: { hostSubnet?: Cidr }): Promise<AppRecord[]>;
  addCategory(appName: string, category: string): Promise<void>;
  removeCategory(appName: string, category: string): Promise<void>;
  exportDump(): Promise<PolicyDump>;
  /** `flag` names the option that allows a non-empty target, for the error's hint. */
  importDump(dump: ValidDump, opts?: { replace?: boolean; flag?: string }): Promise<ImportCounts>;
}

/** The SQLite store behind the async interface (every call runs synchronously). */
export class SqlitePolicyStore implements PolicyStore {
  readonly kind = 'sqlite' as const;
  constructor(readonly store: Store) {}
  get target(): string {
    return this.store.path;
  }
  get schema(): SchemaKind {
    return this.store.schema;
  }
  async close(): Promise<void> {
    this.store.close();
  }
  async listSubnets(): Promise<SubnetRecord[]> {
    return this.store.listSubnets();
  }
  async listApps(): Promise<AppRecord[]> {
    return this.store.listApps();
  }
  async appsByName(name: string): Promise<AppRecord[]> {
    return this.store.appsByName(name);
  }
  async addSubnet(cidr: Cidr, gateway: Ipv4): Promise<SubnetRecord> {
    return this.store.addSubnet(cidr, gateway);
  }
  async removeSubnet(cidr: Cidr): Promise<SubnetRecord> {
    return this.store.removeSubnet(cidr);
  }
  async addApp(app: NewApp): Promise<AppRecord> {
    return this.store.addApp(app);
  }
  async updateApp(name: string, change: AppChange): Promise<AppRecord[]> {
    return this.store.updateApp(name, change);
  }
  async removeApp(name: string, opts: { hostSubnet?: Cidr } = {}): Promise<AppRecord[]> {
    return this.store.removeApp(name, opts);
  }
  async addCategory(appName: string, category: string): Promise<void> {
    this.store.addCategory(appName, category);
  }
  async removeCategory(appName: string, category: string): Promise<void> {
    this.store.removeCategory(appName, category);
  }
  async exportDump(): Promise<PolicyDump> {
    return this.store.exportDump();
  }
  async importDump(dump: ValidDump, opts: { replace?: boolean; flag?: string } = {}): Promise<ImportCounts> {
    return this.store.importDump(dump, opts);
  }
}

/** Opens an existing policy store: a SQLite file or a PostgreSQL database with policy tables. */
export async function openPolicyStore(
  target: string,
  opts: { readonly?: boolean } = {},
): Promise<PolicyStore> {
  if (isPostgresUrl(target)) return PgStore.open(target);
  return new SqlitePolicyStore(Store.open(target, opts));
}

/** True when `target` holds a policy already (a file exists / the database has policy tables). */
export async function policyStoreExists(target: string): Promise<boolean> {
  return isPostgresUrl(target) ? PgStore.hasPolicy(target) : existsSync(target);
}

/**
 * Creates a new store with `schema`, filled with `rows` when given, so that a failure leaves
 * nothing behind: a SQLite file is removed again, PostgreSQL creates and fills in one transaction.
 */
export async function createPolicyStore(
  target: string,
  schema: SchemaKind,
  opts: { demo?: boolean; rows?: ValidDump; force?: boolean } = {},
): Promise<PolicyStore> {
  if (isPostgresUrl(target)) return PgStore.create(target, schema, opts);
  const store = Store.create(target, schema, opts.demo ? { demo: true } : {});
  if (opts.rows) {
    try {
      store.importDump(opts.rows);
    } catch (err) {
      store.close();
      rmSync(target, { force: true });
      throw err;
    }
  }
  return new SqlitePolicyStore(store);
}

/**
 * What the gateway's enclave index reads, synchronously: a SQLite Store (read at once) or the
 * in-memory copy of a PostgreSQL policy (refreshed asynchronously, see PgPolicyMirror).
 */
export interface PolicySource {
  readonly schema: SchemaKind;
  /** Changes whenever the policy changed (the index reloads then). */
  dataVersion(): number;
  listApps(): AppRecord[];
  listSubnets(): SubnetRecord[];
}

/**
 * A PostgreSQL policy held in memory: admissions read it without any SQL; refresh() loads a
 * new consistent snapshot (one at a time: concurrent calls share the running load and run
 * once more after it, so the last change is never missed).
 */
export class PgPolicyMirror implements PolicySource {
  private current: PolicySnapshot;
  private running: Promise<boolean> | undefined;
  private again = false;

  private constructor(
    readonly store: PgStore,
    first: PolicySnapshot,
  ) {
    this.current = first;
  }

  static async load(store: PgStore): Promise<PgPolicyMirror> {
    return new PgPolicyMirror(store, await store.snapshot());
  }

  get schema(): SchemaKind {
    return this.store.schema;
  }

  dataVersion(): number {
    return this.current.version;
  }

  listApps(): AppRecord[] {
    return this.current.apps;
  }

  listSubnets(): SubnetRecord[] {
    return this.current.subnets;
  }

  /** Loads the policy again; true when its version changed. Rejects (typed) when the server is unreachable. */
  refresh(): Promise<boolean> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      let changed = false;
      try {
        do {
          this.again = false;
          const next = await this.store.snapshot();
          changed ||= next.version !== this.current.version;
          this.current = next;
        } while (this.again);
        return changed;
      } finally {
        this.running = undefined;
      }
    })();
    return this.running;
  }
}

/** A policy source for the gateway and how to close it. */
export interface OpenedPolicySource {
  source: PolicySource;
  /** Set for PostgreSQL: follow it for changes (src/gateway/policy-follow.ts). */
  mirror?: PgPolicyMirror;
  close(): Promise<void>;
}

/** Opens a store read-only for the gateway (PostgreSQL: loads the policy into memory). */
export async function openPolicySource(target: string): Promise<OpenedPolicySource> {
  if (!isPostgresUrl(target)) {
    const store = Store.open(target, { readonly: true });
    return { source: store, close: async () => store.close() };
  }
  const store = await PgStore.open(target, { applicationName: 'seng-gateway' });
  try {
    const mirror = await PgPolicyMirror.load(store);
    return { source: mirror, mirror, close: () => store.close() };
  } catch (err) {
    await store.close();
    throw err;
  }
}
