/**
 * A gateway on a PostgreSQL policy store (`seng serve --nft -d postgres://…`, in namespaces):
 * changes made by another process with `seng db … -d postgres://…` reach it through NOTIFY
 * seng_policy — category changes go to the nft sets, a removed app's live enclave is ended —
 * and a server restart while it serves neither stops it nor loses a change made afterwards.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanupAll, waitFor } from '../../helpers/netns.js';
import { appCert, buildLab, serve, sim, type Lab, type Served, type Sim } from '../../helpers/gateway-lab.js';
import { seng } from '../../helpers/cli.js';
import { startPostgres, type PostgresServer } from '../../helpers/postgres.js';

const NGINX = 'c5'.repeat(32);

let server: PostgresServer;
let url: string;
let lab: Lab;
let gw: Served;
let enclave: Sim;

function ok(args: string[]): void {
  const r = seng(args);
  assert.equal(r.code, 0, r.stderr);
}

before(async () => {
  server = await startPostgres();
  url = await server.createDatabase();
  lab = await buildLab('gpg');
  ok(['db', 'init', '-d', url, '--schema', 'netfilter']);
  ok(['db', 'app', 'add', '-d', url, 'nginx', '--mrenclave', NGINX, '--mrsigner', 'ab'.repeat(32)]);
  ok(['db', 'category', 'add', '-d', url, 'Web', '--app', 'nginx']);
  // Web apps may reach tcp/80 (a policy is YAML, and JSON is YAML).
  const policy = join(lab.dir, 'policy.json');
  const web = {
    name: 'web',
    chain: 'forward',
    'src-cat': 'Web',
    protocol: 'tcp',
    dport: 80,
    action: 'accept',
  };
  writeFileSync(
    policy,
    JSON.stringify({
      version: 1,
      defaults: { input: 'accept', forward: 'drop', output: 'accept' },
      rules: [web],
    }),
  );
  gw = await serve(lab, ['-d', url, '--nft', '--policy', policy]);
  enclave = await sim(lab, lab.host1, appCert(lab, NGINX));
  assert.ok(enclave.ready, enclave.stderr());
});

after(async () => {
  await gw?.stop();
  await cleanupAll();
  lab?.cleanup();
  server?.stop();
});

async function inWebSet(ip: string): Promise<boolean> {
  const set = (await lab.gw.exec('nft', ['list', 'set', 'ip', 'seng', 'cat_Web'])).stdout;
  return new RegExp(`\\b${ip.replace(/\./g, '\\.')}\\b`).test(set);
}

test('category changes made by another process reach the nft sets of the running gateway', async () => {
  const ip = enclave.ready!.ip;
  await waitFor(() => inWebSet(ip), 5000, { message: 'enclave IP in cat_Web' });
  ok(['db', 'category', 'remove', '-d', url, 'Web', '--app', 'nginx']);
  await waitFor(async () => !(await inWebSet(ip)), 5000, { message: 'enclave IP left cat_Web' });
  ok(['db', 'category', 'add', '-d', url, 'Web', '--app', 'nginx']);
  await waitFor(() => inWebSet(ip), 5000, { message: 'enclave IP back in cat_Web' });
});

test('the gateway survives a server restart and follows a change made after it', async () => {
  const ip = enclave.ready!.ip;
  server.pause();
  await waitFor(() => gw.log.some((l) => l.includes('"event":"pg-disconnected"')), 15_000, {
    message: 'pg-disconnected logged',
  });
  assert.equal(gw.child.exitCode, null, 'the gateway keeps running');
  server.resume();
  await waitFor(() => gw.log.some((l) => l.includes('"event":"pg-reconnected"')), 30_000, {
    message: 'pg-reconnected logged',
  });

  ok(['db', 'app', 'remove', '-d', url, 'nginx']);
  const line = await waitFor(
    () => gw.log.find((l) => l.includes('"event":"session-end"') && l.includes(`"enclaveIp":"${ip}"`)),
    10_000,
    { message: 'session-end logged' },
  );
  assert.match(line, /"reason":"app nginx removed from the allowlist"/);
  await waitFor(async () => !(await inWebSet(ip)), 5000, { message: 'enclave IP left cat_Web' });
  assert.equal(gw.child.exitCode, null);
  assert.ok(
    !gw.log.some((l) => /"level":(50|60)/.test(l) && /pg|postgres/i.test(l)),
    'no error logged about PostgreSQL',
  );
});
