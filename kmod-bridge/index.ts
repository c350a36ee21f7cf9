/**
 * Bridge to the seng kernel module over generic netlink: the module's four requests
 * (seng.ts), the client that resolves `seng_family` and sends them with acks, retries and
 * typed errors (client.ts, errors.ts). The netlink stack underneath is src/netlink/.
 * See docs/kmod.md.
 */
export * from './errors.js';
export * from './seng.js';
export * from './client.js';
export type { GenlFamily } from '../src/netlink/index.js';
