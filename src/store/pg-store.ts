/**
 * The PostgreSQL policy store (docs/fleet.md "Policy store"): the same layouts, checks and
 * errors as the SQLite store (shared in logic.ts), on node-postgres. Every statement is
 * parameterised; table names in statements come from constants, never from input.
 *
 * Writes run in one transaction each that first takes the layout's tables in SHARE ROW
 * EXCLUSIVE mode: that mode conflicts with itself, so concurrent writers (seng db on several
 * machines) run one after the other and every check sees the rows of the writer before,
 * while readers (gateways) are never blocked. A lost connection is retried with backoff and
 * then reported as PgConnectionError; SQL errors the operator can act on become typed errors.
 */
import pg from 'pg';
import { InputError, SengError, errorMessage } from '../util/errors.js';
import { toWire, type Cidr, type Ipv4 } from '../util/ipv4.js';
import {
  PgConnectionError,
  inTransaction,
  isConnectionError,
  openPool,
  redactUrl,
  withRetry,
} from '../pg/index.js';
import { StoreBusyError, StoreIoError, StoreOpenError, StorePermissionError } from './errors.js';
import { LAYOUTS, type SchemaKind } from './schema.js';
import { PG_DDL, POLICY_CHANNEL, pgResyncIdentity } from './pg-schema.js';
import type { PolicyDump, ValidDump } from './dump.js';
import * as policy from './logic.js';
import type {
  AppChange,
  AppRecord,
  ImportCounts,
  NewApp,
  RawApp,
  RawCategory,
  RawSubnet,
  SubnetRecord,
} from './logic.js';

type Queryable = pg.Pool | pg.PoolClient;

/** Every table seng's policy may live in (other tables of the database, e.g. the fleet's, are ignored). */
const ALL_POLICY_TABLES = ['apps', 'enclave_subnets', 'categories'];

/** Serialises `seng db init` runs against one database (an arbitrary, fixed key). */
const INIT_LOCK_KEY = 0x5e6e_0001;

/** Connection attempts before a command gives up (≈ 0.7 s of backoff in total). */
const RETRY_ATTEMPTS = 4;

/** A URL node-postgres can use; a malformed one is an input error, not a crash. */
export function checkPostgresUrl(url: string): void {
  try {
    // node-postgres' own parser (it accepts forms WHATWG URL does not, e.g. postgres://user@/db?host=/dir).
    const probe = new pg.Client({ connectionString: url });
    void probe;
  } catch {
    throw new InputError(
      `${redactUrl(url)} is not a valid PostgreSQL URL`,
      'use postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE, or postgres://USER@/DATABASE?host=/run/postgresql for a Unix socket',
    );
  }
}

/** Turns a node-postgres error into a typed error with a hint (a connection loss into PgConnectionError). */
export function translatePgError(err: unknown, url: string): unknown {
  if (err instanceof SengError) return err;
  if (isConnectionError(err)) return new PgConnectionError(url, err);
  const code = (err as { code?: unknown }).code;
  const target = redactUrl(url);
  const message = errorMessage(err);
  switch (code) {
    case '3D000':
      return new StoreOpenError(
        `${target}: ${message}`,
        'create the database first (createdb NAME, or CREATE DATABASE in psql), then seng db init -d URL',
        err,
      );
    case '28000':
    case '28P01':
      return new StorePermissionError(
        `${target}: ${message}`,
        'check the user and password in the URL (or ~/.pgpass) and the server pg_hba.conf',
        err,
      );
    case '42501':
      return new StorePermissionError(
        `${target}: ${message}`,
        'grant this user access to the policy tables (GRANT SELECT, INSERT, UPDATE, DELETE …) or use their owner',
        err,
      );
    case '55P03':
    case '40001':
    case '40P01':
      return new StoreBusyError(target, 0, err);
    case '53100':
      return new StoreIoError(
        `${target}: the server's disk is full`,
        'free space on the server; nothing was changed',
        err,
      );
    default:
      if (typeof code === 'string') {
        return new StoreIoError(
          `PostgreSQL error at ${target}: ${message} (SQLSTATE ${code})`,
          'check the server log; nothing was changed',
          err,
        );
      }
      return err;
  }
}

function toRawSubnet(r: Record<string, unknown>): RawSubnet {
  return {
    id: Number(r['id']),
    subnet: Number(r['subnet']),
    submask: Number(r['submask']),
    gateway: r['gateway'] === null ? null : Number(r['gateway']),
  };
}

function toRawApp(r: Record<string, unknown>): RawApp {
  const app: RawApp = {
    id: Number(r['id']),
    name: r['name'] as string,
    mr_enclave: r['mr_enclave'] as Buffer,
    mr_signer: r['mr_signer'] as Buffer,
  };
  if (r['host_subnet'] !== undefined) {
    app.host_subnet = Number(r['host_subnet']);
    app.host_submask = Number(r['host_submask']);
    app.enc_subnet_id = Number(r['enc_subnet_id']);
  }
  return app;
}

function toRawCategory(r: Record<string, unknown>): RawCategory {
  return {
    id: r['id'] === null ? null : Number(r['id']),
    name: r['name'] as string,
    apps_id: Number(r['apps_id']),
  };
}

/** The layout of the policy tables present, or undefined when there are none. */
async function detectLayout(q: Queryable, target: string): Promise<SchemaKind | undefined> {
  const { rows } = await q.query<{ table_name: string; column_name: string }>(
    `SELECT table_name, column_name FROM information_schema.columns
      WHERE table_schema = current_schema() AND table_name = ANY($1::text[])`,
    [ALL_POLICY_TABLES],
  );
  if (rows.length === 0) return undefined;
  const columns = new Map<string, string[]>();
  for (const r of rows) columns.set(r.table_name, [...(columns.get(r.table_name) ?? []), r.column_name]);
  for (const kind of ['vanilla', 'netfilter'] as const) {
    const matches = Object.entries(LAYOUTS[kind]).every(([table, cols]) =>
      cols.every((c) => columns.get(table)?.includes(c)),
    );
    if (matches) return kind;
  }
  throw new StoreOpenError(
    `${target} has tables named like SENG's (${[...columns.keys()].sort().join(', ')}) but not a SENG layout`,
    'seng understands the vanilla (enclave_subnets + apps) and netfilter (apps + categories) layouts; create one in an empty database with seng db init',
  );
}

/** The whole policy at one moment (a gateway's in-memory copy). */
export interface PolicySnapshot {
  version: number;
  apps: AppRecord[];
  subnets: SubnetRecord[];
}

export class PgStore {
  readonly kind = 'postgres' as const;
  /** The URL without its password: for messages. */
  readonly target: string;

  private constructor(
    readonly url: string,
    readonly schema: SchemaKind,
    private readonly pool: pg.Pool,
  ) {
    this.target = redactUrl(url);
  }

  /** Opens the policy tables of an existing database and detects their layout. */
  static async open(url: string, opts: { applicationName?: string } = {}): Promise<PgStore> {
    checkPostgresUrl(url);
    const pool = openPool(url, { applicationName: opts.applicationName ?? 'seng-db' });
    try {
      const schema = await guard(url, () => detectLayout(pool, redactUrl(url)));
      if (!schema) {
        throw new StoreOpenError(
          `${redactUrl(url)} holds no SENG policy tables`,
          `create them with: seng db init -d ${redactUrl(url)} --schema vanilla|netfilter`,
        );
      }
      return new PgStore(url, schema, pool);
    } catch (err) {
      await pool.end().catch(() => {});
      throw err;
    }
  }

  /** True when the database holds policy tables (an error when it cannot be reached). */
  static async hasPolicy(url: string): Promise<boolean> {
    checkPostgresUrl(url);
    const pool = openPool(url, { applicationName: 'seng-db', max: 1 });
    try {
      return (await guard(url, () => detectLayout(pool, redactUrl(url)))) !== undefined;
    } finally {
      await pool.end().catch(() => {});
    }
  }

  /**
   * Creates the policy tables of `schema` (with the change trigger) in one transaction, with
   * the demo rows or the given rows. Refuses a database that has policy tables already unless
   * `force`, which drops them first in the same transaction (other tables are left alone).
   */
  static async create(
    url: string,
    schema: SchemaKind,
    opts: { demo?: boolean; rows?: ValidDump; force?: boolean } = {},
  ): Promise<PgStore> {
    checkPostgresUrl(url);
    const pool = openPool(url, { applicationName: 'seng-db', max: 2 });
    const target = redactUrl(url);
    try {
      await guard(url, () =>
        inTransaction(pool, async (c) => {
          await c.query('SELECT pg_advisory_xact_lock($1)', [INIT_LOCK_KEY]);
          const existing = await detectLayout(c, target).catch((err: unknown) => {
            if (err instanceof StoreOpenError) return 'other' as const;
            throw err;
          });
          if (existing !== undefined) {
            if (!opts.force) {
              throw new InputError(
                `${target} already holds SENG policy tables${existing === 'other' ? '' : ` (${existing} layout)`}`,
                'pass --force to replace them (their content is lost), or use another database',
              );
            }
            await c.query('DROP TABLE IF EXISTS categories, apps, enclave_subnets');
          }
          await c.query(PG_DDL[schema]);
          // Followers reload even when no row is written (a layout replaced by empty tables).
          await c.query('UPDATE seng_policy_version SET version = version + 1 WHERE id = 1');
          await c.query('SELECT pg_notify($1, $2)', [POLICY_CHANNEL, 'init']);
          const rows = opts.rows ?? (opts.demo ? policy.demoRows(schema) : undefined);
          if (rows) {
            policy.checkImportLayout(rows, schema, target);
            await writeRows(c, schema, rows);
          }
        }),
      );
      return new PgStore(url, schema, pool);
    } catch (err) {
      await pool.end().catch(() => {});
      throw err;
    }
  }

  async close(): Promise<void> {
    await this.pool.end().catch(() => {});
  }

  /** The version the change trigger bumps on every committed change (0 without the table). */
  async policyVersion(): Promise<number> {
    return this.read(versionOn);
  }

  /** Apps, subnets and the version, read in one consistent snapshot. */
  async snapshot(): Promise<PolicySnapshot> {
    return guard(this.url, () =>
      inTransaction(
        this.pool,
        async (c) => {
          const version = await versionOn(c);
          const [apps, subnets] = [await this.appsOn(c), (await this.rawSubnets(c)).map(policy.decodeSubnet)];
          return { version, apps, subnets };
        },
        'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY',
      ),
    );
  }

  // ---- plumbing ----

  private read<T>(fn: (q: Queryable) => Promise<T>): Promise<T> {
    return guard(this.url, () => fn(this.pool));
  }

  /** One write transaction holding the layout's tables against other writers (see the file comment). */
  private write<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const tables = [...policy.POLICY_TABLES[this.schema]].sort().join(', ');
    return guard(this.url, () =>
      inTransaction(this.pool, async (c) => {
        await c.query(`LOCK TABLE ${tables} IN SHARE ROW EXCLUSIVE MODE`);
        return fn(c);
      }),
    );
  }

  private async rawSubnets(q: Queryable): Promise<RawSubnet[]> {
    if (this.schema !== 'vanilla') return [];
    const { rows } = await q.query('SELECT id, subnet, submask, gateway FROM enclave_subnets ORDER BY id');
    return rows.map(toRawSubnet);
  }

  private async rawApps(q: Queryable, where = '', params: unknown[] = []): Promise<RawApp[]> {
    const { rows } = await q.query(`SELECT * FROM apps ${where} ORDER BY id`, params);
    return rows.map(toRawApp);
  }

  /** Categories sorted by name (for records) or in the order they were written (for a dump). */
  private async rawCategories(q: Queryable, order: 'name' | 'written'): Promise<RawCategory[]> {
    if (this.schema !== 'netfilter') return [];
    // No primary key: the physical order is the write order of a table that is never updated.
    const by = order === 'name' ? 'name' : 'ctid';
    const { rows } = await q.query(`SELECT id, name, apps_id FROM categories ORDER BY ${by}`);
    return rows.map(toRawCategory);
  }

  private async appsOn(q: Queryable): Promise<AppRecord[]> {
    return policy.decodeApps(this.schema, await this.rawApps(q), await this.rawCategories(q, 'name'));
  }

  private async appsByMeasurementOn(q: Queryable, mrEnclave: Buffer): Promise<AppRecord[]> {
    const rows = await this.rawApps(q, 'WHERE mr_enclave = $1', [mrEnclave]);
    return rows.length === 0 ? [] : policy.decodeApps(this.schema, rows, await this.rawCategories(q, 'name'));
  }

  // ---- enclave subnets (vanilla) ----

  async listSubnets(): Promise<SubnetRecord[]> {
    return this.read(async (q) => (await this.rawSubnets(q)).map(policy.decodeSubnet));
  }

  async addSubnet(cidr: Cidr, gateway: Ipv4): Promise<SubnetRecord> {
    policy.requireSchema(this.schema, 'vanilla', 'an enclave subnet', this.target);
    return this.write(async (c) => {
      policy.checkNewSubnet((await this.rawSubnets(c)).map(policy.decodeSubnet), cidr);
      const id = await insertId(
        c,
        'enclave_subnets',
        `INSERT INTO enclave_subnets(id, subnet, submask, gateway) VALUES (${NEXT_ID('enclave_subnets')}, $1, $2, $3) RETURNING id`,
        [toWire(cidr.network), toWire(cidr.mask), toWire(gateway)],
      );
      return { id, cidr, gateway };
    });
  }

  async removeSubnet(cidr: Cidr): Promise<SubnetRecord> {
    policy.requireSchema(this.schema, 'vanilla', 'an enclave subnet', this.target);
    return this.write(async (c) => {
      const subnet = policy.subnetToRemove((await this.rawSubnets(c)).map(policy.decodeSubnet), cidr);
      const users = await c.query<{ name: string }>(
        'SELECT name FROM apps WHERE enc_subnet_id = $1 ORDER BY id',
        [subnet.id],
      );
      policy.checkSubnetUnused(
        cidr,
        users.rows.map((u) => u.name),
      );
      await c.query('DELETE FROM enclave_subnets WHERE id = $1', [subnet.id]);
      return subnet;
    });
  }

  // ---- apps ----

  async listApps(): Promise<AppRecord[]> {
    return this.read((q) => this.appsOn(q));
  }

  async appsByName(name: string): Promise<AppRecord[]> {
    return (await this.listApps()).filter((a) => a.name === name);
  }

  async addApp(app: NewApp): Promise<AppRecord> {
    return this.write(async (c) => {
      let row = policy.newAppRow(app);
      if (this.schema === 'vanilla') {
        const { hostSubnet, enclaveSubnet } = policy.vanillaSubnets(app);
        const subnets = (await this.rawSubnets(c)).map(policy.decodeSubnet);
        const subnet = policy.enclaveSubnetRow(subnets, enclaveSubnet, this.target);
        const same = await this.appsByMeasurementOn(c, app.mrEnclave);
        policy.checkUnambiguous(same, app.mrEnclave, hostSubnet);
        row = policy.newAppRow(app, { hostSubnet, enclaveSubnetId: subnet.id });
      }
      const placeholders = row.columns.map((_, i) => `$${i + 1}`).join(', ');
      const text = `INSERT INTO apps(id, ${row.columns.join(', ')}) VALUES (${NEXT_ID('apps')}, ${placeholders}) RETURNING id`;
      let id: number;
      try {
        id = await insertId(c, 'apps', text, row.values);
      } catch (err) {
        policy.rethrowUnique(err, () => policy.duplicateAppError(this.schema, app.mrEnclave, app.hostSubnet));
      }
      return (await this.appsOn(c)).find((a) => a.id === id) as AppRecord;
    });
  }

  async updateApp(name: string, change: AppChange): Promise<AppRecord[]> {
    return this.write(async (c) => {
      const rows = policy.checkUpdate(this.schema, this.target, name, await this.appsOn(c), change);
      if (change.hostSubnet || change.enclaveSubnet) await this.updateAppRow(c, name, rows, change);
      const ids = rows.map((r) => r.id);
      if (change.mrSigner)
        await c.query('UPDATE apps SET mr_signer = $1 WHERE id = ANY($2::int[])', [change.mrSigner, ids]);
      if (change.rename !== undefined)
        await c.query('UPDATE apps SET name = $1 WHERE id = ANY($2::int[])', [change.rename, ids]);
      return (await this.appsOn(c)).filter((a) => ids.includes(a.id));
    });
  }

  private async updateAppRow(
    c: pg.PoolClient,
    name: string,
    rows: AppRecord[],
    change: AppChange,
  ): Promise<void> {
    const target = policy.rowToChange(name, rows, change.row);
    if (change.hostSubnet) {
      const host = change.hostSubnet;
      policy.checkUnambiguous(
        await this.appsByMeasurementOn(c, target.mrEnclave),
        target.mrEnclave,
        host,
        target.id,
      );
      try {
        await c.query('UPDATE apps SET host_subnet = $1, host_submask = $2 WHERE id = $3', [
          toWire(host.network),
          toWire(host.mask),
          target.id,
        ]);
      } catch (err) {
        policy.rethrowUnique(err, () => policy.duplicateAppError(this.schema, target.mrEnclave, host));
      }
    }
    if (change.enclaveSubnet) {
      const subnet = policy.enclaveSubnetRow(
        (await this.rawSubnets(c)).map(policy.decodeSubnet),
        change.enclaveSubnet,
        this.target,
      );
      await c.query('UPDATE apps SET enc_subnet_id = $1 WHERE id = $2', [subnet.id, target.id]);
    }
  }

  async removeApp(name: string, opts: { hostSubnet?: Cidr } = {}): Promise<AppRecord[]> {
    policy.checkRemoveSelector(this.schema, this.target, opts.hostSubnet);
    return this.write(async (c) => {
      const rows = policy.rowsToRemove(await this.appsOn(c), name, opts.hostSubnet);
      const ids = rows.map((r) => r.id);
      if (this.schema === 'netfilter')
        await c.query('DELETE FROM categories WHERE apps_id = ANY($1::int[])', [ids]);
      await c.query('DELETE FROM apps WHERE id = ANY($1::int[])', [ids]);
      return rows;
    });
  }

  // ---- export / import ----

  async exportDump(): Promise<PolicyDump> {
    return guard(this.url, () =>
      inTransaction(
        this.pool,
        async (c) =>
          policy.buildDump(
            this.schema,
            await this.rawApps(c),
            await this.rawSubnets(c),
            await this.rawCategories(c, 'written'),
          ),
        'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY',
      ),
    );
  }

  async importDump(dump: ValidDump, opts: { replace?: boolean; flag?: string } = {}): Promise<ImportCounts> {
    policy.checkImportLayout(dump, this.schema, this.target);
    const tables = policy.POLICY_TABLES[this.schema];
    return this.write(async (c) => {
      if (opts.replace) {
        for (const t of tables) await c.query(`DELETE FROM ${t}`);
      } else {
        let rows = 0;
        for (const t of tables)
          rows += Number((await c.query<{ n: string }>(`SELECT count(*) AS n FROM ${t}`)).rows[0]?.n);
        policy.checkEmpty(this.target, rows, opts.flag);
      }
      await writeRows(c, this.schema, dump);
      return policy.importCounts(dump);
    });
  }

  // ---- categories (netfilter) ----

  async addCategory(appName: string, category: string): Promise<void> {
    policy.requireSchema(this.schema, 'netfilter', 'a category', this.target);
    await this.write(async (c) => {
      const appId = await appIdOn(c, appName);
      try {
        await c.query('INSERT INTO categories(name, apps_id) VALUES ($1, $2)', [category, appId]);
      } catch (err) {
        policy.rethrowUnique(err, () => policy.categoryExistsError(appName, category));
      }
    });
  }

  async removeCategory(appName: string, category: string): Promise<void> {
    policy.requireSchema(this.schema, 'netfilter', 'a category', this.target);
    await this.write(async (c) => {
      const appId = await appIdOn(c, appName);
      const info = await c.query('DELETE FROM categories WHERE name = $1 AND apps_id = $2', [
        category,
        appId,
      ]);
      if (info.rowCount === 0) throw policy.categoryMissingError(appName, category);
    });
  }
}

/**
 * The policy version (0 when the database has no version table: policy tables made by hand,
 * which gateways then only see change on SIGHUP). Checked first, since a failed statement
 * would end the snapshot transaction it runs in.
 */
async function versionOn(q: Queryable): Promise<number> {
  const present = await q.query<{ present: boolean }>(
    "SELECT to_regclass('seng_policy_version') IS NOT NULL AS present",
  );
  if (!present.rows[0]?.present) return 0;
  const { rows } = await q.query<{ version: string }>('SELECT version FROM seng_policy_version WHERE id = 1');
  return Number(rows[0]?.version ?? 0);
}

async function appIdOn(c: pg.PoolClient, name: string): Promise<number> {
  const { rows } = await c.query<{ id: number }>('SELECT id FROM apps WHERE name = $1', [name]);
  return policy.appIdByName(
    rows.map((r) => Number(r.id)),
    name,
  );
}

/**
 * The id a new row gets: one past the largest, as SQLite gives an INTEGER PRIMARY KEY, so both
 * stores number rows alike (an identity would skip the values of failed inserts). Safe because
 * writers hold the table lock; the identity is moved along for rows inserted without an id (psql).
 */
const NEXT_ID = (table: 'apps' | 'enclave_subnets') => `(SELECT COALESCE(max(id), 0) + 1 FROM ${table})`;

async function insertId(
  c: pg.PoolClient,
  table: 'apps' | 'enclave_subnets',
  text: string,
  params: unknown[],
): Promise<number> {
  const { rows } = await c.query<{ id: number }>(text, params);
  await c.query(pgResyncIdentity(table));
  return Number(rows[0]?.id);
}

/** Inserts rows with their ids, then moves the identities past them (inside a transaction). */
async function writeRows(c: pg.PoolClient, schema: SchemaKind, dump: ValidDump): Promise<void> {
  for (const { table, columns, rows } of policy.dumpRows(schema, dump)) {
    const placeholders = columns.map((_, i) => `$${i + 1}`).join(', ');
    const text = `INSERT INTO ${table}(${columns.join(', ')}) VALUES (${placeholders})`;
    for (const row of rows) await c.query(text, row);
  }
  if (schema === 'vanilla') await c.query(pgResyncIdentity('enclave_subnets'));
  await c.query(pgResyncIdentity('apps'));
}

/** Retries a lost connection with backoff, then turns any error into a typed one. */
async function guard<T>(url: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await withRetry(fn, { attempts: RETRY_ATTEMPTS });
  } catch (err) {
    throw translatePgError(err, url);
  }
}
