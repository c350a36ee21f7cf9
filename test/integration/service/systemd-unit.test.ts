/**
 * packaging/systemd/seng.service and scripts/install-service.sh: the unit passes
 * `systemd-analyze verify` and grants exactly what the least-privilege test runs with; the
 * install script is idempotent and its --dry-run changes nothing; the sample configuration
 * is valid.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot, seng } from '../../helpers/cli.js';

const UNIT = join(repoRoot, 'packaging', 'systemd', 'seng.service');
const INSTALL = join(repoRoot, 'scripts', 'install-service.sh');
const ANALYZE = '/usr/bin/systemd-analyze';
let dir: string;
let fakeBin: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'seng-unit-'));
  // verify checks that ExecStart names an executable.
  fakeBin = join(dir, 'seng');
  writeFileSync(fakeBin, '#!/bin/sh\nexit 0\n', { mode: 0o755 });
});

after(() => rmSync(dir, { recursive: true, force: true }));

/** [Service] settings of a unit file, each key with all its values. */
function settings(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s) {
      section = s[1]!;
      continue;
    }
    const eq = line.indexOf('=');
    const key = `${section}.${line.slice(0, eq)}`;
    out.set(key, [...(out.get(key) ?? []), line.slice(eq + 1)]);
  }
  return out;
}

function verify(unitPath: string): { code: number | null; stderr: string } {
  const r = spawnSync(ANALYZE, ['verify', '--man=no', unitPath], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stderr: `${r.stdout}${r.stderr}` };
}

test(
  'systemd-analyze verify accepts the unit without a warning',
  { skip: !existsSync(ANALYZE) && `${ANALYZE} is not installed` },
  () => {
    const unit = join(dir, 'seng.service');
    writeFileSync(
      unit,
      readFileSync(UNIT, 'utf8').replace('ExecStart=/usr/local/bin/seng ', `ExecStart=${fakeBin} `),
    );
    const r = verify(unit);
    assert.equal(r.code, 0, r.stderr);
    // Unknown keys and bad values are only warnings (exit 0): none may mention the unit.
    assert.doesNotMatch(r.stderr, /seng\.service/, r.stderr);
  },
);

test('the unit runs as seng with CAP_NET_ADMIN only, sandboxed, reloading with SIGHUP', () => {
  const s = settings(readFileSync(UNIT, 'utf8'));
  const one = (k: string) => s.get(`Service.${k}`)?.join(' ');
  assert.equal(one('User'), 'seng');
  assert.equal(one('AmbientCapabilities'), 'CAP_NET_ADMIN');
  assert.equal(one('CapabilityBoundingSet'), 'CAP_NET_ADMIN');
  assert.equal(one('NoNewPrivileges'), 'yes');
  assert.equal(one('ProtectSystem'), 'strict');
  assert.equal(one('ProtectHome'), 'yes');
  assert.equal(one('PrivateTmp'), 'yes');
  assert.equal(one('StateDirectory'), 'seng');
  assert.equal(one('RuntimeDirectory'), 'seng');
  assert.equal(one('ReadWritePaths'), '/var/lib/seng /run/seng');
  assert.equal(one('RestrictAddressFamilies'), 'AF_UNIX AF_INET AF_NETLINK');
  assert.equal(one('SystemCallFilter'), '@system-service');
  assert.equal(one('ExecReload'), '/bin/kill -HUP $MAINPID');
  assert.match(one('ExecStart') ?? '', / serve --config \/etc\/seng\/seng\.yaml( |$)/);
  assert.equal(one('DeviceAllow'), '/dev/net/tun rw');
});

test('the sample configuration is valid', () => {
  const r = seng(['config', 'check', join(repoRoot, 'packaging', 'seng.yaml.example')]);
  assert.equal(r.code, 0, r.stderr);
});

test('install-service.sh --dry-run prints the plan and changes nothing', () => {
  const root = join(dir, 'dry');
  const r = spawnSync('sh', [INSTALL, '--dry-run', '--root', root, '--user', 'nobody', '--bin', fakeBin], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /\+ install -d -o root -g nogroup -m 0750 .*\/etc\/seng/);
  assert.match(r.stdout, /\+ install -o root -g root -m 0644 .* .*\/etc\/systemd\/system\/seng\.service/);
  assert.equal(existsSync(root), false);
});

test('install-service.sh installs once and is idempotent', () => {
  const root = join(dir, 'root');
  const run = () =>
    spawnSync('sh', [INSTALL, '--root', root, '--user', 'nobody', '--bin', fakeBin], { encoding: 'utf8' });
  const first = run();
  assert.equal(first.status, 0, first.stderr);
  const unit = readFileSync(join(root, 'etc/systemd/system/seng.service'), 'utf8');
  assert.match(unit, new RegExp(`^ExecStart=${fakeBin} serve --config /etc/seng/seng.yaml`, 'm'));
  assert.match(unit, /^User=nobody$/m);
  assert.match(unit, /^Group=nogroup$/m);
  const state = statSync(join(root, 'var/lib/seng'));
  assert.equal(state.uid, 65534);
  assert.equal(state.mode & 0o777, 0o750);
  const conf = statSync(join(root, 'etc/seng/seng.yaml'));
  assert.equal(conf.uid, 0);
  assert.equal(conf.mode & 0o777, 0o640);
  // An admin's edit survives a second run, and nothing is done again.
  writeFileSync(join(root, 'etc/seng/seng.yaml'), 'listen: 10.9.9.9\n');
  const second = run();
  assert.equal(second.status, 0, second.stderr);
  assert.doesNotMatch(second.stdout, /^\+ /m, second.stdout);
  assert.equal(readFileSync(join(root, 'etc/seng/seng.yaml'), 'utf8'), 'listen: 10.9.9.9\n');
  if (existsSync(ANALYZE)) {
    const r = verify(join(root, 'etc/systemd/system/seng.service'));
    assert.equal(r.code, 0, r.stderr);
  }
});

test('install-service.sh refuses a bad option with usage (exit 2)', () => {
  const r = spawnSync('sh', [INSTALL, '--bogus'], { encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /unknown option --bogus/);
});
