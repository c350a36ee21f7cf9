/**
 * The one netlink stack of seng. This folder owns:
 * - `wire.ts`: message framing and attributes in host byte order, `NLMSG_ERROR` parsing;
 * - `errors.ts`: {@link NetlinkError} (errno number and name, source, the request it
 *   answered), {@link NetlinkTimeoutError}, {@link NetlinkProtocolError};
 * - `socket.ts`: the datagram boundary ({@link NetlinkTransport}) and the real socket;
 * - `channel.ts`: sequence numbers, request/reply and batch ack matching, dumps, timeouts;
 * - the protocol families seng speaks, each a thin layer of encoders and parsers over the
 *   channel: `genl.ts` (generic netlink controller), `nfnetlink.ts` (nfgenmsg, batches),
 *   `rtnetlink.ts` (links and addresses).
 * What the messages mean to seng lives with their users: the kernel-module bridge
 * (kmod-bridge/), nf_tables set updates and the conntrack purge (src/enforce/), link
 * configuration (src/tunnel/link.ts). Nothing here imports from them.
 */
export * from './errors.js';
export * from './wire.js';
export * from './socket.js';
export * from './channel.js';
export * from './genl.js';
export * from './nfnetlink.js';
export * from './rtnetlink.js';
