/** Flags and output helpers shared by the `seng db …` commands. */
import { Flags } from '@oclif/core';
import { renameSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { formatCidr, formatIpv4 } from '../util/ipv4.js';
import {
  Store,
  StoreIoError,
  StorePathError,
  StorePermissionError,
  type AppRecord,
  type SchemaKind,
  type SubnetRecord,
} from '../store/index.js';
import type { ValidDump } from '../store/dump.js';

export const dbFlag = Flags.string({
  char: 'd',
  summary: 'Policy store: SQLite file or postgres:// URL (default: $SENG_DB).',
  description:
    'A path is a SQLite file; postgres://USER[:PASSWORD]@HOST[:PORT]/DB or postgres://USER@/DB?host=/run/postgresql (Unix socket) is a PostgreSQL database holding the policy tables (docs/fleet.md). Set SENG_DB to leave -d out. SQLite writes wait up to SENG_DB_BUSY_TIMEOUT_MS (default 5000) for another writer to finish.',
  env: 'SENG_DB',
  required: true,
});

/**
 * Writes a complete SQLite database under a temporary name next to `path` and renames it into
 * place, so a failure (or a crash) leaves any old file intact.
 */
export function createSqliteAtomically(
  path: string,
  schema: SchemaKind,
  opts: { demo?: boolean; rows?: ValidDump } = {},
): void {
  const temp = join(dirname(path), `.${basename(path)}.seng-init-${process.pid}`);
  try {
    const store = Store.create(temp, schema, opts.demo ? { demo: true } : {});
    try {
      if (opts.rows) store.importDump(opts.rows);
    } finally {
      store.close();
    }
  } catch (err) {
    rmSync(temp, { force: true });
    rmSync(`${temp}-journal`, { force: true });
    throw err;
  }
  try {
    renameSync(temp, path);
  } catch (err) {
    rmSync(temp, { force: true });
    throw fileError(err, path);
  }
}

/** Text for a terminal: control and format characters of stored values are shown escaped. */
export function printable(text: string): string {
  return text.replace(/[\p{Cc}\p{Cf}]/gu, (ch) => {
    const cp = ch.codePointAt(0) ?? 0;
    return cp <= 0xff ? `\\x${cp.toString(16).padStart(2, '0')}` : `\\u{${cp.toString(16)}}`;
  });
}

export function subnetJson(s: SubnetRecord): { id: number; subnet: string; gateway: string | null } {
  return { id: s.id, subnet: formatCidr(s.cidr), gateway: s.gateway === null ? null : formatIpv4(s.gateway) };
}

export interface AppJson {
  id: number;
  name: string;
  mrEnclave: string;
  mrSigner: string;
  categories?: string[];
  hostSubnet?: string;
  enclaveSubnet?: string | null;
}

export function appJson(a: AppRecord, subnets: SubnetRecord[]): AppJson {
  const out: AppJson = {
    id: a.id,
    name: a.name,
    mrEnclave: a.mrEnclave.toString('hex'),
    mrSigner: a.mrSigner.toString('hex'),
  };
  if (a.hostSubnet) {
    out.hostSubnet = formatCidr(a.hostSubnet);
    const s = subnets.find((x) => x.id === a.enclaveSubnetId);
    out.enclaveSubnet = s ? formatCidr(s.cidr) : null;
  } else {
    out.categories = a.categories;
  }
  return out;
}

/** Renders rows as an aligned text table for terminals. */
export function table(headers: string[], rows: string[][]): string {
  rows = rows.map((r) => r.map(printable));
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

/** Turns a Node file-system error on writing `path` into a typed error with a hint. */
export function fileError(err: unknown, path: string): unknown {
  const code = (err as NodeJS.ErrnoException).code;
  const dir = dirname(path);
  switch (code) {
    case 'ENOENT':
      return new StorePathError(`directory ${dir} does not exist`, `create it first: mkdir -p ${dir}`, err);
    case 'ENOTDIR':
      return new StorePathError(`${dir} is not a directory`, 'pick a path inside a directory', err);
    case 'EISDIR':
      return new StorePathError(
        `${path} is a directory`,
        `pass a file path, e.g. ${join(path, 'policy.json')}`,
        err,
      );
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
      return new StorePermissionError(
        `cannot write ${path}: permission denied`,
        `check ls -ld ${dir} ${path}`,
        err,
      );
    case 'ENOSPC':
      return new StoreIoError(`cannot write ${path}: the disk is full`, 'free some space and retry', err);
    default:
      // Any other errno of the file system (EEXIST, EIO, …) is the environment's, not a bug.
      return typeof code === 'string'
        ? new StoreIoError(
            `cannot write ${path}: ${(err as Error).message}`,
            `check ls -ld ${dir} ${path}`,
            err,
          )
        : err;
  }
}
