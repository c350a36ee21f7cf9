/** Builds the ShadowServer of `seng serve -s` from its flags. */
import type { Ipv4 } from '../util/ipv4.js';
import type { Logger } from '../util/log.js';
import { IptablesShadowRules, NftShadowRules, type ShadowRuleBackend } from './rules.js';
import { ShadowService } from './service.js';
import type { EnclaveLookup } from './types.js';

export interface ShadowConfig {
  /** nftables (seng's own nat table) or iptables (the original's SENG_* chains). */
  backend: 'nft' | 'iptables';
  /** Outside interface matched in prerouting, or `any`. */
  iface: string;
  /** nftables table name (nft backend). */
  table?: string;
  /** Deadline of each step in ms (default 3000). */
  stepTimeoutMs?: number;
  blockerPort?: number;
}

export function createShadowRules(config: ShadowConfig): ShadowRuleBackend {
  return config.backend === 'iptables'
    ? new IptablesShadowRules({ iface: config.iface })
    : new NftShadowRules({ iface: config.iface, ...(config.table ? { table: config.table } : {}) });
}

export function createShadowService(
  config: ShadowConfig,
  lookup: EnclaveLookup,
  gateways: Ipv4[],
  log: Logger,
): ShadowService {
  return new ShadowService({
    lookup,
    rules: createShadowRules(config),
    addresses: gateways,
    ...(config.stepTimeoutMs ? { stepTimeoutMs: config.stepTimeoutMs } : {}),
    ...(config.blockerPort ? { blockerPort: config.blockerPort } : {}),
    logger: log,
  });
}
