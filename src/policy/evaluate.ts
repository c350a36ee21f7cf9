/**
 * Reference evaluator: decides a packet against a *source* policy with the kernel
 * match's semantics (SPEC §5.2), without any of the compiler's machinery (no sets, no
 * variants). Tests run it next to the compiled nftables rules on real packets; the two
 * must agree on every case. It is also what `seng rules explain`-style tooling can use.
 *
 * Semantics: rules of the packet's chain are tried in file order; the first rule whose
 * every condition holds decides; otherwise the chain's default policy does. A seng
 * condition about the source (destination) looks the address up among registered
 * enclaves; if it is not registered the condition is false, negated or not.
 */
import { cidrContains, type Ipv4 } from '../util/ipv4.js';
import { emptyAppDirectory, type AppDirectory } from './apps.js';
import { MEASUREMENT } from './parse.js';
import type { Action, Chain, CtState, Negatable, Policy, PolicyRule, PortRange, Protocol } from './types.js';

export interface Registration {
  /** 64 lower-case hex. */
  mrEnclave: string;
  categories: string[];
  hostIp: Ipv4;
}

export interface Packet {
  chain: Chain;
  src: Ipv4;
  dst: Ipv4;
  protocol: Protocol;
  sport?: number;
  dport?: number;
  iif?: string;
  oif?: string;
  /** Connection-tracking state of the packet's connection (default: new). */
  ctState?: CtState;
}

export interface Verdict {
  action: Action;
  /** Name of the deciding rule, or undefined when the chain default decided. */
  rule?: string;
}

function holds<T>(n: Negatable<T> | undefined, test: (v: T) => boolean): boolean {
  if (!n) return true;
  return test(n.value) !== n.negate;
}

function ifaceMatches(pattern: string, name: string | undefined): boolean {
  if (name === undefined) return false;
  return pattern.endsWith('+') ? name.startsWith(pattern.slice(0, -1)) : name === pattern;
}

function portIn(ranges: PortRange[], port: number | undefined): boolean {
  return port !== undefined && ranges.some((r) => port >= r.from && port <= r.to);
}

/** A seng condition: false for non-enclaves regardless of negation. */
function sengHolds<T>(
  n: Negatable<T> | undefined,
  reg: Registration | undefined,
  test: (r: Registration, v: T) => boolean,
): boolean {
  if (!n) return true;
  if (!reg) return false;
  return test(reg, n.value) !== n.negate;
}

export function ruleMatches(
  rule: PolicyRule,
  pkt: Packet,
  regs: Map<Ipv4, Registration>,
  apps: AppDirectory = emptyAppDirectory,
): boolean {
  if (rule.chain !== pkt.chain) return false;
  const src = regs.get(pkt.src);
  const dst = regs.get(pkt.dst);
  const appIs = (r: Registration, ref: string): boolean =>
    MEASUREMENT.test(ref) ? r.mrEnclave === ref.toLowerCase() : apps.resolveApp(ref).includes(r.mrEnclave);
  const ports = rule.sport !== undefined || rule.dport !== undefined;
  return (
    (!rule.state || rule.state.includes(pkt.ctState ?? 'new')) &&
    holds(rule.inIface, (v) => ifaceMatches(v, pkt.iif)) &&
    holds(rule.outIface, (v) => ifaceMatches(v, pkt.oif)) &&
    holds(rule.protocol, (v) => v === pkt.protocol) &&
    // Port conditions imply the protocol (nft adds that dependency; iptables requires -p).
    (!ports || pkt.protocol === rule.protocol?.value) &&
    holds(rule.srcAddr, (v) => v.some((c) => cidrContains(c, pkt.src))) &&
    holds(rule.dstAddr, (v) => v.some((c) => cidrContains(c, pkt.dst))) &&
    holds(rule.sport, (v) => portIn(v, pkt.sport)) &&
    holds(rule.dport, (v) => portIn(v, pkt.dport)) &&
    sengHolds(rule.srcApp, src, appIs) &&
    sengHolds(rule.dstApp, dst, appIs) &&
    sengHolds(rule.srcCat, src, (r, c) => r.categories.includes(c)) &&
    sengHolds(rule.dstCat, dst, (r, c) => r.categories.includes(c)) &&
    sengHolds(rule.srcHost, src, (r, c) => cidrContains(c, r.hostIp)) &&
    sengHolds(rule.dstHost, dst, (r, c) => cidrContains(c, r.hostIp))
  );
}

export function evaluate(
  policy: Policy,
  pkt: Packet,
  regs: Map<Ipv4, Registration>,
  apps: AppDirectory = emptyAppDirectory,
): Verdict {
  for (const rule of policy.rules) {
    if (ruleMatches(rule, pkt, regs, apps)) return { action: rule.action, rule: rule.name };
  }
  return { action: policy.defaults[pkt.chain] };
}
