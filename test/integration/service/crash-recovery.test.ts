/**
 * Crash recovery: `seng serve --nft` killed with SIGKILL while enclaves are connected leaves
 * nft set elements, conntrack entries and its control socket behind. A restart removes the
 * stale firewall state before it listens (so before the first admission), replaces the
 * socket, and admits again.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { cleanupAll, stop, waitFor } from '../../helpers/netns.js';
import { appCert, buildLab, serve, sim, SERVICE, type Lab, type Served } from '../../helpers/gateway-lab.js';
import { seng } from '../../helpers/cli.js';

const APP = 'c3'.repeat(32);
let lab: Lab;
let db: string;

before(async () => {
  lab = await buildLab('crr');
  db = join(lab.dir, 'nf.db');
  for (const args of [
    ['db', 'init', '-d', db, '--schema', 'netfilter'],
    ['db', 'app', 'add', '-d', db, 'web', '--mrenclave', APP, '--mrsigner', 'ab'.repeat(32)],
  ]) {
    const r = seng(args);
    assert.equal(r.code, 0, r.stderr);
  }
});

after(async () => {
  await cleanupAll();
  lab?.cleanup();
});

async function setElements(): Promise<string[]> {
  const r = await lab.gw.exec('nft', ['-j', 'list', 'set', 'ip', 'seng', 'enclaves']);
  return (JSON.parse(r.stdout) as { nftables: Array<{ set?: { elem?: string[] } }> }).nftables.flatMap(
    (o) => o.set?.elem ?? [],
  );
}

/** A tracked TCP connection between two addresses, as live traffic would leave it. */
async function addConntrack(src: string, dst: string, sport: number): Promise<void> {
  await lab.gw.exec('conntrack', [
    '-I',
    '-s',
    src,
    '-d',
    dst,
    '-p',
    'tcp',
    '--sport',
    String(sport),
    '--dport',
    '80',
    '--state',
    'ESTABLISHED',
    '-u',
    'ASSURED',
    '-t',
    '600',
  ]);
}

/**
 * Waits until the gateway logged the admission of `ip`. A simulator is ready once it has its IP;
 * the gateway registers the enclave with the firewall backend right after and logs "admitted"
 * when that is done, so the set is only checked from then on (on a loaded machine the simulator
 * can get there first).
 */
async function admitted(gw: Served, ip: string): Promise<void> {
  await waitFor(() => gw.log.find((l) => l.includes('"event":"admitted"') && l.includes(`"${ip}"`)), 15_000, {
    message: `the gateway logs the admission of ${ip}`,
  });
}

async function conntrackOf(ip: string): Promise<string> {
  const src = await lab.gw.exec('conntrack', ['-L', '-s', ip], { check: false });
  const dst = await lab.gw.exec('conntrack', ['-L', '-d', ip], { check: false });
  return src.stdout + dst.stdout;
}

test('after SIGKILL with live enclaves, a restart removes stale nft and conntrack state before admitting', async () => {
  let gw: Served | undefined = await serve(lab, ['-d', db, '--nft']);
  const enclaves = [
    await sim(lab, lab.host1, appCert(lab, APP)),
    await sim(lab, lab.host1, appCert(lab, APP, { kind: 'dcap' })),
  ];
  const ips = enclaves.map((e) => {
    assert.ok(e.ready, e.stderr());
    return e.ready.ip;
  });
  for (const ip of ips) await admitted(gw, ip);
  assert.deepEqual((await setElements()).sort(), [...ips].sort());
  // Connections of both enclaves, one of a subnet address no enclave holds now, and one
  // outside the enclave subnets that must survive.
  await addConntrack(ips[0]!, SERVICE, 40001);
  await addConntrack(SERVICE, ips[1]!, 40002);
  await addConntrack('192.168.28.77', SERVICE, 40003);
  await addConntrack('10.99.0.5', SERVICE, 40004);

  gw.child.kill('SIGKILL');
  await new Promise((r) => gw!.child.once('exit', r));
  for (const e of enclaves) await stop(e.child);
  // What the killed gateway left: set elements, conntrack entries, its socket.
  assert.deepEqual((await setElements()).sort(), [...ips].sort());
  assert.match(await conntrackOf(ips[0]!), /40001/);
  assert.ok(existsSync(lab.control), 'the stale control socket is still there');
  // The TUN device the gateway created went away with its file descriptor.
  const link = await lab.gw.exec('ip', ['link', 'show', 'tunFA'], { check: false });
  assert.notEqual(link.code, 0, 'tunFA is gone');

  gw = await serve(lab, ['-d', db, '--nft']);
  try {
    const listening = gw.log.findIndex((l) => l.includes('"event":"listening"'));
    const recovered = gw.log.findIndex((l) => l.includes('"event":"recovered"'));
    assert.ok(recovered >= 0 && recovered < listening, gw.log.join('\n'));
    assert.match(gw.log[recovered]!, /"conntrackDeleted":3/);
    assert.deepEqual(await setElements(), []);
    for (const ip of [...ips, '192.168.28.77'])
      assert.equal(await conntrackOf(ip), '', `${ip} still tracked`);
    assert.match(await conntrackOf('10.99.0.5'), /40004/, 'entries outside the enclave subnets stay');
    // The restarted gateway admits again (TUN device and control socket were recovered).
    const again = await sim(lab, lab.host1, appCert(lab, APP));
    assert.ok(again.ready, again.stderr());
    await admitted(gw, again.ready.ip);
    assert.deepEqual(await setElements(), [again.ready.ip]);
    const status = seng(['status', '--control', lab.control, '--json']);
    assert.equal(status.code, 0, status.stderr);
    await stop(again.child);
  } finally {
    await gw.stop();
  }
});

test('an admin-created persistent TUN device survives SIGKILL and is attached to again', async () => {
  await lab.gw.ip('tuntap', 'add', 'dev', 'tunFA', 'mode', 'tun');
  try {
    let gw = await serve(lab, ['-d', db, '--nft']);
    const first = await sim(lab, lab.host1, appCert(lab, APP));
    assert.ok(first.ready, first.stderr());
    gw.child.kill('SIGKILL');
    await new Promise((r) => gw.child.once('exit', r));
    await stop(first.child);
    assert.match((await lab.gw.ip('addr', 'show', 'tunFA')).stdout, /192\.168\.28\.1\/24/);
    gw = await serve(lab, ['-d', db, '--nft']);
    try {
      assert.deepEqual(await setElements(), []);
      const again = await sim(lab, lab.host1, appCert(lab, APP));
      assert.ok(again.ready, again.stderr());
      await stop(again.child);
    } finally {
      await gw.stop();
    }
  } finally {
    await lab.gw.ip('link', 'del', 'tunFA').catch(() => undefined);
  }
});
