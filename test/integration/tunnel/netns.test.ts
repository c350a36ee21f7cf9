/**
 * The namespace toolkit itself: namespaces, veth pairs, tracked processes and cleanup.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import {
  cleanupAll,
  createNetns,
  vethPair,
  waitFor,
  waitForLine,
  linkNames,
  runIn,
  run,
  uniqueIfName,
  CommandError,
  NodeAgent,
  reapStale,
} from '../../helpers/netns.js';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

after(cleanupAll);

test('namespace has a unique name, loopback up, and is deleted by destroy()', async () => {
  const a = await createNetns('tun');
  const b = await createNetns('tun');
  assert.notEqual(a.name, b.name);
  assert.match(a.name, new RegExp(`^sg-tun-${process.pid}-\\d+$`));
  assert.ok(existsSync(`/var/run/netns/${a.name}`));
  const lo = await a.exec('ip', ['-o', 'link', 'show', 'lo']);
  assert.match(lo.stdout, /[<,]UP[,>]/);
  await a.exec('ping', ['-c1', '-W1', '127.0.0.1']);
  await a.destroy();
  await a.destroy(); // idempotent
  assert.ok(!existsSync(`/var/run/netns/${a.name}`));
  assert.throws(() => a.execSync('true'), /destroyed/);
  await b.destroy();
});

test('exec rejects with a CommandError carrying stderr, unless check: false', async () => {
  const ns = await createNetns('tun');
  await assert.rejects(ns.exec('sh', ['-c', 'echo oops >&2; exit 3']), (err: unknown) => {
    assert.ok(err instanceof CommandError);
    assert.equal(err.result.code, 3);
    assert.match(err.message, /oops/);
    return true;
  });
  const r = await ns.exec('sh', ['-c', 'exit 4'], { check: false });
  assert.equal(r.code, 4);
  const echoed = await ns.exec('cat', [], { input: 'hello' });
  assert.equal(echoed.stdout, 'hello');
  await ns.destroy();
});

test('veth pair between root and a namespace carries traffic; destroy removes it', async () => {
  const ns = await createNetns('tun');
  const v = await vethPair(null, ns, { addrA: '10.231.0.1/30', addrB: '10.231.0.2/30', mtu: 1400 });
  assert.ok(v.a.name.length <= 15 && v.b.name.length <= 15);
  assert.match(
    v.a.name,
    new RegExp(`^tun-${process.pid.toString(36)}-[0-9a-z]+a$`),
    'area tag and PID in the name',
  );
  assert.equal(v.b.address, '10.231.0.2');
  assert.ok((await linkNames(null)).includes(v.a.name));
  assert.ok((await linkNames(ns)).includes(v.b.name));
  await ns.exec('ping', ['-c1', '-W2', '10.231.0.1']);
  const mtu = await ns.exec('cat', [`/sys/class/net/${v.b.name}/mtu`]);
  assert.equal(mtu.stdout.trim(), '1400');
  await v.destroy();
  assert.ok(!(await linkNames(null)).includes(v.a.name));
  await ns.destroy();
});

test('veth pair between two namespaces', async () => {
  const n1 = await createNetns('tun');
  const n2 = await createNetns('tun');
  const v = await vethPair(n1, n2, { addrA: '10.231.1.1/24', addrB: '10.231.1.2/24' });
  await n1.exec('ping', ['-c1', '-W2', '10.231.1.2']);
  assert.ok(!(await linkNames(null)).includes(v.a.name));
  await n1.destroy();
  await n2.destroy();
});

test('spawned processes are tracked and killed by cleanupAll; waitForLine and waitFor', async () => {
  const ns = await createNetns('tun');
  const child = ns.spawn('sh', ['-c', 'echo ready; exec sleep 60']);
  const { line } = await waitForLine(child, /^ready$/, 5000);
  assert.equal(line, 'ready');
  const pid = child.pid as number;
  const pids = await run('ip', ['netns', 'pids', ns.name]);
  assert.ok(pids.stdout.split('\n').includes(String(pid)));
  await cleanupAll();
  await waitFor(() => child.exitCode !== null || child.signalCode !== null, 5000);
  assert.ok(!existsSync(`/var/run/netns/${ns.name}`));
  assert.throws(() => process.kill(pid, 0));
});

test('waitFor times out with the given message; runIn runs node in the namespace', async () => {
  await assert.rejects(
    waitFor(() => false, 100, { message: 'never' }),
    /never/,
  );
  const ns = await createNetns('tun');
  const r = await runIn(ns, '-e', ['console.log(require("os").networkInterfaces().lo ? "lo" : "none")']);
  assert.equal(r.stdout.trim(), 'lo');
  assert.ok(uniqueIfName('averylongtag', 'x').length <= 15);
  await ns.destroy();
});

test('reapStale deletes namespaces whose creating process is gone, and only those', async () => {
  // A PID that certainly existed and has exited: a child we ran to completion.
  const dead = spawnSync('true').pid as number;
  const stale = `sg-tun-${dead}-1`;
  await run('ip', ['netns', 'add', stale]);
  const live = await createNetns('tun');
  try {
    const reaped = reapStale();
    assert.ok(reaped.includes(stale));
    assert.ok(!existsSync(`/var/run/netns/${stale}`));
    assert.ok(existsSync(`/var/run/netns/${live.name}`), 'namespaces of live processes are kept');
  } finally {
    await run('ip', ['netns', 'delete', stale], { check: false });
    await live.destroy();
  }
});

test('NodeAgent: replies, error replies, events and exit', async () => {
  const script = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'tun-agent.js');
  const ns = await createNetns('tun');
  const agent = await NodeAgent.start(ns, script);
  assert.equal((await agent.waitForEvent((e) => e.event === 'ready')).event, 'ready');
  const bad = await agent.call('no-such-command');
  assert.equal(bad.ok, false);
  assert.match(String(bad.message), /unknown command/);
  await assert.rejects(agent.ok('no-such-command'), /unknown command/);
  const err = await agent.call('open', { opts: { name: 'bad name!' } });
  assert.equal(err.code, 'EINPUT');
  await agent.exit();
  assert.equal(agent.child.exitCode, 0);
  await assert.rejects(agent.call('counts'), /exited/);
  await ns.destroy();
});
