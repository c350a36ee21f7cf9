/** Chooses and builds the enforcement backend of `seng serve`. */
import { KmodEnforcer } from '../enforce/kmod.js';
import { NftEnforcer } from '../enforce/nft.js';
import type { Enforcer } from '../enforce/types.js';
import type { Logger } from '../util/log.js';

export interface NftConfig {
  policyPath: string | undefined;
  table: string;
}

/**
 * -n: the seng kernel module (SPEC §5); --nft: nftables sets kept in sync with the sessions
 * (and the policy file compiled into the table); neither: no firewall integration.
 */
export function createEnforcer(
  config: { netfilter: boolean; nft: NftConfig | undefined; dbPath: string | undefined },
  log: Logger,
): Enforcer | undefined {
  if (config.netfilter) return new KmodEnforcer({ logger: log });
  if (config.nft) {
    return new NftEnforcer({
      ...(config.nft.policyPath ? { policyFile: config.nft.policyPath } : {}),
      ...(config.dbPath ? { db: config.dbPath } : {}),
      tableName: config.nft.table,
      logger: log,
    });
  }
  return undefined;
}
