/**
 * The contract between the gateway and a firewall enforcement backend (the seng
 * kernel module over generic netlink, or nftables sets). The gateway calls these in
 * session order; a backend must keep the firewall's view equal to the set of live
 * sessions, and must make `leave` complete (unregister, then purge conntrack) before
 * the gateway releases the enclave IP, so a reused IP never inherits state.
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
  /** Called once before the first session: e.g. flush stale kernel state, reconcile sets. */
  start(): Promise<void>;
  /** An enclave was admitted: make rules able to match it. */
  join(reg: EnclaveRegistration): Promise<void>;
  /** An enclave's session ended: forget it and purge its conntrack entries. Resolves when done. */
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

  /** Re-reads the configured policy file and swaps the rules; returns a one-line summary. */
  reloadPolicy?(): Promise<string>;
  /** Makes `path` the policy file and applies it; on error the previous rules stay. Returns a summary. */
  usePolicyFile?(path: string, opts?: { confirmWithinMs?: number }): Promise<string>;
  /** Keeps a change made with `confirmWithinMs`; false if none is waiting (e.g. already rolled back). */
  confirmPolicy?(): boolean;
  /** Rolls a change made with `confirmWithinMs` back now; false if none is waiting. */
  rollbackPolicy?(): Promise<boolean>;
}
