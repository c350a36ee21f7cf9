/**
 * Per-app enforcement with nftables through a running gateway (`seng serve --nft`), real
 * packets in namespaces: a category rule, a host-subnet rule and its negation, policy swaps
 * through the running server without dropping sessions, and an enclave that disconnects
 * losing its set entries and conntrack entries at once.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanupAll, createNetns, stop, waitFor, waitForLine, type Netns } from '../../helpers/netns.js';
import {
  appCert,
  buildLab,
  serve,
  sim,
  GW_HOST1,
  SERVICE,
  type Lab,
  type Served,
  type Sim,
} from '../../helpers/gateway-lab.js';
import { repoRoot, seng, sengBin } from '../../helpers/cli.js';

const BROWSER = 'b0'.repeat(32);
const OTHER = '0e'.repeat(32);
const scripts = join(repoRoot, 'dist', 'test', 'helpers', 'scripts');

let lab: Lab;
let gw: Served;
let policyPath: string;
let appBrowser: Netns;
let appOther: Netns;
let browser: Sim;
let other: Sim;

const POLICY = (extra = '') => `version: 1
defaults: { input: accept, forward: drop, output: accept }
rules:
  - name: service-replies
    chain: forward
    src-addr: ${SERVICE}
    action: accept
  - name: browsers-web
    chain: forward
    src-cat: Browser
    protocol: tcp
    dport: 7000
    action: accept
    counter: true
  - name: host2-only
    chain: forward
    src-host: 10.51.0.0/24
    protocol: tcp
    dport: 7001
    action: accept
  - name: not-host2
    chain: forward
    src-host: { not: 10.51.0.0/24 }
    protocol: tcp
    dport: 7002
    action: accept
${extra}`;

before(async () => {
  lab = await buildLab('pgw');
  const db = join(lab.dir, 'nf.db');
  for (const args of [
    ['db', 'init', '-d', db, '--schema', 'netfilter'],
    ['db', 'app', 'add', '-d', db, 'browser', '--mrenclave', BROWSER, '--mrsigner', 'ab'.repeat(32)],
    ['db', 'app', 'add', '-d', db, 'other', '--mrenclave', OTHER, '--mrsigner', 'ab'.repeat(32)],
    ['db', 'category', 'add', '-d', db, 'Browser', '--app', 'browser'],
    ['db', 'category', 'add', '-d', db, 'Other', '--app', 'other'],
  ]) {
    const r = seng(args);
    assert.equal(r.code, 0, r.stderr);
  }
  policyPath = join(lab.dir, 'policy.yaml');
  writeFileSync(policyPath, POLICY());
  await lab.host2.ip('route', 'add', `${GW_HOST1}/32`, 'via', '10.51.0.1');
  // The stateless policy does not use conntrack; a ct rule elsewhere (as on most gateways) turns tracking on.
  await lab.gw.exec('nft', ['-f', '-'], {
    input:
      'table ip cttrack {\n chain pre {\n  type filter hook prerouting priority -300; policy accept;\n  ct state new counter\n }\n}\n',
  });
  gw = await serve(lab, ['-d', db, '--nft', '--policy', policyPath]);
  for (const port of ['7000', '7001', '7002']) {
    const echo = lab.svc.spawn(process.execPath, [join(scripts, 'echo-server.js'), port]);
    await waitForLine(echo, /listening/);
  }
  appBrowser = await createNetns('pgwb');
  appOther = await createNetns('pgwo');
  browser = await sim(lab, lab.host1, appCert(lab, BROWSER), { app: appBrowser });
  other = await sim(lab, lab.host2, appCert(lab, OTHER, { kind: 'dcap' }), {
    app: appOther,
    gateway: GW_HOST1,
  });
  assert.ok(browser.ready && other.ready, `${browser.stderr()}\n${other.stderr()}`);
});

after(async () => {
  await gw?.stop();
  await cleanupAll();
  lab?.cleanup();
});

async function reaches(ns: Netns, port: number): Promise<boolean> {
  const r = await ns.exec(
    process.execPath,
    [join(scripts, 'tcp-roundtrip.js'), SERVICE, String(port), '2000', '1500'],
    {
      check: false,
      timeoutMs: 10_000,
    },
  );
  return r.code === 0;
}

async function setElements(name: string): Promise<string> {
  const r = await lab.gw.exec('nft', ['list', 'set', 'ip', 'seng', name], { check: false });
  return r.stdout;
}

test('a category rule admits its app and drops another app', async () => {
  assert.equal(await reaches(appBrowser, 7000), true);
  assert.equal(await reaches(appOther, 7000), false);
  assert.match(await setElements('cat_Browser'), new RegExp(browser.ready!.ip.replace(/\./g, '\\.')));
});

test('a host-subnet rule and its negation: each enclave reaches exactly one of the two ports', async () => {
  assert.equal(await reaches(appOther, 7001), true, 'host2 enclave on the host2-only port');
  assert.equal(await reaches(appOther, 7002), false);
  assert.equal(await reaches(appBrowser, 7001), false);
  assert.equal(await reaches(appBrowser, 7002), true, 'host1 enclave on the not-host2 port');
});

test('seng rules apply while serving swaps the rules through the server without dropping sessions', async () => {
  const policy2 = join(lab.dir, 'policy2.yaml');
  writeFileSync(
    policy2,
    POLICY(`  - name: others-web
    chain: forward
    src-cat: Other
    protocol: tcp
    dport: 7000
    action: accept
`),
  );
  const r = await lab.gw.exec(process.execPath, [
    sengBin,
    'rules',
    'apply',
    policy2,
    '--control',
    lab.control,
    '--json',
  ]);
  const out = JSON.parse(r.stdout) as { appliedBy: string };
  assert.equal(out.appliedBy, 'gateway');
  assert.match(
    await setElements('cat_Other'),
    new RegExp(other.ready!.ip.replace(/\./g, '\\.')),
    'new set filled with the live enclave',
  );
  assert.equal(await reaches(appOther, 7000), true);
  assert.equal(await reaches(appBrowser, 7000), true);
  // SIGHUP re-reads the server's current policy file: back to policy 1 would need --policy; it stays on policy2.
  gw.child.kill('SIGHUP');
  await waitFor(() => gw.log.find((l) => l.includes('"event":"reloaded"')), 5000);
  assert.equal(await reaches(appOther, 7000), true);
});

test('an enclave that disconnects loses its set entries and conntrack entries at once', async () => {
  const ip = browser.ready!.ip;
  assert.equal(await reaches(appBrowser, 7002), true);
  const ct = async () =>
    (await lab.gw.exec('conntrack', ['-L', '-s', ip], { check: false })).stdout +
    (await lab.gw.exec('conntrack', ['-L', '-d', ip], { check: false })).stdout;
  assert.match(await ct(), new RegExp(ip.replace(/\./g, '\\.')));
  await stop(browser.child);
  const end = await waitFor(
    () => gw.log.find((l) => l.includes('"event":"session-end"') && l.includes(`"enclaveIp":"${ip}"`)),
    10_000,
  );
  assert.ok(end);
  for (const set of ['enclaves', 'cat_Browser', `app_${BROWSER}`]) {
    assert.doesNotMatch(
      await setElements(set),
      new RegExp(`\\b${ip.replace(/\./g, '\\.')}\\b`),
      `${set} still holds ${ip}`,
    );
  }
  assert.doesNotMatch(await ct(), new RegExp(ip.replace(/\./g, '\\.')));
  assert.match(
    await setElements('enclaves'),
    new RegExp(other.ready!.ip.replace(/\./g, '\\.')),
    'the other enclave is untouched',
  );
});
