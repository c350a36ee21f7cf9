/**
 * Native hygiene, CI-sized (docs/native.md): the TUN addon built with ASan + UBSan runs the
 * offload and TUN tests (real devices in namespaces), and the libFuzzer harness of native/common
 * runs a fixed number of executions. Any sanitizer report or fuzzer crash fails the test.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../../src/tunnel/native.js';

const root = packageRoot();

/** The gcc runtime to preload: node itself is not instrumented, so libasan must come first. */
function sanitizerRuntime(): string {
  const r = spawnSync('gcc', ['-print-file-name=libasan.so'], { encoding: 'utf8' });
  const path = r.stdout.trim();
  assert.ok(
    r.status === 0 && path.startsWith('/') && existsSync(path),
    'libasan (gcc) is missing: run scripts/install-system-deps.sh',
  );
  return path;
}

test('the TUN addon under ASan + UBSan passes the offload and TUN device tests', { timeout: 240_000 }, () => {
  const build = spawnSync(process.execPath, ['scripts/build-native.js', '--sanitize', '--only', 'tun'], {
    cwd: root,
    encoding: 'utf8',
  });
  assert.equal(build.status, 0, build.stderr);
  // Without the parent runner's NODE_TEST_CONTEXT the child reports in plain TAP.
  const { NODE_TEST_CONTEXT: _ctx, ...parentEnv } = process.env;
  const env = {
    ...parentEnv,
    LD_PRELOAD: sanitizerRuntime(),
    // Node's own allocations are not ours to judge at exit; everything else aborts.
    ASAN_OPTIONS: 'detect_leaks=0:abort_on_error=1',
    UBSAN_OPTIONS: 'halt_on_error=1:print_stacktrace=1',
    SENG_NATIVE_ROOT: 'build-sanitize',
  };
  // The sanitized build is the one that gets loaded (and the runtime is in the process).
  const probe = spawnSync(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `const m = await import(${JSON.stringify(join(root, 'dist', 'src', 'tunnel', 'native.js'))});
       m.loadTunAddon();
       const maps = (await import('node:fs')).readFileSync('/proc/self/maps', 'utf8');
       console.log(maps.includes('build-sanitize/native/tun') && maps.includes('libasan') ? 'sanitized' : 'plain');`,
    ],
    { cwd: root, env, encoding: 'utf8' },
  );
  assert.equal(probe.stdout.trim(), 'sanitized', probe.stderr);

  const files = [
    'unit/tunnel/offload.test.js',
    'integration/tunnel/offload.test.js',
    'integration/tunnel/tun.test.js',
  ];
  const r = spawnSync(
    process.execPath,
    [
      '--test',
      '--test-concurrency=1',
      // All but the 200-device churn (the finalizer test covers the same paths in a CI minute).
      '--test-name-pattern=^(?!open/close 200 times)',
      ...files.map((f) => join(root, 'dist', 'test', f)),
    ],
    { cwd: root, env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 },
  );
  const out = `${r.stdout}\n${r.stderr}`;
  assert.doesNotMatch(out, /AddressSanitizer|runtime error:|LeakSanitizer/, out.slice(-4000));
  assert.equal(r.status, 0, out.slice(-4000));
  assert.match(r.stdout, /# fail 0/);
});

test(
  'the libFuzzer harness of native/common runs a fixed number of executions without a crash',
  { timeout: 180_000 },
  () => {
    const r = spawnSync(process.execPath, ['fuzz/run.js', '--runs', '10000', '--json'], {
      cwd: root,
      encoding: 'utf8',
    });
    assert.notEqual(r.status, 3, `${r.stderr}: run scripts/install-system-deps.sh`);
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    const result = JSON.parse(r.stdout.trim().split('\n').pop() as string) as {
      executions: number;
      crashed: boolean;
    };
    assert.equal(result.crashed, false);
    assert.ok(result.executions >= 10000, `executed ${result.executions}`);
  },
);
