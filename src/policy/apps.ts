/**
 * App resolution for the compiler: a policy names apps by database name or by their
 * 64-hex MRENCLAVE. A measurement needs no database; a name is looked up in an
 * `AppDirectory` (built from the SQLite store with `-d DB`, or from a list in tests).
 */
import { InputError } from '../util/errors.js';

export interface AppDirectory {
  /** Measurements (64 lower-case hex) of every app with this name; empty if unknown. */
  resolveApp(name: string): string[];
  /** Names known for a measurement (for messages and `seng rules check`). */
  namesOf(mrEnclaveHex: string): string[];
  /** Where the names come from, for messages (e.g. the database path). */
  readonly description: string;
}

export interface AppEntry {
  name: string;
  mrEnclave: Buffer | string;
}

/** A directory over a list of (name, measurement) pairs, e.g. `store.listApps()`. */
export function appDirectoryFromList(apps: AppEntry[], description = 'app list'): AppDirectory {
  const byName = new Map<string, Set<string>>();
  const byHex = new Map<string, Set<string>>();
  for (const a of apps) {
    const hex = typeof a.mrEnclave === 'string' ? a.mrEnclave.toLowerCase() : a.mrEnclave.toString('hex');
    if (!/^[0-9a-f]{64}$/.test(hex))
      throw new InputError(`app ${a.name}: measurement ${hex} is not 32 bytes`);
    if (!byName.has(a.name)) byName.set(a.name, new Set());
    byName.get(a.name)?.add(hex);
    if (!byHex.has(hex)) byHex.set(hex, new Set());
    byHex.get(hex)?.add(a.name);
  }
  return {
    description,
    resolveApp: (name) => [...(byName.get(name) ?? [])].sort(),
    namesOf: (hex) => [...(byHex.get(hex.toLowerCase()) ?? [])].sort(),
  };
}

/** The directory used without a database: names cannot be resolved. */
export const emptyAppDirectory: AppDirectory = {
  description: 'no database',
  resolveApp: () => [],
  namesOf: () => [],
};
