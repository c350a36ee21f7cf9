/**
 * `seng rules apply` and a running gateway (issue #17): hand the policy to a gateway
 * that answers; apply with nft directly only when none runs (no socket, or nobody
 * listening on it); fail with the reason when the socket cannot be reached otherwise.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNetns, cleanupAll, type Netns } from '../../helpers/netns.js';
import { sengBin } from '../../helpers/cli.js';
import { ControlServer, type ControlRequest } from '../../../src/gateway/control.js';

const dir = mkdtempSync(join(tmpdir(), 'seng-gwapply-'));
chmodSync(dir, 0o755);
after(async () => {
  await cleanupAll();
  rmSync(dir, { recursive: true, force: true });
});

const policy = join(dir, 'p.yaml');
writeFileSync(
  policy,
  'version: 1\nrules:\n  - { name: ssh, chain: input, action: accept, protocol: tcp, dport: 22 }\n',
  {
    mode: 0o644,
  },
);

async function apply(
  ns: Netns,
  args: string[],
  prefix: string[] = [],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const [cmd, ...pre] = [...prefix, process.execPath];
  return ns.exec(cmd as string, [...pre, sengBin, 'rules', 'apply', policy, ...args], {
    check: false,
    timeoutMs: 60_000,
  });
}

async function tables(ns: Netns): Promise<string> {
  return (await ns.exec('nft', ['list', 'tables'])).stdout.trim();
}

test('a gateway that answers gets the policy; nft is not touched', { timeout: 60_000 }, async () => {
  const ns = await createNetns('gwa');
  const requests: ControlRequest[] = [];
  const sock = join(dir, 'up.sock');
  const server = await ControlServer.listen(sock, async (req) => {
    requests.push(req);
    return { policy: 'p.yaml: 1 rules, 1 sets', sessions: 3 };
  });
  try {
    const r = await apply(ns, ['--control', sock]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /applied through the running gateway: .*3 live sessions kept/);
    assert.deepEqual(requests, [{ cmd: 'policy', path: policy }]);
    assert.equal(await tables(ns), '', 'the gateway applies, not the CLI');
  } finally {
    await server.close();
  }
});

test('a socket nobody listens on means no gateway: direct apply', { timeout: 60_000 }, async () => {
  const ns = await createNetns('gwa');
  const sock = join(dir, 'stale.sock');
  // A bound socket without a listener: what a crashed gateway leaves behind (ECONNREFUSED).
  const py = spawnSync('python3', [
    '-c',
    'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])',
    sock,
  ]);
  assert.equal(py.status, 0, String(py.stderr));
  const r = await apply(ns, ['--control', sock]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /applied .* to table ip seng/);
  assert.equal(await tables(ns), 'table ip seng');
});

test(
  'a control socket that cannot be reached (EACCES) is an error, not a fallback',
  { timeout: 60_000 },
  async () => {
    const ns = await createNetns('gwa');
    const sock = join(dir, 'root-only.sock');
    const server = await ControlServer.listen(sock, async () => ({ policy: 'x', sessions: 0 }));
    try {
      const r = await apply(
        ns,
        ['--control', sock],
        ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'],
      );
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /cannot tell whether a gateway runs: connecting to its control socket .*EACCES/);
      assert.match(r.stderr, /Hint: run as root/);
      assert.equal(await tables(ns), '');
    } finally {
      await server.close();
    }
  },
);

test(
  '--confirm through a gateway: the gateway arms its own rollback; the command confirms or declines it',
  { timeout: 90_000 },
  async () => {
    const ns = await createNetns('gwa');
    const requests: ControlRequest[] = [];
    const sock = join(dir, 'confirm.sock');
    const runDir = mkdtempSync(join(dir, 'run-'));
    let waiting = false;
    const server = await ControlServer.listen(sock, async (req) => {
      requests.push(req);
      if (req.cmd === 'policy') {
        waiting = true;
        return { policy: 'p.yaml: 1 rules, 0 sets', sessions: 1 };
      }
      const was = waiting;
      waiting = false;
      return { waiting: was };
    });
    const env = { ...process.env, SENG_RUN_DIR: runDir };
    try {
      // Nobody confirms: declined when the command's time is up (the gateway's is 5 s later).
      const r = await ns.exec(
        process.execPath,
        [sengBin, 'rules', 'apply', policy, '--control', sock, '--confirm', '1'],
        { check: false, timeoutMs: 60_000, env },
      );
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /not confirmed within 1 s: the gateway put the previous policy/);
      assert.deepEqual(requests, [
        { cmd: 'policy', path: policy, confirmSeconds: 6 },
        { cmd: 'confirm', rollback: true },
      ]);
      // Confirmed from another shell: the gateway is told to keep it.
      requests.length = 0;
      const applying = ns.exec(
        process.execPath,
        [sengBin, 'rules', 'apply', policy, '--control', sock, '--confirm', '30'],
        { check: false, timeoutMs: 60_000, env },
      );
      while (!requests.some((q) => q.cmd === 'policy')) await new Promise((res) => setTimeout(res, 50));
      let confirmed = spawnSync(process.execPath, [sengBin, 'rules', 'confirm'], { env, encoding: 'utf8' });
      // The pending file appears right after the gateway answered; retry until it is there.
      for (let i = 0; i < 100 && confirmed.status !== 0; i++) {
        await new Promise((res) => setTimeout(res, 100));
        confirmed = spawnSync(process.execPath, [sengBin, 'rules', 'confirm'], { env, encoding: 'utf8' });
      }
      assert.equal(confirmed.status, 0, confirmed.stderr);
      const done = await applying;
      assert.equal(done.code, 0, done.stderr);
      assert.match(done.stdout, /confirmed: the gateway keeps the new rules/);
      assert.deepEqual(requests.at(-1), { cmd: 'confirm' });
      assert.equal(await tables(ns), '', 'the gateway applies, not the CLI');
    } finally {
      await server.close();
    }
  },
);
