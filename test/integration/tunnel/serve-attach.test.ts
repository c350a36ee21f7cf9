/**
 * Issue #17 item 11: `seng serve` with a pre-created tunFA (the original's setup script makes
 * one) attaches to it instead of failing; a tunFA that is not a TUN device is refused with a
 * hint. Runs the real CLI in the gateway namespace of a lab.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { seng, sengBin } from '../../helpers/cli.js';
import { buildLab, serve, type Lab } from '../../helpers/gateway-lab.js';
import { cleanupAll } from '../../helpers/netns.js';

let lab: Lab | undefined;
after(async () => {
  await cleanupAll();
  lab?.cleanup();
});

test('serve attaches to an existing TUN device and leaves it in place; refuses a non-TUN tunFA', async () => {
  lab = await buildLab('tsa');
  const db = join(lab.dir, 'policy.db');
  assert.equal(seng(['db', 'init', '-d', db, '--schema', 'vanilla']).code, 0);
  assert.equal(
    seng(['db', 'subnet', 'add', '-d', db, '192.168.28.0/24', '--gateway', '192.168.28.1']).code,
    0,
  );

  await lab.gw.exec('ip', ['tuntap', 'add', 'dev', 'tunFA', 'mode', 'tun']);
  const gw = await serve(lab, ['-d', db]);
  const addr = (await lab.gw.exec('ip', ['-4', '-o', 'addr', 'show', 'dev', 'tunFA'])).stdout;
  assert.match(addr, /inet 192\.168\.28\.1\/24/, 'serve configured the existing device');
  assert.match((await lab.gw.exec('ip', ['-o', 'link', 'show', 'tunFA'])).stdout, /mtu 1432/);
  await gw.stop();
  // An attached device stays (only our address goes); a created one would be gone.
  const after = await lab.gw.exec('ip', ['-o', 'addr', 'show', 'dev', 'tunFA'], { check: false });
  assert.equal(after.code, 0, 'tunFA still exists after serve stopped');
  assert.doesNotMatch(after.stdout, /192\.168\.28\.1/);

  // A tunFA of another kind is refused before anything else happens.
  await lab.gw.exec('ip', ['link', 'del', 'tunFA']);
  await lab.gw.ip('link', 'add', 'tunFA', 'type', 'veth', 'peer', 'name', 'tunFAp');
  const r = await lab.gw.exec(
    process.execPath,
    [
      sengBin,
      'serve',
      '--cert',
      lab.gwKeys[0]!.cert,
      '--key',
      lab.gwKeys[0]!.key,
      '--control',
      lab.control,
      '-d',
      db,
      '10.50.0.1',
      '12345',
    ],
    { check: false, timeoutMs: 30_000 },
  );
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /tunFA exists but is not a TUN device/);
  assert.match(r.stderr, /ip link del tunFA|--tun/);
  assert.doesNotMatch(r.stderr, /--attach/);
});
