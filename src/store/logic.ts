/**
 * What the SQLite and the PostgreSQL policy stores decide alike: decoding rows, the checks
 * a write must pass (overlaps, ambiguity, duplicates, references) and the messages and
 * hints of their errors. Each store only runs its own SQL around these functions, so both
 * behave the same for every command.
 */
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
import { StoreWriteError } from './errors.js';
import { DEMO_MEASUREMENTS, LAYOUTS, type SchemaKind } from './schema.js';
import { quoteInput } from './validate.js';
import {
  DUMP_FORMAT,
  DUMP_VERSION,
  formatRawCidr,
  type AppDump,
  type PolicyDump,
  type ValidDump,
} from './dump.js';

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

/** A row of `apps` as stored (addresses in SPEC encoding). */
export interface RawApp {
  id: number;
  name: string;
  mr_enclave: Buffer;
  mr_signer: Buffer;
  host_subnet?: number;
  host_submask?: number;
  enc_subnet_id?: number;
}

/** A row of `enclave_subnets` as stored. */
export interface RawSubnet {
  id: number;
  subnet: number;
  submask: number;
  gateway: number | null;
}

/** A row of `categories` as stored. */
export interface RawCategory {
  id: number | null;
  name: string;
  apps_id: number;
}

/** What `addApp` is given. */
export interface NewApp {
  name: string;
  mrEnclave: Buffer;
  mrSigner: Buffer;
  hostSubnet?: Cidr;
  enclaveSubnet?: Cidr;
}

/** What `updateApp` is given. */
export interface AppChange {
  rename?: string;
  mrSigner?: Buffer;
  hostSubnet?: Cidr;
  enclaveSubnet?: Cidr;
  row?: Cidr;
}

/** Rows written by an import (and by the demo content): counts per table. */
export interface ImportCounts {
  subnets: number;
  apps: number;
  categories: number;
}

/** The policy tables of each layout, in the order their rows are deleted (children first). */
export const POLICY_TABLES: Record<SchemaKind, readonly string[]> = {
  vanilla: ['apps', 'enclave_subnets'],
  netfilter: ['categories', 'apps'],
};

export function decodeCidr(wireAddr: number, wireMask: number): Cidr {
  const mask = fromWire(wireMask);
  const prefix = maskToPrefix(mask);
  return { network: (fromWire(wireAddr) & mask) >>> 0, mask, prefix };
}

export function cidrOverlaps(a: Cidr, b: Cidr): boolean {
  return cidrContains(a, b.network) || cidrContains(b, a.network);
}

export function sameCidr(a: Cidr, b: Cidr): boolean {
  return a.network === b.network && a.prefix === b.prefix;
}

export function decodeSubnet(r: RawSubnet): SubnetRecord {
  return {
    id: r.id,
    cidr: decodeCidr(r.subnet, r.submask),
    gateway: r.gateway === null ? null : fromWire(r.gateway),
  };
}

export function decodeApp(schema: SchemaKind, r: RawApp, categories: string[]): AppRecord {
  const app: AppRecord = {
    id: r.id,
    name: r.name,
    mrEnclave: Buffer.from(r.mr_enclave),
    mrSigner: Buffer.from(r.mr_signer),
    categories,
  };
  if (schema === 'vanilla') {
    app.hostSubnet = decodeCidr(r.host_subnet as number, r.host_submask as number);
    app.enclaveSubnetId = r.enc_subnet_id as number;
  }
  return app;
}

/** Category names per app id, sorted (rows must come sorted by name). */
export function categoriesByApp(rows: readonly RawCategory[]): Map<number, string[]> {
  const map = new Map<number, string[]>();
  for (const r of rows) map.set(r.apps_id, [...(map.get(r.apps_id) ?? []), r.name]);
  return map;
}

export function decodeApps(
  schema: SchemaKind,
  rows: readonly RawApp[],
  categories: readonly RawCategory[],
): AppRecord[] {
  const byApp = categoriesByApp(categories);
  return rows.map((r) => decodeApp(schema, r, byApp.get(r.id) ?? []));
}

export function requireSchema(schema: SchemaKind, kind: SchemaKind, what: string, target: string): void {
  if (schema !== kind) {
    throw new StoreWriteError(
      `${what} needs a ${kind} database, but ${target} is a ${schema} database`,
      kind === 'vanilla'
        ? 'enclave subnets and host subnets exist only in the vanilla layout (seng serve -d without -n)'
        : 'categories exist only in the netfilter layout (seng serve -n -d)',
    );
  }
}

/** A UNIQUE constraint violation, of SQLite or PostgreSQL. */
export function isUniqueViolation(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return code === 'SQLITE_CONSTRAINT_UNIQUE' || code === '23505';
}

/** Rethrows a UNIQUE violation as the typed error `typed` makes, any other error unchanged. */
export function rethrowUnique(err: unknown, typed: () => Error): never {
  throw isUniqueViolation(err) ? typed() : err;
}

// ---- enclave subnets ----

export function checkNewSubnet(existing: readonly SubnetRecord[], cidr: Cidr): void {
  const overlapping = existing.find((s) => cidrOverlaps(s.cidr, cidr));
  if (overlapping) {
    throw new StoreWriteError(
      `enclave subnet ${formatCidr(cidr)} overlaps subnet ${overlapping.id} (${formatCidr(overlapping.cidr)})`,
      'enclave subnets must not overlap: each enclave IP must belong to exactly one subnet',
    );
  }
}

export function subnetToRemove(existing: readonly SubnetRecord[], cidr: Cidr): SubnetRecord {
  const subnet = existing.find((s) => sameCidr(s.cidr, cidr));
  if (!subnet)
    throw new StoreWriteError(`no enclave subnet ${formatCidr(cidr)}`, 'list them with: seng db subnet list');
  return subnet;
}

/** Refuses to remove a subnet that apps still use (their names given). */
export function checkSubnetUnused(cidr: Cidr, users: readonly string[]): void {
  if (users.length > 0) {
    throw new StoreWriteError(
      `enclave subnet ${formatCidr(cidr)} is still used by app(s) ${[...new Set(users)].join(', ')}`,
      'remove those apps first (seng db app remove NAME)',
    );
  }
}

/** The subnet row an app refers to by its CIDR. */
export function enclaveSubnetRow(
  existing: readonly SubnetRecord[],
  cidr: Cidr,
  target: string,
): SubnetRecord {
  const subnet = existing.find((s) => sameCidr(s.cidr, cidr));
  if (!subnet) {
    throw new StoreWriteError(
      `no enclave subnet ${formatCidr(cidr)} in ${target}`,
      `add it first: seng db subnet add -d ${target} ${formatCidr(cidr)}`,
    );
  }
  return subnet;
}

// ---- apps ----

/** A vanilla row needs both subnets; returns them. */
export function vanillaSubnets(app: NewApp): { hostSubnet: Cidr; enclaveSubnet: Cidr } {
  if (!app.hostSubnet || !app.enclaveSubnet) {
    throw new StoreWriteError(
      'a vanilla database needs --host-subnet and --enclave-subnet for every app',
      'e.g. --host-subnet 10.0.0.0/8 --enclave-subnet 192.168.28.0/24',
    );
  }
  return { hostSubnet: app.hostSubnet, enclaveSubnet: app.enclaveSubnet };
}

/** Columns and values of a new `apps` row (its id left to the store); vanilla rows need `vanilla`. */
export function newAppRow(
  app: NewApp,
  vanilla?: { hostSubnet: Cidr; enclaveSubnetId: number },
): { columns: string[]; values: unknown[] } {
  const columns = ['name', 'mr_enclave', 'mr_signer'];
  const values: unknown[] = [app.name, app.mrEnclave, app.mrSigner];
  if (vanilla) {
    columns.push('host_subnet', 'host_submask', 'enc_subnet_id');
    values.push(toWire(vanilla.hostSubnet.network), toWire(vanilla.hostSubnet.mask), vanilla.enclaveSubnetId);
  }
  return { columns, values };
}

/**
 * Vanilla admission takes the first row (by id) with the enclave's MRENCLAVE whose
 * host subnet contains the client's address (SPEC §4). Two rows of one measurement
 * with overlapping host subnets would make the row, and so the app name and the
 * enclave subnet, depend on row order: refuse them. An identical host subnet is
 * left to the UNIQUE constraint, which gives its own message.
 */
export function checkUnambiguous(
  sameMeasurement: readonly AppRecord[],
  mrEnclave: Buffer,
  hostSubnet: Cidr,
  exceptId?: number,
): void {
  const clash = sameMeasurement.find(
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

/** The error for a UNIQUE violation on adding an app. */
export function duplicateAppError(schema: SchemaKind, mrEnclave: Buffer, hostSubnet?: Cidr): StoreWriteError {
  return new StoreWriteError(
    schema === 'netfilter' || hostSubnet === undefined
      ? `an app with measurement ${mrEnclave.toString('hex')} already exists`
      : `an app with measurement ${mrEnclave.toString('hex')} and host subnet ${formatCidr(hostSubnet)} already exists`,
    'list apps with: seng db app list',
  );
}

export function noAppError(name: string, hostSubnet?: Cidr): StoreWriteError {
  return new StoreWriteError(
    `no app named ${quoteInput(name)}${hostSubnet ? ` for host subnet ${formatCidr(hostSubnet)}` : ''}`,
    'list apps with: seng db app list',
  );
}

/** Checks an update before anything is written: the app exists, a new name is free. */
export function checkUpdate(
  schema: SchemaKind,
  target: string,
  name: string,
  apps: readonly AppRecord[],
  change: AppChange,
): AppRecord[] {
  if (change.hostSubnet || change.enclaveSubnet || change.row) {
    requireSchema(schema, 'vanilla', 'changing host or enclave subnets', target);
  }
  const rows = apps.filter((a) => a.name === name);
  if (rows.length === 0) throw noAppError(name);
  if (change.rename !== undefined && change.rename !== name && apps.some((a) => a.name === change.rename)) {
    throw new StoreWriteError(
      `an app named ${quoteInput(change.rename)} already exists`,
      'pick another name, or remove that app first',
    );
  }
  return rows;
}

/** The one vanilla row a subnet change applies to (its only row, or the one picked by `row`). */
export function rowToChange(name: string, rows: readonly AppRecord[], select: Cidr | undefined): AppRecord {
  const candidates = select ? rows.filter((r) => r.hostSubnet && sameCidr(r.hostSubnet, select)) : rows;
  const subnetList = rows.map((r) => (r.hostSubnet ? formatCidr(r.hostSubnet) : '?')).join(', ');
  if (candidates.length === 0) {
    throw new StoreWriteError(
      `app ${quoteInput(name)} has no row for host subnet ${formatCidr(select as Cidr)}`,
      `its host subnets: ${subnetList}`,
    );
  }
  if (candidates.length > 1) {
    throw new StoreWriteError(
      `app ${quoteInput(name)} has ${candidates.length} rows (host subnets ${subnetList}); which one should change?`,
      'pick it with --for-host-subnet CIDR',
    );
  }
  return candidates[0] as AppRecord;
}

/** The rows `seng db app remove` deletes: every row of the app, or the one for `hostSubnet`. */
export function rowsToRemove(
  apps: readonly AppRecord[],
  name: string,
  hostSubnet: Cidr | undefined,
): AppRecord[] {
  let rows = apps.filter((a) => a.name === name);
  if (hostSubnet) rows = rows.filter((a) => a.hostSubnet !== undefined && sameCidr(a.hostSubnet, hostSubnet));
  if (rows.length === 0) throw noAppError(name, hostSubnet);
  return rows;
}

/** Refuses --host-subnet on a netfilter store (before any transaction). */
export function checkRemoveSelector(schema: SchemaKind, target: string, hostSubnet: Cidr | undefined): void {
  if (hostSubnet && schema !== 'vanilla') {
    throw new StoreWriteError(
      `--host-subnet selects one row of an app in a vanilla database, but ${target} is a netfilter database: its apps have no host subnets`,
      `remove the whole app with: seng db app remove -d ${target} NAME`,
    );
  }
}

/** The id of the one app with this name (categories refer to apps by id). */
export function appIdByName(ids: readonly number[], name: string): number {
  if (ids.length === 0) throw noAppError(name);
  if (ids.length > 1)
    throw new StoreWriteError(
      `several apps are named ${quoteInput(name)}`,
      'rename one of them with: seng db app set NAME --rename NEW',
    );
  return ids[0] as number;
}

export function categoryExistsError(appName: string, category: string): StoreWriteError {
  return new StoreWriteError(`app ${quoteInput(appName)} is already in category "${category}"`);
}

export function categoryMissingError(appName: string, category: string): StoreWriteError {
  return new StoreWriteError(`app ${quoteInput(appName)} is not in category "${category}"`);
}

// ---- export / import ----

/** Every row of a store as a dump (rows in id order; categories in the order they were written). */
export function buildDump(
  schema: SchemaKind,
  apps: readonly RawApp[],
  subnets: readonly RawSubnet[],
  categories: readonly RawCategory[],
): PolicyDump {
  const appDumps = apps.map((r) => {
    const app: AppDump = {
      id: r.id,
      name: r.name,
      mrEnclave: Buffer.from(r.mr_enclave).toString('hex'),
      mrSigner: Buffer.from(r.mr_signer).toString('hex'),
    };
    if (schema === 'vanilla') {
      app.hostSubnet = formatRawCidr(fromWire(r.host_subnet as number), fromWire(r.host_submask as number));
      app.enclaveSubnetId = r.enc_subnet_id as number;
    }
    return app;
  });
  const head = { format: DUMP_FORMAT, version: DUMP_VERSION, layout: schema } as const;
  if (schema === 'vanilla') {
    const enclaveSubnets = subnets.map((r) => ({
      id: r.id,
      subnet: formatRawCidr(fromWire(r.subnet), fromWire(r.submask)),
      gateway: r.gateway === null ? null : formatIpv4(fromWire(r.gateway)),
    }));
    return { ...head, enclaveSubnets, apps: appDumps };
  }
  return {
    ...head,
    apps: appDumps,
    categories: categories.map((r) => ({ id: r.id, name: r.name, appId: r.apps_id })),
  };
}

export function checkImportLayout(dump: ValidDump, schema: SchemaKind, target: string): void {
  if (dump.layout !== schema) {
    throw new StoreWriteError(
      `the file holds a ${dump.layout} store, but ${target} is a ${schema} database`,
      `import it into a new file (seng db import -d NEW.db FILE creates one with the file's layout)`,
    );
  }
}

export function checkEmpty(target: string, rows: number, flag = '--replace'): void {
  if (rows > 0) {
    throw new StoreWriteError(
      `${target} is not empty (${rows} rows)`,
      `pass ${flag} to replace its whole content with the file`,
    );
  }
}

/** Rows of one table to insert: column names (from LAYOUTS, never input) and values per row. */
export interface TableRows {
  table: string;
  columns: readonly string[];
  rows: unknown[][];
}

/** The rows of a dump in stored encoding, table by table in insertion order (parents first). */
export function dumpRows(schema: SchemaKind, dump: ValidDump): TableRows[] {
  const layout = LAYOUTS[schema];
  const apps: TableRows = {
    table: 'apps',
    columns: layout['apps'] as string[],
    rows: dump.apps.map((a) => {
      const row: unknown[] = [a.id, a.name, a.mrEnclave, a.mrSigner];
      if (schema === 'vanilla') {
        const host = a.hostSubnet as { address: number; mask: number };
        row.push(toWire(host.address), toWire(host.mask), a.enclaveSubnetId);
      }
      return row;
    }),
  };
  if (schema === 'netfilter') {
    const categories = dump.categories.map((c) => [c.id, c.name, c.appId]);
    return [apps, { table: 'categories', columns: layout['categories'] as string[], rows: categories }];
  }
  const subnets = dump.subnets.map((s) => [
    s.id,
    toWire(s.subnet.address),
    toWire(s.subnet.mask),
    s.gateway === null ? null : toWire(s.gateway),
  ]);
  return [{ table: 'enclave_subnets', columns: layout['enclave_subnets'] as string[], rows: subnets }, apps];
}

export function importCounts(dump: ValidDump): ImportCounts {
  return { subnets: dump.subnets.length, apps: dump.apps.length, categories: dump.categories.length };
}

/**
 * The demo content of SPEC §4 as rows to import, identical in both stores; the vanilla
 * host subnet is stored as 127.0.0.1/255.255.255.192, host bits included, as in the spec.
 */
export function demoRows(schema: SchemaKind): ValidDump {
  const hex = (s: string) => Buffer.from(s, 'hex');
  const demo = DEMO_MEASUREMENTS;
  if (schema === 'vanilla') {
    const host = { address: fromWire(16777343), mask: fromWire(3238002687) };
    return {
      layout: schema,
      subnets: [
        {
          id: 1,
          subnet: { address: fromWire(1878208), mask: fromWire(16777215) },
          gateway: fromWire(18655424),
        },
        {
          id: 2,
          subnet: { address: fromWire(1839276), mask: fromWire(3238002687) },
          gateway: fromWire(18616492),
        },
      ],
      apps: [
        {
          id: 1,
          name: 'DemoEnclave',
          mrEnclave: hex(demo.DemoEnclave.mrEnclave),
          mrSigner: hex(demo.DemoEnclave.mrSigner),
          hostSubnet: host,
          enclaveSubnetId: 1,
        },
        {
          id: 2,
          name: 'SDK-NGINX',
          mrEnclave: hex(demo.NGINX.mrEnclave),
          mrSigner: hex(demo.NGINX.mrSigner),
          hostSubnet: host,
          enclaveSubnetId: 2,
        },
      ],
      categories: [],
    };
  }
  return {
    layout: schema,
    subnets: [],
    apps: [
      {
        id: 1,
        name: 'DemoEnclave',
        mrEnclave: hex(demo.DemoEnclave.mrEnclave),
        mrSigner: hex(demo.DemoEnclave.mrSigner),
      },
      { id: 2, name: 'SENG-NGINX', mrEnclave: hex(demo.NGINX.mrEnclave), mrSigner: hex(demo.NGINX.mrSigner) },
    ],
    categories: [
      { id: 1, name: 'Demo', appId: 1 },
      { id: 2, name: 'Server', appId: 2 },
    ],
  };
}
