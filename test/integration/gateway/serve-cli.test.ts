/**
 * `seng serve` refuses bad configurations before it creates anything (no TUN, no socket):
 * 0.0.0.0, -n without the kernel module (SPEC §5.1's message), database layout vs mode,
 * mismatched --cert/--key. Runs in the root namespace because nothing is ever created.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { seng, sengSpawn } from '../../helpers/cli.js';

let dir: string;
let cert: string;
let key: string;
let control: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'seng-serve-cli-'));
  cert = join(dir, 'gw.crt');
  key = join(dir, 'gw.key');
  control = join(dir, 'ctl.sock');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-subj',
      '/CN=t',
      '-days',
      '1',
    ],
    { stdio: 'ignore' },
  );
  assert.equal(seng(['db', 'init', '-d', join(dir, 'nf.db'), '--schema', 'netfilter', '--demo']).code, 0);
  assert.equal(seng(['db', 'init', '-d', join(dir, 'v.db'), '--schema', 'vanilla', '--demo']).code, 0);
});
after(() => rmSync(dir, { recursive: true, force: true }));

const serve = (args: string[]) =>
  seng(['serve', '--cert', cert, '--key', key, '--control', control, '--tun', 'sgclitest0', ...args]);

test('refuses 0.0.0.0 with an explanation', () => {
  const r = serve(['0.0.0.0', '12345']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /refusing to listen on 0\.0\.0\.0/);
});

test('-n without the seng kernel module fails fast with the actionable message', () => {
  const r = serve(['-n', '-d', join(dir, 'nf.db'), '127.0.0.1', '12345']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /family seng_family not found: is the seng kernel module loaded\?/);
  assert.equal(existsSync(control), false, 'no control socket was created');
  assert.doesNotMatch(execFileSync('ip', ['-o', 'link'], { encoding: 'utf8' }), /sgclitest0/);
});

test('database layout must fit the mode', () => {
  let r = serve(['-n', '-d', join(dir, 'v.db'), '127.0.0.1', '12345']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /-n needs a netfilter database/);
  r = serve(['-d', join(dir, 'nf.db'), '127.0.0.1', '12345']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /needs -n \(kernel module\) or --nft/);
  r = serve(['-n', '127.0.0.1', '12345']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--db/);
});

test('a refusal before the gateway started does not log that it stopped', async () => {
  const layout = serve(['-d', join(dir, 'nf.db'), '--log-format', 'json', '127.0.0.1', '12345']);
  assert.equal(layout.code, 1);
  assert.doesNotMatch(layout.stderr, /"event":"stopped"|gateway stopped/);
  // The control socket of a running gateway is refused before any device exists.
  const busy = join(dir, 'busy.sock');
  const server = createServer((c) => c.end());
  await new Promise<void>((resolve) => server.listen(busy, resolve));
  try {
    const r = await new Promise<{ code: number; stderr: string }>((resolve) => {
      const child = sengSpawn([
        'serve',
        '--cert',
        cert,
        '--key',
        key,
        '--control',
        busy,
        '--tun',
        'sgclitest0',
      ]);
      let stderr = '';
      child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
      child.once('close', (code) => resolve({ code: code ?? -1, stderr }));
    });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /another seng serve is already running/);
    assert.doesNotMatch(r.stderr, /"event":"stopped"|gateway stopped/);
    assert.doesNotMatch(execFileSync('ip', ['-o', 'link'], { encoding: 'utf8' }), /sgclitest0/);
  } finally {
    server.close();
  }
});

test('each --cert needs its --key, and positional arguments are not swallowed by them', () => {
  const r = seng([
    'serve',
    '--cert',
    cert,
    '--cert',
    cert,
    '--key',
    key,
    '--control',
    control,
    '127.0.0.1',
    '12345',
  ]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /2 --cert but 1 --key/);
});

test('bad PORT and IPV4 arguments are usage errors (exit 2) that name the value', () => {
  // P+1 is the send tunnel, so 65535 is out of range too.
  for (const port of ['65535', '70000', '0', 'abc', '-1', '12.5']) {
    const r = serve(['127.0.0.1', port]);
    assert.equal(r.code, 2, `port ${port}: ${r.stderr}`);
    // oclif wraps usage errors at the terminal width behind " ›   " markers.
    const flat = r.stderr.replace(/\s*›\s*/g, ' ').replace(/\s+/g, ' ');
    assert.ok(
      flat.includes(`PORT (P; the send tunnel uses P+1) must be an integer from 1 to 65534, got "${port}"`),
      flat,
    );
    assert.doesNotMatch(r.stderr, /Internal error/);
  }
  for (const ip of ['1.2.3', '10.0.0.256', 'localhost']) {
    const r = serve([ip, '12345']);
    assert.equal(r.code, 2, `address ${ip}: ${r.stderr}`);
    assert.match(r.stderr, /is not an IPv4 address/);
  }
  assert.equal(existsSync(control), false, 'nothing was started');
});

test('serve flags are bounded and its files are checked before anything starts', () => {
  const flagCases: string[][] = [
    ['--tun', ''],
    ['--tun', 'a-name-longer-than-15'],
    ['--tun', 'bad/name'],
    ['--max-sessions', '99999999999999999999'],
    ['--idle-timeout', '0'],
    ['--idle-timeout', '999999999'],
    ['--setup-timeout', '100000'],
    ['--max-handshakes', '0'],
    ['--ack-tries', '21'],
    ['--min-isv-svn', '70000'],
    ['--nft', '--nft-table', 'x;y'],
    ['--metrics', '9464'],
    ['--metrics', '127.0.0.1:0'],
    ['--metrics', '127.0.0.1:http'],
    ['--lease-retention', '0'],
    ['--lease-db', ''],
  ];
  for (const flag of flagCases) {
    const r = seng([
      'serve',
      '--cert',
      cert,
      '--key',
      key,
      '--control',
      control,
      ...flag,
      '127.0.0.1',
      '12345',
    ]);
    assert.equal(r.code, 2, `${flag.join(' ')}: ${r.stderr}`);
    assert.doesNotMatch(r.stderr, /Internal error/);
  }
  const der = join(dir, 'gw.der');
  execFileSync('openssl', ['x509', '-in', cert, '-outform', 'der', '-out', der]);
  const fileCases: [string, string, RegExp][] = [
    [dir, key, /certificate .* is a directory/],
    [der, key, /is not PEM.*\n.*Hint: .*openssl x509 -inform der/],
    [cert, cert, /key .* is not PEM/],
    [join(dir, 'missing.crt'), key, /cannot read certificate .*ENOENT/],
  ];
  for (const [c, k, message] of fileCases) {
    const r = seng(['serve', '--cert', c, '--key', k, '--control', control, '127.0.0.1', '12345']);
    assert.equal(r.code, 1, `${c} ${k}: ${r.stderr}`);
    assert.match(r.stderr, message);
  }
  assert.equal(existsSync(control), false, 'nothing was started');
});
