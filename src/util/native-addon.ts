/**
 * The one loader of seng's N-API addons (native/<name>/build/Release/<file>.node, built by
 * `npm run build:native`): finds the package root the same way for every addon and turns a
 * missing or unloadable addon into a typed error with a hint.
 */
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EnvironmentError, errorMessage } from './errors.js';

/** The package root: the nearest ancestor directory holding seng's package.json. */
export function packageRoot(from: string = dirname(fileURLToPath(import.meta.url))): string {
  let dir = from;
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'seng') return dir;
      } catch {
        /* not ours; keep walking */
      }
    }
    const up = dirname(dir);
    if (up === dir) throw new EnvironmentError('ENOPKG', `cannot find seng's package.json above ${from}`);
    dir = up;
  }
}

/**
 * Where the native builds live: the package root, or SENG_NATIVE_ROOT (relative to it), e.g.
 * SENG_NATIVE_ROOT=build-sanitize for the ASan/UBSan variant (docs/native.md).
 */
export function nativeRoot(): string {
  const override = process.env.SENG_NATIVE_ROOT;
  return override ? resolve(packageRoot(), override) : packageRoot();
}

export interface NativeAddonSpec {
  /** Folder under native/, e.g. 'dtls'. */
  dir: string;
  /** File under build/Release/, e.g. 'seng_dtls.node'. */
  file: string;
  /** Error code for a missing or unloadable addon, e.g. 'EDTLS_NATIVE'. */
  code: string;
  /** What it is, for messages, e.g. 'DTLS'. */
  what: string;
}

const loaded = new Map<string, unknown>();

/** Loads (once) and returns the addon; throws EnvironmentError(spec.code) with a hint if it cannot. */
export function loadNativeAddon<T>(spec: NativeAddonSpec): T {
  const cached = loaded.get(spec.dir);
  if (cached !== undefined) return cached as T;
  const file = join(nativeRoot(), 'native', spec.dir, 'build', 'Release', spec.file);
  if (!existsSync(file)) {
    throw new EnvironmentError(
      spec.code,
      `the ${spec.what} addon is not built (${file} is missing)`,
      'run `npm run build:native` (needs g++, make, python3 and the Node headers)',
    );
  }
  let addon: T;
  try {
    addon = createRequire(import.meta.url)(file) as T;
  } catch (err) {
    throw new EnvironmentError(
      spec.code,
      `cannot load the ${spec.what} addon ${file}: ${errorMessage(err)}`,
      'rebuild it for this Node version: npm run build:native',
      err,
    );
  }
  loaded.set(spec.dir, addon);
  return addon;
}
