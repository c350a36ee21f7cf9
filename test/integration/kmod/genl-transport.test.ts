/**
 * The generic-netlink transport against the running kernel (the seng module itself cannot
 * be loaded here): resolving families that exist through `nlctrl`, the clear "not found"
 * path for `seng_family`, and the admin CLI's behaviour without the module.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { KmodFamilyMissingError, KmodRejectedError, SengKmodClient } from '../../../kmod-bridge/index.js';
import {
  NETLINK_GENERIC,
  NetlinkChannel,
  RawSocketTransport,
  getFamily,
  listFamilies,
} from '../../../src/netlink/index.js';
import { seng, sengJson } from '../../helpers/cli.js';

const APP = 'ab'.repeat(32);

describe('generic netlink transport (real kernel)', () => {
  it('dumps the controller and resolves nlctrl and another existing family by name', async () => {
    const channel = new NetlinkChannel(new RawSocketTransport(NETLINK_GENERIC));
    try {
      const families = await listFamilies(channel, 2000);
      const ctrl = families.find((f) => f.name === 'nlctrl');
      assert.ok(ctrl, 'nlctrl is always registered');
      assert.equal(ctrl.id, 16);
      assert.ok(ctrl.mcastGroups.some((g) => g.name === 'notify'));
      // Pick any other family this kernel has and resolve it by name: same id as in the dump.
      const other = families.find((f) => f.name !== 'nlctrl');
      assert.ok(other, `only nlctrl registered: ${families.map((f) => f.name).join(', ')}`);
      const byName = await getFamily(channel, other.name, 2000);
      assert.deepEqual(byName, other);
      assert.equal(await getFamily(channel, 'seng_family', 2000), null);
    } finally {
      channel.close();
    }
  });

  it('SengKmodClient resolves an existing family (nlctrl stands in for seng_family)', async () => {
    await SengKmodClient.with({ familyName: 'nlctrl', timeoutMs: 2000 }, async (c) => {
      const f = await c.resolve();
      assert.equal(f.id, 16);
      const s = await c.status();
      assert.equal(s.present, true);
      assert.equal(s.id, 16);
      // A real kernel verdict on a seng-shaped message sent to a family that does not understand
      // it: a typed rejection with an errno, not a timeout.
      await assert.rejects(c.flush(), (e: unknown) => e instanceof KmodRejectedError && e.errno > 0);
    });
  });

  it('seng_family is reported missing with the actionable message', async () => {
    await SengKmodClient.with({ timeoutMs: 2000 }, async (c) => {
      await assert.rejects(c.resolve(), (e: unknown) => {
        assert.ok(e instanceof KmodFamilyMissingError);
        assert.equal(e.message, 'family seng_family not found: is the seng kernel module loaded?');
        return true;
      });
      assert.deepEqual(await c.status(), {
        family: 'seng_family',
        present: false,
        message: 'family seng_family not found: is the seng kernel module loaded?',
      });
    });
  });

  it('seng kmod status exits 0 with present: false; the other commands exit 1 with the message', () => {
    const st = sengJson<{ present: boolean; family: string; message: string }>(['kmod', 'status']);
    assert.equal(st.code, 0);
    assert.equal(st.json.present, false);
    assert.equal(st.json.family, 'seng_family');
    const human = seng(['kmod', 'status']);
    assert.equal(human.code, 0);
    assert.match(human.stdout, /seng_family: absent .*is the seng kernel module loaded\?/);

    for (const args of [
      ['kmod', 'flush'],
      ['kmod', 'add', '--enclave', '192.168.28.2', '--app', APP, '--host', '10.0.0.1', '--category', 'Demo'],
      ['kmod', 'remove', '--enclave', '192.168.28.2'],
      ['kmod', 'category', 'add', '--app', APP, '--category', 'Demo'],
      ['kmod', 'category', 'remove', '--app', APP, '--category', 'Demo'],
    ]) {
      const r = seng(args);
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /Error: family seng_family not found: is the seng kernel module loaded\?/);
      assert.match(r.stderr, /Hint: /);
      const j = sengJson<{ error: { code: string } }>(args);
      assert.equal(j.code, 1);
      assert.equal(j.json.error.code, 'EKMOD_MISSING');
    }
  });

  it('input is validated before anything is sent', () => {
    const cases: Array<[string[], RegExp]> = [
      [
        ['kmod', 'add', '--enclave', '192.168.28.2', '--app', 'abc', '--host', '10.0.0.1'],
        /not an app measurement/,
      ],
      [
        ['kmod', 'add', '--enclave', '192.168.28.300', '--app', APP, '--host', '10.0.0.1'],
        /not an IPv4 address/,
      ],
      [['kmod', 'category', 'add', '--app', APP, '--category', 'x'.repeat(21)], /at most 20/],
      [['kmod', 'category', 'remove', '--app', APP, '--category', 'a b'], /category "a b" is invalid/],
    ];
    for (const [args, re] of cases) {
      const r = seng(args);
      assert.equal(r.code, 1, args.join(' '));
      assert.match(r.stderr, re);
    }
  });
});
