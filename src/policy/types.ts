/**
 * The policy model: what an admin writes (a `Policy`, parsed and validated from a
 * YAML/JSON file) and what the compiler produces from it (a `CompiledPolicy`, with
 * app names resolved to measurements and every enclave-IP set the rules refer to).
 *
 * Semantics of the seng conditions (`src-app`, `dst-cat`, `src-host`, …) are those of
 * the kernel match (SPEC §5.2): a condition about the packet's source (destination)
 * can only hold when that address is a registered enclave, even when negated.
 */
import type { Cidr } from '../util/ipv4.js';

export const CHAINS = ['input', 'forward', 'output'] as const;
export type Chain = (typeof CHAINS)[number];

export const ACTIONS = ['accept', 'drop', 'reject'] as const;
export type Action = (typeof ACTIONS)[number];

export const PROTOCOLS = ['tcp', 'udp', 'icmp'] as const;
export type Protocol = (typeof PROTOCOLS)[number];

/** Connection-tracking states a rule can match (`ct state` in nft, `--ctstate` in iptables). */
export const CT_STATES = ['new', 'established', 'related', 'invalid'] as const;
export type CtState = (typeof CT_STATES)[number];

export const LOG_LEVELS = ['emerg', 'alert', 'crit', 'err', 'warn', 'notice', 'info', 'debug'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export type Side = 'src' | 'dst';
export type SengKind = 'app' | 'cat' | 'host';

/** A value with an optional negation (`{ not: X }` or `"!X"` in the file). */
export interface Negatable<T> {
  negate: boolean;
  value: T;
}

/** A port or an inclusive port range. */
export interface PortRange {
  from: number;
  to: number;
}

/** A source location in the policy file (1-based). */
export interface SourcePos {
  line: number;
  col: number;
}

export interface PolicyRule {
  name: string;
  description?: string;
  chain: Chain;
  action: Action;
  counter: boolean;
  log?: { prefix: string; level: LogLevel };
  /** Connection states the packet's connection must be in (any of them). */
  state?: CtState[];
  /** App references as written: a database name or a 64-hex measurement. */
  srcApp?: Negatable<string>;
  dstApp?: Negatable<string>;
  srcCat?: Negatable<string>;
  dstCat?: Negatable<string>;
  srcHost?: Negatable<Cidr>;
  dstHost?: Negatable<Cidr>;
  protocol?: Negatable<Protocol>;
  srcAddr?: Negatable<Cidr[]>;
  dstAddr?: Negatable<Cidr[]>;
  sport?: Negatable<PortRange[]>;
  dport?: Negatable<PortRange[]>;
  inIface?: Negatable<string>;
  outIface?: Negatable<string>;
  /** Where the rule starts in the file, and where each key's value is (for errors found later). */
  pos: SourcePos;
  keyPos: Record<string, SourcePos>;
}

export interface Policy {
  version: 1;
  /** nftables table name (family ip). Default `seng`. */
  table: string;
  /** Chain policies (what happens to packets no rule decided). Default accept. */
  defaults: Record<Chain, 'accept' | 'drop'>;
  rules: PolicyRule[];
  /** File the policy came from, for messages. */
  source: string;
}

/** One enclave-IP set of the nftables table, and who belongs in it. */
export type SetSpec =
  | { kind: 'enclaves'; name: string }
  | { kind: 'app'; name: string; mrEnclave: string }
  | { kind: 'cat'; name: string; category: string }
  | { kind: 'host'; name: string; cidr: Cidr };

/** One resolved seng condition (an app reference expands to one per measurement). */
export interface SengCondition {
  side: Side;
  kind: SengKind;
  negate: boolean;
  /** 64 lower-case hex (app), category name (cat), or CIDR text (host). */
  value: string;
  /** The set that holds the enclave IPs for which the positive condition is true. */
  set: string;
}

/**
 * A rule after app resolution. A positive app reference that names several measurements
 * becomes several variants (one per measurement, in order); negated references become a
 * conjunction of negated conditions in one rule.
 */
export interface CompiledRule {
  name: string;
  /** 0 for the first (or only) variant of the source rule. */
  variant: number;
  description?: string;
  chain: Chain;
  action: Action;
  counter: boolean;
  log?: { prefix: string; level: LogLevel };
  state?: CtState[];
  seng: SengCondition[];
  protocol?: Negatable<Protocol>;
  srcAddr?: Negatable<Cidr[]>;
  dstAddr?: Negatable<Cidr[]>;
  sport?: Negatable<PortRange[]>;
  dport?: Negatable<PortRange[]>;
  inIface?: Negatable<string>;
  outIface?: Negatable<string>;
  line: number;
}

export interface CompiledPolicy {
  table: string;
  defaults: Record<Chain, 'accept' | 'drop'>;
  /** Every set the table must hold, `enclaves` first, then sorted by name. */
  sets: SetSpec[];
  rules: CompiledRule[];
  source: string;
  /** App references and what they resolved to (for `seng rules check`). */
  apps: { ref: string; measurements: string[]; names: string[] }[];
}
