// Builds every native addon under native/<name>/ (each has its own binding.gyp) with node-gyp,
// against the running Node's headers (npm's nodedir). Skips folders without a binding.gyp
// (native/common holds C sources the addons compile in).
//   --only NAME    build only native/NAME
//   --sanitize     build with -fsanitize=address,undefined into build-sanitize/native/NAME/build
//                  (the normal build stays untouched); run code against it with
//                  SENG_NATIVE_ROOT=build-sanitize and libasan preloaded (docs/native.md)
import { existsSync, mkdirSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createRequire } from 'node:module';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(pathToFileURL(join(root, 'package.json')));
const nodeGyp = require.resolve('node-gyp/bin/node-gyp.js');
const argv = process.argv.slice(2);
const onlyIdx = argv.indexOf('--only');
const only = onlyIdx >= 0 ? argv[onlyIdx + 1] : undefined;
const sanitize = argv.includes('--sanitize');
const SANITIZE_FLAGS =
  '-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -g -O1';

const nativeDir = join(root, 'native');

/**
 * node-gyp always builds into <dir>/build, so the sanitized variant builds in a mirror of
 * native/ made of symlinks (relative paths such as ../common keep working).
 */
function sanitizeMirror() {
  const mirror = join(root, 'build-sanitize', 'native');
  mkdirSync(mirror, { recursive: true });
  for (const name of readdirSync(nativeDir)) {
    const src = join(nativeDir, name);
    const dst = join(mirror, name);
    if (existsSync(join(src, 'binding.gyp'))) {
      mkdirSync(dst, { recursive: true });
      for (const entry of readdirSync(src)) {
        if (entry === 'build') continue;
        rmSync(join(dst, entry), { force: true, recursive: false });
        symlinkSync(join(src, entry), join(dst, entry));
      }
    } else if (!existsSync(dst)) {
      symlinkSync(src, dst);
    }
  }
  return mirror;
}

const baseDir = sanitize ? sanitizeMirror() : nativeDir;
const env = sanitize
  ? {
      ...process.env,
      CFLAGS: SANITIZE_FLAGS,
      CXXFLAGS: SANITIZE_FLAGS,
      LDFLAGS: '-fsanitize=address,undefined',
    }
  : process.env;
for (const name of readdirSync(baseDir)) {
  const dir = join(baseDir, name);
  if (!existsSync(join(dir, 'binding.gyp'))) continue;
  if (only && name !== only) continue;
  const args = [nodeGyp, 'rebuild', '--directory', dir];
  if (existsSync('/usr/include/node/node_api.h')) args.push('--nodedir=/usr');
  console.log(`building native/${name}${sanitize ? ' (ASan + UBSan)' : ''}`);
  const r = spawnSync(process.execPath, args, { stdio: ['ignore', 'ignore', 'inherit'], env });
  if (r.status !== 0) {
    console.error(`native/${name}: node-gyp failed (exit ${r.status}); is g++ installed?`);
    process.exit(1);
  }
}
