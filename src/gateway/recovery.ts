/**
 * Crash recovery at gateway start: a gateway killed with SIGKILL (or a power cut) ends no
 * session, so firewall state of its enclaves outlives it. Before the first admission:
 *
 * - nftables sets and the kernel module are flushed by the enforcer's start()
 *   (src/enforce/nft.ts, src/enforce/kmod.ts);
 * - conntrack entries to or from any address of the enclave subnets are deleted here, so a
 *   reused enclave IP never rides on a dead enclave's connections (SPEC §5.1);
 * - a TUN device the killed process created vanished with its file descriptor; an
 *   admin-created (persistent) one is attached to again;
 * - the control socket it left is replaced (prepareControlPath / ControlServer.listen).
 */
import { ConntrackPurger } from '../enforce/conntrack.js';
import { cidrContains, formatCidr, type Cidr } from '../util/ipv4.js';
import { errorMessage } from '../util/errors.js';
import type { Logger } from '../util/log.js';

/**
 * Deletes the conntrack entries of every enclave subnet address. With firewall enforcement a
 * failure is fatal (a stale entry could let a new enclave use an old one's connection);
 * without it, it is logged.
 */
export async function purgeStaleConntrack(
  subnets: Cidr[],
  opts: { enforcing: boolean; log: Logger; purger?: ConntrackPurger },
): Promise<number> {
  const { log } = opts;
  let purger = opts.purger;
  try {
    purger ??= new ConntrackPurger();
    const deleted = await purger.purgeWhere((ip) => subnets.some((c) => cidrContains(c, ip)));
    log.info(
      { event: 'recovered', conntrackDeleted: deleted, subnets: subnets.map(formatCidr) },
      deleted > 0
        ? `removed ${deleted} stale conntrack entries of the enclave subnets (left by an earlier run)`
        : 'no stale conntrack entries in the enclave subnets',
    );
    return deleted;
  } catch (err) {
    if (opts.enforcing) throw err;
    log.warn(
      { event: 'recovery-incomplete', err: errorMessage(err) },
      `could not check for stale conntrack entries of the enclave subnets: ${errorMessage(err)}`,
    );
    return 0;
  } finally {
    if (!opts.purger) purger?.close();
  }
}
