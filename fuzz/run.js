// Builds and runs the libFuzzer harness of native/common (fuzz/seng_net_fuzz.c) with ASan and
// UBSan, for a fixed number of executions.
//   node fuzz/run.js [--runs N] [--seed S] [--json]
// Exit 0: no crash; 1: the fuzzer found a crash (the input is saved under fuzz/build/);
// 3: clang with libFuzzer is missing (scripts/install-system-deps.sh installs it).
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const argv = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : dflt;
};
const runs = Number(opt('--runs', '100000'));
const seed = Number(opt('--seed', '1'));
const json = argv.includes('--json');

function findClang() {
  for (const cc of ['clang-14', 'clang', 'clang-15', 'clang-16']) {
    const r = spawnSync(cc, ['--version'], { stdio: 'ignore' });
    if (r.status === 0) return cc;
  }
  return undefined;
}

const sources = [join(here, 'seng_net_fuzz.c'), join(root, 'native', 'common', 'seng_net.c')];
const buildDir = join(here, 'build');
const binary = join(buildDir, 'seng_net_fuzz');

function build() {
  const cc = findClang();
  if (!cc) {
    console.error(
      'fuzz: clang with libFuzzer not found; run scripts/install-system-deps.sh (clang-14, libclang-rt-14-dev)',
    );
    process.exit(3);
  }
  const newest = Math.max(
    ...sources.map((f) => statSync(f).mtimeMs),
    statSync(join(root, 'native', 'common', 'seng_net.h')).mtimeMs,
  );
  if (existsSync(binary) && statSync(binary).mtimeMs > newest) return;
  mkdirSync(buildDir, { recursive: true });
  const r = spawnSync(
    cc,
    [
      '-g',
      '-O1',
      '-fsanitize=fuzzer,address,undefined',
      '-fno-sanitize-recover=undefined',
      '-I',
      join(root, 'native', 'common'),
      ...sources,
      '-o',
      binary,
    ],
    { stdio: 'inherit' },
  );
  if (r.status !== 0) {
    console.error('fuzz: building the harness failed');
    process.exit(3);
  }
}

/** Small seeds, one per harness mode (the first byte selects it). */
function seedCorpus(dir) {
  const tso = Buffer.alloc(1 + 2 + 10 + 40 + 3000);
  tso[0] = 0;
  tso.writeUInt16BE(1364, 1); // mtu - 68
  tso[3] = 1; // NEEDS_CSUM
  tso[4] = 1; // GSO_TCPV4
  tso.writeUInt16LE(1380, 7);
  tso.writeUInt16LE(20, 9);
  tso.writeUInt16LE(16, 11);
  const ip = tso.subarray(13);
  ip[0] = 0x45;
  ip.writeUInt16BE(ip.length, 2);
  ip[9] = 6;
  ip[32] = 0x50;
  ip[33] = 0x18;
  writeFileSync(join(dir, 'raw-tso'), tso);
  writeFileSync(
    join(dir, 'gro'),
    Buffer.from([1, ...Array.from({ length: 64 }, (_, i) => [0, 200, 0x80, i]).flat()]),
  );
  writeFileSync(
    join(dir, 'tso'),
    Buffer.from([2, 3, 0x40, 0, 0x05, 0x64, 0x05, 0x3c, 0x19, 0xff, 0xff, 0xf0, 0, 1, 2]),
  );
  writeFileSync(join(dir, 'checks'), Buffer.concat([Buffer.from([3]), ip.subarray(0, 60)]));
}

build();
const corpus = mkdtempSync(join(tmpdir(), 'seng-fuzz-'));
try {
  seedCorpus(corpus);
  const started = process.hrtime.bigint();
  const r = spawnSync(
    binary,
    [
      `-runs=${runs}`,
      `-seed=${seed}`,
      '-max_len=70000',
      '-rss_limit_mb=2048',
      '-print_final_stats=1',
      `-artifact_prefix=${buildDir}/`,
      corpus,
    ],
    { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 },
  );
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const out = `${r.stdout}${r.stderr}`;
  const stat = (name) => Number(new RegExp(`stat::${name}:\\s+(\\d+)`).exec(out)?.[1] ?? NaN);
  const cov = [...out.matchAll(/cov: (\d+)/g)].pop()?.[1];
  const result = {
    harness: 'seng_net_fuzz',
    runs,
    executions: stat('number_of_executed_units'),
    newUnits: stat('new_units_added'),
    coverage: cov === undefined ? null : Number(cov),
    seconds: Math.round(seconds * 10) / 10,
    crashed: r.status !== 0,
  };
  if (json) console.log(JSON.stringify(result));
  else
    console.log(
      `fuzz: ${result.executions} executions in ${result.seconds} s, coverage ${result.coverage}, ${result.crashed ? 'CRASH' : 'no crash'}`,
    );
  if (r.status !== 0) {
    console.error(out.split('\n').slice(-60).join('\n'));
    process.exit(1);
  }
} finally {
  rmSync(corpus, { recursive: true, force: true });
}
