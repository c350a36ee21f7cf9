/**
 * The configuration file of `seng serve --config FILE` (YAML): one key per serve option,
 * named like the long flag (`idle-timeout: 120`), plus `listen` and `port` for the two
 * positional arguments. Flags given on the command line override the file.
 *
 *   listen: 10.0.0.1
 *   port: 12345
 *   cert: [/etc/seng/gw-rsa.crt, /etc/seng/gw-ec.crt]
 *   key: [/etc/seng/gw-rsa.key, /etc/seng/gw-ec.key]
 *   db: /var/lib/seng/nf.db
 *   nft: true
 *   policy: /etc/seng/policy.yaml
 *
 * Every problem is reported with its line and column; parsing never stops at the first.
 */
import { readFileSync, statSync } from 'node:fs';
import { LineCounter, isMap, isScalar, isSeq, parseDocument, type Node } from 'yaml';
import { SengError } from '../util/errors.js';
import { isIpv4 } from '../util/ipv4.js';
import { isPostgresUrl } from '../pg/connection.js';

type KeySpec =
  | { type: 'string' }
  | { type: 'boolean' }
  | { type: 'ipv4' }
  | { type: 'int'; min: number; max: number }
  | { type: 'strings' }
  | { type: 'enum'; options: readonly string[] };

/** What the file may set; kept equal to the flags of `seng serve` (a unit test checks). */
export const SERVE_FILE_KEYS = {
  listen: { type: 'ipv4' },
  port: { type: 'int', min: 1, max: 65534 },
  db: { type: 'string' },
  netfilter: { type: 'boolean' },
  nft: { type: 'boolean' },
  policy: { type: 'string' },
  'nft-table': { type: 'string' },
  cert: { type: 'strings' },
  key: { type: 'strings' },
  'ias-root': { type: 'string' },
  'sgx-root': { type: 'string' },
  'allow-debug': { type: 'boolean' },
  'allow-status': { type: 'strings' },
  'min-isv-svn': { type: 'int', min: 0, max: 65535 },
  'require-signer': { type: 'boolean' },
  tun: { type: 'string' },
  'tun-existing': { type: 'boolean' },
  control: { type: 'string' },
  'idle-timeout': { type: 'int', min: 1, max: 7 * 86400 },
  'setup-timeout': { type: 'int', min: 1, max: 600 },
  'ack-tries': { type: 'int', min: 1, max: 20 },
  'max-sessions': { type: 'int', min: 1, max: 1_000_000 },
  'max-handshakes': { type: 'int', min: 1, max: 65536 },
  shadow: { type: 'boolean' },
  'shadow-interface': { type: 'string' },
  'shadow-backend': { type: 'enum', options: ['nft', 'iptables'] },
  metrics: { type: 'string' },
  'lease-db': { type: 'string' },
  'lease-retention': { type: 'int', min: 1, max: 36500 },
  registry: { type: 'string' },
  'gateway-id': { type: 'string' },
  'lease-ttl': { type: 'int', min: 1, max: 3600 },
  'log-level': { type: 'enum', options: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] },
} as const satisfies Record<string, KeySpec>;

export type ServeFileKey = keyof typeof SERVE_FILE_KEYS;
export type ServeFileOptions = Partial<Record<ServeFileKey, string | number | boolean | string[]>>;

export interface ConfigIssue {
  line: number;
  column: number;
  /** The key the problem is about ('' for the document as a whole). */
  key: string;
  message: string;
}

export interface ParsedConfig {
  options: ServeFileOptions;
  issues: ConfigIssue[];
}

/** Option pairs that only make sense together, checked as the serve flags do. */
const DEPENDS_ON: ReadonlyArray<[ServeFileKey, ServeFileKey]> = [
  ['netfilter', 'db'],
  ['policy', 'nft'],
];

/** A config file bigger than this is the wrong file. */
const MAX_CONFIG_BYTES = 1 << 20;

export class ConfigFileError extends SengError {
  constructor(
    readonly file: string,
    readonly issues: ConfigIssue[],
  ) {
    super(
      'ECONFIG',
      `${file} is not a valid seng configuration:\n` +
        issues.map((i) => `  ${file}:${i.line}:${i.column}: ${i.message}`).join('\n'),
      { hint: `check it with: seng config check ${file}` },
    );
  }
}

/** Parses and validates configuration text; `issues` is empty when it is valid. */
export function parseServeConfig(text: string): ParsedConfig {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const issues: ConfigIssue[] = [];
  const at = (node: Node | null | undefined, key: string, message: string) => {
    const pos = lc.linePos(node?.range?.[0] ?? 0);
    issues.push({ line: pos.line, column: pos.col, key, message });
  };
  for (const e of [...doc.errors, ...doc.warnings]) {
    const pos = e.linePos?.[0] ?? lc.linePos(e.pos[0]);
    issues.push({ line: pos.line, column: pos.col, key: '', message: e.message.split('\n')[0] ?? e.message });
  }
  const options: ServeFileOptions = {};
  if (issues.length > 0) return { options, issues };
  const root = doc.contents;
  if (root === null) return { options, issues }; // an empty file sets nothing
  if (!isMap(root)) {
    at(root, '', 'the configuration is a mapping of serve options, e.g. `listen: 10.0.0.1`');
    return { options, issues };
  }
  const nodes = new Map<ServeFileKey, Node>();
  for (const pair of root.items) {
    const keyNode = pair.key as Node | null;
    const key = isScalar(keyNode) ? keyNode.value : undefined;
    if (typeof key !== 'string' || !Object.hasOwn(SERVE_FILE_KEYS, key)) {
      at(
        keyNode,
        String(key),
        `unknown option ${JSON.stringify(key)}; allowed: ${Object.keys(SERVE_FILE_KEYS).join(', ')}`,
      );
      continue;
    }
    const name = key as ServeFileKey;
    const valueNode = (pair.value ?? keyNode) as Node;
    nodes.set(name, valueNode);
    const value = convert(SERVE_FILE_KEYS[name], pair.value as Node | null, (node, msg) =>
      at(node ?? valueNode, name, `${name}: ${msg}`),
    );
    if (value !== undefined) options[name] = value;
  }
  for (const [key, needs] of DEPENDS_ON) {
    if (options[key] !== undefined && options[key] !== false && !options[needs])
      at(nodes.get(key), key, `${key} needs ${needs} (as --${key} needs --${needs})`);
  }
  // A PostgreSQL db is the registry too unless registry says otherwise (docs/fleet.md).
  const pgDb = typeof options.db === 'string' && isPostgresUrl(options.db);
  if (
    options['gateway-id'] !== undefined &&
    (options.registry === undefined ? !pgDb : options.registry === 'none')
  )
    at(
      nodes.get('gateway-id'),
      'gateway-id',
      'gateway-id needs a registry: registry (a postgres:// URL) or a postgres:// db (as --gateway-id does)',
    );
  if (options.netfilter === true && options.nft === true)
    at(nodes.get('nft'), 'nft', 'nft and netfilter exclude each other: choose one enforcement mode');
  if (Array.isArray(options.cert) && Array.isArray(options.key) && options.cert.length !== options.key.length)
    at(
      nodes.get('key'),
      'key',
      `${options.cert.length} cert but ${options.key.length} key: one key per cert, in the same order`,
    );
  if (options.listen === '0.0.0.0')
    at(nodes.get('listen'), 'listen', 'listen: 0.0.0.0 is refused; give the address clients reach');
  return { options, issues };
}

type Report = (node: Node | null | undefined, message: string) => void;

function convert(
  spec: KeySpec,
  node: Node | null,
  report: Report,
): string | number | boolean | string[] | undefined {
  if (spec.type === 'strings') {
    // A single string is accepted for a one-element list (cert: gw.crt).
    if (isSeq(node)) {
      const out: string[] = [];
      for (const item of node.items) {
        const s = scalarString(item as Node | null, report);
        if (s !== undefined) out.push(s);
      }
      if (node.items.length === 0) report(node, 'must not be an empty list');
      return out.length === node.items.length ? out : undefined;
    }
    const s = scalarString(node, report, 'a string or a list of strings');
    return s === undefined ? undefined : [s];
  }
  if (!isScalar(node) || node.value === null) {
    report(node, `expected ${describe(spec)}`);
    return undefined;
  }
  const v = node.value;
  switch (spec.type) {
    case 'boolean':
      if (typeof v === 'boolean') return v;
      break;
    case 'int':
      if (typeof v === 'number' && Number.isSafeInteger(v)) {
        if (v >= spec.min && v <= spec.max) return v;
        report(node, `must be from ${spec.min} to ${spec.max}, got ${v}`);
        return undefined;
      }
      break;
    case 'ipv4':
      if (typeof v === 'string' && isIpv4(v)) return v;
      break;
    case 'enum':
      if (typeof v === 'string' && spec.options.includes(v)) return v;
      break;
    case 'string':
      if (typeof v === 'string' && v.length > 0) return v;
      break;
  }
  report(node, `expected ${describe(spec)}, got ${JSON.stringify(v)}`);
  return undefined;
}

function scalarString(node: Node | null, report: Report, what = 'a string'): string | undefined {
  if (isScalar(node) && typeof node.value === 'string' && node.value.length > 0) return node.value;
  report(node, `expected ${what}`);
  return undefined;
}

function describe(spec: KeySpec): string {
  switch (spec.type) {
    case 'boolean':
      return 'true or false';
    case 'int':
      return `an integer from ${spec.min} to ${spec.max}`;
    case 'ipv4':
      return 'an IPv4 address';
    case 'enum':
      return `one of ${spec.options.join(', ')}`;
    case 'strings':
      return 'a list of strings';
    case 'string':
      return 'a non-empty string';
  }
}

/** Reads and validates a configuration file; throws {@link ConfigFileError} listing every problem. */
export function loadServeConfig(file: string): ServeFileOptions {
  const { options, issues } = parseServeConfig(readConfigText(file));
  if (issues.length > 0) throw new ConfigFileError(file, issues);
  return options;
}

export function readConfigText(file: string): string {
  let size: number;
  try {
    const st = statSync(file);
    if (!st.isFile())
      throw new ConfigFileError(file, [{ line: 1, column: 1, key: '', message: 'not a regular file' }]);
    size = st.size;
  } catch (err) {
    if (err instanceof SengError) throw err;
    throw new ConfigReadError(file, err);
  }
  if (size > MAX_CONFIG_BYTES)
    throw new ConfigFileError(file, [
      { line: 1, column: 1, key: '', message: `too large (${size} bytes) for a configuration file` },
    ]);
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigReadError(file, err);
  }
}

export class ConfigReadError extends SengError {
  constructor(file: string, err: unknown) {
    super(
      'ECONFIG_READ',
      `cannot read configuration file ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      {
        hint: 'give the path of a readable YAML file (default for the service: /etc/seng/seng.yaml)',
      },
    );
  }
}

/** Options whose new value a SIGHUP applies to the running gateway (new sessions for timeouts). */
export const RELOADABLE_KEYS: ReadonlySet<ServeFileKey> = new Set([
  'policy',
  'idle-timeout',
  'setup-timeout',
  'ack-tries',
  'log-level',
]);

export interface ConfigChange {
  key: ServeFileKey;
  from: unknown;
  to: unknown;
}

/** The options whose value differs between two effective configurations. */
export function diffOptions(before: ServeFileOptions, after: ServeFileOptions): ConfigChange[] {
  const changes: ConfigChange[] = [];
  for (const key of Object.keys(SERVE_FILE_KEYS) as ServeFileKey[]) {
    if (JSON.stringify(before[key]) !== JSON.stringify(after[key]))
      changes.push({ key, from: before[key], to: after[key] });
  }
  return changes;
}

/**
 * The effective options: defaults, then the file, then what the command line gave
 * explicitly (flags override the file).
 */
export function mergeOptions(
  defaults: ServeFileOptions,
  file: ServeFileOptions,
  commandLine: ServeFileOptions,
): ServeFileOptions {
  const out: ServeFileOptions = { ...defaults };
  for (const layer of [file, commandLine]) {
    for (const [k, v] of Object.entries(layer)) if (v !== undefined) out[k as ServeFileKey] = v;
  }
  return out;
}
