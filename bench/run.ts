/**
 * `npm run bench` — builds namespace topologies, measures seng next to the alternatives in
 * one run on this machine, tears everything down and writes BENCHMARKS.md plus the raw
 * results (bench/results/latest.json). See docs/bench.md.
 *
 *   npm run bench                      full run (≈ 20 min)
 *   npm run bench -- --quick           short pass (a few minutes)
 *   npm run bench -- --only datapath   one section (datapath, admission, enforcement, policy-scale, memory, soak, profile, fuzz, fleet); comma-separated
 *   npm run bench -- --out DIR         write the report and JSON somewhere else
 *   npm run bench -- --render          re-render BENCHMARKS.md from the last results (after editing bench/findings.md)
 *   npm run bench -- --only X --merge  re-run sections and keep the other sections of the last results
 *                                      (each section records when it ran; the report says so)
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildLab, cleanupAll, cleanupAllSync, repoRoot, type Lab } from './lib/lab.js';
import { errorText, log, machineInfo, opensslSpeed, type BenchOptions } from './lib/util.js';
import { runDatapath } from './datapath.js';
import { runAdmission } from './admission.js';
import { runEnforcement } from './enforcement.js';
import { runPolicyScale } from './policy-scale.js';
import { runMemory } from './memory.js';
import { runProfile } from './profile.js';
import { runFuzz } from './fuzz.js';
import { runSoak } from './soak.js';
import { runFleet } from './fleet.js';
import { renderReport, type BenchResults } from './report.js';

export const SECTIONS = [
  'datapath',
  'admission',
  'enforcement',
  'policy-scale',
  'memory',
  'soak',
  'profile',
  'fuzz',
  'fleet',
] as const;

function parseArgs(
  argv: string[],
): BenchOptions & { writeReport: boolean; renderOnly: boolean; merge: boolean } {
  const only = new Set<string>();
  let quick = false;
  let renderOnly = false;
  let outDir = repoRoot;
  let writeReport = true;
  let merge = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') quick = true;
    else if (a === '--only') {
      const v = argv[++i] ?? '';
      for (const s of v.split(',')) {
        if (!(SECTIONS as readonly string[]).includes(s))
          throw new Error(`unknown section "${s}" (one of ${SECTIONS.join(', ')})`);
        only.add(s);
      }
    } else if (a === '--out') outDir = argv[++i] ?? outDir;
    else if (a === '--no-report') writeReport = false;
    else if (a === '--render') renderOnly = true;
    else if (a === '--merge') merge = true;
    else if (a === '--help' || a === '-h') {
      process.stdout.write(
        'usage: npm run bench -- [--quick] [--only datapath|admission|enforcement|policy-scale|memory|soak|profile|fuzz|fleet] [--out DIR] [--no-report] [--render] [--merge]\n' +
          '  --merge: with --only, keep the other sections of bench/results/latest.json\n' +
          '  --render: only re-render BENCHMARKS.md from bench/results/latest.json (e.g. after editing bench/findings.md)\n',
      );
      process.exit(0);
    } else throw new Error(`unknown option ${a}`);
  }
  if (merge && only.size === 0) throw new Error('--merge needs --only SECTIONS');
  return { quick, only, outDir, writeReport, renderOnly, merge };
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.renderOnly) {
    const res = JSON.parse(
      readFileSync(join(opts.outDir, 'bench', 'results', 'latest.json'), 'utf8'),
    ) as BenchResults;
    writeFileSync(join(opts.outDir, 'BENCHMARKS.md'), renderReport(res));
    log(`report: ${join(opts.outDir, 'BENCHMARKS.md')}`);
    return;
  }
  if (process.getuid?.() !== 0)
    throw new Error('the benchmark needs root (network namespaces, TUN, nftables)');
  const started = Date.now();
  const previous = opts.merge ? readPrevious(opts.outDir) : undefined;
  const results: BenchResults = {
    version: 1,
    mode: opts.quick ? 'quick' : 'full',
    machine: machineInfo(),
    sections: {},
    errors: {},
    durationSeconds: 0,
    ...(process.env.SENG_BENCH_GATEWAY_WRAP ? { gatewayWrap: process.env.SENG_BENCH_GATEWAY_WRAP } : {}),
  };
  const want = (s: string) => opts.only.size === 0 || opts.only.has(s);
  let lab: Lab | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    log(`${sig}: cleaning up`);
    cleanupAllSync();
    lab?.destroy();
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    if (want('admission')) {
      try {
        log('openssl speed (crypto-only limits)');
        results.opensslSpeed = opensslSpeed(opts.quick ? 1 : 3);
      } catch (err) {
        results.errors['openssl-speed'] = errorText(err);
      }
    }
    if (['datapath', 'admission', 'memory', 'soak', 'profile', 'fleet'].some(want)) {
      try {
        log('building the namespace lab');
        lab = await buildLab();
      } catch (err) {
        results.errors.lab = errorText(err);
        log(`lab failed: ${results.errors.lab}`);
      }
    }
    const section = async <T>(name: string, fn: () => Promise<T>) => {
      if (!want(name)) return;
      log(`=== ${name}`);
      const t0 = Date.now();
      try {
        (results.sections as Record<string, unknown>)[name] = await fn();
        (results.sectionTimes ??= {})[name] = new Date().toISOString();
      } catch (err) {
        results.errors[name] = errorText(err);
        log(`${name} failed: ${results.errors[name]}`);
      }
      log(`=== ${name} done in ${Math.round((Date.now() - t0) / 1000)} s`);
    };
    const needLab = () => {
      if (!lab) throw new Error(`no lab: ${results.errors.lab ?? 'not built'}`);
      return lab;
    };
    await section('datapath', () => runDatapath(needLab(), opts));
    await section('admission', () => runAdmission(needLab(), opts, results.opensslSpeed));
    await section('enforcement', () => runEnforcement(opts));
    await section('policy-scale', () => runPolicyScale(opts));
    await section('memory', () => runMemory(needLab(), opts));
    await section('soak', () => runSoak(needLab(), opts));
    await section('profile', () => runProfile(needLab(), opts));
    await section('fuzz', () => runFuzz(opts));
    await section('fleet', () => runFleet(needLab(), opts));
  } finally {
    await cleanupAll();
    lab?.destroy();
  }
  results.durationSeconds = Math.round((Date.now() - started) / 1000);
  if (previous) mergeInto(results, previous);
  results.loadAverageEnd = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  mkdirSync(join(opts.outDir, 'bench', 'results'), { recursive: true });
  const jsonPath = join(opts.outDir, 'bench', 'results', 'latest.json');
  writeFileSync(jsonPath, await formatJson(results));
  log(`raw results: ${jsonPath}`);
  if (opts.writeReport) {
    const md = join(opts.outDir, 'BENCHMARKS.md');
    writeFileSync(md, renderReport(results));
    log(`report: ${md}`);
  }
}

function readPrevious(outDir: string): BenchResults {
  return JSON.parse(readFileSync(join(outDir, 'bench', 'results', 'latest.json'), 'utf8')) as BenchResults;
}

/**
 * Keeps the sections (and their errors and times) of an earlier run that this run did not
 * repeat. The machine line stays this run's; every section's time is shown in the report, so
 * a reader sees which figures are older.
 */
function mergeInto(results: BenchResults, previous: BenchResults): void {
  const ran = new Set(Object.keys(results.sections).concat(Object.keys(results.errors)));
  const sections = results.sections as Record<string, unknown>;
  const oldSections = previous.sections as Record<string, unknown>;
  const fallback = previous.machine.date ?? 'an earlier run';
  for (const [name, value] of Object.entries(oldSections)) {
    if (ran.has(name)) continue;
    sections[name] = value;
    (results.sectionTimes ??= {})[name] = previous.sectionTimes?.[name] ?? fallback;
  }
  for (const [name, text] of Object.entries(previous.errors)) {
    if (!ran.has(name) && !(name in results.errors)) results.errors[name] = text;
  }
  results.opensslSpeed ??= previous.opensslSpeed;
  results.mode = previous.mode === results.mode ? results.mode : 'mixed';
}

/** JSON as the repository's formatter writes it (so `npm run lint` accepts the committed file). */
async function formatJson(value: unknown): Promise<string> {
  const text = `${JSON.stringify(value, null, 2)}\n`;
  try {
    const prettier = await import('prettier');
    return await prettier.format(text, { parser: 'json' });
  } catch {
    return text; // prettier is a dev dependency; the raw JSON is just as valid
  }
}

main().catch((err: unknown) => {
  log(`bench failed: ${errorText(err)}`);
  cleanupAllSync();
  process.exit(1);
});
