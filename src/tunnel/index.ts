/** TUN devices and IPv4 packet helpers for the gateway data path. */
export * from './packet.js';
export { TunDevice, GATEWAY_TUN_MTU, DEFAULT_BATCH, existingTunFlags } from './tun.js';
export type { TunOpenOptions, TunStats, PacketsCallback } from './tun.js';
export { LinkConfig, netlinkErrorCode } from './link.js';
export type { LinkInfo, LinkAddress } from './link.js';
export { loadTunAddon, liveTunHandles, packageRoot } from './native.js';
