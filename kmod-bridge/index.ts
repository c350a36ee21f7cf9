/**
 * Bridge to the seng kernel module (generic netlink) and netlink plumbing shared with the
 * conntrack purge. See docs/kmod.md.
 */
export * from './errors.js';
export * from './netlink.js';
export * from './genl.js';
export * from './seng.js';
export * from './client.js';
