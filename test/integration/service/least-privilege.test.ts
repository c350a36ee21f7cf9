/**
 * `seng serve` as an unprivileged user holding only CAP_NET_ADMIN (what the systemd unit in
 * packaging/systemd/seng.service grants): setpriv drops to uid/gid 65534 with CAP_NET_ADMIN as
 * the only inheritable, ambient and bounding capability and no_new_privs set, inside the lab's
 * gateway namespace. A simulated enclave is admitted end to end in every mode that can run here.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chownSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanupAll, stop, waitFor } from '../../helpers/netns.js';
import { appCert, buildLab, serve, sim, type Lab } from '../../helpers/gateway-lab.js';
import { seng, sengBin } from '../../helpers/cli.js';

/** nobody/nogroup: exists on every Debian-like system and owns nothing. */
const UID = 65534;
const CAP_NET_ADMIN_MASK = 1n << 12n;
const DROP = [
  'setpriv',
  `--reuid=${UID}`,
  `--regid=${UID}`,
  '--clear-groups',
  '--inh-caps=-all,+net_admin',
  '--ambient-caps=-all,+net_admin',
  '--bounding-set=-all,+net_admin',
  '--no-new-privs',
  '--',
];
/**
 * Distributions ship /dev/net/tun as mode 0666 (udev); this machine has 0600. The gateway runs
 * in a private mount namespace whose /dev/net/tun is a 0666 node, so nothing global changes.
 */
const tunNode = () => join(lab.dir, 'tun');
const withTun0666 = () => [
  'unshare',
  '--mount',
  '--propagation',
  'private',
  '--',
  'sh',
  '-c',
  'mount --bind "$0" /dev/net/tun && exec "$@"',
  tunNode(),
];
const APP = 'c1'.repeat(32);
const SIGNER = 'ab'.repeat(32);

let lab: Lab;
/** As systemd does for User=: HOME is the service user's (oclif looks for user plugins there). */
const env = () => ({ ...process.env, HOME: lab.dir });

before(async () => {
  lab = await buildLab('lpv');
  for (const [db, schema] of [
    ['nf.db', 'netfilter'],
    ['van.db', 'vanilla'],
  ] as const) {
    const path = join(lab.dir, db);
    const init = seng(['db', 'init', '-d', path, '--schema', schema]);
    assert.equal(init.code, 0, init.stderr);
    const extra =
      schema === 'vanilla' ? ['--host-subnet', '10.50.0.0/24', '--enclave-subnet', '192.168.28.0/24'] : [];
    if (schema === 'vanilla') {
      const sub = seng(['db', 'subnet', 'add', '-d', path, '192.168.28.0/24', '--gateway', '192.168.28.1']);
      assert.equal(sub.code, 0, sub.stderr);
    }
    const add = seng([
      'db',
      'app',
      'add',
      '-d',
      path,
      'web',
      '--mrenclave',
      APP,
      '--mrsigner',
      SIGNER,
      ...extra,
    ]);
    assert.equal(add.code, 0, add.stderr);
  }
  execFileSync('mknod', ['-m', '0666', tunNode(), 'c', '10', '200']);
  // A policy file makes serve run `nft -f` as a child: CAP_NET_ADMIN must be ambient to reach it.
  writeFileSync(
    join(lab.dir, 'policy.yaml'),
    `version: 1
defaults: { input: accept, forward: drop, output: accept }
rules:
  - name: web
    chain: forward
    src-app: ${APP}
    protocol: tcp
    dport: 80
    action: accept
`,
  );
  // The service user owns its state (database, keys) and runtime (control socket) directory.
  chownTree(lab.dir);
});

after(async () => {
  await cleanupAll();
  lab?.cleanup();
});

/** The lease history in the lab directory (owned by the service user, as StateDirectory= is). */
function leaseDb(): string[] {
  return ['--lease-db', join(lab.dir, 'leases.db')];
}

function chownTree(dir: string): void {
  chownSync(dir, UID, UID);
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) chownTree(p);
    else chownSync(p, UID, UID);
  }
}

/** Uid and capability sets of a running process, from /proc. */
function credentials(pid: number): { uid: string; eff: bigint; prm: bigint; bnd: bigint; amb: bigint } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) => new RegExp(`^${name}:\\s*(.+)$`, 'm').exec(status)?.[1] ?? '';
  const caps = (name: string) => BigInt(`0x${field(name)}`);
  return {
    uid: field('Uid'),
    eff: caps('CapEff'),
    prm: caps('CapPrm'),
    bnd: caps('CapBnd'),
    amb: caps('CapAmb'),
  };
}

function assertOnlyNetAdmin(pid: number): void {
  const c = credentials(pid);
  assert.deepEqual(c.uid.split(/\s+/), [String(UID), String(UID), String(UID), String(UID)]);
  for (const set of ['eff', 'prm', 'bnd', 'amb'] as const)
    assert.equal(c[set], CAP_NET_ADMIN_MASK, `Cap${set}: 0x${c[set].toString(16)}`);
}

/** pino levels: 40 warn, 50 error — a permission problem anywhere shows up as one of them. */
function assertNoWarnings(log: string[]): void {
  const bad = log.filter((l) => /"level":(4|5|6)0/.test(l) || /EPERM|EACCES/.test(l));
  assert.deepEqual(bad, []);
}

test('--nft: admitted as uid 65534 with only CAP_NET_ADMIN, enclave IP lands in the nft set', async () => {
  const policy = join(lab.dir, 'policy.yaml');
  const gw = await serve(
    lab,
    ['-d', join(lab.dir, 'nf.db'), '--nft', '--policy', policy, ...leaseDb()],
    undefined,
    {
      wrap: [...withTun0666(), ...DROP],
      env: env(),
    },
  );
  try {
    assertOnlyNetAdmin(gw.child.pid!);
    const enclave = await sim(lab, lab.host1, appCert(lab, APP));
    assert.ok(enclave.ready, enclave.stderr());
    // The set is filled when the gateway logs "admitted", which may come just after the
    // simulator has its IP.
    const ip = enclave.ready.ip;
    await waitFor(
      () => gw.log.find((l) => l.includes('"event":"admitted"') && l.includes(`"${ip}"`)),
      15_000,
    );
    const r = await lab.gw.exec('nft', ['-j', 'list', 'set', 'ip', 'seng', 'enclaves']);
    const elems = (
      JSON.parse(r.stdout) as { nftables: Array<{ set?: { elem?: unknown[] } }> }
    ).nftables.flatMap((o) => o.set?.elem ?? []);
    assert.ok(elems.includes(enclave.ready.ip), `${enclave.ready.ip} not in ${JSON.stringify(elems)}`);
    const rules = await lab.gw.exec('nft', ['list', 'table', 'ip', 'seng']);
    assert.match(rules.stdout, /tcp dport 80/, 'the policy was installed by the unprivileged gateway');
    await stop(enclave.child);
    // Leaving purges the enclave's set elements and conntrack entries (netlink, CAP_NET_ADMIN).
    await waitFor(() => gw.log.find((l) => l.includes('"event":"session-end"')), 10_000);
  } finally {
    await gw.stop();
  }
  assert.equal(gw.child.exitCode, 0, gw.log.join('\n'));
  assertNoWarnings(gw.log);
});

test('vanilla: admitted as uid 65534 with only CAP_NET_ADMIN', async () => {
  const gw = await serve(lab, ['-d', join(lab.dir, 'van.db'), ...leaseDb()], undefined, {
    wrap: [...withTun0666(), ...DROP],
    env: env(),
  });
  try {
    assertOnlyNetAdmin(gw.child.pid!);
    const enclave = await sim(lab, lab.host1, appCert(lab, APP));
    assert.ok(enclave.ready, enclave.stderr());
    await stop(enclave.child);
  } finally {
    await gw.stop();
  }
  assert.equal(gw.child.exitCode, 0, gw.log.join('\n'));
  assertNoWarnings(gw.log);
});

test('-s (shadow service, nft backend): starts as uid 65534 with only CAP_NET_ADMIN', async () => {
  const gw = await serve(
    lab,
    ['-d', join(lab.dir, 'van.db'), '-s', '--shadow-interface', 'any', ...leaseDb()],
    undefined,
    {
      wrap: [...withTun0666(), ...DROP],
      env: env(),
    },
  );
  try {
    assertOnlyNetAdmin(gw.child.pid!);
    const table = await lab.gw.exec('nft', ['list', 'table', 'ip', 'seng_shadow']);
    assert.match(table.stdout, /table ip seng_shadow/);
    const ss = await lab.gw.exec('ss', ['-Hltn', 'sport', '=', ':2409']);
    assert.match(ss.stdout, /192\.168\.28\.1:2409/);
  } finally {
    await gw.stop();
  }
  assert.equal(gw.child.exitCode, 0, gw.log.join('\n'));
  assertNoWarnings(gw.log);
});

test('-n without the kernel module fails on the missing module, not on a permission', async () => {
  const [cmd, ...pre] = [...withTun0666(), ...DROP];
  const child = lab.gw.spawn(
    cmd!,
    [
      ...pre,
      process.execPath,
      sengBin,
      'serve',
      '--cert',
      lab.gwKeys[0]!.cert,
      '--key',
      lab.gwKeys[0]!.key,
      '--control',
      lab.control,
      '-n',
      '-d',
      join(lab.dir, 'nf.db'),
      '10.50.0.1',
      '12345',
    ],
    { env: env() },
  );
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  assert.equal(code, 1, stderr);
  assert.match(stderr, /kernel module|seng_family/i);
  assert.doesNotMatch(stderr, /EPERM|EACCES|permission|not permitted/i);
});
