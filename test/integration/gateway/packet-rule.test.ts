/**
 * SPEC §1.4 through a real gateway, with the native fast path on (the default) and off
 * (SENG_NATIVE_FORWARD=0): each invalid inner-packet form is sent by a real DTLS client
 * between pings of the gateway (test/helpers/scripts/raw-records.ts), one session per form.
 * Nothing invalid may reach the TUN device on either path: the session's `packetsIn` (native
 * + JS writes) equals the pings the kernel answered, the form is counted under its reason,
 * and the kernel's rx counter of the TUN device agrees with the gateway's counts.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { cleanupAll, waitFor } from '../../helpers/netns.js';
import { appCert, buildLab, serve, GW_HOST1, type Lab } from '../../helpers/gateway-lab.js';
import { repoRoot } from '../../helpers/cli.js';

const script = join(repoRoot, 'dist', 'test', 'helpers', 'scripts', 'raw-records.js');

let lab: Lab;

before(async () => {
  lab = await buildLab('gpr');
});

after(async () => {
  await cleanupAll();
  lab?.cleanup();
});

async function rxPackets(): Promise<number> {
  const r = await lab.gw.exec('cat', ['/sys/class/net/tunFA/statistics/rx_packets']);
  return Number(r.stdout.trim());
}

for (const native of [true, false]) {
  test(`invalid inner packets never reach the TUN device (native forwarding ${native ? 'on' : 'off'})`, async (t) => {
    const gw = await serve(lab, [], GW_HOST1, { env: { SENG_NATIVE_FORWARD: native ? '1' : '0' } });
    try {
      const rxBefore = await rxPackets();
      const app = appCert(lab, 'd4'.repeat(32));
      const r = await lab.host1.exec(
        process.execPath,
        [script, GW_HOST1, '12345', app.cert, app.key, lab.gwCert],
        { timeoutMs: 60_000 },
      );
      const sessions = r.stdout
        .trim()
        .split('\n')
        .map(
          (l) =>
            JSON.parse(l) as { form: string; reason: string; ip: string; sent: boolean; replies: number },
        );
      assert.equal(sessions.length, 8, r.stderr);
      const ends = await Promise.all(
        sessions.map(({ ip }) =>
          waitFor(
            () =>
              gw.log.find((l) => l.includes('"event":"session-end"') && l.includes(`"enclaveIp":"${ip}"`)),
            15_000,
            { message: `session-end of ${ip}` },
          ),
        ),
      );
      // The pool hands out addresses next-fit, so each session of this run has its own IP.
      assert.equal(new Set(sessions.map((s) => s.ip)).size, sessions.length);
      let written = 0;
      for (const [i, s] of sessions.entries()) {
        const end = JSON.parse(ends[i]!) as Record<string, number | string>;
        written += Number(end.packetsIn);
        await t.test(s.form, () => {
          assert.equal(s.sent, true, 'the client could send it');
          assert.equal(end.enclaveIp, s.ip);
          assert.equal(
            end.packetsIn,
            s.replies,
            'only the valid packets (each answered) reached the TUN device',
          );
          assert.equal(end[s.reason], 1, `counted as ${s.reason}`);
        });
      }
      await waitFor(async () => (await rxPackets()) >= rxBefore + written, 5000);
      assert.equal((await rxPackets()) - rxBefore, written, 'the kernel saw what the gateway counted');
    } finally {
      await gw.stop();
    }
  });
}
