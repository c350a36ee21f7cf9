/**
 * Generic netlink: the 4-byte `genlmsghdr` and family resolution through the controller
 * (`nlctrl`, fixed id 16): CTRL_CMD_GETFAMILY by name answers with the family's dynamic id,
 * version and multicast groups; ENOENT means no such family is registered.
 */
import {
  NLM_F_ACK,
  NLM_F_DUMP,
  NLM_F_REQUEST,
  attrMap,
  encodeNlmsg,
  nlaStringz,
  parseAttrs,
  readU16,
  readU32,
  type NlMessage,
} from './wire.js';
import type { NetlinkChannel } from './channel.js';
import { Errno, NetlinkError } from './errors.js';

export const GENL_HDRLEN = 4;
export const GENL_ID_CTRL = 16;
export const CTRL_CMD_GETFAMILY = 3;
export const CTRL_VERSION = 2;

export const CTRL_ATTR_FAMILY_ID = 1;
export const CTRL_ATTR_FAMILY_NAME = 2;
export const CTRL_ATTR_VERSION = 3;
export const CTRL_ATTR_HDRSIZE = 4;
export const CTRL_ATTR_MAXATTR = 5;
export const CTRL_ATTR_MCAST_GROUPS = 7;
export const CTRL_ATTR_MCAST_GRP_NAME = 1;
export const CTRL_ATTR_MCAST_GRP_ID = 2;

/** `struct genlmsghdr`: u8 cmd, u8 version, u16 reserved (0). */
export function genlHeader(cmd: number, version: number): Buffer {
  return Buffer.from([cmd & 0xff, version & 0xff, 0, 0]);
}

export interface GenlFamily {
  id: number;
  name: string;
  version: number;
  hdrSize: number;
  maxAttr: number;
  mcastGroups: Array<{ name: string; id: number }>;
}

function cstr(b: Buffer): string {
  const nul = b.indexOf(0);
  return b.subarray(0, nul < 0 ? b.length : nul).toString('utf8');
}

/** Parses a CTRL_CMD_NEWFAMILY message (reply to GETFAMILY). */
export function parseFamily(msg: NlMessage): GenlFamily | null {
  if (msg.payload.length < GENL_HDRLEN) return null;
  const a = attrMap(msg.payload.subarray(GENL_HDRLEN));
  const id = a.get(CTRL_ATTR_FAMILY_ID);
  const name = a.get(CTRL_ATTR_FAMILY_NAME);
  if (!id || !name || id.value.length < 2) return null;
  const u32 = (t: number): number => {
    const v = a.get(t);
    return v && v.value.length >= 4 ? readU32(v.value, 0) : 0;
  };
  const mcastGroups: GenlFamily['mcastGroups'] = [];
  const groups = a.get(CTRL_ATTR_MCAST_GROUPS);
  if (groups) {
    for (const g of parseAttrs(groups.value)) {
      const ga = attrMap(g.value);
      const gname = ga.get(CTRL_ATTR_MCAST_GRP_NAME);
      const gid = ga.get(CTRL_ATTR_MCAST_GRP_ID);
      if (gname && gid && gid.value.length >= 4)
        mcastGroups.push({ name: cstr(gname.value), id: readU32(gid.value, 0) });
    }
  }
  return {
    id: readU16(id.value, 0),
    name: cstr(name.value),
    version: u32(CTRL_ATTR_VERSION),
    hdrSize: u32(CTRL_ATTR_HDRSIZE),
    maxAttr: u32(CTRL_ATTR_MAXATTR),
    mcastGroups,
  };
}

/** The GETFAMILY-by-name request, as a full netlink message. */
export function encodeGetFamily(seq: number, port: number, name: string): Buffer {
  return encodeNlmsg(
    { type: GENL_ID_CTRL, flags: NLM_F_REQUEST | NLM_F_ACK, seq, port },
    Buffer.concat([genlHeader(CTRL_CMD_GETFAMILY, CTRL_VERSION), nlaStringz(CTRL_ATTR_FAMILY_NAME, name)]),
  );
}

/**
 * Asks the controller for one family. Resolves with null when the kernel answers ENOENT
 * (no such family); other failures reject.
 */
export async function getFamily(
  channel: NetlinkChannel,
  name: string,
  timeoutMs: number,
): Promise<GenlFamily | null> {
  try {
    const msgs = await channel.request((seq, port) => encodeGetFamily(seq, port, name), {
      timeoutMs,
      what: `resolving generic netlink family ${name}`,
    });
    for (const m of msgs) {
      const f = parseFamily(m);
      if (f && f.name === name) return f;
    }
    return null;
  } catch (err) {
    if (err instanceof NetlinkError && err.isKernel(Errno.ENOENT)) return null;
    throw err;
  }
}

/** Lists every registered generic netlink family (controller dump). */
export async function listFamilies(channel: NetlinkChannel, timeoutMs: number): Promise<GenlFamily[]> {
  const msgs = await channel.request(
    (seq, port) =>
      encodeNlmsg(
        { type: GENL_ID_CTRL, flags: NLM_F_REQUEST | NLM_F_DUMP, seq, port },
        genlHeader(CTRL_CMD_GETFAMILY, CTRL_VERSION),
      ),
    { timeoutMs, dump: true, what: 'listing generic netlink families' },
  );
  return msgs.map(parseFamily).filter((f): f is GenlFamily => f !== null);
}
