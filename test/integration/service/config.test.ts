/**
 * `seng serve --config FILE` and `seng config check`: a gateway configured from a YAML file
 * (flags override it), SIGHUP applying the reloadable changes and naming the rest as needing
 * a restart, and a broken file on SIGHUP leaving the running configuration in force.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanupAll, stop, waitFor } from '../../helpers/netns.js';
import { appCert, buildLab, serve, sim, type Lab, type Served } from '../../helpers/gateway-lab.js';
import { seng } from '../../helpers/cli.js';

const APP = 'c2'.repeat(32);
let lab: Lab;
let gw: Served;
let configPath: string;

const policy = (port: number) => `version: 1
defaults: { input: accept, forward: drop, output: accept }
rules:
  - name: web
    chain: forward
    src-app: ${APP}
    protocol: tcp
    dport: ${port}
    action: accept
`;

const config = (over: Record<string, string> = {}) =>
  Object.entries({
    db: join(lab.dir, 'nf.db'),
    nft: 'true',
    policy: join(lab.dir, 'p80.yaml'),
    'idle-timeout': '300',
    tun: 'tunCF',
    // Overridden by --control on the command line (the file's directory does not exist).
    control: '/nonexistent/seng.sock',
    ...over,
  })
    .map(([k, v]) => `${k}: ${v}\n`)
    .join('');

before(async () => {
  lab = await buildLab('cfg');
  const db = join(lab.dir, 'nf.db');
  for (const args of [
    ['db', 'init', '-d', db, '--schema', 'netfilter'],
    ['db', 'app', 'add', '-d', db, 'web', '--mrenclave', APP, '--mrsigner', 'ab'.repeat(32)],
  ]) {
    const r = seng(args);
    assert.equal(r.code, 0, r.stderr);
  }
  writeFileSync(join(lab.dir, 'p80.yaml'), policy(80));
  writeFileSync(join(lab.dir, 'p81.yaml'), policy(81));
  configPath = join(lab.dir, 'seng.yaml');
  writeFileSync(configPath, config());
  gw = await serve(lab, ['--config', configPath]);
});

after(async () => {
  await gw?.stop();
  await cleanupAll();
  lab?.cleanup();
});

const nftTable = async () => (await lab.gw.exec('nft', ['list', 'table', 'ip', 'seng'])).stdout;

test('serve takes its options from the file, and command-line flags override it', async () => {
  const listening = gw.log.find((l) => l.includes('"event":"listening"'))!;
  assert.match(listening, /"tun":"tunCF"/);
  assert.match(listening, /"enforcement":"nftables"/);
  assert.ok(listening.includes(`"control":"${lab.control}"`), listening);
  assert.match(await nftTable(), /tcp dport 80 /);
  const enclave = await sim(lab, lab.host1, appCert(lab, APP));
  assert.ok(enclave.ready, enclave.stderr());
  await stop(enclave.child);
});

test('SIGHUP applies policy, timeouts and log level, and names what needs a restart', async () => {
  writeFileSync(
    configPath,
    config({
      policy: join(lab.dir, 'p81.yaml'),
      'idle-timeout': '60',
      tun: 'tunOther',
      'log-level': 'debug',
    }),
  );
  const seen = gw.log.length;
  gw.child.kill('SIGHUP');
  const line = await waitFor(
    () => gw.log.slice(seen).find((l) => l.includes('"event":"config-reloaded"')),
    10_000,
  );
  const rec = JSON.parse(line!) as {
    applied: Array<{ key: string; to: unknown }>;
    needsRestart: Array<{ key: string }>;
  };
  assert.deepEqual(rec.applied.map((c) => c.key).sort(), ['idle-timeout', 'log-level', 'policy']);
  assert.deepEqual(
    rec.needsRestart.map((c) => c.key),
    ['tun'],
  );
  await waitFor(() => gw.log.slice(seen).find((l) => l.includes('"event":"reloaded"')), 10_000);
  assert.match(await nftTable(), /tcp dport 81 /);
  assert.doesNotMatch(await nftTable(), /tcp dport 80 /);
  // log-level debug is in force: debug records (level 20) appear from now on.
  const enclave = await sim(lab, lab.host1, appCert(lab, APP));
  assert.ok(enclave.ready, enclave.stderr());
  await stop(enclave.child);
  assert.ok(gw.log.slice(seen).some((l) => l.includes('"level":20')));
});

test('a broken file on SIGHUP is reported with its position and changes nothing', async () => {
  writeFileSync(configPath, `${config({ policy: join(lab.dir, 'p80.yaml') })}idle-timeout: forever\n`);
  const seen = gw.log.length;
  gw.child.kill('SIGHUP');
  const line = await waitFor(
    () => gw.log.slice(seen).find((l) => l.includes('"event":"config-reload-failed"')),
    10_000,
  );
  assert.match(line!, /seng\.yaml:\d+:\d+: /);
  await waitFor(() => gw.log.slice(seen).find((l) => l.includes('"event":"reloaded"')), 10_000);
  assert.match(await nftTable(), /tcp dport 81 /, 'the policy in force stays');
  assert.equal(gw.child.exitCode, null);
});

test('seng config check: valid file, errors with line:column, --json', () => {
  writeFileSync(configPath, config());
  const ok = seng(['config', 'check', configPath]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /valid/);
  const bad = join(lab.dir, 'bad.yaml');
  writeFileSync(bad, 'listen: 10.0.0.1\nport: 0\nnetfilter: true\n');
  const r = seng(['config', 'check', bad]);
  assert.equal(r.code, 1);
  assert.ok(r.stderr.includes(`${bad}:2:7: port: must be from 1 to 65534, got 0`), r.stderr);
  assert.ok(r.stderr.includes(`${bad}:3:12: netfilter needs db`), r.stderr);
  const j = seng(['config', 'check', bad, '--json']);
  assert.equal(j.code, 1);
  const out = JSON.parse(j.stdout) as { valid: boolean; errors: Array<{ line: number; column: number }> };
  assert.equal(out.valid, false);
  assert.deepEqual(
    out.errors.map((e) => [e.line, e.column]),
    [
      [2, 7],
      [3, 12],
    ],
  );
});

test('an option the file needs may come from the flags, and the other way round', () => {
  const file = join(lab.dir, 'partial.yaml');
  writeFileSync(
    file,
    `nft: true\ndb: ${join(lab.dir, 'nf.db')}\ncert: ${lab.gwKeys[0]!.cert}\nkey: ${lab.gwKeys[0]!.key}\n`,
  );
  // --policy needs nft, which the file sets: no usage error; the missing policy file is reported.
  const r = seng([
    'serve',
    '--config',
    file,
    '--policy',
    join(lab.dir, 'missing.yaml'),
    '--control',
    join(lab.dir, 'x.sock'),
  ]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /missing\.yaml/);
  assert.doesNotMatch(r.stderr, /must also be provided/);
  // The file sets nft, the command line -n: they exclude each other, a usage error.
  const both = seng(['serve', '--config', file, '-n']);
  assert.equal(both.code, 2, both.stderr);
  assert.match(both.stderr, /exclude each other/);
});
