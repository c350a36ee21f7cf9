/**
 * Conntrack purge for real, in network namespaces created for this test: tracked UDP,
 * ICMP and TCP connections to and from an address over a veth pair, plus unrelated ones,
 * then `seng conntrack purge` inside the namespace and `conntrack -L` to confirm that
 * exactly the entries whose original source or destination is the address are gone.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { cleanupAll, createNetns, uniqueIfName, vethPair, type Netns } from '../../helpers/netns.js';
import { repoRoot, sengBin } from '../../helpers/cli.js';

const A = '10.77.0.1';
const B = '10.77.0.2';
const C = '10.77.0.3';

/** nft ruleset that makes conntrack track everything in the namespace. */
const TRACK = `table inet sgkmodtrack {
  chain out { type filter hook output priority 0; ct state new accept; }
  chain in { type filter hook input priority 0; ct state new accept; }
}`;

interface Entry {
  line: string;
  src: string;
  dst: string;
}

/** `conntrack -L -f ipv4` as entries keyed by their whole line minus the countdown timer. */
async function listConntrack(ns: Netns): Promise<Entry[]> {
  const r = await ns.exec('conntrack', ['-L', '-f', 'ipv4']);
  return r.stdout
    .split('\n')
    .filter((l) => /src=/.test(l))
    .map((l) => {
      const src = /src=(\S+)/.exec(l)?.[1] ?? '';
      const dst = /dst=(\S+)/.exec(l)?.[1] ?? '';
      // Drop the timeout (3rd column) and state words that change while we look.
      const stable = [...l.matchAll(/(src|dst|sport|dport|type|code|id|zone)=\S+/g)]
        .map((m) => m[0])
        .join(' ');
      return { line: `${l.split(/\s+/)[0]} ${stable}`, src, dst };
    });
}

async function sengIn(
  ns: Netns,
  args: string[],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return ns.exec(process.execPath, [sengBin, ...args], { check: false, timeoutMs: 30_000 });
}

describe('conntrack purge (ctnetlink, in a network namespace)', () => {
  let nsA: Netns;
  let nsB: Netns;

  before(async () => {
    nsA = await createNetns('kmod');
    nsB = await createNetns('kmod');
    for (const ns of [nsA, nsB]) {
      await ns.exec('sysctl', ['-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1']);
      await ns.exec('sysctl', ['-q', '-w', 'net.ipv6.conf.default.disable_ipv6=1']);
    }
    const v = await vethPair(nsA, nsB, {
      nameA: uniqueIfName('kmod', 'a'),
      nameB: uniqueIfName('kmod', 'b'),
      addrA: `${A}/24`,
      addrB: `${B}/24`,
    });
    await nsB.ip('addr', 'add', `${C}/24`, 'dev', v.b.name);
    await nsA.exec('nft', ['-f', '-'], { input: TRACK });
  });

  after(cleanupAll);

  it('deletes exactly the entries whose original source or destination is the address', async () => {
    // B listens on TCP 7001 and UDP 7002 so both directions produce real traffic.
    const tcpServer = nsB.spawn('nc', ['-lk', '7001']);
    const tcpServerC = nsB.spawn('nc', ['-lk', C, '7003']);
    const tcpServerA = nsA.spawn('nc', ['-lk', '7004']);
    await new Promise((r) => setTimeout(r, 300));
    // A → B: ICMP, UDP, TCP (original source A, destination B).
    await nsA.exec('ping', ['-c', '1', '-W', '2', B]);
    await nsA.exec('sh', ['-c', `echo hi | nc -u -w 1 -p 40001 ${B} 7002`], { check: false });
    await nsA.exec('sh', ['-c', `echo hi | nc -w 1 -p 40002 ${B} 7001`], { check: false });
    // B → A: ICMP and TCP (original source B).
    await nsB.exec('ping', ['-c', '1', '-W', '2', A]);
    await nsB.exec('sh', ['-c', `echo hi | nc -w 1 -s ${B} -p 40003 ${A} 7004`], { check: false });
    // Unrelated: A ↔ C, loopback, and an entry whose *reply* tuple mentions B (original does not).
    await nsA.exec('ping', ['-c', '1', '-W', '2', C]);
    await nsA.exec('sh', ['-c', `echo hi | nc -w 1 -p 40004 ${C} 7003`], { check: false });
    await nsA.exec('ping', ['-c', '1', '-W', '2', '127.0.0.1']);
    await nsA.exec('conntrack', [
      '-I',
      '-s',
      '10.9.9.9',
      '-d',
      '10.8.8.8',
      '-p',
      'udp',
      '--sport',
      '1000',
      '--dport',
      '2000',
      '--reply-src',
      B,
      '--reply-dst',
      '10.9.9.9',
      '--reply-port-src',
      '2000',
      '--reply-port-dst',
      '1000',
      '-t',
      '120',
    ]);
    for (const p of [tcpServer, tcpServerC, tcpServerA]) p.kill('SIGTERM');

    const before = await listConntrack(nsA);
    const victims = before.filter((e) => e.src === B || e.dst === B);
    const survivors = before.filter((e) => e.src !== B && e.dst !== B);
    // Sanity of the setup: both directions and every protocol produced entries.
    assert.ok(
      victims.some((e) => e.src === A && e.line.startsWith('icmp')),
      'A→B icmp tracked',
    );
    assert.ok(
      victims.some((e) => e.src === A && e.line.startsWith('udp')),
      'A→B udp tracked',
    );
    assert.ok(
      victims.some((e) => e.src === A && e.line.startsWith('tcp')),
      'A→B tcp tracked',
    );
    assert.ok(
      victims.some((e) => e.src === B && e.line.startsWith('tcp')),
      'B→A tcp tracked',
    );
    assert.ok(
      survivors.some((e) => e.dst === C),
      'A→C tracked',
    );
    assert.ok(
      survivors.some((e) => e.src === '10.9.9.9'),
      'reply-only entry present',
    );

    const r = await sengIn(nsA, ['conntrack', 'purge', B, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { ip: B, deleted: victims.length });

    const afterList = await listConntrack(nsA);
    assert.deepEqual(
      afterList.filter((e) => e.src === B || e.dst === B),
      [],
      'no entry with B as original source or destination remains',
    );
    for (const s of survivors) {
      assert.ok(
        afterList.some((e) => e.line === s.line),
        `unrelated entry survived: ${s.line}`,
      );
    }

    // Nothing left to delete: a second purge reports 0, labelled in text mode and bare in --json.
    const again = await sengIn(nsA, ['conntrack', 'purge', B]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stdout.trim(), `purged 0 conntrack entries of ${B}`);
    const againJson = await sengIn(nsA, ['conntrack', 'purge', B, '--json']);
    assert.deepEqual(JSON.parse(againJson.stdout), { ip: B, deleted: 0 });
  });

  for (const strategy of ['kernel-filtered dumps', 'one unfiltered dump'] as const) {
    it(`purges hundreds of entries (batched deletes) through ${strategy}, other zones included`, async () => {
      const target = strategy === 'one unfiltered dump' ? '10.66.0.1' : '10.67.0.1';
      const net = target.split('.').slice(0, 2).join('.');
      const script = [];
      for (let i = 0; i < 150; i++) {
        script.push(
          `conntrack -I -s ${target} -d ${net}.1.${(i % 200) + 1} -p udp --sport ${10000 + i} --dport 53 -t 120`,
        );
        script.push(
          `conntrack -I -s ${net}.2.${(i % 200) + 1} -d ${target} -p tcp --sport ${20000 + i} --dport 443 --state ESTABLISHED -t 120 -w ${i % 3}`,
        );
      }
      script.push(`conntrack -I -s ${net}.3.1 -d ${net}.3.2 -p udp --sport 1 --dport 2 -t 120`);
      await nsA.exec('sh', ['-c', `${script.join(' >/dev/null 2>&1\n')} >/dev/null 2>&1`], {
        timeoutMs: 120_000,
      });
      const before = await listConntrack(nsA);
      assert.equal(before.filter((e) => e.src === target || e.dst === target).length, 300);

      // Through the library in the namespace, one purger (socket) across calls. fullDumpBelow
      // picks the strategy: 0 always filters in the kernel, a huge value always dumps everything.
      const mod = join(repoRoot, 'dist', 'src', 'enforce', 'conntrack.js');
      const code = `
        import { ConntrackPurger } from ${JSON.stringify(mod)};
        import { parseIpv4 } from ${JSON.stringify(join(repoRoot, 'dist', 'src', 'util', 'ipv4.js'))};
        const p = new ConntrackPurger({ fullDumpBelow: ${strategy === 'one unfiltered dump' ? 1e9 : 0} });
        // Concurrent calls share the socket: they must queue, not collide (EBUSY).
        const [first, second] = await Promise.all([
          p.purge(parseIpv4(${JSON.stringify(target)})),
          p.purge(parseIpv4(${JSON.stringify(target)})),
        ]);
        p.close();
        console.log(JSON.stringify({ first, second }));`;
      const r = await nsA.exec(process.execPath, ['--input-type=module', '-e', code]);
      assert.deepEqual(JSON.parse(r.stdout), { first: 300, second: 0 });
      const afterList = await listConntrack(nsA);
      assert.equal(afterList.filter((e) => e.src === target || e.dst === target).length, 0);
      assert.ok(
        afterList.some((e) => e.src === `${net}.3.1`),
        'unrelated entry survived',
      );
    });
  }

  it('rejects a bad address with a usage hint', async () => {
    const r = await sengIn(nsA, ['conntrack', 'purge', '10.0.0.300']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /not an IPv4 address/);
  });
});
