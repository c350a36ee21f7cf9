/**
 * The SQLite policy store: allowlists, enclave subnets and categories, in either
 * layout of SPEC §4. Opening auto-detects the layout and refuses anything else;
 * every write runs in one transaction, so a failed command changes nothing.
 */
import { accessSync, constants as fsConstants, existsSync, statSync, type Stats } from 'node:fs';
import { dirname, join } from 'node:path';
import Database from 'better-sqlite3';
import { InputError } from '../util/errors.js';
import { toWire, type Cidr, type Ipv4 } from '../util/ipv4.js';
import { StoreOpenError, StorePathError, StorePermissionError, translateSqliteError } from './errors.js';
import { LAYOUTS, NETFILTER_DDL, VANILLA_DDL, type SchemaKind } from './schema.js';
import { quoteInput } from './validate.js';
import type { PolicyDump, ValidDump } from './dump.js';
import {
  POLICY_TABLES,
  appIdByName,
  buildDump,
  categoryExistsError,
  categoryMissingError,
  checkEmpty,
  checkImportLayout,
  checkNewSubnet,
  checkRemoveSelector,
  checkSubnetUnused,
  checkUnambiguous,
  checkUpdate,
  decodeApps,
  decodeSubnet,
  demoRows,
  dumpRows,
  duplicateAppError,
  enclaveSubnetRow,
  importCounts,
  newAppRow,
  requireSchema,
  rethrowUnique,
  rowToChange,
  rowsToRemove,
  subnetToRemove,
  vanillaSubnets,
  type AppChange,
  type AppRecord,
  type ImportCounts,
  type NewApp,
  type RawApp,
  type RawCategory,
  type RawSubnet,
  type SubnetRecord,
} from './logic.js';

export {
  StoreBusyError,
  StoreIoError,
  StoreOpenError,
  StorePathError,
  StorePermissionError,
  StoreWriteError,
} from './errors.js';
export { DEMO_MEASUREMENTS, type SchemaKind } from './schema.js';
export type { AppChange, AppRecord, ImportCounts, NewApp, SubnetRecord } from './logic.js';

/**
 * How long a connection waits for another one's lock before giving up (ms): better-sqlite3's
 * own default. Not longer: the gateway reads the store synchronously on its event loop, so
 * a lock held by a stuck sqlite3 session must not stall the data path for long.
 */
export const DEFAULT_BUSY_TIMEOUT_MS = 5_000;

/** The busy timeout: SENG_DB_BUSY_TIMEOUT_MS, else the default. */
export function busyTimeoutMs(env: NodeJS.ProcessEnv = process.env): number {
  const text = env['SENG_DB_BUSY_TIMEOUT_MS'];
  if (text === undefined || text === '') return DEFAULT_BUSY_TIMEOUT_MS;
  if (!/^\d{1,9}$/.test(text)) {
    throw new InputError(
      `SENG_DB_BUSY_TIMEOUT_MS must be a number of milliseconds, got ${quoteInput(text)}`,
      `unset it to wait the default ${DEFAULT_BUSY_TIMEOUT_MS} ms`,
    );
  }
  return Number(text);
}

/** stat() of a path, or null when it does not exist; a directory we may not search is a permission error. */
function statOrNull(path: string): Stats | null {
  try {
    return statSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    if (code === 'EACCES' || code === 'EPERM') {
      throw new StorePermissionError(
        `cannot look up ${path}: permission denied`,
        `a directory on the way is not searchable for this user (ls -ld ${dirname(path)})`,
        err,
      );
    }
    throw err;
  }
}

/** Refuses a path whose directory is missing or that names a directory, with what to do. */
export function checkDatabasePath(path: string): void {
  const dir = dirname(path);
  const dirStat = statOrNull(dir);
  if (!dirStat) {
    throw new StorePathError(`directory ${dir} does not exist`, `create it first: mkdir -p ${dir}`);
  }
  if (!dirStat.isDirectory()) {
    throw new StorePathError(`${dir} is not a directory`, 'pick a database path inside a directory');
  }
  if (statOrNull(path)?.isDirectory()) {
    throw new StorePathError(
      `${path} is a directory, not a database file`,
      `pass a file path, e.g. ${join(path, 'policy.db')}`,
    );
  }
}

export class Store {
  readonly path: string;
  readonly schema: SchemaKind;
  private readonly db: Database.Database;
  private readonly busyTimeoutMs: number;

  private constructor(path: string, db: Database.Database, schema: SchemaKind, busyTimeoutMs: number) {
    this.path = path;
    this.db = db;
    this.schema = schema;
    this.busyTimeoutMs = busyTimeoutMs;
  }

  /** Opens an existing database and detects its layout. Never creates a file. */
  static open(path: string, opts: { readonly?: boolean } = {}): Store {
    const timeout = busyTimeoutMs();
    checkDatabasePath(path);
    if (!existsSync(path)) {
      throw new StoreOpenError(
        `database ${path} does not exist`,
        `create it with: seng db init -d ${path} --schema vanilla|netfilter`,
      );
    }
    if (!statSync(path).isFile()) {
      throw new StoreOpenError(`database ${path} is not a regular file`, 'pass the path of a SQLite file');
    }
    try {
      accessSync(path, fsConstants.R_OK);
    } catch (err) {
      throw new StorePermissionError(
        `cannot read ${path}: permission denied`,
        `check its owner and mode (ls -l ${path}); run as its owner or a user who may read it`,
        err,
      );
    }
    let db: Database.Database | undefined;
    try {
      db = new Database(path, { readonly: opts.readonly ?? false, fileMustExist: true, timeout });
      db.pragma('foreign_keys = ON');
      const schema = detectSchema(db, path);
      return new Store(path, db, schema, timeout);
    } catch (err) {
      db?.close();
      if (err instanceof StoreOpenError) throw err;
      const typed = translateSqliteError(err, path, timeout);
      if (typed !== err) throw typed;
      throw new StoreOpenError(
        `${path} is not a usable SQLite database: ${(err as Error).message}`,
        'check the path; restore the file from a backup if it is corrupt',
        err,
      );
    }
  }

  /** Creates a new database with the given layout (and SPEC §4 demo rows with `demo`). */
  static create(path: string, schema: SchemaKind, opts: { demo?: boolean } = {}): Store {
    const timeout = busyTimeoutMs();
    checkDatabasePath(path);
    let db: Database.Database | undefined;
    try {
      db = new Database(path, { timeout });
      db.pragma('foreign_keys = ON');
    } catch (err) {
      db?.close();
      throw translateSqliteError(err, path, timeout);
    }
    const store = new Store(path, db, schema, timeout);
    try {
      store.tx(() => {
        db.exec(schema === 'vanilla' ? VANILLA_DDL : NETFILTER_DDL);
        if (opts.demo) store.writeRows(demoRows(schema));
      });
    } catch (err) {
      store.close();
      throw err;
    }
    return store;
  }

  close(): void {
    this.db.close();
  }

  /** Changes whenever another connection commits (SQLite's data_version); used to watch for edits. */
  dataVersion(): number {
    return this.sql(() => this.db.pragma('data_version', { simple: true }) as number);
  }

  /**
   * Runs a write in one transaction that takes the write lock up front (BEGIN
   * IMMEDIATE): a deferred transaction that reads first and then upgrades its lock
   * fails at once with SQLITE_BUSY when another writer got there first (SQLite cannot
   * wait there without risking a deadlock), whereas BEGIN IMMEDIATE waits up to the
   * busy timeout. SQLite errors the operator can act on become typed errors.
   */
  private tx<T>(fn: () => T): T {
    return this.sql(() => this.db.transaction(fn).immediate());
  }

  /** Runs a statement, turning SQLite errors (busy, permissions, disk) into typed errors. */
  private sql<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      throw translateSqliteError(err, this.path, this.busyTimeoutMs);
    }
  }

  private all<T>(text: string, ...params: unknown[]): T[] {
    return this.sql(() => this.db.prepare(text).all(...params) as T[]);
  }

  private run(text: string, ...params: unknown[]): Database.RunResult {
    return this.db.prepare(text).run(...params);
  }

  // ---- raw rows ----

  private rawSubnets(): RawSubnet[] {
    if (this.schema !== 'vanilla') return [];
    return this.all<RawSubnet>('SELECT id, subnet, submask, gateway FROM enclave_subnets ORDER BY id');
  }

  private rawCategories(order: 'name' | 'rowid'): RawCategory[] {
    if (this.schema !== 'netfilter') return [];
    // categories has no primary key: rowid order is the order the rows were written in.
    return this.all<RawCategory>(`SELECT id, name, apps_id FROM categories ORDER BY ${order}`);
  }

  // ---- enclave subnets (vanilla) ----

  listSubnets(): SubnetRecord[] {
    return this.rawSubnets().map(decodeSubnet);
  }

  addSubnet(cidr: Cidr, gateway: Ipv4): SubnetRecord {
    requireSchema(this.schema, 'vanilla', 'an enclave subnet', this.path);
    return this.tx(() => {
      checkNewSubnet(this.listSubnets(), cidr);
      const info = this.run(
        'INSERT INTO enclave_subnets(subnet, submask, gateway) VALUES (?, ?, ?)',
        toWire(cidr.network),
        toWire(cidr.mask),
        toWire(gateway),
      );
      return { id: Number(info.lastInsertRowid), cidr, gateway };
    });
  }

  removeSubnet(cidr: Cidr): SubnetRecord {
    requireSchema(this.schema, 'vanilla', 'an enclave subnet', this.path);
    return this.tx(() => {
      const subnet = subnetToRemove(this.listSubnets(), cidr);
      const users = this.all<{ name: string }>(
        'SELECT name FROM apps WHERE enc_subnet_id = ? ORDER BY id',
        subnet.id,
      );
      checkSubnetUnused(
        cidr,
        users.map((u) => u.name),
      );
      this.run('DELETE FROM enclave_subnets WHERE id = ?', subnet.id);
      return subnet;
    });
  }

  // ---- apps ----

  listApps(): AppRecord[] {
    return decodeApps(
      this.schema,
      this.all<RawApp>('SELECT * FROM apps ORDER BY id'),
      this.rawCategories('name'),
    );
  }

  /** Rows for one measurement, in id order (vanilla may have one per host subnet). */
  appsByMeasurement(mrEnclave: Buffer): AppRecord[] {
    const rows = this.all<RawApp>('SELECT * FROM apps WHERE mr_enclave = ? ORDER BY id', mrEnclave);
    return rows.length === 0 ? [] : decodeApps(this.schema, rows, this.rawCategories('name'));
  }

  /** Every row of the named app, in id order (vanilla: one per host subnet). */
  appsByName(name: string): AppRecord[] {
    return this.listApps().filter((a) => a.name === name);
  }

  addApp(app: NewApp): AppRecord {
    return this.tx(() => {
      let row = newAppRow(app);
      if (this.schema === 'vanilla') {
        const { hostSubnet, enclaveSubnet } = vanillaSubnets(app);
        const subnet = enclaveSubnetRow(this.listSubnets(), enclaveSubnet, this.path);
        checkUnambiguous(this.appsByMeasurement(app.mrEnclave), app.mrEnclave, hostSubnet);
        row = newAppRow(app, { hostSubnet, enclaveSubnetId: subnet.id });
      }
      const placeholders = row.columns.map(() => '?').join(', ');
      try {
        const info = this.run(
          `INSERT INTO apps(${row.columns.join(', ')}) VALUES (${placeholders})`,
          ...row.values,
        );
        return this.appById(Number(info.lastInsertRowid));
      } catch (err) {
        rethrowUnique(err, () => duplicateAppError(this.schema, app.mrEnclave, app.hostSubnet));
      }
    });
  }

  private appById(id: number): AppRecord {
    return this.listApps().find((a) => a.id === id) as AppRecord;
  }

  /**
   * Changes an app in one transaction. `rename` and `mrSigner` apply to every row of
   * the app; `hostSubnet`/`enclaveSubnet` (vanilla) to its only row, or to the row
   * whose host subnet is `row` when it has several. Returns the rows as changed.
   */
  updateApp(name: string, change: AppChange): AppRecord[] {
    return this.tx(() => {
      const rows = checkUpdate(this.schema, this.path, name, this.listApps(), change);
      if (change.hostSubnet || change.enclaveSubnet) this.updateAppRow(name, rows, change);
      const ids = rows.map((r) => r.id);
      for (const id of ids) {
        if (change.mrSigner) this.run('UPDATE apps SET mr_signer = ? WHERE id = ?', change.mrSigner, id);
        if (change.rename !== undefined) this.run('UPDATE apps SET name = ? WHERE id = ?', change.rename, id);
      }
      return this.listApps().filter((a) => ids.includes(a.id));
    });
  }

  private updateAppRow(name: string, rows: AppRecord[], change: AppChange): void {
    const target = rowToChange(name, rows, change.row);
    if (change.hostSubnet) {
      const host = change.hostSubnet;
      checkUnambiguous(this.appsByMeasurement(target.mrEnclave), target.mrEnclave, host, target.id);
      try {
        this.run(
          'UPDATE apps SET host_subnet = ?, host_submask = ? WHERE id = ?',
          toWire(host.network),
          toWire(host.mask),
          target.id,
        );
      } catch (err) {
        rethrowUnique(err, () => duplicateAppError(this.schema, target.mrEnclave, host));
      }
    }
    if (change.enclaveSubnet) {
      const subnet = enclaveSubnetRow(this.listSubnets(), change.enclaveSubnet, this.path);
      this.run('UPDATE apps SET enc_subnet_id = ? WHERE id = ?', subnet.id, target.id);
    }
  }

  /** Removes every row of the named app (optionally only the one for a host subnet); returns them. */
  removeApp(name: string, opts: { hostSubnet?: Cidr } = {}): AppRecord[] {
    checkRemoveSelector(this.schema, this.path, opts.hostSubnet);
    return this.tx(() => {
      const rows = rowsToRemove(this.listApps(), name, opts.hostSubnet);
      for (const r of rows) {
        if (this.schema === 'netfilter') this.run('DELETE FROM categories WHERE apps_id = ?', r.id);
        this.run('DELETE FROM apps WHERE id = ?', r.id);
      }
      return rows;
    });
  }

  // ---- whole-store export and import (seng db export / import / copy) ----

  /** Every row of the store, as stored, in a form JSON can carry (see dump.ts). */
  exportDump(): PolicyDump {
    const apps = this.all<RawApp>('SELECT * FROM apps ORDER BY id');
    return buildDump(this.schema, apps, this.rawSubnets(), this.rawCategories('rowid'));
  }

  /**
   * Writes a validated dump in one transaction. Without `replace` the store must be
   * empty; with it, every row is deleted first. Nothing changes if anything fails.
   */
  importDump(dump: ValidDump, opts: { replace?: boolean; flag?: string } = {}): ImportCounts {
    checkImportLayout(dump, this.schema, this.path);
    const tables = POLICY_TABLES[this.schema];
    return this.tx(() => {
      if (opts.replace) {
        for (const t of tables) this.run(`DELETE FROM ${t}`);
      } else {
        const count = (t: string) =>
          (this.db.prepare(`SELECT count(*) AS n FROM ${t}`).get() as { n: number }).n;
        checkEmpty(
          this.path,
          tables.reduce((n, t) => n + count(t), 0),
          opts.flag,
        );
      }
      this.writeRows(dump);
      return importCounts(dump);
    });
  }

  /** Inserts rows with their ids (inside a transaction). */
  private writeRows(dump: ValidDump): void {
    for (const { table, columns, rows } of dumpRows(this.schema, dump)) {
      const placeholders = columns.map(() => '?').join(', ');
      const insert = this.db.prepare(`INSERT INTO ${table}(${columns.join(', ')}) VALUES (${placeholders})`);
      for (const row of rows) insert.run(...row);
    }
  }

  // ---- categories (netfilter) ----

  addCategory(appName: string, category: string): void {
    requireSchema(this.schema, 'netfilter', 'a category', this.path);
    this.tx(() => {
      const appId = this.appIdByName(appName);
      try {
        this.run('INSERT INTO categories(name, apps_id) VALUES (?, ?)', category, appId);
      } catch (err) {
        rethrowUnique(err, () => categoryExistsError(appName, category));
      }
    });
  }

  removeCategory(appName: string, category: string): void {
    requireSchema(this.schema, 'netfilter', 'a category', this.path);
    this.tx(() => {
      const appId = this.appIdByName(appName);
      const info = this.run('DELETE FROM categories WHERE name = ? AND apps_id = ?', category, appId);
      if (info.changes === 0) throw categoryMissingError(appName, category);
    });
  }

  private appIdByName(name: string): number {
    return appIdByName(
      this.all<{ id: number }>('SELECT id FROM apps WHERE name = ?', name).map((r) => r.id),
      name,
    );
  }
}

function detectSchema(db: Database.Database, path: string): SchemaKind {
  const tables = (
    db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]
  ).map((t) => t.name);
  for (const kind of ['vanilla', 'netfilter'] as const) {
    const layout = LAYOUTS[kind];
    const matches = Object.entries(layout).every(([table, cols]) => {
      if (!tables.includes(table)) return false;
      const actual = (db.prepare(`PRAGMA table_info(${table})`).all() as { name: string }[]).map(
        (c) => c.name,
      );
      return cols.every((c) => actual.includes(c));
    });
    if (matches) return kind;
  }
  throw new StoreOpenError(
    `${path} is a SQLite database but not a SENG database (tables: ${tables.join(', ') || 'none'})`,
    'seng understands the vanilla (enclave_subnets + apps) and netfilter (apps + categories) layouts of SENG; create one with seng db init',
  );
}

export function openStore(path: string, opts: { readonly?: boolean } = {}): Store {
  return Store.open(path, opts);
}

export {
  createPolicyStore,
  openPolicySource,
  openPolicyStore,
  policyStoreExists,
  PgPolicyMirror,
  SqlitePolicyStore,
  type OpenedPolicySource,
  type PolicySource,
  type PolicyStore,
} from './policy-store.js';
export { PgStore } from './pg-store.js';
