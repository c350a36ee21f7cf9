/**
 * `seng status` / `seng kick` against something that is not a working seng gateway: a socket
 * that answers non-JSON or unexpected JSON or nothing, a path that is not a socket, a path
 * where nothing listens. Each gives one typed error line with a hint and exit 1, never a
 * stack trace. Also `serve --control` in a directory that does not exist is refused before
 * anything is created (only the default /run/seng is created by seng itself).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { seng, sengSpawn, type CliResult } from '../../helpers/cli.js';

let dir: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'seng-ctl-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** A Unix socket server that answers every request line with `reply` (undefined: closes silently). */
async function fakeGateway(
  name: string,
  reply: string | undefined,
): Promise<{ path: string; server: Server }> {
  const path = join(dir, name);
  const server = createServer((conn) => {
    conn.once('data', () => (reply === undefined ? conn.end() : conn.end(reply)));
    conn.on('error', () => conn.destroy());
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return { path, server };
}

/** Runs seng asynchronously (the fake server lives in this process). */
function run(args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = sengSpawn(args);
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

function assertTypedFailure(r: CliResult, message: RegExp): void {
  assert.equal(r.code, 1, r.stderr);
  assert.doesNotMatch(r.stderr, /Internal error|\n\s+at /, 'no stack trace');
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 2, r.stderr);
  assert.match(lines[0]!, message);
  assert.match(lines[1]!, /^Hint: /);
}

const replies: [string, string | undefined, RegExp][] = [
  ['non-JSON', 'HTTP/1.1 400 Bad Request\r\n\r\n', /did not answer like a seng gateway/],
  ['JSON without ok', '{"hello":"world"}\n', /did not answer like a seng gateway/],
  ['nothing', undefined, /closed the connection without an answer/],
  ['ok but no status', '{"ok":true,"result":{"foo":1}}\n', /answered without a status/],
  ['ok but null', '{"ok":true,"result":null}\n', /answered without a status/],
];

for (const [what, reply, message] of replies) {
  test(`seng status against a socket that answers ${what}: one typed error line and a hint`, async () => {
    const { path, server } = await fakeGateway(`s-${replies.findIndex((r) => r[0] === what)}.sock`, reply);
    try {
      assertTypedFailure(await run(['status', '--control', path]), message);
    } finally {
      server.close();
    }
  });
}

test('seng kick against a socket that answers unexpected JSON: typed error', async () => {
  const { path, server } = await fakeGateway('k.sock', '{"ok":true,"result":[1,2]}\n');
  try {
    assertTypedFailure(await run(['kick', '--all', '--control', path]), /answered without a kick result/);
  } finally {
    server.close();
  }
});

test('a control path that is not a socket, or where nothing listens: typed error', async () => {
  const file = join(dir, 'plain-file');
  writeFileSync(file, 'x');
  assertTypedFailure(await run(['status', '--control', file]), /is not a socket/);
  assertTypedFailure(
    await run(['kick', '--app', 'x', '--control', join(dir, 'missing.sock')]),
    /no running gateway/,
  );
});

test('seng kick needs exactly one selector (usage error, exit 2)', () => {
  const r = seng(['kick', '192.168.28.2', '--all', '--control', join(dir, 'missing.sock')]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /exactly one of/);
});

test('serve --control in a directory that does not exist is refused with a hint, creating nothing', () => {
  const cert = join(dir, 'gw.crt');
  const key = join(dir, 'gw.key');
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'].concat([
      '-keyout',
      key,
      '-out',
      cert,
      '-subj',
      '/CN=t',
      '-days',
      '1',
    ]),
    { stdio: 'ignore' },
  );
  const missing = join(dir, 'no', 'such', 'dir');
  const r = seng([
    'serve',
    '--cert',
    cert,
    '--key',
    key,
    '--tun',
    'sgctlerr0',
    '--control',
    join(missing, 's.sock'),
    '--log-format',
    'json',
    '127.0.0.1',
    '12345',
  ]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /the directory of the control socket .* does not exist/);
  assert.match(r.stderr, /Hint: create .*no\/such\/dir first/);
  assert.equal(existsSync(join(dir, 'no')), false, 'no directory was created');
  assert.doesNotMatch(
    r.stderr,
    /"event":"stopped"|gateway stopped/,
    'a gateway that never started did not stop',
  );
});
