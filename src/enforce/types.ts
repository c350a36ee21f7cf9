/**
 * The contract between the gateway and a firewall enforcement backend (the seng
 * kernel module over generic netlink, or nftables sets). The gateway calls these in
 * session order; a backend must keep the firewall's view equal to the set of live
 * sessions, and the enclave IP must not be handed out again before its conntrack
 * entries are purged, so a reused IP never inherits state: either `leave` purges before
 * it resolves (kernel module), or the backend has `purged` and the gateway awaits that
 * before releasing the IP (nftables: leave is one element transaction, the purge follows).
 */
import type { Ipv4 } from '../util/ipv4.js';

export interface EnclaveRegistration {
  /** Enclave IP (host order). */
  enclaveIp: Ipv4;
  /** 32-byte MRENCLAVE of the app. */
  mrEnclave: Buffer;
  /** 32-byte MRSIGNER of the app. */
  mrSigner: Buffer;
  /** Untrusted host's IP (the client's UDP source address, host order). */
  hostIp: Ipv4;
  /** App name from the database, when known. */
  appName?: string;
  /** The app's categories from the netfilter database (empty if none/unknown). */
  categories: string[];
}

export interface Enforcer {
  /** Backend name for logs and `seng status`. */
  readonly name: string;
  /**
   * Called once before the first session: e.g. flush stale kernel state, reconcile sets.
   * `initial`: enclaves that are live already (a firewall agent's leases read before the
   * start), registered by the start itself so the firewall holds them when it resolves.
   */
  start(opts?: { initial?: EnclaveRegistration[] }): Promise<void>;
  /** An enclave was admitted: make rules able to match it. */
  join(reg: EnclaveRegistration): Promise<void>;
  /**
   * An enclave's session ended: forget it. Resolves when the firewall no longer knows it
   * and — for a backend without `purged` — when its conntrack entries are purged.
   */
  leave(reg: EnclaveRegistration): Promise<void>;
  /**
   * The categories of an app changed in the database while it has active enclaves
   * (hot reload). `active` lists the app's live registrations.
   */
  updateCategories(mrEnclave: Buffer, categories: string[], active: EnclaveRegistration[]): Promise<void>;
  /** Server shutdown: remove everything this backend registered. */
  stop(): Promise<void>;

  // Optional capabilities: a backend that compiles a policy file (nftables) has them; the
  // control socket and SIGHUP use them when present instead of testing the backend's type.

  /** Many admissions as ONE kernel transaction (a firewall agent resynchronising, a burst). */
  joinMany?(regs: EnclaveRegistration[]): Promise<void>;
  /** Many session ends as ONE kernel transaction; their conntrack purges follow (see `purged`). */
  leaveMany?(regs: EnclaveRegistration[]): Promise<void>;
  /**
   * Present when `leave` does not wait for the conntrack purge: resolves when the purge
   * that followed the IP's last leave has run, rejects when it failed (then the IP must
   * stay quarantined).
   */
  purged?(enclaveIp: Ipv4): Promise<void>;

  /** Re-reads the configured policy file and swaps the rules; returns a one-line summary. */
  reloadPolicy?(): Promise<string>;
  /** Makes `path` the policy file and applies it; on error the previous rules stay. Returns a summary. */
  usePolicyFile?(path: string, opts?: { confirmWithinMs?: number }): Promise<string>;
  /** Keeps a change made with `confirmWithinMs`; false if none is waiting (e.g. already rolled back). */
  confirmPolicy?(): boolean;
  /** Rolls a change made with `confirmWithinMs` back now; false if none is waiting. */
  rollbackPolicy?(): Promise<boolean>;
}
