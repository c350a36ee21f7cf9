/**
 * ctnetlink purge logic against a fake conntrack table at the transport boundary: request
 * bytes (derived from linux/netfilter/nfnetlink_conntrack.h), strategy choice, de-duplication,
 * ENOENT races, batching. The real kernel is exercised in test/integration/kmod.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { endianness } from 'node:os';
import { NetlinkError, type NetlinkTransport } from '../../../src/netlink/index.js';
import { ConntrackError, ConntrackPurger, encodeCtDump } from '../../../src/enforce/conntrack.js';
import { parseCidr, parseIpv4 } from '../../../src/util/ipv4.js';
import { purgeStaleConntrack } from '../../../src/gateway/recovery.js';
import { createLogger } from '../../../src/util/log.js';
import {
  NESTED,
  attr,
  doneReply,
  errorReply,
  getAttr as get,
  nlmsg as nlmsgTo,
  readU32,
  splitDatagram,
} from '../../helpers/netlink-wire.js';

interface Ct {
  src: string;
  dst: string;
  sport: number;
  id: number;
  zone?: number;
}

const be32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
};
const be16 = (n: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n, 0);
  return b;
};
const nlmsg = (type: number, flags: number, seq: number, payload: Buffer): Buffer =>
  nlmsgTo(type, flags, seq, 0, payload);
const ack = (seq: number, errno: number): Buffer => errorReply(seq, 0, errno);

/** An IPCTNL_MSG_CT_NEW message as a dump returns it: tuple orig/reply, [zone], id, status. */
function ctMessage(e: Ct, seq: number): Buffer {
  const tuple = (s: string, d: string, sp: number, dp: number): Buffer =>
    Buffer.concat([
      attr(1 | NESTED, Buffer.concat([attr(1, be32(parseIpv4(s))), attr(2, be32(parseIpv4(d)))])),
      attr(2 | NESTED, Buffer.concat([attr(1, Buffer.from([17])), attr(2, be16(sp)), attr(3, be16(dp))])),
    ]);
  const payload = Buffer.concat([
    Buffer.from([2, 0, 0, 0]),
    attr(1 | NESTED, tuple(e.src, e.dst, e.sport, 53)),
    attr(2 | NESTED, tuple(e.dst, e.src, 53, e.sport)),
    attr(3, be32(8)),
    ...(e.zone === undefined ? [] : [attr(18, be16(e.zone))]),
    attr(12, be32(e.id)),
  ]);
  return nlmsg(0x0100, 2, seq, payload);
}

class FakeConntrack implements NetlinkTransport {
  readonly portId = 77;
  table: Ct[] = [];
  log: string[] = [];
  datagrams = 0;
  /** Entries that disappear between dump and delete (the delete gets ENOENT). */
  vanishOnDelete = new Set<number>();
  filterSupported = true;
  /** errno the kernel answers the statistics request with (0: it answers them). */
  statsErrno = 0;
  private deliver: ((d: Buffer) => void) | undefined;

  send(d: Buffer): Promise<void> {
    this.datagrams++;
    const out: Buffer[] = [];
    for (const { type, flags, seq, payload } of splitDatagram(d)) {
      const attrs = payload.subarray(4);
      if (type === 0x0105 && this.statsErrno) {
        out.push(ack(seq, this.statsErrno));
      } else if (type === 0x0105) {
        this.log.push('stats');
        out.push(
          nlmsg(0x0105, 0, seq, Buffer.concat([Buffer.alloc(4), attr(1, be32(this.table.length))])),
          ack(seq, 0),
        );
      } else if (type === 0x0101) {
        assert.equal(flags, 0x301, 'dump flags');
        const filter = get(attrs, 25);
        let rows = this.table;
        if (filter) {
          if (!this.filterSupported) {
            out.push(ack(seq, 95));
            continue;
          }
          const which = readU32(get(filter, 1) as Buffer, 0);
          const ips = get(get(get(attrs, 1) as Buffer, 1) as Buffer, which === 1 ? 1 : 2) as Buffer;
          const ip = [...ips].join('.');
          this.log.push(`dump ${which === 1 ? 'src' : 'dst'} ${ip}`);
          rows = rows.filter((e) => (which === 1 ? e.src : e.dst) === ip);
        } else {
          this.log.push('dump all');
        }
        for (const e of rows) out.push(ctMessage(e, seq));
        out.push(doneReply(seq));
      } else if (type === 0x0102) {
        assert.equal(flags, 5, 'delete flags');
        const id = (get(attrs, 12) as Buffer).readUInt32BE(0);
        const zone = get(attrs, 18);
        const e = this.table.find((x) => x.id === id);
        assert.ok(get(attrs, 1), 'delete carries the original tuple');
        if (e) assert.equal(zone ? zone.readUInt16BE(0) : undefined, e.zone, 'delete carries the zone');
        if (!e || this.vanishOnDelete.has(id)) {
          this.table = this.table.filter((x) => x.id !== id);
          out.push(ack(seq, 2));
        } else {
          this.table = this.table.filter((x) => x.id !== id);
          this.log.push(`delete ${id}`);
          out.push(ack(seq, 0));
        }
      }
    }
    setImmediate(() => {
      for (const o of out) this.deliver?.(o);
    });
    return Promise.resolve();
  }
  setReceiver(onDatagram: (d: Buffer) => void, _onError: (e: NetlinkError) => void): void {
    this.deliver = onDatagram;
  }
  setActive(): void {}
  close(): void {}
}

const T = '192.168.28.2';

function sampleTable(): Ct[] {
  return [
    { src: T, dst: '8.8.8.8', sport: 1000, id: 1 },
    { src: '10.0.0.9', dst: T, sport: 1001, id: 2, zone: 7 },
    { src: T, dst: T, sport: 1002, id: 3 }, // matched by both filtered dumps: deleted once
    { src: '10.0.0.9', dst: '10.0.0.10', sport: 1003, id: 4 },
    { src: '192.168.28.20', dst: '8.8.8.8', sport: 1004, id: 5 },
  ];
}

describe('conntrack purge (fake ctnetlink)', () => {
  it(
    'dump request bytes: nfgenmsg, CTA_TUPLE_ORIG{CTA_TUPLE_IP{CTA_IP_V4_SRC}}, CTA_FILTER{ORIG_FLAGS}',
    {
      skip: endianness() !== 'LE' && 'little-endian golden bytes',
    },
    () => {
      // len 48 = 16 hdr + 4 nfgenmsg + 16 tuple + 12 filter; type (CTNETLINK 1 << 8) | GET 1;
      // flags REQUEST | DUMP (0x301); nested types carry NLA_F_NESTED (0x8000); CTA_FILTER = 25.
      const expected =
        '30000000 0101 0103 01000000 02000000' +
        '02 00 0000' +
        '1000 0180  0c00 0180  0800 0100 0a010203' +
        '0c00 1980  0800 0100 01000000';
      assert.equal(
        encodeCtDump(1, 2, parseIpv4('10.1.2.3'), 'src').toString('hex'),
        expected.replace(/ /g, ''),
      );
      const dst = encodeCtDump(1, 2, parseIpv4('10.1.2.3'), 'dst');
      assert.equal(dst.subarray(30, 32).toString('hex'), '0200', 'CTA_IP_V4_DST');
      assert.equal(dst.readUInt32LE(44), 2, 'CTA_FILTER_FLAG(CTA_IP_DST)');
    },
  );

  it('big table: two kernel-filtered dumps, each entry deleted once with its zone and id', async () => {
    const k = new FakeConntrack();
    k.table = sampleTable();
    const p = new ConntrackPurger({ transport: k, fullDumpBelow: 2 });
    assert.equal(await p.purge(parseIpv4(T)), 3);
    // Source matches (1, 3) first, then destination matches (2; 3 again is not deleted twice).
    assert.deepEqual(k.log, ['stats', `dump src ${T}`, `dump dst ${T}`, 'delete 1', 'delete 3', 'delete 2']);
    assert.deepEqual(
      k.table.map((e) => e.id),
      [4, 5],
    );
  });

  it('purges requested while one runs are coalesced into one table walk', async () => {
    const k = new FakeConntrack();
    k.table = [
      ...sampleTable(),
      { src: '192.168.28.3', dst: '8.8.8.8', sport: 2000, id: 6 },
      { src: '10.0.0.9', dst: '192.168.28.4', sport: 2001, id: 7 },
    ];
    const p = new ConntrackPurger({ transport: k, fullDumpBelow: 2 });
    const counts = await Promise.all(
      [T, '192.168.28.3', '192.168.28.4', '192.168.28.5'].map((ip) => p.purge(parseIpv4(ip))),
    );
    assert.deepEqual(counts, [3, 1, 1, 0]);
    // The first purge runs alone (filtered: big table); the three queued behind it share one walk.
    assert.deepEqual(
      k.log.filter((l) => l.startsWith('dump')),
      [`dump src ${T}`, `dump dst ${T}`, 'dump all'],
    );
    assert.deepEqual(
      k.table.map((e) => e.id),
      [4, 5],
    );
  });

  it('small table: one unfiltered dump filtered in user space', async () => {
    const k = new FakeConntrack();
    k.table = sampleTable();
    const p = new ConntrackPurger({ transport: k });
    assert.equal(await p.purge(parseIpv4(T)), 3);
    assert.deepEqual(k.log, ['stats', 'dump all', 'delete 1', 'delete 2', 'delete 3']);
    assert.deepEqual(
      k.table.map((e) => e.id),
      [4, 5],
    );
  });

  it('a kernel without CTA_FILTER falls back to the full dump, and remembers', async () => {
    const k = new FakeConntrack();
    k.filterSupported = false;
    k.table = sampleTable();
    const p = new ConntrackPurger({ transport: k, fullDumpBelow: 0 });
    assert.equal(await p.purge(parseIpv4(T)), 3);
    k.table = sampleTable();
    k.log = [];
    assert.equal(await p.purge(parseIpv4(T)), 3);
    assert.deepEqual(k.log, ['stats', 'dump all', 'delete 1', 'delete 2', 'delete 3']);
  });

  it('an empty conntrack table is not walked at all', async () => {
    const k = new FakeConntrack();
    const p = new ConntrackPurger({ transport: k });
    assert.equal(await p.purge(parseIpv4(T)), 0);
    assert.deepEqual(k.log, ['stats']);
  });

  it('entries that vanish before their delete are not counted', async () => {
    const k = new FakeConntrack();
    k.table = sampleTable();
    k.vanishOnDelete.add(2);
    assert.equal(await new ConntrackPurger({ transport: k }).purge(parseIpv4(T)), 2);
  });

  it('batches deletes, 128 per datagram', async () => {
    const k = new FakeConntrack();
    k.table = Array.from({ length: 300 }, (_, i) => ({ src: T, dst: '8.8.4.4', sport: i + 1, id: i + 1 }));
    const p = new ConntrackPurger({ transport: k });
    assert.equal(await p.purge(parseIpv4(T)), 300);
    // stats + dump + ceil(300 / 128) = 3 delete datagrams
    assert.equal(k.datagrams, 5);
    assert.equal(k.table.length, 0);
  });

  it('a kernel refusal is a ConntrackError whose cause is the typed NetlinkError of that request', async () => {
    const k = new FakeConntrack();
    k.statsErrno = 1; // EPERM
    await assert.rejects(new ConntrackPurger({ transport: k }).purge(parseIpv4(T)), (e: unknown) => {
      assert.ok(e instanceof ConntrackError);
      assert.equal(e.code, 'ECONNTRACK');
      const cause = e.cause;
      assert.ok(cause instanceof NetlinkError);
      assert.equal(cause.errno, 1);
      assert.equal(cause.errnoName, 'EPERM');
      assert.equal(cause.source, 'kernel');
      assert.equal(cause.request.what, 'reading conntrack statistics');
      assert.equal(cause.request.type, 0x0105);
      return true;
    });
  });
});

describe('crash recovery at start: purgeWhere / purgeStaleConntrack', () => {
  const subnets = [parseCidr('192.168.28.0/24'), parseCidr('172.16.28.0/26')];
  const table = (): Ct[] => [
    { src: '192.168.28.2', dst: '10.99.0.2', sport: 1, id: 1 },
    { src: '10.99.0.2', dst: '172.16.28.5', sport: 2, id: 2 },
    { src: '192.168.28.200', dst: '8.8.8.8', sport: 3, id: 3 },
    { src: '172.16.28.64', dst: '10.99.0.2', sport: 4, id: 4 }, // just outside the /26
    { src: '10.50.0.2', dst: '10.99.0.2', sport: 5, id: 5 },
  ];

  it('deletes the entries of every enclave subnet address with one dump, and nothing else', async () => {
    const k = new FakeConntrack();
    k.table = table();
    const log = createLogger({ level: 'silent' });
    const n = await purgeStaleConntrack(subnets, {
      enforcing: true,
      log,
      purger: new ConntrackPurger({ transport: k }),
    });
    assert.equal(n, 3);
    assert.deepEqual(
      k.table.map((e) => e.id),
      [4, 5],
    );
    assert.deepEqual(k.log, ['stats', 'dump all', 'delete 1', 'delete 2', 'delete 3']);
  });

  it('an empty table costs no dump', async () => {
    const k = new FakeConntrack();
    const p = new ConntrackPurger({ transport: k });
    assert.equal(await p.purgeWhere(() => true), 0);
    assert.deepEqual(k.log, ['stats']);
  });

  it('a failure is fatal with enforcement and only a warning without', async () => {
    const k = new FakeConntrack();
    k.table = table();
    k.statsErrno = 1;
    const log = createLogger({ level: 'silent' });
    await assert.rejects(
      purgeStaleConntrack(subnets, { enforcing: true, log, purger: new ConntrackPurger({ transport: k }) }),
      ConntrackError,
    );
    assert.equal(
      await purgeStaleConntrack(subnets, {
        enforcing: false,
        log,
        purger: new ConntrackPurger({ transport: k }),
      }),
      0,
    );
    assert.equal(k.table.length, 5);
  });
});
