/**
 * Issue #17 item 5 through a real gateway (`seng serve --nft`, netfilter database, in
 * namespaces): `seng db app remove` while an enclave of that app is connected ends its
 * session through the database watch, logs why, and takes its IP out of the nft sets.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanupAll, waitFor } from '../../helpers/netns.js';
import { appCert, buildLab, serve, sim, type Lab, type Served, type Sim } from '../../helpers/gateway-lab.js';
import { seng } from '../../helpers/cli.js';

const NGINX = 'c3'.repeat(32);

let lab: Lab;
let gw: Served;
let db: string;
let enclave: Sim;

before(async () => {
  lab = await buildLab('grv');
  db = join(lab.dir, 'nf.db');
  for (const args of [
    ['db', 'init', '-d', db, '--schema', 'netfilter'],
    ['db', 'app', 'add', '-d', db, 'nginx', '--mrenclave', NGINX, '--mrsigner', 'ab'.repeat(32)],
    ['db', 'category', 'add', '-d', db, 'Web', '--app', 'nginx'],
  ]) {
    const r = seng(args);
    assert.equal(r.code, 0, r.stderr);
  }
  const policy = join(lab.dir, 'policy.yaml');
  writeFileSync(
    policy,
    `version: 1
defaults: { input: accept, forward: drop, output: accept }
rules:
  - name: web
    chain: forward
    src-cat: Web
    protocol: tcp
    dport: 80
    action: accept
`,
  );
  gw = await serve(lab, ['-d', db, '--nft', '--policy', policy]);
  enclave = await sim(lab, lab.host1, appCert(lab, NGINX));
  assert.ok(enclave.ready, enclave.stderr());
});

after(async () => {
  await gw?.stop();
  await cleanupAll();
  lab?.cleanup();
});

async function webSet(): Promise<string> {
  return (await lab.gw.exec('nft', ['list', 'set', 'ip', 'seng', 'cat_Web'])).stdout;
}

test('db app remove ends the live session of that app and empties its nft set entry', async () => {
  const ip = enclave.ready!.ip;
  const inSet = new RegExp(`\\b${ip.replace(/\./g, '\\.')}\\b`);
  await waitFor(async () => inSet.test(await webSet()), 5000, { message: 'enclave IP in cat_Web' });

  const r = seng(['db', 'app', 'remove', '-d', db, 'nginx']);
  assert.equal(r.code, 0, r.stderr);

  const line = await waitFor(
    () => gw.log.find((l) => l.includes('"event":"session-end"') && l.includes(`"enclaveIp":"${ip}"`)),
    10_000,
    { message: 'session-end logged' },
  );
  assert.match(line, /"reason":"app nginx removed from the allowlist"/);
  await waitFor(async () => !inSet.test(await webSet()), 5000, { message: 'enclave IP left cat_Web' });
});
