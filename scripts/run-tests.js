// Runs the compiled test files (dist/test/**/*.test.js) with node's test runner.
//   --unit           only test/unit/** (no root, no network namespaces)
//   --only PATTERN   only files whose path contains PATTERN
//   --serial         every file one after the other in one process (no parallel group)
//   --jobs N         files of the parallel group run N at a time (default 2)
//   --group G        only the files of one group: parallel or sequential
//
// Two groups run at the same time, each in its own `node --test` process:
//   - the sequential group, one file at a time: integration tests that build network
//     namespaces and send traffic, or that look at machine-wide state (nft tables in the root
//     namespace, conntrack, the kernel module, TUN devices). Two of those at once on a 2-core
//     machine would only add noise, and some of them share global state.
//   - the parallel group, --jobs files at a time: files listed in PARALLEL below. Each was
//     read for what it touches: only private temporary directories, private PostgreSQL
//     servers (test/helpers/postgres.ts: own directory and Unix socket per process, no TCP),
//     loopback sockets on ports the kernel picks, fakes of the kernel interfaces, and CLI
//     processes that are refused before they create anything. None of them measures time or
//     traffic, and their deadlines are generous, so a busy machine only makes them slower.
// The sequential group's output is shown as it comes; the parallel group's is shown in one
// block when it is done, so the two never interleave. Exit code: non-zero if either fails.
//
// `seng` CLI processes started by the tests (test/helpers/cli.ts) start with a fresh oclif
// command manifest (see refreshManifest), which halves the start-up of every CLI process.
// SENG_TEST_SHARED_DIR is a directory for files the test files of one run
// may share (the gateway labs' keys, test/helpers/gateway-lab.ts).
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join, dirname, relative, sep } from 'node:path';
import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { writeManifest } from './gen-manifest.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const testRoot = join(root, 'dist', 'test');
const argv = process.argv.slice(2);
const usage =
  'usage: node scripts/run-tests.js [--unit] [--only PATTERN] [--group parallel|sequential] [--serial] [--jobs N]';
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (['--only', '--group', '--jobs'].includes(a) && argv[i + 1] !== undefined) i++;
  else if (a === '--help' || a === '-h') {
    console.log(usage);
    process.exit(0);
  } else if (a !== '--unit' && a !== '--serial') {
    console.error(`unknown argument ${a}\n${usage}`);
    process.exit(2);
  }
}
const unitOnly = argv.includes('--unit');
const serial = argv.includes('--serial');
const onlyIdx = argv.indexOf('--only');
const only = onlyIdx >= 0 ? argv[onlyIdx + 1] : undefined;
const groupIdx = argv.indexOf('--group');
const group = groupIdx >= 0 ? argv[groupIdx + 1] : undefined;
if (group !== undefined && group !== 'parallel' && group !== 'sequential') {
  console.error('--group is parallel or sequential');
  process.exit(2);
}
const jobsIdx = argv.indexOf('--jobs');
const jobs = jobsIdx >= 0 ? Number(argv[jobsIdx + 1]) : 2;
if (!Number.isInteger(jobs) || jobs < 1 || jobs > 16) {
  console.error('--jobs needs an integer from 1 to 16');
  process.exit(2);
}

/**
 * Files (paths under dist/test, prefix match) that may run alongside each other and alongside
 * the sequential group. When in doubt a file stays out of this list.
 */
const PARALLEL = [
  // Logic, fakes of netlink/nft/conntrack, loopback sockets on kernel-chosen ports, temp dirs,
  // private PostgreSQL servers. Nothing in test/unit creates a namespace, device or table.
  'unit/',
  // The policy store through the CLI: SQLite files in private temp dirs, private PostgreSQL
  // servers; no network, no kernel state.
  'integration/store/',
  // Attestation CLI (inspect/verify/sim ca/sim cert) on files in a temp dir.
  'integration/attestation/cli.test.js',
  // `seng serve`, `seng status/kick` and `seng kmod/conntrack/demo` refused before they create
  // anything (fake control sockets in temp dirs; usage errors).
  'integration/gateway/serve-cli.test.js',
  'integration/gateway/control-errors.test.js',
  'integration/kmod/cli-flags.test.js',
  // Builds its own sanitized addon (build-sanitize/, fuzz/build/, used by nothing else in the
  // suite) and runs the TUN tests under it in their own pid-named namespaces.
  'integration/tunnel/sanitize.test.js',
];

function walk(dir) {
  let out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out = out.concat(walk(p));
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

/**
 * Writes the package root's oclif command manifest afresh (scripts/gen-manifest.js, as `npm run
 * build` does), so the tests' `seng` processes import only the command that runs (~0.4 s of CPU
 * less per process) and never see a stale manifest when dist/ was rebuilt with tsc alone. If
 * that fails (a command does not load), the manifest is removed: oclif then discovers the
 * commands itself and the failing command fails its tests.
 */
async function refreshManifest() {
  try {
    await writeManifest(root);
  } catch (err) {
    console.error(`note: no oclif command manifest (seng discovers its commands): ${err.message}`);
    rmSync(join(root, 'oclif.manifest.json'), { force: true });
  }
}

/** Starts one `node --test` process over `files`, `concurrency` files at a time. */
function runGroup(files, concurrency, env) {
  const child = spawn(
    process.execPath,
    [
      '--test',
      `--test-concurrency=${concurrency}`,
      '--test-timeout=600000',
      '--test-reporter=spec',
      ...files,
    ],
    { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const done = new Promise((resolve) => child.on('close', (code) => resolve(code ?? 1)));
  return { child, done };
}

/** The text without terminal colour codes. */
function plain(text) {
  return text.replace(new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, 'g'), '');
}

/**
 * The spec reporter's "failing tests:" block (each failed test with its error and stack), cut at
 * the closing counters. Repeated at the very end of the run, so a log read from its tail (a CI
 * summary) shows why a test failed, not only that the sequential group did.
 */
function failingBlock(text) {
  const t = plain(text);
  const at = t.lastIndexOf('failing tests:');
  if (at < 0) return '';
  const end = t.indexOf('\nℹ tests ', at);
  const block = t.slice(at, end < 0 ? undefined : end).trimEnd();
  return block.length > 12_000 ? `${block.slice(0, 12_000)}\n… (cut; the whole block is above)` : block;
}

/** The spec reporter's closing counters (ℹ tests 12 …) of one group's output. */
function counters(text) {
  const out = {};
  for (const m of plain(text).matchAll(/^ℹ (tests|pass|fail|cancelled|skipped|todo) (\d+)$/gm))
    out[m[1]] = Number(m[2]);
  return out;
}

let files = walk(testRoot).sort();
if (unitOnly) files = files.filter((f) => relative(root, f).includes(`${join('test', 'unit')}`));
if (only) files = files.filter((f) => f.includes(only));
if (files.length === 0) {
  console.error('no test files found: run `npm run build` first');
  process.exit(1);
}
const isParallel = (f) => {
  const rel = relative(testRoot, f).split(sep).join('/');
  return PARALLEL.some((p) => rel.startsWith(p));
};
let parallelFiles = serial ? [] : files.filter(isParallel);
let sequentialFiles = serial ? files : files.filter((f) => !isParallel(f));
if (group === 'parallel') sequentialFiles = [];
if (group === 'sequential') parallelFiles = [];
if (parallelFiles.length + sequentialFiles.length === 0) {
  console.error(`no test file of the ${group} group matches`);
  process.exit(1);
}

/** Removes the temp directories of runs that were killed before they could (names carry the PID). */
function reapStaleRunDirs() {
  for (const name of readdirSync(tmpdir())) {
    const owner = /^seng-test-(?:cli|shared)-(\d+)-/.exec(name); // cli: left by older runners
    if (!owner) continue;
    try {
      process.kill(Number(owner[1]), 0);
      continue; // that run is still going
    } catch (err) {
      if (err.code === 'EPERM') continue;
    }
    rmSync(join(tmpdir(), name), { recursive: true, force: true });
  }
}

reapStaleRunDirs();
await refreshManifest();
// Files that test files of this run may share (test/helpers/gateway-lab.ts keeps the lab keys
// here, made once instead of once per file).
const sharedDir = mkdtempSync(join(tmpdir(), `seng-test-shared-${process.pid}-`));
const env = { ...process.env, SENG_TEST_SHARED_DIR: sharedDir };
if (process.stdout.isTTY && env.FORCE_COLOR === undefined) env.FORCE_COLOR = '1';
const started = Date.now();
let stopping = false;
const children = [];
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    if (stopping) return;
    stopping = true;
    for (const c of children) c.kill(sig);
  });
}

const runs = [];
if (sequentialFiles.length > 0) {
  const seq = runGroup(sequentialFiles, 1, env);
  children.push(seq.child);
  let text = '';
  seq.child.stdout.on('data', (d) => {
    text += d;
    process.stdout.write(d);
  });
  seq.child.stderr.on('data', (d) => process.stderr.write(d));
  runs.push(seq.done.then((code) => ({ name: 'sequential', code, text })));
}
if (parallelFiles.length > 0) {
  const par = runGroup(parallelFiles, jobs, env);
  children.push(par.child);
  // Alone (e.g. --unit) it streams; beside the sequential group it is shown whole at the end.
  const alone = sequentialFiles.length === 0;
  const header = `── parallel group: ${parallelFiles.length} file${parallelFiles.length === 1 ? '' : 's'}, ${jobs} at a time${alone ? '' : ', alongside the sequential group'} ──\n`;
  let text = '';
  if (alone) process.stdout.write(header);
  par.child.stdout.on('data', (d) => {
    if (alone) process.stdout.write(d);
    text += d;
  });
  par.child.stderr.on('data', (d) => {
    if (alone) process.stderr.write(d);
    text += d;
  });
  runs.push(
    par.done.then((code) => ({ name: 'parallel', code, text, held: alone ? '' : `\n${header}${text}` })),
  );
}
const results = await Promise.all(runs);
rmSync(sharedDir, { recursive: true, force: true });
for (const r of results) if (r.held) process.stdout.write(r.held);

if (results.length > 1) {
  const total = {};
  for (const r of results)
    for (const [k, v] of Object.entries(counters(r.text))) total[k] = (total[k] ?? 0) + v;
  console.log(`\n── both groups (${files.length} files) ──`);
  for (const k of ['tests', 'pass', 'fail', 'cancelled', 'skipped', 'todo'])
    console.log(`ℹ ${k} ${total[k] ?? 0}`);
  console.log(`ℹ wall time ${((Date.now() - started) / 1000).toFixed(1)} s`);
  for (const r of results) {
    if (r.code === 0) continue;
    const block = failingBlock(r.text);
    if (block) console.log(`\n── ${r.name} group, again: ${block}`);
  }
  for (const r of results) if (r.code !== 0) console.log(`✖ the ${r.name} group failed (exit ${r.code})`);
}
process.exit(results.every((r) => r.code === 0) ? 0 : 1);
