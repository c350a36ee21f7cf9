/**
 * NetlinkChannel (src/netlink/channel.ts) and nfnetlink batches against a scripted kernel at
 * the transport boundary: multipart replies, ack/error matching by sequence number, batch
 * errors named by their failing message, timeouts, socket failures.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  NFNL_SUBSYS_NFTABLES,
  NLM_F_ACK,
  NLM_F_REQUEST,
  NetlinkChannel,
  NetlinkError,
  NetlinkTimeoutError,
  encodeNlmsg,
  sendBatch,
  type NetlinkTransport,
  type NlMessage,
} from '../../../src/netlink/index.js';
import {
  attr,
  doneReply,
  errorReply,
  nlmsg,
  splitDatagram,
  type SentMessage,
} from '../../helpers/netlink-wire.js';

/** A kernel whose answers the test writes: `answer` sees each datagram's messages. */
class ScriptedKernel implements NetlinkTransport {
  readonly portId = 31;
  readonly datagrams: SentMessage[][] = [];
  active = false;
  closed = false;
  answer: (msgs: SentMessage[]) => Buffer[] = () => [];
  failSend: Error | undefined;
  private deliver: ((d: Buffer) => void) | undefined;
  private fail: ((e: NetlinkError) => void) | undefined;

  send(d: Buffer): Promise<void> {
    if (this.failSend) return Promise.reject(this.failSend);
    const msgs = splitDatagram(d);
    this.datagrams.push(msgs);
    const replies = this.answer(msgs);
    setImmediate(() => {
      for (const r of replies) this.deliver?.(r);
    });
    return Promise.resolve();
  }
  setReceiver(onDatagram: (d: Buffer) => void, onError: (e: NetlinkError) => void): void {
    this.deliver = onDatagram;
    this.fail = onError;
  }
  /** Delivers a datagram now (for late replies). */
  push(d: Buffer): void {
    this.deliver?.(d);
  }
  socketError(e: NetlinkError): void {
    this.fail?.(e);
  }
  setActive(active: boolean): void {
    this.active = active;
  }
  close(): void {
    this.closed = true;
  }
}

const request = (type: number) => (seq: number, port: number) =>
  encodeNlmsg({ type, flags: NLM_F_REQUEST | NLM_F_ACK, seq, port }, Buffer.alloc(4));
const opts = { timeoutMs: 1000, what: 'test request' };
const payloads = (msgs: NlMessage[]): number[] => msgs.map((m) => m.payload[0] as number);

describe('NetlinkChannel', () => {
  it('collects a multipart dump across datagrams until NLMSG_DONE, ignoring other sequence numbers', async () => {
    const k = new ScriptedKernel();
    k.answer = ([m]) => {
      const seq = (m as SentMessage).seq;
      const part = (n: number, s = seq): Buffer => nlmsg(99, 2, s, 0, Buffer.from([n]));
      return [Buffer.concat([part(1), part(7, seq + 1000)]), Buffer.concat([part(2), doneReply(seq)])];
    };
    const ch = new NetlinkChannel(k);
    const msgs = await ch.request(
      (seq, port) => encodeNlmsg({ type: 99, flags: 0x301, seq, port }, Buffer.alloc(0)),
      { ...opts, dump: true },
    );
    assert.deepEqual(payloads(msgs), [1, 2]);
    assert.equal(k.datagrams[0]?.[0]?.port, 31, 'requests carry the transport port id');
    assert.equal(k.active, false, 'idle again');
  });

  it('matches acks and errors to their messages by sequence number, whatever their order', async () => {
    const k = new ScriptedKernel();
    k.answer = ([a, b, c]) => {
      const [s1, s2, s3] = [a, b, c].map((m) => (m as SentMessage).seq) as [number, number, number];
      return [
        Buffer.concat([
          errorReply(s3, 0, 0),
          nlmsg(98, 0, s2, 0, Buffer.from([42])),
          errorReply(s1, 0, 22, (a as SentMessage).bytes),
          errorReply(s2, 0, 0),
        ]),
      ];
    };
    const ch = new NetlinkChannel(k);
    const results = await ch.requestMany(
      [{ build: request(40), what: 'first' }, request(41), { build: request(42), what: 'third' }],
      opts,
    );
    const sent = k.datagrams[0] as SentMessage[];
    assert.equal(sent.length, 3, 'one datagram');
    assert.equal(new Set(sent.map((m) => m.seq)).size, 3, 'distinct sequence numbers');
    const [r1, r2, r3] = results;
    assert.ok(r1 instanceof NetlinkError);
    assert.equal(r1.errno, 22);
    assert.equal(r1.errnoName, 'EINVAL');
    assert.equal(r1.source, 'kernel');
    assert.deepEqual(r1.request, { what: 'first', seq: sent[0]?.seq, type: 40 });
    assert.match(r1.message, /^first: kernel answered EINVAL$/);
    assert.deepEqual(payloads(r2 as NlMessage[]), [42]);
    assert.deepEqual(r3, []);
  });

  it('request() rejects with the NetlinkError of its own request, extended ack included', async () => {
    const k = new ScriptedKernel();
    k.answer = ([m]) => {
      const s = m as SentMessage;
      const body = Buffer.concat([
        errorReply(s.seq, 0, 1).subarray(16, 20),
        s.bytes.subarray(0, 16),
        attr(1, Buffer.from('no!\0')), // NLMSGERR_ATTR_MSG
      ]);
      return [nlmsg(2, 0x300, s.seq, 0, body)];
    };
    await assert.rejects(new NetlinkChannel(k).request(request(50), opts), (e: unknown) => {
      assert.ok(e instanceof NetlinkError);
      assert.equal(e.errnoName, 'EPERM');
      assert.equal(e.extack, 'no!');
      assert.equal(e.request.type, 50);
      assert.equal(e.message, 'test request: kernel answered EPERM (no!)');
      return true;
    });
  });

  it('a negative NLMSG_DONE status fails the dump with that errno', async () => {
    const k = new ScriptedKernel();
    // NLMSG_DONE whose payload is the status -EOPNOTSUPP (an s32 in host order, as in nlmsgerr).
    const status = errorReply(0, 0, 95).subarray(16, 20);
    k.answer = ([m]) => [nlmsg(3, 2, (m as SentMessage).seq, 0, status)];
    await assert.rejects(
      new NetlinkChannel(k).request(request(51), { ...opts, dump: true }),
      (e: unknown) => e instanceof NetlinkError && e.isKernel(95),
    );
  });

  it('times out with a NetlinkTimeoutError naming the request; a late reply is ignored', async () => {
    const k = new ScriptedKernel();
    const ch = new NetlinkChannel(k);
    await assert.rejects(ch.request(request(52), { timeoutMs: 20, what: 'slow' }), (e: unknown) => {
      assert.ok(e instanceof NetlinkTimeoutError);
      assert.ok(e instanceof NetlinkError, 'one error type');
      assert.equal(e.source, 'timeout');
      assert.equal(e.errnoName, 'ETIMEDOUT');
      assert.equal(e.code, 'ETIMEDOUT');
      assert.equal(e.request.what, 'slow');
      assert.equal(e.request.seq, k.datagrams[0]?.[0]?.seq);
      return true;
    });
    assert.equal(k.active, false);
    k.push(errorReply(k.datagrams[0]?.[0]?.seq as number, 0, 0));
    // And the channel still works afterwards.
    k.answer = ([m]) => [errorReply((m as SentMessage).seq, 0, 0)];
    assert.deepEqual(await ch.request(request(53), opts), []);
  });

  it('a socket failure fails every pending request with it; a failed send leaves nothing pending', async () => {
    const k = new ScriptedKernel();
    const ch = new NetlinkChannel(k);
    const pending = ch.requestMany([request(60), request(61)], opts);
    const overflow = new NetlinkError(105, 'socket', { what: 'receiving from the kernel' });
    setImmediate(() => k.socketError(overflow));
    await assert.rejects(pending, (e: unknown) => e === overflow);
    assert.equal(k.active, false);

    k.failSend = new NetlinkError(1, 'socket', { what: 'sending to the kernel' });
    await assert.rejects(ch.request(request(62), opts), (e: unknown) => e === k.failSend);
    assert.equal(k.active, false);
  });

  it('an encoder that throws sends nothing and leaves no wait behind', async () => {
    const k = new ScriptedKernel();
    const ch = new NetlinkChannel(k);
    await assert.rejects(
      ch.requestMany(
        [
          request(70),
          () => {
            throw new RangeError('too long');
          },
        ],
        { timeoutMs: 5, what: 'x' },
      ),
      RangeError,
    );
    assert.equal(k.datagrams.length, 0);
    assert.equal(k.active, false);
    // Had a wait been left behind, its timeout would now surface as an unhandled rejection.
    await new Promise((r) => setTimeout(r, 20));
  });

  it('close() rejects what is pending and closes the transport', async () => {
    const k = new ScriptedKernel();
    const ch = new NetlinkChannel(k);
    const p = ch.request(request(80), opts);
    setImmediate(() => ch.close());
    await assert.rejects(p, (e: unknown) => e instanceof NetlinkError && e.errnoName === 'EBADF');
    assert.equal(k.closed, true);
  });
});

describe('nfnetlink batches', () => {
  it('frames BEGIN, the messages, END in one datagram and names the failing message by its own request', async () => {
    const k = new ScriptedKernel();
    // Like nfnetlink: every ACK message answered after the whole batch, the failing one with its errno.
    k.answer = (msgs) =>
      msgs
        .filter((m) => m.flags & NLM_F_ACK)
        .map((m) => errorReply(m.seq, 0, m.type === 0x0a0c + 1 ? 2 : 0, m.bytes));
    const ch = new NetlinkChannel(k);
    const results = await sendBatch(
      ch,
      NFNL_SUBSYS_NFTABLES,
      [
        { build: request(0x0a0c), what: 'add to set a' },
        { build: request(0x0a0d), what: 'add to set missing' },
        { build: request(0x0a0c), what: 'add to set b' },
      ],
      opts,
    );
    const sent = k.datagrams[0] as SentMessage[];
    assert.deepEqual(
      sent.map((m) => [m.type, m.flags]),
      [
        [0x10, NLM_F_REQUEST],
        [0x0a0c, 5],
        [0x0a0d, 5],
        [0x0a0c, 5],
        [0x11, NLM_F_REQUEST],
      ],
    );
    // nfgenmsg of the markers: family AF_UNSPEC, version 0, res_id = subsystem in network order.
    assert.equal(sent[0]?.payload.toString('hex'), '0000000a');
    assert.equal(sent[4]?.payload.toString('hex'), '0000000a');
    assert.equal(results.length, 3, 'one result per message, none for the markers');
    assert.deepEqual(results[0], []);
    assert.deepEqual(results[2], []);
    const failed = results[1];
    assert.ok(failed instanceof NetlinkError);
    assert.equal(failed.errnoName, 'ENOENT');
    assert.deepEqual(failed.request, { what: 'add to set missing', seq: sent[2]?.seq, type: 0x0a0d });
  });
});
