// Builds every native addon under native/<name>/ (each has its own binding.gyp) with node-gyp,
// against the running Node's headers (npm's nodedir). Skips folders without a binding.gyp.
import { existsSync, readdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createRequire } from 'node:module';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(pathToFileURL(join(root, 'package.json')));
const nodeGyp = require.resolve('node-gyp/bin/node-gyp.js');
const nativeDir = join(root, 'native');
for (const name of readdirSync(nativeDir)) {
  const dir = join(nativeDir, name);
  if (!existsSync(join(dir, 'binding.gyp'))) continue;
  const args = [nodeGyp, 'rebuild', '--directory', dir];
  if (existsSync('/usr/include/node/node_api.h')) args.push('--nodedir=/usr');
  console.log(`building native/${name}`);
  const r = spawnSync(process.execPath, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0) {
    console.error(`native/${name}: node-gyp failed (exit ${r.status}); is g++ installed?`);
    process.exit(1);
  }
}
