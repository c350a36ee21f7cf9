/**
 * A fake kernel behind the NetlinkTransport boundary, for unit tests: it records every
 * datagram the code under test sends, answers the generic-netlink controller's GETFAMILY
 * for one family, and answers everything else with an ack or with an errno chosen by the
 * test. Its encoders are written from the kernel's structs independently of kmod-bridge.
 */
import type { NetlinkError, NetlinkTransport } from '../../../src/netlink/index.js';
import {
  attr,
  attrs,
  errorReply as nlError,
  nlmsg,
  readU16,
  splitDatagram,
  u16,
  u32,
  type SentMessage,
} from '../../helpers/netlink-wire.js';

export type { SentMessage };

/** What to do with a non-controller request: 0 = ack, >0 = answer -errno, 'drop' = never answer. */
export type Verdict = number | 'drop';

/** NLMSG_ERROR with `error = -errno` and the request's header echoed (NLM_F_CAPPED). */
export function errorReply(req: SentMessage, errno: number): Buffer {
  return nlError(req.seq, req.port, errno, req.bytes);
}

export class FakeKernel implements NetlinkTransport {
  readonly portId = 0x4242;
  readonly sent: SentMessage[] = [];
  /** Family the controller knows (null = none, so GETFAMILY answers ENOENT). */
  family: { name: string; id: number } | null = { name: 'seng_family', id: 0x1c };
  /** Decides the answer to each non-controller request; default: ack. */
  verdict: (m: SentMessage) => Verdict = () => 0;
  active = false;
  closed = false;
  private onDatagram: ((d: Buffer) => void) | undefined;

  /** Non-controller messages sent so far. */
  get requests(): SentMessage[] {
    return this.sent.filter((m) => m.type !== 16);
  }

  send(datagram: Buffer): Promise<void> {
    const replies: Buffer[] = [];
    for (const m of splitDatagram(datagram)) {
      this.sent.push(m);
      if (m.type === 16) replies.push(...this.controller(m));
      else {
        const v = this.verdict(m);
        if (v !== 'drop') replies.push(errorReply(m, v));
      }
    }
    // Deliver asynchronously, like a socket.
    setImmediate(() => {
      for (const r of replies) this.onDatagram?.(r);
    });
    return Promise.resolve();
  }

  private controller(m: SentMessage): Buffer[] {
    // GETFAMILY: genl header (cmd 3), then CTRL_ATTR_FAMILY_NAME (2) = NUL-terminated name.
    const nameLen = readU16(m.payload, 4);
    const name = m.payload
      .subarray(8, 4 + nameLen)
      .toString('utf8')
      .replace(/\0+$/, '');
    if (!this.family || this.family.name !== name) return [errorReply(m, 2)];
    const group = attr(1, Buffer.concat([attr(1, Buffer.from('seng_mcgrp\0')), attr(2, u32(0x20))]));
    const payload = Buffer.concat([
      Buffer.from([1 /* CTRL_CMD_NEWFAMILY */, 2, 0, 0]),
      attr(1, u16(this.family.id)),
      attr(2, Buffer.from(`${this.family.name}\0`)),
      attr(3, u32(1)),
      attr(7 | 0x8000, group),
    ]);
    return [nlmsg(16, 0, m.seq, m.port, payload), errorReply(m, 0)];
  }

  setReceiver(onDatagram: (d: Buffer) => void, _onError: (e: NetlinkError) => void): void {
    this.onDatagram = onDatagram;
  }

  setActive(active: boolean): void {
    this.active = active;
  }

  close(): void {
    this.closed = true;
  }
}

const IPS = (b: Buffer, off: number): string => [...b.subarray(off, off + 4)].join('.');

/**
 * Decodes a seng request (genl payload) into a readable line, from SPEC §5.1 alone:
 * "register ENC app=HEX8 host=IP [cat=C]", "unregister ENC", "cat-add HEX8 C", "cat-remove HEX8 C", "flush".
 */
export function describeSeng(payload: Buffer): string {
  if (payload[0] !== 1 || payload[1] !== 1)
    return `bad genl header ${payload.subarray(0, 4).toString('hex')}`;
  const a = new Map(attrs(payload.subarray(4)));
  const app = a.get(1)?.toString('hex').slice(0, 8);
  const cat = a.get(2)?.subarray(0, -1).toString('ascii');
  if (a.has(4) && a.has(1) && a.has(3) && a.has(5)) {
    return `register ${IPS(a.get(4) as Buffer, 0)} app=${app} host=${IPS(a.get(3) as Buffer, 0)}${cat ? ` cat=${cat}` : ''}`;
  }
  if (a.has(4) && a.has(6)) return `unregister ${IPS(a.get(4) as Buffer, 0)}`;
  if (a.has(1) && a.has(2) && a.has(5)) return `cat-add ${app} ${cat}`;
  if (a.has(1) && a.has(2) && a.has(6)) return `cat-remove ${app} ${cat}`;
  if (a.has(7)) return 'flush';
  return `unknown ${payload.toString('hex')}`;
}
