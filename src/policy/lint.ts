/**
 * Warnings about valid policies that probably do not do what the admin meant: rules
 * that can never match, or that are shadowed by an earlier catch-all.
 */
import type { AppDirectory } from './apps.js';
import type { PolicyIssue } from './errors.js';
import { MEASUREMENT } from './parse.js';
import type { Policy, PolicyRule } from './types.js';

const SENG_KEYS = ['srcApp', 'dstApp', 'srcCat', 'dstCat', 'srcHost', 'dstHost'] as const;
const ALL_CONDITIONS = [
  ...SENG_KEYS,
  'protocol',
  'state',
  'srcAddr',
  'dstAddr',
  'sport',
  'dport',
  'inIface',
  'outIface',
] as const;

function warn(rule: PolicyRule, index: number, key: string | undefined, message: string): PolicyIssue {
  const pos = (key && rule.keyPos[key]) || rule.pos;
  return { line: pos.line, col: pos.col, path: `rules[${index}]${key ? `.${key}` : ''}`, message };
}

export function lintPolicy(policy: Policy, apps?: AppDirectory): PolicyIssue[] {
  const out: PolicyIssue[] = [];
  const catchAll = new Map<string, PolicyRule>();
  policy.rules.forEach((rule, i) => {
    const earlier = catchAll.get(rule.chain);
    if (earlier) {
      out.push(
        warn(
          rule,
          i,
          undefined,
          `never reached: rule "${earlier.name}" above matches every packet of chain ${rule.chain}`,
        ),
      );
    }
    if (!ALL_CONDITIONS.some((k) => rule[k] !== undefined) && !rule.log && !catchAll.has(rule.chain)) {
      catchAll.set(rule.chain, rule);
    }
    // Enclave IPs live behind the TUN interface, never on the gateway itself: in input
    // the destination, in output the source, is a local address and never an enclave.
    const local = rule.chain === 'input' ? 'dst' : rule.chain === 'output' ? 'src' : undefined;
    if (local) {
      for (const kind of ['app', 'cat', 'host']) {
        const key = `${local}-${kind}`;
        if (rule.keyPos[key]) {
          out.push(
            warn(
              rule,
              i,
              key,
              `in the ${rule.chain} chain the ${local === 'dst' ? 'destination' : 'source'} is the gateway itself, not an enclave: this condition never holds`,
            ),
          );
        }
      }
    }
    if (apps && apps.description !== 'no database') {
      for (const [key, ref] of [
        ['src-app', rule.srcApp],
        ['dst-app', rule.dstApp],
      ] as const) {
        if (ref && MEASUREMENT.test(ref.value) && apps.namesOf(ref.value).length === 0) {
          out.push(
            warn(rule, i, key, `measurement ${ref.value.toLowerCase()} is not in ${apps.description}`),
          );
        }
      }
    }
  });
  return out;
}
