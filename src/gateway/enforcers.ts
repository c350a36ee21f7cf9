/** Chooses and builds the enforcement backend of `seng serve`. */
import { KmodEnforcer } from '../enforce/kmod.js';
import type { Enforcer } from '../enforce/types.js';
import type { Logger } from '../util/log.js';
import type { EnclaveIndex } from './enclave-index.js';

export interface NftConfig {
  policyPath: string | undefined;
  table: string;
}

export async function createEnforcer(
  config: { netfilter: boolean; nft: NftConfig | undefined; dbPath: string | undefined },
  _index: EnclaveIndex,
  log: Logger,
): Promise<Enforcer | undefined> {
  if (config.netfilter) return new KmodEnforcer({ logger: log });
  return undefined;
}
