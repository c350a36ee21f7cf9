// The `seng attest …` and `seng sim …` commands, run as an admin or a script would.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readFileSync, statSync, existsSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { seng, sengJson, repoRoot } from '../../helpers/cli.js';

const SAMPLE = join(repoRoot, 'test', 'fixtures', 'attestation', 'ecdsa-ratls.der');
const INTEL_SGX_ROOT = join(repoRoot, 'test', 'fixtures', 'attestation', 'intel-sgx-root-ca.pem');
const MRE = 'c3'.repeat(32);
const MRS = 'd4'.repeat(32);

interface VerifyJson {
  ok: boolean;
  kind: string;
  checks: { name: string; ok: boolean; status: string; required: boolean; detail: string }[];
}

let dir = '';
before(() => {
  dir = mkdtempSync(join(tmpdir(), `seng-attest-${process.pid}-`));
});
after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const failed = (j: VerifyJson) => j.checks.filter((c) => c.status === 'fail').map((c) => c.name);

test('attest inspect: the real DCAP sample', () => {
  const { code, json } = sengJson<Record<string, unknown>>(['attest', 'inspect', SAMPLE]);
  assert.equal(code, 0);
  assert.equal(json.kind, 'dcap');
  assert.equal(json.mrEnclave, 'ba955817182da60e188849038328f8088156eb7dbcd4f966428089be6d3fd411');
  assert.equal(json.mrSigner, 'd412a4f07ef83892a5915fb2ab584be31e186e5a4f95ab5f6950fd4eb8694d7b');
  assert.equal(json.reportData, '00'.repeat(64));
  assert.equal(json.isvProdId, 0);
  assert.equal(json.isvSvn, 0);
  assert.equal(json.debug, true);
  const human = seng(['attest', 'inspect', SAMPLE]);
  assert.equal(human.code, 0);
  assert.match(human.stdout, /MRENCLAVE\s+ba955817/);
  // PEM on stdin
  const pem = readFileSync(join(repoRoot, 'test', 'fixtures', 'attestation', 'ecdsa-ratls.pem'), 'utf8');
  const piped = seng(['attest', 'inspect', '-', '--json'], { input: pem });
  assert.equal(piped.code, 0, piped.stderr);
  assert.equal((JSON.parse(piped.stdout) as { mrEnclave: string }).mrEnclave, json.mrEnclave);
});

test('attest verify: the sample passes its PCK chain and fails exactly debug and key binding', () => {
  const { code, json } = sengJson<VerifyJson>([
    'attest',
    'verify',
    SAMPLE,
    '--sgx-root',
    INTEL_SGX_ROOT,
    '--at',
    '2019-03-20T00:00:00Z',
  ]);
  assert.equal(code, 1);
  assert.equal(json.ok, false);
  assert.equal(json.checks.find((c) => c.name === 'pck-chain')?.ok, true);
  assert.deepEqual(failed(json).sort(), ['debug', 'report-data-binding']);
  for (const c of json.checks) {
    assert.equal(typeof c.name, 'string');
    assert.equal(typeof c.ok, 'boolean');
    assert.equal(typeof c.detail, 'string');
  }
  const human = seng(['attest', 'verify', SAMPLE, '--at', '2019-03-20T00:00:00Z', '--allow-debug']);
  assert.equal(human.code, 1);
  assert.match(human.stdout, /FAIL\s+report-data-binding/);
  assert.match(human.stdout, /REJECTED: 1 required check\(s\) failed: report-data-binding/);
});

test('sim ca + sim cert: EPID and DCAP certificates pass with the test roots only', () => {
  const ca = join(dir, 'ca');
  const r = sengJson<{ iasRoot: string; sgxRoot: string }>(['sim', 'ca', '--out', ca]);
  assert.equal(r.code, 0);
  assert.ok(existsSync(r.json.iasRoot) && existsSync(r.json.sgxRoot));
  assert.equal(statSync(join(ca, 'ias-signing.key.pem')).mode & 0o077, 0);
  // A second `sim ca` into the same directory refuses to overwrite it.
  const again = seng(['sim', 'ca', '--out', ca]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /already holds a test authority/);

  const roots = ['--ias-root', r.json.iasRoot, '--sgx-root', r.json.sgxRoot];
  const cases: [string, string[]][] = [
    ['epid', []],
    ['epid', ['--encoding', 'base64', '--key-type', 'rsa3072']],
    ['dcap', []],
    ['dcap', ['--key-type', 'rsa3072']],
  ];
  for (const [i, [kind, extra]] of cases.entries()) {
    const cert = join(dir, `c${i}.${i % 2 ? 'pem' : 'der'}`);
    const keyFile = join(dir, `c${i}.key`);
    const made = seng([
      'sim',
      'cert',
      '--ca',
      ca,
      '--kind',
      kind,
      '--mrenclave',
      MRE,
      '--mrsigner',
      MRS,
      '--isv-svn',
      '4',
      ...extra,
      '--out',
      cert,
      '--key',
      keyFile,
    ]);
    assert.equal(made.code, 0, made.stderr);
    assert.match(readFileSync(keyFile, 'utf8'), /^-----BEGIN PRIVATE KEY-----/);
    if (i % 2) assert.match(readFileSync(cert, 'utf8'), /^-----BEGIN CERTIFICATE-----/);
    else assert.equal(readFileSync(cert)[0], 0x30);

    const ins = sengJson<Record<string, unknown>>(['attest', 'inspect', cert]);
    assert.equal(ins.code, 0);
    assert.equal(ins.json.kind, kind);
    assert.equal(ins.json.mrEnclave, MRE);
    assert.equal(ins.json.mrSigner, MRS);
    assert.equal(ins.json.isvSvn, 4);
    assert.equal(ins.json.debug, false);
    assert.match(String(ins.json.reportData), /^[0-9a-f]{128}$/);

    const ok = sengJson<VerifyJson>(['attest', 'verify', cert, ...roots, '--min-isv-svn', '4']);
    assert.equal(ok.code, 0, JSON.stringify(ok.json));
    assert.equal(ok.json.ok, true);
    assert.equal(ok.json.kind, kind);

    if (i % 2) continue; // the policy paths below do not depend on the key type
    const low = sengJson<VerifyJson>(['attest', 'verify', cert, ...roots, '--min-isv-svn', '5']);
    assert.equal(low.code, 1);
    assert.deepEqual(failed(low.json), ['isv-svn']);

    const dflt = sengJson<VerifyJson>(['attest', 'verify', cert]);
    assert.equal(dflt.code, 1);
    assert.ok(failed(dflt.json).includes(kind === 'epid' ? 'ias-chain' : 'pck-chain'));
  }
});

test('sim cert --status / --debug and verify --allow-status / --allow-debug', () => {
  const ca = join(dir, 'ca2');
  assert.equal(seng(['sim', 'ca', '--out', ca]).code, 0);
  const roots = ['--ias-root', join(ca, 'ias-root.pem'), '--sgx-root', join(ca, 'sgx-root.pem')];
  const cert = join(dir, 'status.der');
  const mk = seng([
    'sim',
    'cert',
    '--ca',
    ca,
    '--kind',
    'epid',
    '--mrenclave',
    MRE,
    '--mrsigner',
    MRS,
    '--status',
    'GROUP_OUT_OF_DATE',
    '--debug',
    '--out',
    cert,
    '--key',
    join(dir, 'status.key'),
  ]);
  assert.equal(mk.code, 0, mk.stderr);
  const strict = sengJson<VerifyJson>(['attest', 'verify', cert, ...roots]);
  assert.deepEqual(failed(strict.json).sort(), ['debug', 'quote-status']);
  const relaxed = sengJson<VerifyJson>([
    'attest',
    'verify',
    cert,
    ...roots,
    '--allow-status',
    'GROUP_OUT_OF_DATE',
    '--allow-debug',
  ]);
  assert.equal(relaxed.code, 0);
  assert.equal(relaxed.json.ok, true);

  // DCAP without collateral or CRLs: admitted ("not evaluated") unless collateral is required.
  const bare = join(dir, 'bare.der');
  const mkBare = seng([
    'sim',
    'cert',
    '--ca',
    ca,
    '--kind',
    'dcap',
    '--mrenclave',
    MRE,
    '--mrsigner',
    MRS,
    '--no-collateral',
    '--no-crls',
    '--out',
    bare,
    '--key',
    join(dir, 'bare.key'),
  ]);
  assert.equal(mkBare.code, 0, mkBare.stderr);
  const lax = sengJson<VerifyJson>(['attest', 'verify', bare, ...roots]);
  assert.equal(lax.code, 0);
  assert.deepEqual(
    lax.json.checks.filter((c) => c.status === 'not-evaluated').map((c) => c.name),
    ['tcb-info', 'tcb-status', 'qe-identity', 'pck-revocation'],
  );
  const strictCollateral = sengJson<VerifyJson>(['attest', 'verify', bare, ...roots, '--require-collateral']);
  assert.equal(strictCollateral.code, 1);
  assert.deepEqual(failed(strictCollateral.json), [
    'tcb-info',
    'tcb-status',
    'qe-identity',
    'pck-revocation',
  ]);
});

test('errors: unreadable, malformed and bad flags exit 1 with a message', () => {
  const missing = seng(['attest', 'verify', join(dir, 'nope.der')]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /Error: cannot read certificate/);
  const junk = seng(['attest', 'inspect', join(repoRoot, 'package.json')]);
  assert.equal(junk.code, 1);
  assert.match(junk.stderr, /^Error: /m);
  const junkJson = sengJson<{ error: { code: string } }>([
    'attest',
    'verify',
    join(repoRoot, 'package.json'),
  ]);
  assert.equal(junkJson.code, 1);
  assert.equal(junkJson.json.error.code, 'ECERT_FORMAT');
  const badStatus = seng(['attest', 'verify', SAMPLE, '--allow-status', 'KEY_REVOKED']);
  assert.equal(badStatus.code, 1);
  assert.match(badStatus.stderr, /cannot be allowed/);
  const badAt = seng(['attest', 'verify', SAMPLE, '--at', 'yesterday-ish']);
  assert.equal(badAt.code, 1);
  assert.match(badAt.stderr, /invalid --at time/);
  const noCa = seng([
    'sim',
    'cert',
    '--ca',
    join(dir, 'no-ca'),
    '--kind',
    'dcap',
    '--mrenclave',
    MRE,
    '--mrsigner',
    MRS,
    '--out',
    join(dir, 'x.der'),
    '--key',
    join(dir, 'x.key'),
  ]);
  assert.equal(noCa.code, 1);
  assert.match(noCa.stderr, /Hint: Create a test authority/);
  const badMr = seng([
    'sim',
    'cert',
    '--ca',
    join(dir, 'ca'),
    '--kind',
    'dcap',
    '--mrenclave',
    'zz',
    '--mrsigner',
    MRS,
    '--out',
    join(dir, 'x.der'),
    '--key',
    join(dir, 'x.key'),
  ]);
  assert.equal(badMr.code, 1);
  assert.match(badMr.stderr, /MRENCLAVE must be 32 bytes/);
  assert.match(badMr.stderr, /Hint: Give MRENCLAVE as 64 hex digits/);
});

/** `seng sim cert` for the MRE/MRS app with the authority in dir/ca, plus `extra` flags. */
const simCert = (out: string, key: string, extra: string[] = []) =>
  seng([
    'sim',
    'cert',
    '--ca',
    join(dir, 'ca'),
    '--kind',
    'epid',
    '--mrenclave',
    MRE,
    '--mrsigner',
    MRS,
    '--out',
    out,
    '--key',
    key,
    ...extra,
  ]);

test('sim cert never replaces files without --force, never writes cert and key to one file', () => {
  if (!existsSync(join(dir, 'ca', 'manifest.json')))
    assert.equal(seng(['sim', 'ca', '--out', join(dir, 'ca')]).code, 0);
  const out = join(dir, 'ow.der');
  const key = join(dir, 'ow.key');
  assert.equal(simCert(out, key).code, 0);
  const certBefore = readFileSync(out);
  const keyBefore = readFileSync(key);

  const again = sengJson<{ error: { code: string; message: string; hint: string } }>([
    'sim',
    'cert',
    '--ca',
    join(dir, 'ca'),
    '--kind',
    'epid',
    '--mrenclave',
    MRE,
    '--mrsigner',
    MRS,
    '--out',
    out,
    '--key',
    key,
  ]);
  assert.equal(again.code, 1);
  assert.equal(again.json.error.code, 'EEXIST');
  assert.match(again.json.error.hint, /--force/);
  assert.deepEqual(readFileSync(out), certBefore, 'certificate untouched');
  assert.deepEqual(readFileSync(key), keyBefore, 'key untouched');

  const forced = simCert(out, key, ['--force']);
  assert.equal(forced.code, 0, forced.stderr);
  assert.notDeepEqual(readFileSync(key), keyBefore, 'replaced with --force');
  assert.equal(statSync(key).mode & 0o077, 0);

  // The test authority's own key: refused even with --force.
  const caKey = join(dir, 'ca', 'sgx-root.key.pem');
  const caKeyBefore = readFileSync(caKey);
  const onCa = simCert(join(dir, 'x1.der'), caKey, ['--force']);
  assert.equal(onCa.code, 1);
  assert.match(onCa.stderr, /is a file of the test authority/);
  assert.deepEqual(readFileSync(caKey), caKeyBefore);

  // One file for both: the key would replace the certificate; refused even with --force.
  const same = join(dir, 'same.der');
  for (const extra of [[], ['--force']]) {
    const r = simCert(same, same, extra);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--out and --key are the same file/);
    assert.equal(existsSync(same), false);
  }
  const alias = simCert(same, join(dir, '.', 'same.der'));
  assert.equal(alias.code, 1);
  assert.match(alias.stderr, /same file/);

  // A directory, a missing directory.
  const isDir = simCert(join(dir, 'ca'), join(dir, 'k2.key'));
  assert.equal(isDir.code, 1);
  assert.match(isDir.stderr, /is a directory/);
  const noDir = simCert(join(dir, 'no', 'such', 'c.der'), join(dir, 'k3.key'));
  assert.equal(noDir.code, 1);
  assert.match(noDir.stderr, /does not exist/);
});

test('sim ca: an --out under a missing or impossible parent fails at once with a hint', () => {
  // Before the fix a recursive mkdir under /proc spun forever: the time limit turns that into a failure.
  const proc = sengJson<{ error: { code: string; hint: string } }>(['sim', 'ca', '--out', '/proc/xx/ca']);
  assert.equal(proc.code, 1);
  assert.equal(proc.json.error.code, 'ESIM_CA');
  assert.match(proc.json.error.hint, /Create \/proc\/xx first/);
  const file = join(dir, 'plain-file');
  writeFileSync(file, 'x');
  const onFile = seng(['sim', 'ca', '--out', file], { timeoutMs: 20_000 });
  assert.equal(onFile.code, 1);
  assert.match(onFile.stderr, /exists and is not a directory/);
  const under = seng(['sim', 'ca', '--out', join(file, 'ca')], { timeoutMs: 20_000 });
  assert.equal(under.code, 1);
  assert.match(under.stderr, /is not a directory/);
});

test('certificate inputs: random bytes, empty, directory, too large, wrong PEM block', () => {
  const binary = join(dir, 'random.bin');
  writeFileSync(binary, Buffer.concat([Buffer.from([0x7f]), randomBytes(600)]));
  const empty = join(dir, 'empty.der');
  writeFileSync(empty, '');
  const huge = join(dir, 'huge.der');
  writeFileSync(huge, Buffer.alloc(2 << 20, 0x30));
  const keyPem = join(dir, 'some.key');
  writeFileSync(keyPem, '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n');
  const cases: [string, RegExp, string][] = [
    [binary, /is neither a PEM nor a DER X\.509 certificate/, 'ECERT_FORMAT'],
    [empty, /is empty/, 'EINPUT'],
    [dir, /is a directory/, 'EINPUT'],
    [huge, /too large/, 'EINPUT'],
    [keyPem, /holds a PEM "PRIVATE KEY" block, not a CERTIFICATE/, 'ECERT_FORMAT'],
  ];
  for (const [path, message, code] of cases) {
    for (const cmd of [
      ['attest', 'inspect'],
      ['attest', 'verify'],
    ]) {
      const r = seng([...cmd, path]);
      assert.equal(r.code, 1, `${cmd.join(' ')} ${path}`);
      assert.match(r.stderr, message);
      assert.match(r.stderr, /Hint: /);
      assert.doesNotMatch(r.stderr, /no CERTIFICATE block|Internal error/);
      const j = sengJson<{ error: { code: string; hint?: string } }>([...cmd, path]);
      assert.equal(j.json.error.code, code);
      assert.ok(j.json.error.hint);
    }
    const s = seng(['sim', 'enclave', '--cert', path, '--key', keyPem, '--gateway-cert', path]);
    assert.equal(s.code, 1, `sim enclave --cert ${path}`);
    assert.match(s.stderr, message);
  }
  // Stdin: random bytes.
  const piped = seng(['attest', 'inspect', '-'], { input: 'hello, not a certificate' });
  assert.equal(piped.code, 1);
  assert.match(piped.stderr, /neither a PEM nor a DER/);
});

test('sim enclave: unusable key and gateway-certificate files fail before connecting', () => {
  const cert = join(dir, 'se.der');
  const key = join(dir, 'se.key');
  if (!existsSync(join(dir, 'ca', 'manifest.json')))
    assert.equal(seng(['sim', 'ca', '--out', join(dir, 'ca')]).code, 0);
  assert.equal(simCert(cert, key, ['--force']).code, 0);
  const run = (args: string[]) => seng(['sim', 'enclave', '--port', '9', ...args]);
  const noKey = run(['--cert', cert, '--key', join(dir, 'missing.key'), '--gateway-cert', cert]);
  assert.equal(noKey.code, 1);
  assert.match(noKey.stderr, /cannot read key .*ENOENT/);
  const certAsKey = run(['--cert', cert, '--key', cert, '--gateway-cert', cert]);
  assert.equal(certAsKey.code, 1);
  assert.match(certAsKey.stderr, /is not a PEM private key/);
  const dirKey = run(['--cert', cert, '--key', dir, '--gateway-cert', cert]);
  assert.equal(dirKey.code, 1);
  assert.match(dirKey.stderr, /is a directory/);
  const noGw = run(['--cert', cert, '--key', key, '--gateway-cert', join(dir, 'missing.crt')]);
  assert.equal(noGw.code, 1);
  assert.match(noGw.stderr, /cannot read gateway certificate/);
  for (const bad of [
    ['--keepalive', '-1'],
    ['--cipher', 'NULL-MD5'],
    ['--port', '65535'],
  ]) {
    const r = run(['--cert', cert, '--key', key, '--gateway-cert', cert, ...bad]);
    assert.equal(r.code, 2, bad.join(' '));
  }
});

test('attest verify --allowed-prod-id rejects non-numbers by name, never "NaN"', () => {
  for (const v of ['1,x', '70000', '-1', '1.5']) {
    const r = seng(['attest', 'verify', SAMPLE, '--allowed-prod-id', v]);
    assert.equal(r.code, 1, v);
    assert.match(r.stderr, /--allowed-prod-id: ".+" is not an ISV product id/);
    assert.match(r.stderr, /Hint: Give integers from 0 to 65535/);
    assert.doesNotMatch(r.stderr, /NaN/);
  }
  const j = sengJson<{ error: { code: string } }>(['attest', 'verify', SAMPLE, '--allowed-prod-id', '1,x']);
  assert.equal(j.json.error.code, 'EINPUT');
  const dirRoot = sengJson<{ error: { code: string; hint?: string } }>([
    'attest',
    'verify',
    SAMPLE,
    '--ias-root',
    dir,
  ]);
  assert.equal(dirRoot.code, 1);
  assert.equal(dirRoot.json.error.code, 'EATTEST_POLICY');
  assert.ok(dirRoot.json.error.hint);
});
