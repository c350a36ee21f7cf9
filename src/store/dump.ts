/**
 * The policy store as a JSON document (`seng db export` / `seng db import`).
 *
 * JSON rather than YAML: measurements are 64 hex digits, and an all-digit one read by a
 * YAML parser as a number would silently change on a hand edit; JSON has no implicit
 * typing, is what `--json` prints everywhere else, and `jq` reads it.
 *
 * The dump keeps every row as stored, ids included, and addresses exactly as the
 * database holds them (SPEC §4 allows host bits in a stored address, e.g. the demo's
 * host subnet 127.0.0.1/26), so export + import reproduces the tables byte for byte.
 */
import { InputError } from '../util/errors.js';
import {
  cidrContains,
  formatCidr,
  formatIpv4,
  maskToPrefix,
  parseIpv4,
  type Cidr,
  type Ipv4,
} from '../util/ipv4.js';
import type { SchemaKind } from './schema.js';
import {
  checkEnclaveSubnetRange,
  parseMeasurement,
  quoteInput,
  validateAppName,
  validateCategory,
} from './validate.js';

export const DUMP_FORMAT = 'seng-policy-store';
export const DUMP_VERSION = 1;

export interface SubnetDump {
  id: number;
  /** Stored address / prefix (or / dotted mask when the mask is not contiguous). */
  subnet: string;
  gateway: string | null;
}

export interface AppDump {
  id: number;
  name: string;
  mrEnclave: string;
  mrSigner: string;
  /** Vanilla only. */
  hostSubnet?: string;
  /** Vanilla only: id of an enclave subnet of this dump. */
  enclaveSubnetId?: number;
}

export interface CategoryDump {
  /** The netfilter layout's `categories.id` is not a key and may be null. */
  id: number | null;
  name: string;
  appId: number;
}

export interface PolicyDump {
  format: typeof DUMP_FORMAT;
  version: typeof DUMP_VERSION;
  layout: SchemaKind;
  enclaveSubnets?: SubnetDump[];
  apps: AppDump[];
  categories?: CategoryDump[];
}

/** An address and mask as stored (host order), host bits kept. */
export interface RawCidr {
  address: Ipv4;
  mask: Ipv4;
}

export function formatRawCidr(address: Ipv4, mask: Ipv4): string {
  const prefix = maskToPrefix(mask);
  return `${formatIpv4(address)}/${prefix >= 0 ? prefix : formatIpv4(mask)}`;
}

export function parseRawCidr(text: string, where: string): RawCidr {
  const m = /^([0-9.]+)\/(\d{1,2}|[0-9.]+)$/.exec(text);
  const bad = () =>
    new InputError(`${where}: ${quoteInput(text)} is not ADDRESS/PREFIX`, 'e.g. "192.168.28.0/24"');
  if (!m) throw bad();
  try {
    const address = parseIpv4(m[1] as string);
    const rhs = m[2] as string;
    if (/^\d+$/.test(rhs)) {
      const prefix = Number(rhs);
      if (prefix > 32) throw bad();
      return { address, mask: prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0 };
    }
    return { address, mask: parseIpv4(rhs) };
  } catch {
    throw bad();
  }
}

function toCidr(raw: RawCidr): Cidr {
  return { network: (raw.address & raw.mask) >>> 0, mask: raw.mask, prefix: maskToPrefix(raw.mask) };
}

function overlaps(a: Cidr, b: Cidr): boolean {
  return cidrContains(a, b.network) || cidrContains(b, a.network);
}

// ---- validation of an untrusted document ----

type Json = unknown;

function fail(where: string, what: string, hint?: string): never {
  throw new InputError(
    `${where}: ${what}`,
    hint ?? 'fix the file, or export a fresh one with: seng db export',
  );
}

function object(v: Json, where: string): Record<string, Json> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(where, 'must be an object');
  return v as Record<string, Json>;
}

function array(v: Json, where: string): Json[] {
  if (!Array.isArray(v)) fail(where, 'must be an array');
  return v;
}

function string(v: Json, where: string): string {
  if (typeof v !== 'string') fail(where, 'must be a string');
  return v;
}

function rowId(v: Json, where: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) fail(where, 'must be an integer');
  return v;
}

function onlyKeys(o: Record<string, Json>, allowed: string[], where: string): void {
  const extra = Object.keys(o).find((k) => !allowed.includes(k));
  if (extra !== undefined) fail(where, `unknown field ${quoteInput(extra)}`);
}

/** What an import writes: rows with ids and values in the encoding they are stored in. */
export interface ValidDump {
  layout: SchemaKind;
  subnets: { id: number; subnet: RawCidr; gateway: Ipv4 | null }[];
  apps: {
    id: number;
    name: string;
    mrEnclave: Buffer;
    mrSigner: Buffer;
    hostSubnet?: RawCidr;
    enclaveSubnetId?: number;
  }[];
  categories: { id: number | null; name: string; appId: number }[];
}

/** Rethrows an InputError with the place in the file in front of its message. */
function at<T>(where: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof InputError) throw new InputError(`${where}: ${err.message}`, err.hint);
    throw err;
  }
}

function validateSubnets(input: Json): ValidDump['subnets'] {
  const seen: ValidDump['subnets'] = [];
  array(input, 'enclaveSubnets').forEach((item, i) => {
    const where = `enclaveSubnets[${i}]`;
    const o = object(item, where);
    onlyKeys(o, ['id', 'subnet', 'gateway'], where);
    const id = rowId(o['id'], `${where}.id`);
    const subnet = parseRawCidr(string(o['subnet'], `${where}.subnet`), `${where}.subnet`);
    const cidr = toCidr(subnet);
    if (cidr.prefix < 0) fail(`${where}.subnet`, 'an enclave subnet needs a contiguous mask');
    if (cidr.prefix > 30)
      fail(`${where}.subnet`, `${formatCidr(cidr)} is too small`, 'use a prefix of /30 or shorter');
    at(`${where}.subnet`, () => checkEnclaveSubnetRange(cidr));
    const gateway =
      o['gateway'] === null
        ? null
        : at(`${where}.gateway`, () => parseIpv4(string(o['gateway'], `${where}.gateway`)));
    if (gateway !== null && !cidrContains(cidr, gateway)) {
      fail(`${where}.gateway`, `${formatIpv4(gateway)} is not inside ${formatCidr(cidr)}`);
    }
    const clash = seen.find((s) => s.id === id || overlaps(toCidr(s.subnet), cidr));
    if (clash) {
      fail(
        where,
        clash.id === id
          ? `id ${id} is used twice`
          : `${formatCidr(cidr)} overlaps enclave subnet ${clash.id} (${formatCidr(toCidr(clash.subnet))})`,
      );
    }
    seen.push({ id, subnet, gateway });
  });
  return seen;
}

function validateApps(input: Json, layout: SchemaKind, subnets: ValidDump['subnets']): ValidDump['apps'] {
  const apps: ValidDump['apps'] = [];
  array(input, 'apps').forEach((item, i) => {
    const where = `apps[${i}]`;
    const o = object(item, where);
    const keys = ['id', 'name', 'mrEnclave', 'mrSigner'];
    onlyKeys(o, layout === 'vanilla' ? [...keys, 'hostSubnet', 'enclaveSubnetId'] : keys, where);
    const id = rowId(o['id'], `${where}.id`);
    if (apps.some((a) => a.id === id)) fail(`${where}.id`, `id ${id} is used twice`);
    const name = at(`${where}.name`, () => validateAppName(string(o['name'], `${where}.name`)));
    const mrEnclave = at(where, () =>
      parseMeasurement(string(o['mrEnclave'], `${where}.mrEnclave`), 'mrenclave'),
    );
    const mrSigner = at(where, () =>
      parseMeasurement(string(o['mrSigner'], `${where}.mrSigner`), 'mrsigner'),
    );
    const app: ValidDump['apps'][number] = { id, name, mrEnclave, mrSigner };
    if (layout === 'netfilter') {
      if (apps.some((a) => a.mrEnclave.equals(mrEnclave)))
        fail(`${where}.mrEnclave`, 'measurement is listed twice');
    } else {
      const hostSubnet = parseRawCidr(string(o['hostSubnet'], `${where}.hostSubnet`), `${where}.hostSubnet`);
      const host = toCidr(hostSubnet);
      if (host.prefix < 0) fail(`${where}.hostSubnet`, 'a host subnet needs a contiguous mask');
      const enclaveSubnetId = rowId(o['enclaveSubnetId'], `${where}.enclaveSubnetId`);
      if (!subnets.some((s) => s.id === enclaveSubnetId)) {
        fail(`${where}.enclaveSubnetId`, `no enclave subnet with id ${enclaveSubnetId} in this file`);
      }
      for (const other of apps.filter((a) => a.mrEnclave.equals(mrEnclave) && a.hostSubnet)) {
        const otherHost = toCidr(other.hostSubnet as RawCidr);
        if (overlaps(otherHost, host)) {
          fail(
            `${where}.hostSubnet`,
            `${formatCidr(host)} overlaps ${formatCidr(otherHost)} of app id ${other.id} with the same measurement: admission would be ambiguous`,
          );
        }
      }
      app.hostSubnet = hostSubnet;
      app.enclaveSubnetId = enclaveSubnetId;
    }
    apps.push(app);
  });
  return apps;
}

function validateCategories(input: Json, apps: ValidDump['apps']): ValidDump['categories'] {
  const out: ValidDump['categories'] = [];
  array(input, 'categories').forEach((item, i) => {
    const where = `categories[${i}]`;
    const o = object(item, where);
    onlyKeys(o, ['id', 'name', 'appId'], where);
    const id = o['id'] === null ? null : rowId(o['id'], `${where}.id`);
    const name = at(`${where}.name`, () => validateCategory(string(o['name'], `${where}.name`)));
    const appId = rowId(o['appId'], `${where}.appId`);
    if (!apps.some((a) => a.id === appId)) fail(`${where}.appId`, `no app with id ${appId} in this file`);
    if (out.some((c) => c.name === name && c.appId === appId))
      fail(where, `app ${appId} is in category ${name} twice`);
    out.push({ id, name, appId });
  });
  return out;
}

/** Checks a parsed dump completely (same rules as the db commands) before anything is written. */
export function validateDump(input: Json): ValidDump {
  const top = object(input, 'file');
  if (top['format'] !== DUMP_FORMAT) {
    fail('file', `is not a seng policy store export (format must be "${DUMP_FORMAT}")`);
  }
  if (top['version'] !== DUMP_VERSION) {
    fail(
      'file',
      `has version ${quoteInput(String(top['version']))}; this seng reads version ${DUMP_VERSION}`,
    );
  }
  const layout = top['layout'];
  if (layout !== 'vanilla' && layout !== 'netfilter') fail('layout', 'must be "vanilla" or "netfilter"');
  if (layout === 'vanilla') {
    onlyKeys(top, ['format', 'version', 'layout', 'enclaveSubnets', 'apps'], 'file');
    const subnets = validateSubnets(top['enclaveSubnets']);
    return { layout, subnets, apps: validateApps(top['apps'], layout, subnets), categories: [] };
  }
  onlyKeys(top, ['format', 'version', 'layout', 'apps', 'categories'], 'file');
  const apps = validateApps(top['apps'], layout, []);
  return { layout, subnets: [], apps, categories: validateCategories(top['categories'], apps) };
}
