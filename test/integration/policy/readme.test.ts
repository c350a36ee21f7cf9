/**
 * The README's "Per-app firewall rules" sequence works as written (issue #17: its
 * example failed with `no app named "SENG-NGINX"`). Every command of the block runs in a
 * scratch directory, in a fresh network namespace; only `seng serve` (certificates, a TUN
 * device) is left out, so `rules apply` applies directly (with a control socket nobody
 * listens on, so a gateway another test runs cannot answer).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNetns, cleanupAll } from '../../helpers/netns.js';
import { repoRoot, sengBin } from '../../helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'seng-readme-'));
after(async () => {
  await cleanupAll();
  rmSync(dir, { recursive: true, force: true });
});

function readmeBlock(): string[] {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
  const start = readme.indexOf('Per-app firewall rules without the kernel module');
  assert.ok(start >= 0, 'the README section exists');
  const m = /```sh\n([^]*?)```/.exec(readme.slice(start));
  assert.ok(m?.[1]);
  return m[1].split('\n').filter((l) => l.trim() !== '');
}

test('the README sequence for per-app firewall rules runs end to end', { timeout: 120_000 }, async () => {
  const lines = readmeBlock();
  assert.ok(lines.some((l) => l.startsWith('seng rules check')));
  const bin = join(dir, 'bin');
  const work = join(dir, 'work');
  for (const d of [bin, work]) rmSync(d, { recursive: true, force: true });
  mkdirSync(bin);
  mkdirSync(work);
  writeFileSync(
    join(bin, 'seng'),
    `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(sengBin)} "$@"\n`,
  );
  chmodSync(join(bin, 'seng'), 0o755);
  symlinkSync(join(repoRoot, 'rules'), join(work, 'rules'));
  const ns = await createNetns('rdm');
  const hex = (c: string): string => c.repeat(64);
  for (const raw of lines) {
    let line = raw
      .replace(/\s+#.*$/, '')
      .replace('<hex>', hex('a'))
      .replace('<hex>', hex('b'));
    if (line.startsWith('seng serve ')) continue;
    if (line.startsWith('seng rules apply')) line += ` --control ${join(dir, 'no-gateway.sock')}`;
    const r = await ns.exec('sh', ['-c', line], {
      check: false,
      cwd: work,
      env: { PATH: `${bin}:${process.env.PATH ?? ''}` },
      timeoutMs: 60_000,
    });
    assert.equal(r.code, 0, `${line}\n${r.stderr}`);
  }
  const live = (await ns.exec('nft', ['list', 'table', 'ip', 'seng'])).stdout;
  assert.match(live, /ct state established,related accept comment "established-forward"/);
  assert.match(live, /comment "nginx-serves-http"/);
});
