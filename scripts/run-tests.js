// Runs the compiled test files (dist/test/**/*.test.js) with node's test runner.
//   --unit           only test/unit/** (no root, no network namespaces)
//   --only PATTERN   only files whose path contains PATTERN
// Tests run one file at a time: integration tests build network namespaces and
// measure traffic, and two of those at once on a 2-core machine only add noise.
import { readdirSync, statSync } from 'node:fs';
import { join, dirname, relative } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const unitOnly = argv.includes('--unit');
const onlyIdx = argv.indexOf('--only');
const only = onlyIdx >= 0 ? argv[onlyIdx + 1] : undefined;

function walk(dir) {
  let out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out = out.concat(walk(p));
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

let files = walk(join(root, 'dist', 'test')).sort();
if (unitOnly) files = files.filter((f) => relative(root, f).includes(`${join('test', 'unit')}`));
if (only) files = files.filter((f) => f.includes(only));
if (files.length === 0) {
  console.error('no test files found: run `npm run build` first');
  process.exit(1);
}
const r = spawnSync(
  process.execPath,
  ['--test', '--test-concurrency=1', '--test-timeout=600000', '--test-reporter=spec', ...files],
  { stdio: 'inherit', cwd: root },
);
process.exit(r.status ?? 1);
