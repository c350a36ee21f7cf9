/**
 * The iptables backend of `seng serve -s` in network namespaces: the admin's original
 * SENG_output / SENG_prerouting chains, flushed at start (stale rules of an earlier run),
 * exactly the SPEC §6.5 rules per shadow, removed on close, chains left empty at shutdown.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { cleanupAll, createNetns, stop, waitFor, waitForLine, type Netns } from '../../helpers/netns.js';
import { appCert, buildLab, serve, sim, type AppCert, type Lab } from '../../helpers/gateway-lab.js';
import { repoRoot, sengBin } from '../../helpers/cli.js';

const scripts = join(repoRoot, 'dist', 'test', 'helpers', 'scripts');
let lab: Lab;
let cert: AppCert;
let app: Netns;
let outside: string;

const chainRules = async (chain: string): Promise<string[]> =>
  (await lab.gw.exec('iptables', ['-t', 'nat', '-S', chain])).stdout
    .split('\n')
    .filter((l) => l.startsWith('-A '));

before(async () => {
  lab = await buildLab('shi');
  cert = appCert(lab, 'e5'.repeat(32));
  app = await createNetns('shiapp');
  const addrs = await lab.gw.ip('-o', '-4', 'addr', 'show');
  outside = /^\d+: ([^\s@]+)\s+inet 10\.99\.0\.1\//m.exec(addrs.stdout)?.[1] as string;
  assert.ok(outside, addrs.stdout);
  const blocker = lab.host1.spawn(process.execPath, [sengBin, 'blocker', '--log-format', 'json']);
  await waitForLine(blocker, /"event":"listening"/, 20_000);
});

after(async () => {
  await cleanupAll();
  lab?.cleanup();
});

test('without the original chains, -s --shadow-backend iptables refuses to start and says how to create them', async () => {
  const child = lab.gw.spawn(process.execPath, [
    sengBin,
    'serve',
    '--cert',
    lab.gwKeys[0]!.cert,
    '--key',
    lab.gwKeys[0]!.key,
    '--control',
    join(lab.dir, 'c0.sock'),
    '-s',
    '--shadow-backend',
    'iptables',
    '10.50.0.1',
    '12345',
  ]);
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  assert.equal(code, 1);
  assert.match(stderr, /Hint: create the chains first: iptables -t nat -N SENG_output/);
});

test('stale rules are flushed, a shadow adds exactly the §6.5 rules, close removes them', async () => {
  for (const args of [
    ['-N', 'SENG_output'],
    ['-N', 'SENG_prerouting'],
    ['-A', 'OUTPUT', '-j', 'SENG_output'],
    ['-A', 'PREROUTING', '-j', 'SENG_prerouting'],
    // A leftover of an earlier run that must not survive the start.
    [
      '-A',
      'SENG_prerouting',
      '-d',
      '10.50.0.2',
      '-p',
      'tcp',
      '--dport',
      '80',
      '-j',
      'DNAT',
      '--to-destination',
      '192.168.28.99',
    ],
  ])
    await lab.gw.exec('iptables', ['-t', 'nat', ...args]);
  const gw = await serve(lab, ['-s', '--shadow-backend', 'iptables', '--shadow-interface', outside]);
  try {
    assert.deepEqual(await chainRules('SENG_prerouting'), []);
    const s = await sim(lab, lab.host1, cert, { app, extra: ['--shadow', '8080'] });
    assert.ok(s.ready, s.stderr());
    await waitForLine(s.child, /"event":"shadow".*"granted":true/, 20_000);
    const ip = s.ready.ip;
    assert.deepEqual(await chainRules('SENG_output'), [
      `-A SENG_output -d 10.50.0.2/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination ${ip}`,
    ]);
    assert.deepEqual(await chainRules('SENG_prerouting'), [
      `-A SENG_prerouting -d 10.50.0.2/32 -i ${outside} -p tcp -m tcp --dport 8080 -j DNAT --to-destination ${ip}`,
    ]);
    const r = await lab.svc.exec(process.execPath, [
      join(scripts, 'tcp-roundtrip.js'),
      '10.50.0.2',
      '8080',
      '4096',
      '10000',
    ]);
    const out = JSON.parse(r.stdout) as { sent: string; received: string };
    assert.equal(out.received, out.sent);
    await stop(s.child, 8000);
    await waitFor(async () => (await chainRules('SENG_output')).length === 0, 5000);
    assert.deepEqual(await chainRules('SENG_prerouting'), []);
  } finally {
    await gw.stop();
  }
  // The chains stay (the admin's), empty.
  assert.deepEqual(await chainRules('SENG_output'), []);
});
