/**
 * NftNetlink against a fake nf_tables at the transport boundary: batch framing and element
 * messages (from linux/netfilter/nf_tables.h), chunking, a refused message named in the
 * typed error, and the DESTROYSETELEM → DELSETELEM fallback of kernels before 6.3.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { NftNetlink } from '../../../src/enforce/nft-netlink.js';
import { NetlinkError, type NetlinkTransport } from '../../../src/netlink/index.js';
import { attrs, errorReply, getAttr, splitDatagram, type SentMessage } from '../../helpers/netlink-wire.js';

const NEWSETELEM = 0x0a0c;
const DELSETELEM = 0x0a0e;
const DESTROYSETELEM = 0x0a1e;
const NEWCHAIN = 0x0a03;
const NEWRULE = 0x0a06;
const DELRULE = 0x0a08;

const str = (b: Buffer | undefined): string => b?.toString().replace(/\0+$/, '') ?? '';
/** A verdict attribute (NFTA_DATA_VERDICT) as "code chain". */
const verdictText = (v: Buffer): string =>
  `${(getAttr(v, 1) as Buffer).readInt32BE(0)} ${str(getAttr(v, 2))}`;

/** nf_tables with a set of sets: refuses unknown sets (ENOENT), optionally DESTROYSETELEM (EOPNOTSUPP). */
class FakeNfTables implements NetlinkTransport {
  readonly portId = 5;
  sets = new Set(['enclaves', 'cat_web']);
  destroySupported = true;
  readonly datagrams: SentMessage[][] = [];
  private deliver: ((d: Buffer) => void) | undefined;

  send(d: Buffer): Promise<void> {
    const msgs = splitDatagram(d);
    this.datagrams.push(msgs);
    const replies = msgs
      .filter((m) => m.flags & 4)
      .map((m) => errorReply(m.seq, 0, this.verdict(m), m.bytes));
    setImmediate(() => replies.forEach((r) => this.deliver?.(r)));
    return Promise.resolve();
  }
  private verdict(m: SentMessage): number {
    if (m.type === DESTROYSETELEM && !this.destroySupported) return 95;
    if ([NEWCHAIN, NEWRULE, DELRULE].includes(m.type)) return 0;
    const set = getAttr(m.payload.subarray(4), 2)?.toString().replace(/\0+$/, '') ?? '';
    return this.sets.has(set) ? 0 : 2;
  }
  setReceiver(onDatagram: (d: Buffer) => void): void {
    this.deliver = onDatagram;
  }
  setActive(): void {}
  close(): void {}
}

/** "type set [ips]" of an element message. */
function elementLine(m: SentMessage): string {
  const a = new Map(attrs(m.payload.subarray(4)));
  const table = a.get(1)?.toString().replace(/\0+$/, '');
  const set = a.get(2)?.toString().replace(/\0+$/, '');
  const ips = attrs(a.get(3) ?? Buffer.alloc(0)).map(([, elem]) => {
    const key = getAttr(getAttr(elem, 1) as Buffer, 1) as Buffer;
    return [...key].join('.');
  });
  return `${m.type.toString(16)} ${table}/${set} ${ips.join(',')}`;
}

describe('NftNetlink (fake nf_tables)', () => {
  it('one batch: BEGIN, removals first, additions with CREATE, END; nfgenmsg family ip', async () => {
    const k = new FakeNfTables();
    const nl = new NftNetlink({ table: 'seng', transport: k });
    await nl.apply([
      { set: 'enclaves', add: [0xc0a81c02], remove: [0xc0a81c03] },
      { set: 'cat_web', add: [0x0a000001, 0x0a000002], remove: [] },
      { set: 'idle', add: [], remove: [] },
    ]);
    const sent = k.datagrams[0] as SentMessage[];
    assert.equal(k.datagrams.length, 1);
    assert.deepEqual(
      sent.map((m) => [m.type, m.flags]),
      [
        [0x10, 1],
        [DESTROYSETELEM, 5],
        [NEWSETELEM, 0x405],
        [NEWSETELEM, 0x405],
        [0x11, 1],
      ],
    );
    assert.equal(sent[0]?.payload.toString('hex'), '0000000a', 'BEGIN: res_id NFNL_SUBSYS_NFTABLES');
    assert.equal(sent[1]?.payload.subarray(0, 4).toString('hex'), '02000000', 'nfgenmsg NFPROTO_IPV4');
    assert.deepEqual(sent.slice(1, 4).map(elementLine), [
      'a1e seng/enclaves 192.168.28.3',
      'a0c seng/enclaves 192.168.28.2',
      'a0c seng/cat_web 10.0.0.1,10.0.0.2',
    ]);
    await nl.apply([{ set: 'idle', add: [], remove: [] }]);
    assert.equal(k.datagrams.length, 1, 'nothing to do: nothing sent');
  });

  it('profile chains come first in the batch (create, flush, jump rules), then jump-verdict elements naming them', async () => {
    const k = new FakeNfTables();
    k.sets.add('catmap_input_0');
    const nl = new NftNetlink({ table: 'seng', transport: k });
    await nl.apply(
      [
        { set: 'enclaves', add: [0xc0a81c02], remove: [] },
        { set: 'catmap_input_0', add: [0xc0a81c02], remove: [], gotoChains: ['input_cp_0_ab'], jump: true },
      ],
      [{ name: 'input_cp_0_ab', jumps: ['input_cb_0_0_41', 'input_cb_0_2_41'] }],
    );
    const sent = (k.datagrams[0] as SentMessage[]).slice(1, -1);
    assert.equal(k.datagrams.length, 1, 'one transaction');
    assert.deepEqual(
      sent.map((m) => [m.type, m.flags]),
      [
        [NEWCHAIN, 0x405],
        [DELRULE, 5],
        [NEWRULE, 0xc05],
        [NEWRULE, 0xc05],
        [NEWSETELEM, 0x405],
        [NEWSETELEM, 0x405],
      ],
    );
    const a = (m: SentMessage | undefined): Buffer => (m as SentMessage).payload.subarray(4);
    assert.deepEqual([str(getAttr(a(sent[0]), 1)), str(getAttr(a(sent[0]), 3))], ['seng', 'input_cp_0_ab']);
    assert.deepEqual([str(getAttr(a(sent[1]), 1)), str(getAttr(a(sent[1]), 2))], ['seng', 'input_cp_0_ab']);
    // NEWRULE: table, chain, one immediate expression loading `jump <block>` into the verdict register.
    const jumps = sent.slice(2, 4).map((m) => {
      const expr = getAttr(getAttr(a(m), 4) as Buffer, 1) as Buffer;
      assert.equal(str(getAttr(expr, 1)), 'immediate');
      const data = getAttr(expr, 2) as Buffer;
      assert.equal((getAttr(data, 1) as Buffer).readUInt32BE(0), 0, 'NFT_REG_VERDICT');
      return verdictText(getAttr(getAttr(data, 2) as Buffer, 2) as Buffer);
    });
    assert.deepEqual(jumps, ['-3 input_cb_0_0_41', '-3 input_cb_0_2_41']);
    // The map element's data: NFT_JUMP (-3) to the profile, not NFT_GOTO (-4).
    const elem = attrs(getAttr(a(sent[5]), 3) as Buffer)[0]?.[1] as Buffer;
    assert.equal(verdictText(getAttr(getAttr(elem, 2) as Buffer, 2) as Buffer), '-3 input_cp_0_ab');
  });

  it('splits an element list too long for one attribute into several messages of the same batch', async () => {
    const k = new FakeNfTables();
    const ips = Array.from({ length: 5000 }, (_, i) => 0x0a000000 + i);
    await new NftNetlink({ table: 'seng', transport: k }).apply([{ set: 'enclaves', add: ips, remove: [] }]);
    const elems = (k.datagrams[0] as SentMessage[]).slice(1, -1);
    assert.deepEqual(
      elems.map((m) => elementLine(m).split(',').length),
      [2048, 2048, 904],
    );
  });

  it('a refused message fails the batch with a NetlinkError naming that message', async () => {
    const k = new FakeNfTables();
    const nl = new NftNetlink({ table: 'seng', transport: k });
    await assert.rejects(
      nl.apply([
        { set: 'enclaves', add: [1], remove: [] },
        { set: 'missing', add: [2], remove: [] },
      ]),
      (e: unknown) => {
        assert.ok(e instanceof NetlinkError);
        assert.equal(e.errno, 2);
        assert.equal(e.source, 'kernel');
        assert.equal(e.request.what, 'add to set missing');
        assert.equal(e.request.seq, k.datagrams[0]?.[2]?.seq);
        assert.equal(
          e.message,
          'nf_tables rejected the batch (ENOENT on add to set missing in table ip seng); nothing was changed',
        );
        return true;
      },
    );
  });

  it('falls back to DELSETELEM on a kernel without DESTROYSETELEM, and remembers', async () => {
    const k = new FakeNfTables();
    k.destroySupported = false;
    const nl = new NftNetlink({ table: 'seng', transport: k });
    await nl.apply([{ set: 'enclaves', add: [], remove: [1] }]);
    await nl.apply([{ set: 'enclaves', add: [], remove: [2] }]);
    assert.deepEqual(
      k.datagrams.map((d) => d[1]?.type),
      [DESTROYSETELEM, DELSETELEM, DELSETELEM],
    );
  });

  it('a dispatch-map element carries a goto verdict (NFT_GOTO, chain name); a replaced one is removed first', async () => {
    const k = new FakeNfTables();
    k.sets.add('dispatch_input');
    const nl = new NftNetlink({ table: 'seng', transport: k });
    await nl.apply([
      {
        set: 'dispatch_input',
        add: [0x0a000001],
        remove: [],
        gotoChains: ['input_app_x'],
        replace: [0x0a000001],
      },
    ]);
    const sent = k.datagrams[0] as SentMessage[];
    assert.deepEqual(
      sent.slice(1, -1).map((m) => m.type),
      [DESTROYSETELEM, NEWSETELEM],
    );
    const list = new Map(attrs((sent[2] as SentMessage).payload.subarray(4))).get(3) as Buffer;
    const elem = attrs(list)[0]?.[1] as Buffer;
    const data = getAttr(elem, 2) as Buffer; // NFTA_SET_ELEM_DATA
    const verdict = getAttr(data, 2) as Buffer; // NFTA_DATA_VERDICT
    assert.equal((getAttr(verdict, 1) as Buffer).readInt32BE(0), -4, 'NFT_GOTO');
    assert.equal((getAttr(verdict, 2) as Buffer).toString().replace(/\0+$/, ''), 'input_app_x');
  });

  it('a change too large for one sendmsg goes as several batches, removals first', async () => {
    const k = new FakeNfTables();
    k.sets.add('dispatch_forward');
    const ips = Array.from({ length: 80_000 }, (_, i) => 0x0a000000 + i);
    const chain = `forward_app_${'ab'.repeat(32)}`;
    const nl = new NftNetlink({ table: 'seng', transport: k });
    await nl.apply([
      { set: 'enclaves', add: [], remove: ips },
      { set: 'dispatch_forward', add: ips, remove: [], gotoChains: ips.map(() => chain) },
    ]);
    assert.ok(k.datagrams.length >= 2, `${k.datagrams.length} batches`);
    for (const d of k.datagrams) {
      assert.equal(d[0]?.type, 0x10, 'each datagram is a whole batch');
      assert.equal(d.at(-1)?.type, 0x11);
      assert.ok(d.reduce((n, m) => n + m.bytes.length, 0) <= 6 << 20);
    }
    assert.equal(nl.transactions, k.datagrams.length);
    const types = k.datagrams.flatMap((d) => d.slice(1, -1).map((m) => m.type));
    assert.equal(types.indexOf(NEWSETELEM) > types.lastIndexOf(DESTROYSETELEM), true);
  });
});
