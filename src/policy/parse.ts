/**
 * Policy file parser and validator: YAML (or JSON, which is YAML) → `Policy`.
 *
 * Every problem is collected with its line and column and reported together as one
 * `PolicyError`. Unknown keys are errors (a typo must never silently widen a rule), and
 * an unquoted `!` — a YAML tag, which would silently drop a negation — is an error too.
 * The format is documented in rules/README.md; rules/policy.schema.json describes the
 * same structure for editors.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { Document, LineCounter, isAlias, isMap, isScalar, isSeq, parseDocument, type Node } from 'yaml';
import { EnvironmentError, InputError, SengError, errorMessage } from '../util/errors.js';
import { isIpv4, parseCidr, type Cidr } from '../util/ipv4.js';
import { NFT_TABLE_NAME } from '../nft/names.js';
import { CATEGORY_NAME as CATEGORY_RULE } from '../util/names.js';
import { PolicyError, type PolicyIssue } from './errors.js';
import {
  ACTIONS,
  CHAINS,
  CT_STATES,
  type CtState,
  LOG_LEVELS,
  PROTOCOLS,
  type Chain,
  type LogLevel,
  type Negatable,
  type Policy,
  type PolicyRule,
  type PortRange,
  type Protocol,
  type SourcePos,
} from './types.js';

export const RULE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
export const TABLE_NAME = NFT_TABLE_NAME;
/** Category names: the one rule of src/util/names.ts (database, policies, kernel module). */
export const CATEGORY_NAME = CATEGORY_RULE;
export const MEASUREMENT = /^[0-9a-fA-F]{64}$/;
/** Interface names: IFNAMSIZ-1 characters; a trailing `+` is a prefix wildcard (iptables and nft). */
export const IFACE_NAME = /^[A-Za-z0-9_.:-]{1,15}\+?$/;
/** App names as stored in the database (anything printable, not starting with `!`). */
const APP_NAME = /^[^!\s][^\n\r\t]{0,127}$/;

const TOP_KEYS = ['version', 'table', 'defaults', 'established', 'rules'] as const;
/** What `established: accept` matches: replies and related traffic of accepted connections. */
export const ESTABLISHED_STATES: CtState[] = ['established', 'related'];
const RULE_KEYS = [
  'name',
  'description',
  'chain',
  'action',
  'counter',
  'log',
  'state',
  'src-app',
  'dst-app',
  'src-cat',
  'dst-cat',
  'src-host',
  'dst-host',
  'protocol',
  'src-addr',
  'dst-addr',
  'sport',
  'dport',
  'in-iface',
  'out-iface',
] as const;

/** Levenshtein distance, for "did you mean" suggestions. */
function distance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i += 1) {
    let prev = d[0] as number;
    d[0] = i;
    for (let j = 1; j <= b.length; j += 1) {
      const tmp = d[j] as number;
      d[j] = Math.min((d[j] as number) + 1, (d[j - 1] as number) + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return d[b.length] as number;
}

function closest(key: string, options: readonly string[]): string | undefined {
  const k = key.toLowerCase().replace(/_/g, '-');
  let best: string | undefined;
  let bestD = 3;
  for (const o of options) {
    const dd = distance(k, o);
    if (dd < bestD) {
      best = o;
      bestD = dd;
    }
  }
  return best;
}

class Ctx {
  readonly issues: PolicyIssue[] = [];
  /** Rule name → line of its first use. */
  readonly names = new Map<string, number>();
  constructor(
    readonly doc: Document.Parsed,
    readonly lc: LineCounter,
  ) {}

  pos(node: Node | null | undefined): SourcePos {
    const off = node?.range?.[0];
    if (off === undefined) return { line: 0, col: 0 };
    return this.lc.linePos(off);
  }

  err(node: Node | null | undefined, path: string, message: string): void {
    const { line, col } = this.pos(node);
    this.issues.push({ line, col, path, message });
  }

  resolve(node: unknown): Node | null {
    if (isAlias(node)) return (node.resolve(this.doc) as Node | undefined) ?? null;
    return (node as Node | null) ?? null;
  }
}

type Scalarish = string | number | boolean | null;

function scalarValue(ctx: Ctx, node: Node | null, path: string): Scalarish | undefined {
  if (!node) return null;
  if (!isScalar(node)) return undefined;
  if (
    node.tag !== undefined &&
    node.tag !== 'tag:yaml.org,2002:str' &&
    node.tag !== 'tag:yaml.org,2002:int'
  ) {
    ctx.err(
      node,
      path,
      node.tag === '!'
        ? 'an unquoted "!" is a YAML tag, not a negation: write `{ not: VALUE }` or quote it ("!VALUE")'
        : `YAML tag ${node.tag} is not allowed here`,
    );
    return undefined;
  }
  const v = node.value;
  if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean' || v === null) return v;
  return undefined;
}

function expectString(ctx: Ctx, node: Node | null, path: string, what: string): string | undefined {
  const v = scalarValue(ctx, node, path);
  if (typeof v === 'string') return v;
  if (v !== undefined || !ctx.issues.some((i) => i.path === path)) ctx.err(node, path, `expected ${what}`);
  return undefined;
}

function expectOneOf<T extends string>(
  ctx: Ctx,
  node: Node | null,
  path: string,
  options: readonly T[],
): T | undefined {
  const v = scalarValue(ctx, node, path);
  if (typeof v === 'string' && (options as readonly string[]).includes(v)) return v as T;
  ctx.err(
    node,
    path,
    `expected one of ${options.join(', ')}${v === undefined ? '' : `, got ${JSON.stringify(v)}`}`,
  );
  return undefined;
}

/**
 * Splits a negatable value: `{ not: X }` or a string starting with `!` (quoted in YAML).
 * Returns the inner node, or a synthetic string for the `!X` form.
 */
function splitNegation(
  ctx: Ctx,
  raw: Node | null,
  path: string,
): { negate: boolean; node: Node | null; text?: string } | undefined {
  if (isMap(raw)) {
    const pairs = raw.items;
    const first = pairs[0];
    const key = first && isScalar(first.key) ? first.key.value : undefined;
    if (pairs.length !== 1 || key !== 'not') {
      ctx.err(raw, path, 'expected a value or `{ not: VALUE }`');
      return undefined;
    }
    const inner = ctx.resolve(first?.value);
    if (isMap(inner)) {
      ctx.err(inner, `${path}.not`, 'a negation cannot be negated again');
      return undefined;
    }
    return { negate: true, node: inner };
  }
  const v = scalarValue(ctx, raw, path);
  if (v === undefined) {
    if (isSeq(raw)) return { negate: false, node: raw };
    return undefined;
  }
  if (typeof v === 'string' && v.startsWith('!')) {
    const text = v.slice(1).trim();
    if (text.startsWith('!')) {
      ctx.err(raw, path, 'double negation ("!!") is not allowed');
      return undefined;
    }
    return { negate: true, node: raw, text };
  }
  return { negate: false, node: raw };
}

function parseNegatable<T>(
  ctx: Ctx,
  raw: Node | null,
  path: string,
  parseOne: (node: Node | null, text: string | undefined, path: string) => T | undefined,
): Negatable<T> | undefined {
  const s = splitNegation(ctx, raw, path);
  if (!s) return undefined;
  const value = parseOne(s.node, s.text, s.negate && isMap(raw) ? `${path}.not` : path);
  return value === undefined ? undefined : { negate: s.negate, value };
}

function textOf(
  ctx: Ctx,
  node: Node | null,
  text: string | undefined,
  path: string,
  what: string,
): string | undefined {
  if (text !== undefined) return text;
  const v = scalarValue(ctx, node, path);
  if (typeof v === 'string') return v.trim();
  if (typeof v === 'number') return String(v);
  if (v !== undefined || !ctx.issues.some((i) => i.path === path)) ctx.err(node, path, `expected ${what}`);
  return undefined;
}

function parseCidrText(ctx: Ctx, node: Node | null, text: string, path: string): Cidr | undefined {
  const t = text.trim();
  try {
    if (isIpv4(t)) return parseCidr(`${t}/32`);
    return parseCidr(t, { strict: true });
  } catch (e) {
    const hint = (e as { hint?: string }).hint;
    ctx.err(node, path, `${errorMessage(e)}${hint ? ` (${hint})` : ''}`);
    return undefined;
  }
}

function parsePortText(ctx: Ctx, node: Node | null, text: string, path: string): PortRange | undefined {
  const m = /^(\d{1,5})(?:\s*[-:]\s*(\d{1,5}))?$/.exec(text.trim());
  const from = m ? Number(m[1]) : NaN;
  const to = m?.[2] !== undefined ? Number(m[2]) : from;
  if (!m || from < 0 || from > 65535 || to > 65535) {
    ctx.err(node, path, `"${text}" is not a port (0-65535) or a range "FROM-TO"`);
    return undefined;
  }
  if (to < from) {
    ctx.err(node, path, `port range "${text}" is reversed: write ${to}-${from}`);
    return undefined;
  }
  return { from, to };
}

/** A single value or a non-empty list of values (addresses, ports). */
function parseList<T>(
  ctx: Ctx,
  node: Node | null,
  text: string | undefined,
  path: string,
  what: string,
  one: (node: Node | null, text: string, path: string) => T | undefined,
): T[] | undefined {
  if (isSeq(node) && text === undefined) {
    if (node.items.length === 0) {
      ctx.err(node, path, `expected ${what} or a non-empty list of them`);
      return undefined;
    }
    const out: T[] = [];
    let ok = true;
    node.items.forEach((item, i) => {
      const n = ctx.resolve(item);
      const p = `${path}[${i}]`;
      const v = scalarValue(ctx, n, p);
      if (typeof v === 'string' && v.startsWith('!')) {
        ctx.err(n, p, 'negate the whole list (`{ not: [...] }`), not one item');
        ok = false;
        return;
      }
      const t = typeof v === 'string' || typeof v === 'number' ? String(v) : undefined;
      if (t === undefined) {
        if (v !== undefined || !ctx.issues.some((x) => x.path === p)) ctx.err(n, p, `expected ${what}`);
        ok = false;
        return;
      }
      const r = one(n, t, p);
      if (r === undefined) ok = false;
      else out.push(r);
    });
    return ok ? out : undefined;
  }
  const t = textOf(ctx, node, text, path, what);
  if (t === undefined) return undefined;
  // Also accept a comma-separated list in one string: "80, 443".
  const parts = t.split(',').map((p) => p.trim());
  const out: T[] = [];
  for (const p of parts) {
    const r = one(node, p, path);
    if (r === undefined) return undefined;
    out.push(r);
  }
  return out;
}

function parseRule(ctx: Ctx, node: Node | null, index: number): PolicyRule | undefined {
  const path = `rules[${index}]`;
  if (!isMap(node)) {
    ctx.err(node, path, 'a rule must be a mapping (name: …, chain: …, action: …)');
    return undefined;
  }
  const before = ctx.issues.length;
  const fields = new Map<string, Node | null>();
  const keyPos: Record<string, SourcePos> = {};
  for (const pair of node.items) {
    const key = isScalar(pair.key) ? pair.key.value : undefined;
    if (typeof key !== 'string') {
      ctx.err(pair.key as Node, path, 'rule keys must be plain strings');
      continue;
    }
    if (!(RULE_KEYS as readonly string[]).includes(key)) {
      const suggestion = closest(key, RULE_KEYS);
      ctx.err(
        pair.key as Node,
        `${path}.${key}`,
        `unknown key "${key}"${suggestion ? ` (did you mean "${suggestion}"?)` : ''}; allowed: ${RULE_KEYS.join(', ')}`,
      );
      continue;
    }
    if (fields.has(key)) {
      ctx.err(pair.key as Node, `${path}.${key}`, `duplicate key "${key}"`);
      continue;
    }
    const value = ctx.resolve(pair.value);
    fields.set(key, value);
    keyPos[key] = ctx.pos(value ?? (pair.key as Node));
  }
  const get = (k: (typeof RULE_KEYS)[number]): Node | null | undefined => fields.get(k);
  const p = (k: string): string => `${path}.${k}`;

  let name: string | undefined;
  if (!fields.has('name')) ctx.err(node, path, 'missing "name"');
  else {
    name = expectString(ctx, get('name') ?? null, p('name'), 'a rule name');
    const first = name === undefined ? undefined : ctx.names.get(name);
    if (name !== undefined && first !== undefined) {
      ctx.err(get('name'), p('name'), `duplicate rule name "${name}" (first used on line ${first})`);
    } else if (name !== undefined) ctx.names.set(name, ctx.pos(node).line);
    if (name !== undefined && !RULE_NAME.test(name)) {
      ctx.err(
        get('name'),
        p('name'),
        `rule name "${name}" must match ${RULE_NAME.source} (letters, digits, _ . -)`,
      );
    }
  }
  let chain: Chain | undefined;
  if (!fields.has('chain')) ctx.err(node, path, `missing "chain" (${CHAINS.join(', ')})`);
  else chain = expectOneOf(ctx, get('chain') ?? null, p('chain'), CHAINS);
  let action: PolicyRule['action'] | undefined;
  if (!fields.has('action')) ctx.err(node, path, `missing "action" (${ACTIONS.join(', ')})`);
  else action = expectOneOf(ctx, get('action') ?? null, p('action'), ACTIONS);

  const rule: Partial<PolicyRule> = { counter: false, pos: ctx.pos(node), keyPos };
  if (fields.has('description')) {
    const d = expectString(ctx, get('description') ?? null, p('description'), 'a text');
    if (d !== undefined) rule.description = d;
  }
  if (fields.has('counter')) {
    const c = scalarValue(ctx, get('counter') ?? null, p('counter'));
    if (typeof c === 'boolean') rule.counter = c;
    else ctx.err(get('counter'), p('counter'), 'expected true or false');
  }
  if (fields.has('log')) {
    const l = get('log') ?? null;
    const lv = isMap(l) ? undefined : scalarValue(ctx, l, p('log'));
    const defaultPrefix = `seng ${name ?? 'rule'}: `.slice(0, 127);
    if (typeof lv === 'boolean') {
      if (lv) rule.log = { prefix: defaultPrefix, level: 'warn' };
    } else if (isMap(l)) {
      let prefix = defaultPrefix;
      let level: LogLevel = 'warn';
      for (const pair of l.items) {
        const k = isScalar(pair.key) ? pair.key.value : undefined;
        const v = ctx.resolve(pair.value);
        if (k === 'prefix') {
          const s = expectString(ctx, v, p('log.prefix'), 'a log prefix');
          if (s !== undefined) {
            // iptables LOG allows 29 characters; nft 127. Stay within what both accept.
            if (s.length > 29 || /["\\\n]/.test(s)) {
              ctx.err(
                v,
                p('log.prefix'),
                'a log prefix has at most 29 characters and no quotes or backslashes',
              );
            } else prefix = s;
          }
        } else if (k === 'level') {
          const s = expectOneOf(ctx, v, p('log.level'), LOG_LEVELS);
          if (s) level = s;
        } else ctx.err(pair.key as Node, p('log'), `unknown log option ${JSON.stringify(k)} (prefix, level)`);
      }
      rule.log = { prefix: prefix.slice(0, 29), level };
    } else ctx.err(l, p('log'), 'expected true, false, or { prefix: …, level: … }');
    if (rule.log && rule.log.prefix.length > 29) rule.log.prefix = rule.log.prefix.slice(0, 29);
  }

  const str =
    (what: string, re: RegExp, reason: string) => (n: Node | null, t: string | undefined, pp: string) => {
      const s = textOf(ctx, n, t, pp, what);
      if (s === undefined) return undefined;
      if (!re.test(s)) {
        ctx.err(n, pp, `"${s}" ${reason}`);
        return undefined;
      }
      return s;
    };
  const appRef = str(
    'an app name or a 64-hex measurement',
    APP_NAME,
    'is not an app name (database name) or a 64-hex MRENCLAVE',
  );
  const catRef = str(
    'a category name',
    CATEGORY_NAME,
    'is not a category name (1 to 20 characters of A-Z a-z 0-9 _ . -, as the database and the kernel module hold them)',
  );
  const host = (n: Node | null, t: string | undefined, pp: string): Cidr | undefined => {
    const s = textOf(ctx, n, t, pp, 'an IPv4 address or CIDR');
    return s === undefined ? undefined : parseCidrText(ctx, n, s, pp);
  };
  const iface = str(
    'an interface name',
    IFACE_NAME,
    'is not an interface name (at most 15 characters, optional trailing +)',
  );
  const addrs = (n: Node | null, t: string | undefined, pp: string): Cidr[] | undefined =>
    parseList(ctx, n, t, pp, 'an IPv4 address or CIDR', (nn, tt, ppp) => parseCidrText(ctx, nn, tt, ppp));
  const ports = (n: Node | null, t: string | undefined, pp: string): PortRange[] | undefined =>
    parseList(ctx, n, t, pp, 'a port or range', (nn, tt, ppp) => parsePortText(ctx, nn, tt, ppp));
  const proto = (n: Node | null, t: string | undefined, pp: string): Protocol | undefined => {
    const s = textOf(ctx, n, t, pp, 'a protocol');
    if (s === undefined) return undefined;
    if ((PROTOCOLS as readonly string[]).includes(s.toLowerCase())) return s.toLowerCase() as Protocol;
    ctx.err(n, pp, `unknown protocol "${s}": expected one of ${PROTOCOLS.join(', ')}`);
    return undefined;
  };

  if (fields.has('state')) {
    const n = get('state') ?? null;
    const sv = isSeq(n) ? undefined : scalarValue(ctx, n, p('state'));
    if (isMap(n) || (typeof sv === 'string' && sv.trim().startsWith('!'))) {
      ctx.err(n, p('state'), 'a connection state cannot be negated: list the states that should match');
    } else {
      const states = parseList(ctx, n, undefined, p('state'), 'a connection state', (nn, tt, pp) => {
        const s = tt.trim().toLowerCase();
        if ((CT_STATES as readonly string[]).includes(s)) return s as CtState;
        ctx.err(nn, pp, `unknown connection state "${tt}": expected one of ${CT_STATES.join(', ')}`);
        return undefined;
      });
      if (states) rule.state = CT_STATES.filter((s) => states.includes(s));
    }
  }

  const neg = <T>(
    key: (typeof RULE_KEYS)[number],
    parse: (n: Node | null, t: string | undefined, pp: string) => T | undefined,
  ) => (fields.has(key) ? parseNegatable(ctx, get(key) ?? null, p(key), parse) : undefined);

  const srcApp = neg('src-app', appRef);
  const dstApp = neg('dst-app', appRef);
  const srcCat = neg('src-cat', catRef);
  const dstCat = neg('dst-cat', catRef);
  const srcHost = neg('src-host', host);
  const dstHost = neg('dst-host', host);
  const protocol = neg('protocol', proto);
  const srcAddr = neg('src-addr', addrs);
  const dstAddr = neg('dst-addr', addrs);
  const sport = neg('sport', ports);
  const dport = neg('dport', ports);
  const inIface = neg('in-iface', iface);
  const outIface = neg('out-iface', iface);
  Object.assign(rule, {
    ...(srcApp && { srcApp }),
    ...(dstApp && { dstApp }),
    ...(srcCat && { srcCat }),
    ...(dstCat && { dstCat }),
    ...(srcHost && { srcHost }),
    ...(dstHost && { dstHost }),
    ...(protocol && { protocol }),
    ...(srcAddr && { srcAddr }),
    ...(dstAddr && { dstAddr }),
    ...(sport && { sport }),
    ...(dport && { dport }),
    ...(inIface && { inIface }),
    ...(outIface && { outIface }),
  });

  // Cross-field checks.
  if ((fields.has('sport') || fields.has('dport')) && protocol !== undefined) {
    if (protocol.negate || protocol.value === 'icmp') {
      ctx.err(get('protocol'), p('protocol'), 'ports need `protocol: tcp` or `protocol: udp` (not negated)');
    }
  } else if ((fields.has('sport') || fields.has('dport')) && !fields.has('protocol')) {
    ctx.err(
      get('sport') ?? get('dport'),
      fields.has('sport') ? p('sport') : p('dport'),
      'ports need `protocol: tcp` or `protocol: udp`',
    );
  }
  if (chain === 'input' && fields.has('out-iface')) {
    ctx.err(get('out-iface'), p('out-iface'), 'the input chain has no output interface (use in-iface)');
  }
  if (chain === 'output' && fields.has('in-iface')) {
    ctx.err(get('in-iface'), p('in-iface'), 'the output chain has no input interface (use out-iface)');
  }
  for (const [list, key] of [
    [sport, 'sport'],
    [dport, 'dport'],
  ] as const) {
    if (list && list.value.length > 15) ctx.err(get(key), p(key), 'at most 15 ports or ranges per rule');
  }
  if (ctx.issues.length > before || name === undefined || chain === undefined || action === undefined)
    return undefined;
  return { ...(rule as PolicyRule), name, chain, action };
}

/** Parses and validates policy text. `source` names the file in messages. */
export function parsePolicy(text: string, source = '<policy>'): Policy {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const ctx = new Ctx(doc, lc);
  for (const e of [...doc.errors, ...doc.warnings]) {
    const lp = e.linePos?.[0] ?? lc.linePos(e.pos[0]);
    ctx.issues.push({ line: lp.line, col: lp.col, path: '', message: e.message.split('\n')[0] ?? e.message });
  }
  if (ctx.issues.length) throw new PolicyError(source, ctx.issues);

  const root = ctx.resolve(doc.contents);
  if (!isMap(root))
    throw new PolicyError(source, [
      { line: 1, col: 1, path: '', message: 'a policy is a mapping with `version: 1` and `rules: [...]`' },
    ]);
  const top = new Map<string, Node | null>();
  for (const pair of root.items) {
    const key = isScalar(pair.key) ? pair.key.value : undefined;
    if (typeof key !== 'string' || !(TOP_KEYS as readonly string[]).includes(key)) {
      ctx.err(
        pair.key as Node,
        String(key),
        `unknown top-level key ${JSON.stringify(key)}; allowed: ${TOP_KEYS.join(', ')}`,
      );
      continue;
    }
    top.set(key, ctx.resolve(pair.value));
  }
  const policy: Policy = {
    version: 1,
    table: 'seng',
    defaults: { input: 'accept', forward: 'accept', output: 'accept' },
    rules: [],
    source,
  };
  const version = top.get('version');
  if (!top.has('version')) ctx.err(root, 'version', 'missing `version: 1`');
  else if (scalarValue(ctx, version ?? null, 'version') !== 1)
    ctx.err(version, 'version', 'unsupported version: this seng reads `version: 1`');
  if (top.has('table')) {
    const t = expectString(ctx, top.get('table') ?? null, 'table', 'a table name');
    if (t !== undefined && !TABLE_NAME.test(t))
      ctx.err(top.get('table'), 'table', `table name "${t}" must match ${TABLE_NAME.source}`);
    else if (t !== undefined) policy.table = t;
  }
  if (top.has('defaults')) {
    const d = top.get('defaults') ?? null;
    if (!isMap(d)) ctx.err(d, 'defaults', 'expected a mapping like { input: accept, forward: drop }');
    else {
      for (const pair of d.items) {
        const k = isScalar(pair.key) ? pair.key.value : undefined;
        if (typeof k !== 'string' || !(CHAINS as readonly string[]).includes(k)) {
          ctx.err(
            pair.key as Node,
            `defaults.${String(k)}`,
            `unknown chain ${JSON.stringify(k)}; allowed: ${CHAINS.join(', ')}`,
          );
          continue;
        }
        const v = expectOneOf(ctx, ctx.resolve(pair.value), `defaults.${k}`, ['accept', 'drop'] as const);
        if (v) policy.defaults[k as Chain] = v;
      }
    }
  }
  if (top.has('established')) {
    const e = top.get('established') ?? null;
    const v = scalarValue(ctx, e, 'established');
    if (v === 'accept') {
      // Replies and related traffic (ICMP errors, FTP data) of connections some rule
      // accepted, first in every chain: what a drop-by-default policy otherwise needs
      // hand-written reply rules for.
      const pos = ctx.pos(e);
      for (const chain of CHAINS) {
        const name = `established-${chain}`;
        ctx.names.set(name, pos.line);
        policy.rules.push({
          name,
          description: 'replies and related traffic of accepted connections (established: accept)',
          chain,
          action: 'accept',
          counter: false,
          state: [...ESTABLISHED_STATES],
          pos,
          keyPos: {},
        });
      }
    } else if (v !== false) {
      ctx.err(
        e,
        'established',
        'expected `accept` (accept replies of accepted connections first in every chain) or false',
      );
    }
  }
  const rulesNode = top.get('rules');
  if (!top.has('rules'))
    ctx.err(root, 'rules', 'missing `rules:` (a list of rules; may be empty: `rules: []`)');
  else if (rulesNode !== null && !isSeq(rulesNode)) ctx.err(rulesNode, 'rules', 'expected a list of rules');
  else if (rulesNode) {
    rulesNode.items.forEach((item, i) => {
      const r = parseRule(ctx, ctx.resolve(item), i);
      if (r) policy.rules.push(r);
    });
  }
  if (ctx.issues.length) throw new PolicyError(source, ctx.issues);
  return policy;
}

/** Largest policy file read (1 MiB by default; SENG_POLICY_MAX_BYTES overrides it). */
export const DEFAULT_POLICY_MAX_BYTES = 1024 * 1024;

export function policyMaxBytes(env: NodeJS.ProcessEnv = process.env): number {
  const v = env.SENG_POLICY_MAX_BYTES;
  if (v === undefined || v === '') return DEFAULT_POLICY_MAX_BYTES;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n <= 0)
    throw new InputError(
      `SENG_POLICY_MAX_BYTES must be a positive number of bytes, got ${JSON.stringify(v)}`,
    );
  return n;
}

function tooLarge(path: string, max: number): SengError {
  return new InputError(
    `policy file ${path} is larger than ${max} bytes`,
    'a policy of that size is almost certainly not the intended file; raise SENG_POLICY_MAX_BYTES if it is',
  );
}

/**
 * Reads at most `max` bytes: the size is checked before reading (a regular file), and
 * the read stops one byte past the limit (a pipe or device that reports no size), so a
 * huge or endless file never fills memory.
 */
function readCapped(path: string, max: number): string {
  const fd = openSync(path, 'r');
  try {
    if (fstatSync(fd).size > max) throw tooLarge(path, max);
    const buf = Buffer.alloc(Math.min(max + 1, 64 * 1024));
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      total += n;
      if (total > max) throw tooLarge(path, max);
      chunks.push(Buffer.from(buf.subarray(0, n)));
    }
    return Buffer.concat(chunks).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

export function loadPolicyFile(path: string, opts: { maxBytes?: number } = {}): Policy {
  const max = opts.maxBytes ?? policyMaxBytes();
  let text: string;
  try {
    text = readCapped(path, max);
  } catch (e) {
    if (e instanceof SengError) throw e;
    throw new EnvironmentError(
      'ENOPOLICY',
      `cannot read policy file ${path}: ${errorMessage(e)}`,
      'check the path',
      e,
    );
  }
  return parsePolicy(text, path);
}
