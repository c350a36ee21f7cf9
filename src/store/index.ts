/**
 * The SQLite policy store: allowlists, enclave subnets and categories, in either
 * layout of SPEC §4. Opening auto-detects the layout and refuses anything else;
 * every write runs in one transaction, so a failed command changes nothing.
 */
import { accessSync, constants as fsConstants, existsSync, statSync, type Stats } from 'node:fs';
import { dirname, join } from 'node:path';
import Database from 'better-sqlite3';
import { InputError } from '../util/errors.js';
import {
  cidrContains,
  formatCidr,
  formatIpv4,
  fromWire,
  maskToPrefix,
  toWire,
  type Cidr,
  type Ipv4,
} from '../util/ipv4.js';
import {
  StoreOpenError,
  StorePathError,
  StorePermissionError,
  StoreWriteError,
  translateSqliteError,
} from './errors.js';
import { DEMO_MEASUREMENTS, LAYOUTS, NETFILTER_DDL, VANILLA_DDL, type SchemaKind } from './schema.js';
import { quoteInput } from './validate.js';
import {
  DUMP_FORMAT,
  DUMP_VERSION,
  formatRawCidr,
  type AppDump,
  type PolicyDump,
  type ValidDump,
} from './dump.js';

export {
  StoreBusyError,
  StoreIoError,
  StoreOpenError,
  StorePathError,
  StorePermissionError,
  StoreWriteError,
} from './errors.js';
export { DEMO_MEASUREMENTS, type SchemaKind } from './schema.js';

export interface SubnetRecord {
  id: number;
  cidr: Cidr;
  /** Gateway address (host order), or null when the row has none. */
  gateway: Ipv4 | null;
}

export interface AppRecord {
  id: number;
  name: string;
  mrEnclave: Buffer;
  mrSigner: Buffer;
  /** Netfilter layout: the app's categories (sorted). Vanilla: always empty. */
  categories: string[];
  /** Vanilla layout: the untrusted host subnet the row admits clients from. */
  hostSubnet?: Cidr;
  /** Vanilla layout: the enclave subnet row this app's enclaves get addresses from. */
  enclaveSubnetId?: number;
}

interface RawApp {
  id: number;
  name: string;
  mr_enclave: Buffer;
  mr_signer: Buffer;
  host_subnet?: number;
  host_submask?: number;
  enc_subnet_id?: number;
}

function decodeCidr(wireAddr: number, wireMask: number): Cidr {
  const mask = fromWire(wireMask);
  const prefix = maskToPrefix(mask);
  return { network: (fromWire(wireAddr) & mask) >>> 0, mask, prefix };
}

function isUniqueViolation(err: unknown): boolean {
  return (err as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE';
}

function cidrOverlaps(a: Cidr, b: Cidr): boolean {
  return cidrContains(a, b.network) || cidrContains(b, a.network);
}

function sameCidr(a: Cidr, b: Cidr): boolean {
  return a.network === b.network && a.prefix === b.prefix;
}

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
        if (opts.demo) store.insertDemo();
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

  private requireSchema(kind: SchemaKind, what: string): void {
    if (this.schema !== kind) {
      throw new StoreWriteError(
        `${what} needs a ${kind} database, but ${this.path} is a ${this.schema} database`,
        kind === 'vanilla'
          ? 'enclave subnets and host subnets exist only in the vanilla layout (seng serve -d without -n)'
          : 'categories exist only in the netfilter layout (seng serve -n -d)',
      );
    }
  }

  // ---- enclave subnets (vanilla) ----

  listSubnets(): SubnetRecord[] {
    if (this.schema !== 'vanilla') return [];
    const rows = this.sql(
      () =>
        this.db.prepare('SELECT id, subnet, submask, gateway FROM enclave_subnets ORDER BY id').all() as {
          id: number;
          subnet: number;
          submask: number;
          gateway: number | null;
        }[],
    );
    return rows.map((r) => ({
      id: r.id,
      cidr: decodeCidr(r.subnet, r.submask),
      gateway: r.gateway === null ? null : fromWire(r.gateway),
    }));
  }

  addSubnet(cidr: Cidr, gateway: Ipv4): SubnetRecord {
    this.requireSchema('vanilla', 'an enclave subnet');
    return this.tx(() => {
      const overlapping = this.listSubnets().find(
        (s) => cidrContains(s.cidr, cidr.network) || cidrContains(cidr, s.cidr.network),
      );
      if (overlapping) {
        throw new StoreWriteError(
          `enclave subnet ${formatCidr(cidr)} overlaps subnet ${overlapping.id} (${formatCidr(overlapping.cidr)})`,
          'enclave subnets must not overlap: each enclave IP must belong to exactly one subnet',
        );
      }
      const info = this.db
        .prepare('INSERT INTO enclave_subnets(subnet, submask, gateway) VALUES (?, ?, ?)')
        .run(toWire(cidr.network), toWire(cidr.mask), toWire(gateway));
      return { id: Number(info.lastInsertRowid), cidr, gateway };
    });
  }

  removeSubnet(cidr: Cidr): SubnetRecord {
    this.requireSchema('vanilla', 'an enclave subnet');
    return this.tx(() => {
      const subnet = this.listSubnets().find(
        (s) => s.cidr.network === cidr.network && s.cidr.prefix === cidr.prefix,
      );
      if (!subnet)
        throw new StoreWriteError(
          `no enclave subnet ${formatCidr(cidr)}`,
          'list them with: seng db subnet list',
        );
      const users = this.db.prepare('SELECT name FROM apps WHERE enc_subnet_id = ?').all(subnet.id) as {
        name: string;
      }[];
      if (users.length > 0) {
        throw new StoreWriteError(
          `enclave subnet ${formatCidr(cidr)} is still used by app(s) ${[...new Set(users.map((u) => u.name))].join(', ')}`,
          'remove those apps first (seng db app remove NAME)',
        );
      }
      this.db.prepare('DELETE FROM enclave_subnets WHERE id = ?').run(subnet.id);
      return subnet;
    });
  }

  // ---- apps ----

  listApps(): AppRecord[] {
    const rows = this.sql(() => this.db.prepare('SELECT * FROM apps ORDER BY id').all() as RawApp[]);
    const categories = this.categoriesByApp();
    return rows.map((r) => this.decodeApp(r, categories.get(r.id) ?? []));
  }

  private decodeApp(r: RawApp, categories: string[]): AppRecord {
    const app: AppRecord = {
      id: r.id,
      name: r.name,
      mrEnclave: Buffer.from(r.mr_enclave),
      mrSigner: Buffer.from(r.mr_signer),
      categories,
    };
    if (this.schema === 'vanilla') {
      app.hostSubnet = decodeCidr(r.host_subnet as number, r.host_submask as number);
      app.enclaveSubnetId = r.enc_subnet_id as number;
    }
    return app;
  }

  private categoriesByApp(): Map<number, string[]> {
    const map = new Map<number, string[]>();
    if (this.schema !== 'netfilter') return map;
    const rows = this.sql(
      () =>
        this.db.prepare('SELECT name, apps_id FROM categories ORDER BY name').all() as {
          name: string;
          apps_id: number;
        }[],
    );
    for (const r of rows) map.set(r.apps_id, [...(map.get(r.apps_id) ?? []), r.name]);
    return map;
  }

  /** Rows for one measurement, in id order (vanilla may have one per host subnet). */
  appsByMeasurement(mrEnclave: Buffer): AppRecord[] {
    const rows = this.sql(
      () => this.db.prepare('SELECT * FROM apps WHERE mr_enclave = ? ORDER BY id').all(mrEnclave) as RawApp[],
    );
    if (rows.length === 0) return [];
    const categories = this.categoriesByApp();
    return rows.map((r) => this.decodeApp(r, categories.get(r.id) ?? []));
  }

  addApp(app: {
    name: string;
    mrEnclave: Buffer;
    mrSigner: Buffer;
    hostSubnet?: Cidr;
    enclaveSubnet?: Cidr;
  }): AppRecord {
    return this.tx(() => {
      try {
        if (this.schema === 'netfilter') {
          const info = this.db
            .prepare('INSERT INTO apps(name, mr_enclave, mr_signer) VALUES (?, ?, ?)')
            .run(app.name, app.mrEnclave, app.mrSigner);
          return this.decodeApp(
            {
              id: Number(info.lastInsertRowid),
              name: app.name,
              mr_enclave: app.mrEnclave,
              mr_signer: app.mrSigner,
            },
            [],
          );
        }
        if (!app.hostSubnet || !app.enclaveSubnet) {
          throw new StoreWriteError(
            'a vanilla database needs --host-subnet and --enclave-subnet for every app',
            'e.g. --host-subnet 10.0.0.0/8 --enclave-subnet 192.168.28.0/24',
          );
        }
        const subnet = this.enclaveSubnetRow(app.enclaveSubnet);
        this.checkUnambiguous(app.mrEnclave, app.hostSubnet);
        const info = this.db
          .prepare(
            'INSERT INTO apps(name, mr_enclave, mr_signer, host_subnet, host_submask, enc_subnet_id) VALUES (?, ?, ?, ?, ?, ?)',
          )
          .run(
            app.name,
            app.mrEnclave,
            app.mrSigner,
            toWire(app.hostSubnet.network),
            toWire(app.hostSubnet.mask),
            subnet.id,
          );
        return this.decodeApp(
          {
            id: Number(info.lastInsertRowid),
            name: app.name,
            mr_enclave: app.mrEnclave,
            mr_signer: app.mrSigner,
            host_subnet: toWire(app.hostSubnet.network),
            host_submask: toWire(app.hostSubnet.mask),
            enc_subnet_id: subnet.id,
          },
          [],
        );
      } catch (err) {
        if (isUniqueViolation(err)) {
          throw new StoreWriteError(
            this.schema === 'netfilter'
              ? `an app with measurement ${app.mrEnclave.toString('hex')} already exists`
              : `an app with measurement ${app.mrEnclave.toString('hex')} and host subnet ${formatCidr(app.hostSubnet as Cidr)} already exists`,
            'list apps with: seng db app list',
          );
        }
        throw err;
      }
    });
  }

  private enclaveSubnetRow(target: Cidr): SubnetRecord {
    const subnet = this.listSubnets().find((s) => sameCidr(s.cidr, target));
    if (!subnet) {
      throw new StoreWriteError(
        `no enclave subnet ${formatCidr(target)} in ${this.path}`,
        `add it first: seng db subnet add -d ${this.path} ${formatCidr(target)}`,
      );
    }
    return subnet;
  }

  /**
   * Vanilla admission takes the first row (by id) with the enclave's MRENCLAVE whose
   * host subnet contains the client's address (SPEC §4). Two rows of one measurement
   * with overlapping host subnets would make the row, and so the app name and the
   * enclave subnet, depend on row order: refuse them. An identical host subnet is
   * left to the UNIQUE constraint, which gives its own message.
   */
  private checkUnambiguous(mrEnclave: Buffer, hostSubnet: Cidr, exceptId?: number): void {
    const clash = this.appsByMeasurement(mrEnclave).find(
      (a) =>
        a.id !== exceptId &&
        a.hostSubnet !== undefined &&
        cidrOverlaps(a.hostSubnet, hostSubnet) &&
        !sameCidr(a.hostSubnet, hostSubnet),
    );
    if (clash?.hostSubnet) {
      throw new StoreWriteError(
        `measurement ${mrEnclave.toString('hex')} is already allowed from host subnet ${formatCidr(clash.hostSubnet)} (app ${quoteInput(clash.name)}, row ${clash.id}), which overlaps ${formatCidr(hostSubnet)}: admission of an enclave from an address in both would be ambiguous`,
        'use non-overlapping host subnets for one measurement, or change the existing row with seng db app set',
      );
    }
  }

  /** Every row of the named app, in id order (vanilla: one per host subnet). */
  appsByName(name: string): AppRecord[] {
    return this.listApps().filter((a) => a.name === name);
  }

  /**
   * Changes an app in one transaction. `rename` and `mrSigner` apply to every row of
   * the app; `hostSubnet`/`enclaveSubnet` (vanilla) to its only row, or to the row
   * whose host subnet is `row` when it has several. Returns the rows as changed.
   */
  updateApp(
    name: string,
    change: { rename?: string; mrSigner?: Buffer; hostSubnet?: Cidr; enclaveSubnet?: Cidr; row?: Cidr },
  ): AppRecord[] {
    if (change.hostSubnet || change.enclaveSubnet || change.row) {
      this.requireSchema('vanilla', 'changing host or enclave subnets');
    }
    return this.tx(() => {
      const rows = this.appsByName(name);
      if (rows.length === 0) {
        throw new StoreWriteError(`no app named ${quoteInput(name)}`, 'list apps with: seng db app list');
      }
      if (
        change.rename !== undefined &&
        change.rename !== name &&
        this.appsByName(change.rename).length > 0
      ) {
        throw new StoreWriteError(
          `an app named ${quoteInput(change.rename)} already exists`,
          'pick another name, or remove that app first',
        );
      }
      if (change.hostSubnet || change.enclaveSubnet) this.updateAppRow(name, rows, change);
      const ids = rows.map((r) => r.id);
      for (const id of ids) {
        if (change.mrSigner)
          this.db.prepare('UPDATE apps SET mr_signer = ? WHERE id = ?').run(change.mrSigner, id);
        if (change.rename !== undefined)
          this.db.prepare('UPDATE apps SET name = ? WHERE id = ?').run(change.rename, id);
      }
      return this.listApps().filter((a) => ids.includes(a.id));
    });
  }

  private updateAppRow(
    name: string,
    rows: AppRecord[],
    change: { hostSubnet?: Cidr; enclaveSubnet?: Cidr; row?: Cidr },
  ): void {
    const select = change.row;
    const candidates = select ? rows.filter((r) => r.hostSubnet && sameCidr(r.hostSubnet, select)) : rows;
    const subnetList = rows.map((r) => (r.hostSubnet ? formatCidr(r.hostSubnet) : '?')).join(', ');
    if (candidates.length === 0) {
      throw new StoreWriteError(
        `app ${quoteInput(name)} has no row for host subnet ${formatCidr(select as Cidr)}`,
        `its host subnets: ${subnetList}`,
      );
    }
    const target = candidates[0] as AppRecord;
    if (candidates.length > 1) {
      throw new StoreWriteError(
        `app ${quoteInput(name)} has ${candidates.length} rows (host subnets ${subnetList}); which one should change?`,
        'pick it with --for-host-subnet CIDR',
      );
    }
    if (change.hostSubnet) {
      const host = change.hostSubnet;
      this.checkUnambiguous(target.mrEnclave, host, target.id);
      try {
        this.db
          .prepare('UPDATE apps SET host_subnet = ?, host_submask = ? WHERE id = ?')
          .run(toWire(host.network), toWire(host.mask), target.id);
      } catch (err) {
        if (!isUniqueViolation(err)) throw err;
        throw new StoreWriteError(
          `an app with measurement ${target.mrEnclave.toString('hex')} and host subnet ${formatCidr(host)} already exists`,
          'list apps with: seng db app list',
        );
      }
    }
    if (change.enclaveSubnet) {
      const subnet = this.enclaveSubnetRow(change.enclaveSubnet);
      this.db.prepare('UPDATE apps SET enc_subnet_id = ? WHERE id = ?').run(subnet.id, target.id);
    }
  }

  /** Removes every row of the named app (optionally only the one for a host subnet); returns them. */
  removeApp(name: string, opts: { hostSubnet?: Cidr } = {}): AppRecord[] {
    if (opts.hostSubnet) {
      if (this.schema !== 'vanilla') {
        throw new StoreWriteError(
          `--host-subnet selects one row of an app in a vanilla database, but ${this.path} is a netfilter database: its apps have no host subnets`,
          `remove the whole app with: seng db app remove -d ${this.path} NAME`,
        );
      }
    }
    return this.tx(() => {
      let rows = this.listApps().filter((a) => a.name === name);
      if (opts.hostSubnet) {
        const h = opts.hostSubnet;
        rows = rows.filter((a) => a.hostSubnet?.network === h.network && a.hostSubnet.prefix === h.prefix);
      }
      if (rows.length === 0)
        throw new StoreWriteError(
          `no app named ${quoteInput(name)}${opts.hostSubnet ? ` for host subnet ${formatCidr(opts.hostSubnet)}` : ''}`,
          'list apps with: seng db app list',
        );
      for (const r of rows) {
        if (this.schema === 'netfilter')
          this.db.prepare('DELETE FROM categories WHERE apps_id = ?').run(r.id);
        this.db.prepare('DELETE FROM apps WHERE id = ?').run(r.id);
      }
      return rows;
    });
  }

  // ---- whole-store export and import (seng db export / import) ----

  /** Every row of the store, as stored, in a form JSON can carry (see dump.ts). */
  exportDump(): PolicyDump {
    return this.sql(() => {
      const apps = (this.db.prepare('SELECT * FROM apps ORDER BY id').all() as RawApp[]).map((r) => {
        const app: AppDump = {
          id: r.id,
          name: r.name,
          mrEnclave: Buffer.from(r.mr_enclave).toString('hex'),
          mrSigner: Buffer.from(r.mr_signer).toString('hex'),
        };
        if (this.schema === 'vanilla') {
          app.hostSubnet = formatRawCidr(
            fromWire(r.host_subnet as number),
            fromWire(r.host_submask as number),
          );
          app.enclaveSubnetId = r.enc_subnet_id as number;
        }
        return app;
      });
      const head = { format: DUMP_FORMAT, version: DUMP_VERSION, layout: this.schema } as const;
      if (this.schema === 'vanilla') {
        const rows = this.db
          .prepare('SELECT id, subnet, submask, gateway FROM enclave_subnets ORDER BY id')
          .all() as { id: number; subnet: number; submask: number; gateway: number | null }[];
        const enclaveSubnets = rows.map((r) => ({
          id: r.id,
          subnet: formatRawCidr(fromWire(r.subnet), fromWire(r.submask)),
          gateway: r.gateway === null ? null : formatIpv4(fromWire(r.gateway)),
        }));
        return { ...head, enclaveSubnets, apps };
      }
      // categories has no primary key: rowid order is the order the rows were written in.
      const categories = (
        this.db.prepare('SELECT id, name, apps_id FROM categories ORDER BY rowid').all() as {
          id: number | null;
          name: string;
          apps_id: number;
        }[]
      ).map((r) => ({ id: r.id, name: r.name, appId: r.apps_id }));
      return { ...head, apps, categories };
    });
  }

  /**
   * Writes a validated dump in one transaction. Without `replace` the store must be
   * empty; with it, every row is deleted first. Nothing changes if anything fails.
   */
  importDump(
    dump: ValidDump,
    opts: { replace?: boolean } = {},
  ): { subnets: number; apps: number; categories: number } {
    if (dump.layout !== this.schema) {
      throw new StoreWriteError(
        `the file holds a ${dump.layout} store, but ${this.path} is a ${this.schema} database`,
        `import it into a new file (seng db import -d NEW.db FILE creates one with the file's layout)`,
      );
    }
    const tables = this.schema === 'vanilla' ? ['apps', 'enclave_subnets'] : ['categories', 'apps'];
    return this.tx(() => {
      if (opts.replace) {
        for (const t of tables) this.db.prepare(`DELETE FROM ${t}`).run();
      } else {
        const rows = tables.reduce(
          (n, t) => n + (this.db.prepare(`SELECT count(*) AS n FROM ${t}`).get() as { n: number }).n,
          0,
        );
        if (rows > 0) {
          throw new StoreWriteError(
            `${this.path} is not empty (${rows} rows)`,
            'pass --replace to replace its whole content with the file',
          );
        }
      }
      if (this.schema === 'vanilla') {
        const sub = this.db.prepare(
          'INSERT INTO enclave_subnets(id, subnet, submask, gateway) VALUES (?, ?, ?, ?)',
        );
        for (const s of dump.subnets) {
          const gateway = s.gateway === null ? null : toWire(s.gateway);
          sub.run(s.id, toWire(s.subnet.address), toWire(s.subnet.mask), gateway);
        }
        const app = this.db.prepare(
          'INSERT INTO apps(id, name, mr_enclave, mr_signer, host_subnet, host_submask, enc_subnet_id) VALUES (?, ?, ?, ?, ?, ?, ?)',
        );
        for (const a of dump.apps) {
          const host = a.hostSubnet as { address: number; mask: number };
          app.run(
            a.id,
            a.name,
            a.mrEnclave,
            a.mrSigner,
            toWire(host.address),
            toWire(host.mask),
            a.enclaveSubnetId,
          );
        }
      } else {
        const app = this.db.prepare('INSERT INTO apps(id, name, mr_enclave, mr_signer) VALUES (?, ?, ?, ?)');
        for (const a of dump.apps) app.run(a.id, a.name, a.mrEnclave, a.mrSigner);
        const cat = this.db.prepare('INSERT INTO categories(id, name, apps_id) VALUES (?, ?, ?)');
        for (const c of dump.categories) cat.run(c.id, c.name, c.appId);
      }
      return { subnets: dump.subnets.length, apps: dump.apps.length, categories: dump.categories.length };
    });
  }

  // ---- categories (netfilter) ----

  private appIdByName(name: string): number {
    const rows = this.db.prepare('SELECT id FROM apps WHERE name = ?').all(name) as { id: number }[];
    if (rows.length === 0)
      throw new StoreWriteError(`no app named ${quoteInput(name)}`, 'list apps with: seng db app list');
    if (rows.length > 1)
      throw new StoreWriteError(
        `several apps are named ${quoteInput(name)}`,
        'rename one of them with: seng db app set NAME --rename NEW',
      );
    return (rows[0] as { id: number }).id;
  }

  addCategory(appName: string, category: string): void {
    this.requireSchema('netfilter', 'a category');
    this.tx(() => {
      const appId = this.appIdByName(appName);
      try {
        this.db.prepare('INSERT INTO categories(name, apps_id) VALUES (?, ?)').run(category, appId);
      } catch (err) {
        if (isUniqueViolation(err))
          throw new StoreWriteError(`app ${quoteInput(appName)} is already in category "${category}"`);
        throw err;
      }
    });
  }

  removeCategory(appName: string, category: string): void {
    this.requireSchema('netfilter', 'a category');
    this.tx(() => {
      const appId = this.appIdByName(appName);
      const info = this.db
        .prepare('DELETE FROM categories WHERE name = ? AND apps_id = ?')
        .run(category, appId);
      if (info.changes === 0)
        throw new StoreWriteError(`app ${quoteInput(appName)} is not in category "${category}"`);
    });
  }

  private insertDemo(): void {
    const demo = DEMO_MEASUREMENTS;
    const hex = (s: string) => Buffer.from(s, 'hex');
    if (this.schema === 'vanilla') {
      // Exactly the rows of SPEC §4, including the host subnet stored as 127.0.0.1/255.255.255.192.
      const sub = this.db.prepare(
        'INSERT INTO enclave_subnets(id, subnet, submask, gateway) VALUES (?, ?, ?, ?)',
      );
      sub.run(1, 1878208, 16777215, 18655424);
      sub.run(2, 1839276, 3238002687, 18616492);
      const app = this.db.prepare(
        'INSERT INTO apps(name, mr_enclave, mr_signer, host_subnet, host_submask, enc_subnet_id) VALUES (?, ?, ?, ?, ?, ?)',
      );
      app.run(
        'DemoEnclave',
        hex(demo.DemoEnclave.mrEnclave),
        hex(demo.DemoEnclave.mrSigner),
        16777343,
        3238002687,
        1,
      );
      app.run('SDK-NGINX', hex(demo.NGINX.mrEnclave), hex(demo.NGINX.mrSigner), 16777343, 3238002687, 2);
    } else {
      const app = this.db.prepare('INSERT INTO apps(id, name, mr_enclave, mr_signer) VALUES (?, ?, ?, ?)');
      app.run(1, 'DemoEnclave', hex(demo.DemoEnclave.mrEnclave), hex(demo.DemoEnclave.mrSigner));
      app.run(2, 'SENG-NGINX', hex(demo.NGINX.mrEnclave), hex(demo.NGINX.mrSigner));
      const cat = this.db.prepare('INSERT INTO categories(id, name, apps_id) VALUES (?, ?, ?)');
      cat.run(1, 'Demo', 1);
      cat.run(2, 'Server', 2);
    }
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
