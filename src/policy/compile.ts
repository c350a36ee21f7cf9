/**
 * Policy compiler: resolves app references to measurements, expands multi-measurement
 * app names, and computes the enclave-IP sets the rules need.
 *
 * Set names are derived from what they hold, never from positions in the file, so a
 * set keeps its meaning (and its live elements) across policy reloads:
 *   enclaves                 every registered enclave IP
 *   app_<64 hex>             enclave IPs running that MRENCLAVE
 *   cat_<name>               enclave IPs whose app has that category (name of [A-Za-z0-9_])
 *   catx_<hex of the name>   the same, for names with other characters
 *   host_<a>_<b>_<c>_<d>_<p> enclave IPs whose untrusted host IP is in a.b.c.d/p
 * The nftables table holds these minus the app sets only src-app conditions use: those
 * are decided by the dispatch map (src/policy/dispatch.ts, nftSets).
 */
import { cidrContains, formatCidr, parseCidr, type Cidr, type Ipv4 } from '../util/ipv4.js';
import { emptyAppDirectory, type AppDirectory } from './apps.js';
import { PolicyError, type PolicyIssue } from './errors.js';
import { MEASUREMENT } from './parse.js';
import type {
  CompiledPolicy,
  CompiledRule,
  Policy,
  PolicyRule,
  SengCondition,
  SengKind,
  SetSpec,
  Side,
} from './types.js';

export const ENCLAVES_SET = 'enclaves';

export function appSetName(mrEnclaveHex: string): string {
  return `app_${mrEnclaveHex.toLowerCase()}`;
}

export function categorySetName(category: string): string {
  return /^[A-Za-z0-9_]+$/.test(category)
    ? `cat_${category}`
    : `catx_${Buffer.from(category, 'utf8').toString('hex')}`;
}

export function hostSetName(cidr: Cidr): string {
  return `host_${formatCidr(cidr).replace(/[./]/g, '_')}`;
}

/** Parses a seng set name back into what it holds (undefined for names seng does not own). */
export function parseSetName(name: string): SetSpec | undefined {
  if (name === ENCLAVES_SET) return { kind: 'enclaves', name };
  let m = /^app_([0-9a-f]{64})$/.exec(name);
  if (m) return { kind: 'app', name, mrEnclave: m[1] as string };
  m = /^cat_([A-Za-z0-9_]{1,20})$/.exec(name);
  if (m) return { kind: 'cat', name, category: m[1] as string };
  m = /^catx_((?:[0-9a-f]{2}){1,20})$/.exec(name);
  if (m) return { kind: 'cat', name, category: Buffer.from(m[1] as string, 'hex').toString('utf8') };
  m = /^host_(\d{1,3})_(\d{1,3})_(\d{1,3})_(\d{1,3})_(\d{1,2})$/.exec(name);
  if (m) {
    try {
      const cidr = parseCidr(`${m[1]}.${m[2]}.${m[3]}.${m[4]}/${m[5]}`, { strict: true });
      if (hostSetName(cidr) === name) return { kind: 'host', name, cidr };
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/** What set membership depends on (an enforcer's registration has at least these fields). */
export interface SetMember {
  mrEnclave: Buffer;
  categories: readonly string[];
  hostIp: Ipv4;
}

/** Whether a registered enclave belongs in a set (the rule the enforcer applies on join). */
export function setHolds(set: SetSpec, reg: SetMember): boolean {
  switch (set.kind) {
    case 'enclaves':
      return true;
    case 'app':
      return reg.mrEnclave.toString('hex') === set.mrEnclave;
    case 'cat':
      return reg.categories.includes(set.category);
    case 'host':
      return cidrContains(set.cidr, reg.hostIp);
  }
}

export interface CompileOptions {
  apps?: AppDirectory;
}

/** Compiles a validated policy. Throws a PolicyError (with line numbers) for unresolvable apps. */
export function compilePolicy(policy: Policy, opts: CompileOptions = {}): CompiledPolicy {
  const dir = opts.apps ?? emptyAppDirectory;
  const issues: PolicyIssue[] = [];
  const sets = new Map<string, SetSpec>([[ENCLAVES_SET, { kind: 'enclaves', name: ENCLAVES_SET }]]);
  const apps = new Map<string, { ref: string; measurements: string[]; names: string[] }>();

  const resolve = (
    rule: PolicyRule,
    index: number,
    key: 'src-app' | 'dst-app',
    ref: string,
  ): string[] | undefined => {
    if (MEASUREMENT.test(ref)) {
      const hex = ref.toLowerCase();
      apps.set(ref, { ref, measurements: [hex], names: dir.namesOf(hex) });
      return [hex];
    }
    const found = dir.resolveApp(ref);
    if (found.length === 0) {
      const pos = rule.keyPos[key] ?? rule.pos;
      issues.push({
        line: pos.line,
        col: pos.col,
        path: `rules[${index}].${key}`,
        message:
          dir === emptyAppDirectory
            ? `app "${ref}" is a name, and names need a database: pass -d DB, or write the 64-hex MRENCLAVE`
            : `no app named "${ref}" in ${dir.description}`,
      });
      return undefined;
    }
    apps.set(ref, { ref, measurements: found, names: [ref] });
    return found;
  };

  const rules: CompiledRule[] = [];
  policy.rules.forEach((rule, index) => {
    const fixed: SengCondition[] = [];
    /** Positive multi-measurement app references: one variant per measurement. */
    const alternatives: SengCondition[][] = [];
    let ok = true;
    for (const side of ['src', 'dst'] as Side[]) {
      const app = side === 'src' ? rule.srcApp : rule.dstApp;
      if (app) {
        const ms = resolve(rule, index, `${side}-app`, app.value);
        if (!ms) ok = false;
        else {
          const conds = ms.map((m) => cond(side, 'app', app.negate, m, appSetName(m)));
          if (app.negate || conds.length === 1) fixed.push(...conds);
          else alternatives.push(conds);
        }
      }
      const cat = side === 'src' ? rule.srcCat : rule.dstCat;
      if (cat) fixed.push(cond(side, 'cat', cat.negate, cat.value, categorySetName(cat.value)));
      const host = side === 'src' ? rule.srcHost : rule.dstHost;
      if (host) fixed.push(cond(side, 'host', host.negate, formatCidr(host.value), hostSetName(host.value)));
    }
    if (!ok) return;
    for (const c of [...fixed, ...alternatives.flat()]) {
      if (!sets.has(c.set)) sets.set(c.set, specFor(c, policy));
    }
    // Cross product of the alternatives (at most two: src-app and dst-app).
    let combos: SengCondition[][] = [[]];
    for (const alts of alternatives) combos = combos.flatMap((c) => alts.map((a) => [...c, a]));
    combos.forEach((extra, variant) => {
      const seng = [...fixed, ...extra].sort(conditionOrder);
      rules.push({
        name: rule.name,
        variant,
        ...(rule.description !== undefined && { description: rule.description }),
        chain: rule.chain,
        action: rule.action,
        counter: rule.counter,
        ...(rule.log && { log: rule.log }),
        ...(rule.state && { state: [...rule.state] }),
        seng,
        ...(rule.protocol && { protocol: rule.protocol }),
        ...(rule.srcAddr && { srcAddr: rule.srcAddr }),
        ...(rule.dstAddr && { dstAddr: rule.dstAddr }),
        ...(rule.sport && { sport: rule.sport }),
        ...(rule.dport && { dport: rule.dport }),
        ...(rule.inIface && { inIface: rule.inIface }),
        ...(rule.outIface && { outIface: rule.outIface }),
        line: rule.pos.line,
      });
    });
  });
  if (issues.length) throw new PolicyError(policy.source, issues);
  const sorted = [...sets.values()]
    .filter((s) => s.kind !== 'enclaves')
    .sort((a, b) => a.name.localeCompare(b.name));
  return {
    table: policy.table,
    defaults: { ...policy.defaults },
    sets: [{ kind: 'enclaves', name: ENCLAVES_SET }, ...sorted],
    rules,
    source: policy.source,
    apps: [...apps.values()],
  };
}

function cond(side: Side, kind: SengKind, negate: boolean, value: string, set: string): SengCondition {
  return { side, kind, negate, value, set };
}

const KIND_ORDER: Record<SengKind, number> = { app: 0, cat: 1, host: 2 };
/** The option order of `-m seng`: src-app, dst-app, src-cat, dst-cat, src-host, dst-host. */
export function conditionOrder(a: SengCondition, b: SengCondition): number {
  return KIND_ORDER[a.kind] - KIND_ORDER[b.kind] || (a.side === b.side ? 0 : a.side === 'src' ? -1 : 1);
}

function specFor(c: SengCondition, _policy: Policy): SetSpec {
  switch (c.kind) {
    case 'app':
      return { kind: 'app', name: c.set, mrEnclave: c.value };
    case 'cat':
      return { kind: 'cat', name: c.set, category: c.value };
    case 'host':
      return { kind: 'host', name: c.set, cidr: parseCidr(c.value) };
  }
}
