/**
 * The SQLite policy store: allowlists, enclave subnets and categories, in either
 * layout of SPEC §4. Opening auto-detects the layout and refuses anything else;
 * every write runs in one transaction, so a failed command changes nothing.
 */
import { existsSync, statSync } from 'node:fs';
import Database from 'better-sqlite3';
import {
  cidrContains,
  formatCidr,
  fromWire,
  maskToPrefix,
  toWire,
  type Cidr,
  type Ipv4,
} from '../util/ipv4.js';
import { StoreOpenError, StoreWriteError } from './errors.js';
import { DEMO_MEASUREMENTS, LAYOUTS, NETFILTER_DDL, VANILLA_DDL, type SchemaKind } from './schema.js';

export { StoreOpenError, StoreWriteError } from './errors.js';
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

export class Store {
  readonly path: string;
  readonly schema: SchemaKind;
  private readonly db: Database.Database;

  private constructor(path: string, db: Database.Database, schema: SchemaKind) {
    this.path = path;
    this.db = db;
    this.schema = schema;
  }

  /** Opens an existing database and detects its layout. Never creates a file. */
  static open(path: string, opts: { readonly?: boolean } = {}): Store {
    if (!existsSync(path)) {
      throw new StoreOpenError(
        `database ${path} does not exist`,
        `create it with: seng db init -d ${path} --schema vanilla|netfilter`,
      );
    }
    if (!statSync(path).isFile()) throw new StoreOpenError(`database ${path} is not a regular file`);
    let db: Database.Database;
    try {
      db = new Database(path, { readonly: opts.readonly ?? false, fileMustExist: true });
      db.pragma('foreign_keys = ON');
      const schema = detectSchema(db, path);
      return new Store(path, db, schema);
    } catch (err) {
      if (err instanceof StoreOpenError) throw err;
      throw new StoreOpenError(
        `${path} is not a usable SQLite database: ${(err as Error).message}`,
        'check the path; restore the file from a backup if it is corrupt',
        err,
      );
    }
  }

  /** Creates a new database with the given layout (and SPEC §4 demo rows with `demo`). */
  static create(path: string, schema: SchemaKind, opts: { demo?: boolean } = {}): Store {
    const db = new Database(path);
    db.pragma('foreign_keys = ON');
    const store = new Store(path, db, schema);
    store.tx(() => {
      db.exec(schema === 'vanilla' ? VANILLA_DDL : NETFILTER_DDL);
      if (opts.demo) store.insertDemo();
    });
    return store;
  }

  close(): void {
    this.db.close();
  }

  /** Changes whenever another connection commits (SQLite's data_version); used to watch for edits. */
  dataVersion(): number {
    return this.db.pragma('data_version', { simple: true }) as number;
  }

  private tx<T>(fn: () => T): T {
    return this.db.transaction(fn)();
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
    const rows = this.db
      .prepare('SELECT id, subnet, submask, gateway FROM enclave_subnets ORDER BY id')
      .all() as { id: number; subnet: number; submask: number; gateway: number | null }[];
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
    const rows = this.db.prepare('SELECT * FROM apps ORDER BY id').all() as RawApp[];
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
    const rows = this.db.prepare('SELECT name, apps_id FROM categories ORDER BY name').all() as {
      name: string;
      apps_id: number;
    }[];
    for (const r of rows) map.set(r.apps_id, [...(map.get(r.apps_id) ?? []), r.name]);
    return map;
  }

  /** Rows for one measurement, in id order (vanilla may have one per host subnet). */
  appsByMeasurement(mrEnclave: Buffer): AppRecord[] {
    const rows = this.db
      .prepare('SELECT * FROM apps WHERE mr_enclave = ? ORDER BY id')
      .all(mrEnclave) as RawApp[];
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
        const target = app.enclaveSubnet;
        const subnet = this.listSubnets().find(
          (s) => s.cidr.network === target.network && s.cidr.prefix === target.prefix,
        );
        if (!subnet) {
          throw new StoreWriteError(
            `no enclave subnet ${formatCidr(target)} in ${this.path}`,
            `add it first: seng db subnet add -d ${this.path} ${formatCidr(target)}`,
          );
        }
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

  /** Removes every row of the named app (optionally only the one for a host subnet); returns them. */
  removeApp(name: string, opts: { hostSubnet?: Cidr } = {}): AppRecord[] {
    return this.tx(() => {
      let rows = this.listApps().filter((a) => a.name === name);
      if (opts.hostSubnet) {
        const h = opts.hostSubnet;
        rows = rows.filter((a) => a.hostSubnet?.network === h.network && a.hostSubnet.prefix === h.prefix);
      }
      if (rows.length === 0)
        throw new StoreWriteError(
          `no app named "${name}"${opts.hostSubnet ? ` for host subnet ${formatCidr(opts.hostSubnet)}` : ''}`,
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

  // ---- categories (netfilter) ----

  private appIdByName(name: string): number {
    const rows = this.db.prepare('SELECT id FROM apps WHERE name = ?').all(name) as { id: number }[];
    if (rows.length === 0)
      throw new StoreWriteError(`no app named "${name}"`, 'list apps with: seng db app list');
    if (rows.length > 1) throw new StoreWriteError(`several apps are named "${name}"`, 'rename one of them');
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
          throw new StoreWriteError(`app "${appName}" is already in category "${category}"`);
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
      if (info.changes === 0) throw new StoreWriteError(`app "${appName}" is not in category "${category}"`);
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
