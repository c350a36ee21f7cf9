import { Flags } from '@oclif/core';
import { readFileSync, statSync } from 'node:fs';
import { SengCommand } from '../base.js';
import { ipv4Arg, tunnelPortArg, usageError } from '../usage.js';
import { InputError, errorMessage } from '../../util/errors.js';
import { startGateway, type ServeConfig } from '../../gateway/serve.js';
import { DEFAULT_CONTROL_PATH } from '../../gateway/control.js';
import { checkInterfaceName } from '../../shadow/rules.js';
import { interfaceNameProblem } from '../../util/names.js';
import { tableFlag } from '../policy-flags.js';
import { parseListenAddress } from '../../audit/metrics.js';
import { DEFAULT_LEASE_DB, DEFAULT_LEASE_RETENTION_DAYS } from '../../audit/lease-store.js';
import {
  RELOADABLE_KEYS,
  SERVE_FILE_KEYS,
  diffOptions,
  loadServeConfig,
  mergeOptions,
  type ServeFileKey,
  type ServeFileOptions,
} from '../../gateway/config-file.js';
import type { Gateway } from '../../gateway/gateway.js';
import type { Enforcer } from '../../enforce/types.js';
import { NftEnforcer } from '../../enforce/nft.js';
import type { Logger } from '../../util/log.js';
import { hostname } from 'node:os';
import { isPostgresUrl, redactUrl } from '../../pg/index.js';

export default class Serve extends SengCommand<typeof Serve> {
  static override summary =
    'Run the SENG gateway: attest enclaves, assign enclave IPs, tunnel their packets into a TUN interface.';
  static override description = `Listens for DTLS on PORT (enclave → gateway) and PORT+1 (gateway → enclave) at IPV4.
Enclaves are attested from their RA-TLS client certificates and admitted by the database (-d): a vanilla database is an allowlist with host and enclave subnets; with -n a netfilter database supplies categories for the seng kernel module. Without -d every attested enclave is admitted into 192.168.28.0/24.
Every option can also come from a YAML file (--config; keys are the long flag names, plus listen and port); flags given on the command line override it. Check a file with seng config check.
Runs until SIGINT/SIGTERM (graceful: every session is closed and its IP and firewall state released). SIGHUP re-reads the database and the policy, and with --config the file: policy, timeouts (for new sessions) and log-level take effect, other changes are logged as needing a restart (docs/operations.md).
With -d postgres://… the gateway follows policy changes live (LISTEN/NOTIFY) and, unless --registry names another database or "none", leases enclave IPs in the same database's enclave registry, so every gateway started with the same -d URL hands out distinct IPs (docs/fleet.md).
With -s (ShadowServer) an enclave can make a listening TCP port reachable at its untrusted host's IP: the gateway reserves the port with the socket blocker on that host (seng blocker) and DNATs <host IP>:port to the enclave (docs/shadow.md).`;
  static override examples = [
    '<%= config.bin %> serve --cert gw.crt --key gw.key -d policy.db 10.0.0.1 12345',
    '<%= config.bin %> serve --cert gw-rsa.crt --key gw-rsa.key --cert gw-ec.crt --key gw-ec.key -n -d nf.db 10.0.0.1 12345',
    '<%= config.bin %> serve --cert gw.crt --key gw.key --nft --policy rules/examples/spec-sample.yaml -d nf.db 10.0.0.1 12345',
    '<%= config.bin %> serve --cert gw.crt --key gw.key -d policy.db -s --shadow-interface eth1 10.0.0.1 12345',
    '<%= config.bin %> serve --config /etc/seng/seng.yaml',
  ];
  static override enableJsonFlag = false;
  static override args = {
    ipv4: ipv4Arg('IPv4 address to listen on (not 0.0.0.0).', '127.0.0.1'),
    port: tunnelPortArg('Receive-tunnel UDP port P (1-65534); the send tunnel uses P+1.'),
  };
  static override flags = {
    config: Flags.string({
      char: 'c',
      summary: 'YAML configuration file with serve options (flags override it); see seng config check.',
    }),
    db: Flags.string({
      char: 'd',
      summary: 'Policy store: SQLite file or postgres:// URL (vanilla; netfilter with -n).',
      env: 'SENG_DB',
    }),
    netfilter: Flags.boolean({
      char: 'n',
      summary: 'Netfilter-extension mode: feed the seng kernel module (needs -d).',
    }),
    nft: Flags.boolean({
      summary: 'Enforce per-app policy with nftables sets (no kernel module needed).',
    }),
    policy: Flags.string({
      summary: 'Policy file to compile and apply with --nft (see rules/).',
    }),
    'nft-table': tableFlag({ summary: 'nftables table owned by seng.', default: 'seng' }),
    cert: Flags.string({
      summary:
        'Server certificate (PEM); repeat for RSA and ECDSA identities (required, here or in --config).',
      multiple: true,
      multipleNonGreedy: true,
    }),
    key: Flags.string({
      summary: 'Private key (PEM) of each --cert, in the same order (required, here or in --config).',
      multiple: true,
      multipleNonGreedy: true,
    }),
    'ias-root': Flags.string({
      summary: 'Trust anchor for EPID/IAS reports (default: Intel report-signing CA).',
    }),
    'sgx-root': Flags.string({ summary: 'Trust anchor for DCAP PCK chains (default: Intel SGX Root CA).' }),
    'allow-debug': Flags.boolean({ summary: 'Admit DEBUG enclaves (never in production).' }),
    'allow-status': Flags.string({
      summary: 'Also accept this quote/TCB status (repeatable), e.g. GROUP_OUT_OF_DATE.',
      multiple: true,
      multipleNonGreedy: true,
    }),
    'min-isv-svn': Flags.integer({ summary: 'Minimum ISV SVN.', min: 0, max: 65535 }),
    'require-signer': Flags.boolean({
      summary: "Also require the database's mr_signer to match (the original never checked).",
    }),
    tun: Flags.string({ summary: 'TUN interface name.', default: 'tunFA' }),
    'tun-existing': Flags.boolean({
      summary:
        'Require a TUN device an admin created (ip tuntap add …); without this flag seng attaches to one if it exists, else creates it.',
    }),
    control: Flags.string({
      summary: 'Control socket for seng status / seng kick.',
      default: DEFAULT_CONTROL_PATH,
    }),
    'idle-timeout': Flags.integer({
      summary: 'Seconds without a packet from an enclave before its session ends.',
      default: 120,
      min: 1,
      max: 7 * 86400,
    }),
    'setup-timeout': Flags.integer({
      summary: 'Seconds allowed for each setup step (handshake, ACK, second session).',
      default: 5,
      min: 1,
      max: 600,
    }),
    'ack-tries': Flags.integer({
      summary: 'How often IpAssignment is sent while waiting for IpAssignACK.',
      default: 3,
      min: 1,
      max: 20,
    }),
    'max-sessions': Flags.integer({
      summary: 'Maximum concurrent DTLS sessions per port.',
      default: 10000,
      min: 1,
      max: 1_000_000,
    }),
    'max-handshakes': Flags.integer({
      summary: 'Maximum concurrent DTLS handshakes per port.',
      default: 256,
      min: 1,
      max: 65536,
    }),
    shadow: Flags.boolean({
      char: 's',
      summary:
        'ShadowServer: let enclaves shadow listening ports at their host IP (TCP 2409 on each enclave gateway IP; see docs/shadow.md).',
    }),
    'shadow-interface': Flags.string({
      summary: 'Outside interface whose traffic to <host IP>:port is DNATed to the enclave ("any" for all).',
      default: 'eth0',
    }),
    'shadow-backend': Flags.option({
      options: ['nft', 'iptables'] as const,
      summary:
        "Shadow DNAT rules: seng's own nftables table, or the original's SENG_output/SENG_prerouting iptables chains.",
      default: 'nft' as const,
    })(),
    metrics: Flags.string({
      summary:
        'Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9464; docs/operations.md).',
      helpValue: 'HOST:PORT',
    }),
    'lease-db': Flags.string({
      summary: 'Lease history (who held which enclave IP when; seng leases); "none" keeps none.',
      default: DEFAULT_LEASE_DB,
      env: 'SENG_LEASE_DB',
    }),
    'lease-retention': Flags.integer({
      summary: 'Days ended leases are kept in the lease history (pruned at start and daily).',
      default: DEFAULT_LEASE_RETENTION_DAYS,
      min: 1,
      max: 36500,
    }),
    registry: Flags.string({
      summary:
        'Shared enclave registry (postgres://…; default: the -d database when it is postgres://, "none" for no registry): enclave IPs are leased fleet-wide, unique across gateways (docs/fleet.md).',
      env: 'SENG_REGISTRY',
      helpValue: 'URL',
    }),
    'gateway-id': Flags.string({
      summary: "This gateway's name in the registry (default: HOSTNAME:PORT); keep it across restarts.",
    }),
    'lease-ttl': Flags.integer({
      summary:
        'Seconds without a heartbeat after which other gateways and agents reclaim this gateway’s leases (heartbeat every TTL/3).',
      default: 30,
      min: 1,
      max: 3600,
    }),
  };

  async run(): Promise<void> {
    const commandLine = await this.commandLineOptions();
    const file = this.flags.config;
    let current = effectiveOptions(file ? loadServeConfig(file) : {}, commandLine);
    this.logger.level = current['log-level'] as string;
    const config = buildServeConfig(current);
    if (file) {
      config.onReload = async (running) => {
        current = await reloadConfigFile(file, commandLine, current, running, this.logger);
      };
    }
    const running = await startGateway(config, this.logger);
    await running.closed;
  }

  /** The options given on the command line itself (not defaults), keyed like the file. */
  private async commandLineOptions(): Promise<ServeFileOptions> {
    const { metadata, raw } = await this.parse(Serve, this.argv);
    const flags = this.flags as Record<string, unknown>;
    const out: ServeFileOptions = {};
    for (const key of Object.keys(SERVE_FILE_KEYS) as ServeFileKey[]) {
      if (key === 'listen' || key === 'port') continue;
      const fromDefault = (metadata.flags as Record<string, { setFromDefault?: boolean } | undefined>)[key]
        ?.setFromDefault;
      const v = flags[key];
      if (v !== undefined && fromDefault !== true) out[key] = v as string | number | boolean | string[];
    }
    const args = raw.filter((t) => t.type === 'arg');
    if (args.length >= 1) out.listen = this.args.ipv4;
    if (args.length >= 2) out.port = this.args.port;
    return out;
  }
}

/** Flag defaults, as the file layer's base. */
function flagDefaults(): ServeFileOptions {
  const out: ServeFileOptions = { listen: '127.0.0.1', port: 12345 };
  const flags = Serve.flags as Record<string, { default?: unknown }>;
  for (const key of Object.keys(SERVE_FILE_KEYS) as ServeFileKey[]) {
    const d = flags[key]?.default ?? (Serve.baseFlags as Record<string, { default?: unknown }>)[key]?.default;
    if (d !== undefined && typeof d !== 'function') out[key] = d as string | number | boolean | string[];
  }
  return out;
}

function effectiveOptions(file: ServeFileOptions, commandLine: ServeFileOptions): ServeFileOptions {
  return mergeOptions(flagDefaults(), file, commandLine);
}

/** Typed access to the merged options. */
function opt<T extends string | number | boolean | string[]>(o: ServeFileOptions, key: ServeFileKey): T {
  return o[key] as T;
}

function buildServeConfig(o: ServeFileOptions): ServeConfig {
  const host = opt<string>(o, 'listen');
  if (host === '0.0.0.0') {
    throw new InputError(
      'refusing to listen on 0.0.0.0',
      'the second tunnel must come from the same client IP to the same gateway address; give the address clients reach, e.g. 10.0.0.1',
    );
  }
  const tun = opt<string>(o, 'tun');
  const tunProblem = interfaceNameProblem(tun);
  if (tunProblem) usageError(`--tun: ${tunProblem}`);
  const control = opt<string>(o, 'control');
  if (control.length === 0) usageError('--control needs a socket path');
  // Checked here, not as oclif dependsOn/exclusive: the other option may come from the file.
  if (o.nft && o.netfilter) usageError('--nft and -n/--netfilter exclude each other');
  if (o.netfilter && o.db === undefined) usageError('-n/--netfilter needs -d/--db (here or in --config)');
  if (o.policy !== undefined && !o.nft) usageError('--policy needs --nft (here or in --config)');
  const certs = (o.cert as string[] | undefined) ?? [];
  const keys = (o.key as string[] | undefined) ?? [];
  if (certs.length === 0 || keys.length === 0)
    usageError('serve needs --cert and --key (on the command line or as cert:/key: in --config)');
  if (certs.length !== keys.length) {
    throw new InputError(
      `${certs.length} --cert but ${keys.length} --key`,
      'give one --key per --cert, in the same order',
    );
  }
  const identities = certs.map((certPath, i) => ({
    certPem: readText(certPath, 'certificate'),
    keyPem: readText(keys[i] as string, 'key'),
  }));
  const setupTimeout = opt<number>(o, 'setup-timeout');
  const metrics = o.metrics === undefined ? undefined : metricsAddress(opt<string>(o, 'metrics'));
  const leaseDb = opt<string>(o, 'lease-db');
  if (leaseDb === '') usageError('--lease-db needs a file path (or "none")');
  return {
    host,
    port: opt<number>(o, 'port'),
    identities,
    dbPath: o.db as string | undefined,
    netfilter: o.netfilter === true,
    nft: o.nft
      ? { policyPath: o.policy as string | undefined, table: opt<string>(o, 'nft-table') }
      : undefined,
    attestation: {
      iasRootPath: o['ias-root'] as string | undefined,
      sgxRootPath: o['sgx-root'] as string | undefined,
      allowDebug: o['allow-debug'] === true,
      allowStatus: o['allow-status'] as string[] | undefined,
      minIsvSvn: o['min-isv-svn'] as number | undefined,
    },
    requireSigner: o['require-signer'] === true,
    tun: { name: tun, existing: o['tun-existing'] === true },
    controlPath: control,
    timeouts: {
      idleMs: opt<number>(o, 'idle-timeout') * 1000,
      setupMs: setupTimeout * 1000,
      ackTries: opt<number>(o, 'ack-tries'),
    },
    limits: { maxSessions: opt<number>(o, 'max-sessions'), maxHandshakes: opt<number>(o, 'max-handshakes') },
    ...(metrics ? { metrics } : {}),
    ...registryConfig(o),
    ...(leaseDb === 'none'
      ? {}
      : { leases: { path: leaseDb, retentionDays: opt<number>(o, 'lease-retention') } }),
    ...(o.shadow
      ? {
          shadow: {
            backend: opt<'nft' | 'iptables'>(o, 'shadow-backend'),
            iface: checkInterfaceName(opt<string>(o, 'shadow-interface')),
            stepTimeoutMs: Math.min(5, setupTimeout) * 1000,
          },
        }
      : {}),
  };
}

/**
 * --registry / --gateway-id / --lease-ttl. A PostgreSQL policy store (-d postgres://…) is the
 * registry too unless --registry names another one or "none" (docs/fleet.md).
 */
export function registryUrlOf(o: { registry?: unknown; db?: unknown }): string | undefined {
  const given = o.registry as string | undefined;
  if (given === NO_REGISTRY) return undefined;
  if (given !== undefined) return given;
  const db = o.db as string | undefined;
  return db !== undefined && isPostgresUrl(db) ? db : undefined;
}

/** --registry none: no registry even with a PostgreSQL policy store. */
const NO_REGISTRY = 'none';

function registryConfig(o: ServeFileOptions): Pick<ServeConfig, 'registry'> {
  const url = registryUrlOf(o);
  if (url === undefined) {
    if (o['gateway-id'] !== undefined)
      usageError('--gateway-id needs a registry: --registry URL or -d postgres://… (here or in --config)');
    return {};
  }
  if (!isPostgresUrl(url))
    usageError(`--registry "${redactUrl(url)}" is not a postgres:// or postgresql:// URL`);
  const gatewayId = (o['gateway-id'] as string | undefined) ?? `${hostname()}:${opt<number>(o, 'port')}`;
  if (!/^[\x21-\x7e]{1,200}$/.test(gatewayId))
    usageError('--gateway-id must be 1-200 printable characters without spaces');
  return { registry: { url, gatewayId, leaseTtlMs: opt<number>(o, 'lease-ttl') * 1000 } };
}

/**
 * SIGHUP with --config: re-reads the file and applies what can change while running;
 * everything else is logged as needing a restart. A broken file changes nothing.
 * Returns the options now in force.
 */
async function reloadConfigFile(
  file: string,
  commandLine: ServeFileOptions,
  current: ServeFileOptions,
  running: { gateway: Gateway; enforcer: Enforcer | undefined },
  log: Logger,
): Promise<ServeFileOptions> {
  let next: ServeFileOptions;
  try {
    next = effectiveOptions(loadServeConfig(file), commandLine);
  } catch (err) {
    log.error(
      { event: 'config-reload-failed', config: file, err: errorMessage(err) },
      `configuration ${file} not reloaded (the running configuration stays): ${errorMessage(err)}`,
    );
    return current;
  }
  const changes = diffOptions(current, next);
  const applied = changes.filter((c) => RELOADABLE_KEYS.has(c.key));
  const needsRestart = changes.filter((c) => !RELOADABLE_KEYS.has(c.key));
  const inForce: ServeFileOptions = { ...current };
  for (const c of applied) inForce[c.key] = next[c.key];
  if (applied.some((c) => c.key === 'log-level')) log.level = opt<string>(next, 'log-level');
  if (applied.some((c) => ['idle-timeout', 'setup-timeout', 'ack-tries'].includes(c.key))) {
    const setupMs = opt<number>(next, 'setup-timeout') * 1000;
    const ackTries = opt<number>(next, 'ack-tries');
    running.gateway.setTimeouts({
      idleMs: opt<number>(next, 'idle-timeout') * 1000,
      sendSessionMs: setupMs,
      ackTries,
      ackIntervalMs: Math.max(200, Math.floor(setupMs / ackTries)),
    });
  }
  const policy = applied.find((c) => c.key === 'policy');
  if (policy) {
    // With --nft the new file replaces the rules now (the reload that follows re-reads it);
    // without the nftables backend there is nothing to apply it to.
    const enforcer = running.enforcer;
    if (typeof policy.to === 'string' && enforcer instanceof NftEnforcer) {
      try {
        await enforcer.usePolicyFile(policy.to);
        inForce.policy = policy.to;
      } catch (err) {
        inForce.policy = current.policy;
        log.error(
          { event: 'config-reload-failed', policy: policy.to, err: errorMessage(err) },
          `policy ${policy.to} not applied: ${errorMessage(err)}`,
        );
      }
    } else {
      inForce.policy = current.policy;
      needsRestart.push(policy);
    }
  }
  const appliedNow = applied.filter((c) => inForce[c.key] === next[c.key]);
  log.info(
    {
      event: 'config-reloaded',
      config: file,
      applied: appliedNow,
      needsRestart,
    },
    `configuration ${file} reloaded: ` +
      (changes.length === 0
        ? 'nothing changed'
        : `applied ${appliedNow.map((c) => c.key).join(', ') || 'nothing'}` +
          (needsRestart.length
            ? `; needs a restart to change: ${needsRestart.map((c) => c.key).join(', ')}`
            : '')),
  );
  return inForce;
}

function metricsAddress(value: string): { host: string; port: number } {
  try {
    return parseListenAddress(value);
  } catch (err) {
    usageError((err as Error).message);
  }
}

/** Gateway identities are small PEM files; anything bigger is the wrong file. */
const MAX_PEM_BYTES = 1 << 20;

function readText(path: string, what: string): string {
  const hint = `give the path of the PEM ${what} file`;
  let text: string;
  try {
    const st = statSync(path);
    if (st.isDirectory()) throw new InputError(`${what} ${path} is a directory, not a file`, hint);
    if (st.size > MAX_PEM_BYTES)
      throw new InputError(`${what} ${path} is too large (${st.size} bytes) to be a PEM ${what}`, hint);
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if (err instanceof InputError) throw err;
    throw new InputError(
      `cannot read ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      hint,
    );
  }
  const label = what === 'key' ? /-----BEGIN [A-Z ]*PRIVATE KEY-----/ : /-----BEGIN CERTIFICATE-----/;
  if (!label.test(text))
    throw new InputError(
      `${what} ${path} is not PEM (no "-----BEGIN ${what === 'key' ? 'PRIVATE KEY' : 'CERTIFICATE'}-----" line)`,
      what === 'key'
        ? 'serve needs the PEM private key of each --cert (openssl genpkey/req -keyout writes one)'
        : 'serve needs PEM certificates; convert DER with: openssl x509 -inform der -in CERT.der -out CERT.pem',
    );
  return text;
}
