/** The DNAT rule backends: the exact §6.5 iptables argv, the nft document, name validation. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IptablesShadowRules, NftShadowRules, checkInterfaceName } from '../../../src/shadow/rules.js';
import { parseIpv4 } from '../../../src/util/ipv4.js';

const rule = {
  hostIp: parseIpv4('10.0.0.2'),
  port: 4711,
  proto: 6 as const,
  enclaveIp: parseIpv4('192.168.28.2'),
};

test('iptables: exactly the two rules of SPEC §6.5, output chain first, configurable interface', () => {
  const ipt = new IptablesShadowRules({ iface: 'eth0' });
  assert.deepEqual(ipt.ruleArgv('-A', rule), [
    'iptables -w -t nat -A SENG_output -d 10.0.0.2 -p tcp --destination-port 4711 -j DNAT --to-destination 192.168.28.2'.split(
      ' ',
    ),
    'iptables -w -t nat -A SENG_prerouting -i eth0 -d 10.0.0.2 -p tcp --destination-port 4711 -j DNAT --to-destination 192.168.28.2'.split(
      ' ',
    ),
  ]);
  const udp = new IptablesShadowRules({ iface: 'any' }).ruleArgv('-D', { ...rule, proto: 17 });
  assert.deepEqual(
    udp[1],
    'iptables -w -t nat -D SENG_prerouting -d 10.0.0.2 -p udp --destination-port 4711 -j DNAT --to-destination 192.168.28.2'.split(
      ' ',
    ),
  );
});

test('iptables: a failing second rule takes the first one back (the original left it)', async () => {
  const calls: string[] = [];
  const ipt = new IptablesShadowRules({
    iface: 'eth1',
    run: async (argv) => {
      calls.push(`${argv[4]} ${argv[5]}`);
      return argv[5] === 'SENG_prerouting' && argv[4] === '-A'
        ? { code: 1, stderr: 'iptables: No chain/target/match by that name.' }
        : { code: 0, stderr: '' };
    },
  });
  await assert.rejects(ipt.add(rule), /create the chains first|No chain/);
  assert.deepEqual(calls, ['-A SENG_output', '-A SENG_prerouting', '-D SENG_output']);
});

test('nft: one atomic document recreates the table; elements go into per-protocol maps', async () => {
  const docs: unknown[] = [];
  const nft = new NftShadowRules({ iface: 'eth1', nft: { run: async (d) => void docs.push(d) } });
  await nft.start();
  await nft.add(rule);
  await nft.remove({ ...rule, proto: 17 });
  const start = JSON.stringify(docs[0]);
  assert.match(
    start,
    /^\{"nftables":\[\{"add":\{"table":\{"family":"ip","name":"seng_shadow"\}\}\},\{"delete":\{"table"/,
  );
  assert.match(start, /"iifname"\}\},"right":"eth1"/);
  assert.deepEqual(docs[1], {
    nftables: [
      {
        add: {
          element: {
            family: 'ip',
            table: 'seng_shadow',
            name: 'tcp_dnat',
            elem: [[{ concat: ['10.0.0.2', 4711] }, '192.168.28.2']],
          },
        },
      },
    ],
  });
  assert.deepEqual(docs[2], {
    nftables: [
      {
        delete: {
          element: {
            family: 'ip',
            table: 'seng_shadow',
            name: 'udp_dnat',
            elem: [{ concat: ['10.0.0.2', 4711] }],
          },
        },
      },
    ],
  });
});

test('interface and table names are validated (nothing reaches nft or iptables unchecked)', () => {
  assert.equal(checkInterfaceName('eth0'), 'eth0');
  assert.equal(checkInterfaceName('any'), 'any');
  for (const bad of ['', 'eth0; rm -rf /', 'a'.repeat(16), 'eth 0', 'x/y'])
    assert.throws(() => checkInterfaceName(bad), /not a network interface name/);
  assert.throws(() => new NftShadowRules({ iface: 'eth0', table: 'bad table' }), /not a valid/);
});
