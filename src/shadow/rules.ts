/**
 * DNAT rule backends of the ShadowServer (SPEC §6.5, §6.8 "safe firewall"): a shadowed
 * port turns `<host IP>:X` into `<enclave IP>:X`, for traffic entering on the outside
 * interface (prerouting) and for traffic of the gateway host itself (output).
 *
 * - nftables (default): a table owned by seng with two nat chains and one verdict map per
 *   protocol, `host IP . port : enclave IP`. A shadow is one map element, added and removed
 *   atomically through nft's JSON API; the chains never change after start, which
 *   recreates the table (flushing whatever an earlier run left).
 * - iptables: for admins who pre-created the original `SENG_output` / `SENG_prerouting`
 *   chains, exactly the two rules of §6.5 per shadow (argv, no shell); start flushes both
 *   chains, which seng owns.
 */
import { spawn } from 'node:child_process';
import { NftCli } from '../nft/cli.js';
import type { NftCommand } from '../policy/nft.js';
import { EnvironmentError, InputError, SengError } from '../util/errors.js';
import { formatIpv4, type Ipv4 } from '../util/ipv4.js';
import { validateInterfaceName } from '../util/names.js';
import { protoName, type ShadowProto } from './protocol.js';

export interface ShadowRule {
  hostIp: Ipv4;
  port: number;
  proto: ShadowProto;
  enclaveIp: Ipv4;
}

export interface ShadowRuleBackend {
  readonly name: string;
  /** Removes whatever an earlier run left and prepares the (empty) rule set. */
  start(): Promise<void>;
  add(rule: ShadowRule): Promise<void>;
  remove(rule: ShadowRule): Promise<void>;
  /** Removes every shadow rule (shutdown). */
  stop(): Promise<void>;
}

export class ShadowRuleError extends SengError {
  constructor(message: string, hint?: string) {
    super('ESHADOWRULE', message, hint === undefined ? {} : { hint });
  }
}

/** `any` = no interface match (every incoming interface). */
export const ANY_INTERFACE = 'any';

/** Interface names as the kernel accepts them (IFNAMSIZ 16, no '/', no whitespace). */
export function checkInterfaceName(name: string): string {
  return name === ANY_INTERFACE ? name : validateInterfaceName(name);
}

/** nftables / iptables object names: letters, digits, _ and -, starting with a letter. */
export function checkObjectName(name: string, what: string): string {
  if (/^[A-Za-z][A-Za-z0-9_-]{0,28}$/.test(name)) return name;
  throw new InputError(
    `"${name}" is not a valid ${what} name`,
    'use letters, digits, _ and -, at most 29 characters',
  );
}

// ------------------------------------------------------------------------------ nftables

const FAMILY = 'ip';

export interface NftShadowOptions {
  table?: string;
  /** Outside interface for prerouting, or `any`. */
  iface: string;
  nft?: { run(doc: { nftables: NftCommand[] }): Promise<void> };
}

export class NftShadowRules implements ShadowRuleBackend {
  readonly name = 'nftables';
  readonly table: string;
  private readonly iface: string;
  private readonly nft: { run(doc: { nftables: NftCommand[] }): Promise<void> };

  constructor(opts: NftShadowOptions) {
    this.table = checkObjectName(opts.table ?? 'seng_shadow', 'nftables table');
    this.iface = checkInterfaceName(opts.iface);
    this.nft = opts.nft ?? new NftCli();
  }

  /** The whole table as JSON commands: created fresh, so stale elements of an earlier run vanish. */
  tableDocument(): NftCommand[] {
    const t = { family: FAMILY, name: this.table };
    const cmds: NftCommand[] = [{ add: { table: t } }, { delete: { table: t } }, { add: { table: t } }];
    for (const proto of ['tcp', 'udp'] as const) {
      cmds.push({
        add: {
          map: {
            family: FAMILY,
            table: this.table,
            name: mapName(proto),
            type: ['ipv4_addr', 'inet_service'],
            map: 'ipv4_addr',
          },
        },
      });
    }
    const chain = (name: string, hook: string) => ({
      add: {
        chain: { family: FAMILY, table: this.table, name, type: 'nat', hook, prio: -100, policy: 'accept' },
      },
    });
    cmds.push(chain('prerouting', 'prerouting'), chain('output', 'output'));
    for (const proto of ['tcp', 'udp'] as const) {
      const dnat = [
        { match: { op: '==', left: { meta: { key: 'l4proto' } }, right: proto } },
        {
          dnat: {
            family: FAMILY,
            addr: {
              map: {
                key: {
                  concat: [
                    { payload: { protocol: 'ip', field: 'daddr' } },
                    { payload: { protocol: proto, field: 'dport' } },
                  ],
                },
                data: `@${mapName(proto)}`,
              },
            },
          },
        },
      ];
      const iif =
        this.iface === ANY_INTERFACE
          ? []
          : [{ match: { op: '==', left: { meta: { key: 'iifname' } }, right: this.iface } }];
      cmds.push({
        add: {
          rule: {
            family: FAMILY,
            table: this.table,
            chain: 'prerouting',
            expr: [...iif, ...dnat],
            comment: 'seng shadow',
          },
        },
      });
      cmds.push({
        add: {
          rule: { family: FAMILY, table: this.table, chain: 'output', expr: dnat, comment: 'seng shadow' },
        },
      });
    }
    return cmds;
  }

  async start(): Promise<void> {
    await this.nft.run({ nftables: this.tableDocument() });
  }

  private element(rule: ShadowRule): Record<string, unknown> {
    return { family: FAMILY, table: this.table, name: mapName(protoName(rule.proto)) };
  }

  async add(rule: ShadowRule): Promise<void> {
    const key = { concat: [formatIpv4(rule.hostIp), rule.port] };
    await this.nft.run({
      nftables: [{ add: { element: { ...this.element(rule), elem: [[key, formatIpv4(rule.enclaveIp)]] } } }],
    });
  }

  async remove(rule: ShadowRule): Promise<void> {
    const key = { concat: [formatIpv4(rule.hostIp), rule.port] };
    await this.nft.run({ nftables: [{ delete: { element: { ...this.element(rule), elem: [key] } } }] });
  }

  async stop(): Promise<void> {
    const t = { family: FAMILY, name: this.table };
    await this.nft.run({ nftables: [{ add: { table: t } }, { delete: { table: t } }] });
  }
}

function mapName(proto: 'tcp' | 'udp'): string {
  return `${proto}_dnat`;
}

// ------------------------------------------------------------------------------ iptables

export const IPTABLES_OUTPUT_CHAIN = 'SENG_output';
export const IPTABLES_PREROUTING_CHAIN = 'SENG_prerouting';

export type RunArgv = (argv: string[]) => Promise<{ code: number; stderr: string }>;

export interface IptablesShadowOptions {
  iface: string;
  /** Runs one command (argv[0] is the program); default: spawn without a shell. */
  run?: RunArgv;
  /** Command prefix, e.g. ['ip', 'netns', 'exec', 'NS'] for tests; default none. */
  iptables?: string[];
}

export class IptablesShadowRules implements ShadowRuleBackend {
  readonly name = 'iptables';
  private readonly iface: string;
  private readonly run: RunArgv;
  private readonly iptables: string[];

  constructor(opts: IptablesShadowOptions) {
    this.iface = checkInterfaceName(opts.iface);
    this.run = opts.run ?? spawnArgv;
    this.iptables = opts.iptables ?? ['iptables'];
  }

  /** The argv of the two §6.5 rules for `op` (-A or -D), output chain first. */
  ruleArgv(op: '-A' | '-D', rule: ShadowRule): string[][] {
    const match = [
      '-d',
      formatIpv4(rule.hostIp),
      '-p',
      protoName(rule.proto),
      '--destination-port',
      String(rule.port),
      '-j',
      'DNAT',
      '--to-destination',
      formatIpv4(rule.enclaveIp),
    ];
    const iif = this.iface === ANY_INTERFACE ? [] : ['-i', this.iface];
    return [
      [...this.iptables, '-w', '-t', 'nat', op, IPTABLES_OUTPUT_CHAIN, ...match],
      [...this.iptables, '-w', '-t', 'nat', op, IPTABLES_PREROUTING_CHAIN, ...iif, ...match],
    ];
  }

  private async must(argv: string[]): Promise<void> {
    const r = await this.run(argv);
    if (r.code !== 0) {
      throw new ShadowRuleError(
        `${argv.join(' ')} failed: ${r.stderr.trim().split('\n')[0] ?? ''}`,
        /No chain|does not exist/.test(r.stderr)
          ? `create the chains first: iptables -t nat -N ${IPTABLES_OUTPUT_CHAIN}; iptables -t nat -N ${IPTABLES_PREROUTING_CHAIN}; iptables -t nat -A OUTPUT -j ${IPTABLES_OUTPUT_CHAIN}; iptables -t nat -A PREROUTING -j ${IPTABLES_PREROUTING_CHAIN}`
          : /Permission denied|not permitted/.test(r.stderr)
            ? 'run as root (CAP_NET_ADMIN)'
            : undefined,
      );
    }
  }

  async start(): Promise<void> {
    for (const chain of [IPTABLES_OUTPUT_CHAIN, IPTABLES_PREROUTING_CHAIN])
      await this.must([...this.iptables, '-w', '-t', 'nat', '-F', chain]);
  }

  async add(rule: ShadowRule): Promise<void> {
    const [output, prerouting] = this.ruleArgv('-A', rule) as [string[], string[]];
    await this.must(output);
    try {
      await this.must(prerouting);
    } catch (err) {
      // Never leave half a shadow behind (the original's bug 4).
      await this.run(this.ruleArgv('-D', rule)[0] as string[]);
      throw err;
    }
  }

  async remove(rule: ShadowRule): Promise<void> {
    const results = await Promise.all(this.ruleArgv('-D', rule).map((argv) => this.run(argv)));
    const failed = results.find((r) => r.code !== 0 && !/does a matching rule exist|Bad rule/.test(r.stderr));
    if (failed)
      throw new ShadowRuleError(
        `removing the DNAT rules of port ${rule.port} failed: ${failed.stderr.trim()}`,
      );
  }

  async stop(): Promise<void> {
    await this.start();
  }
}

/** Runs argv without a shell; 15 s limit. */
export const spawnArgv: RunArgv = (argv) =>
  new Promise((resolve, reject) => {
    const [cmd, ...args] = argv;
    const child = spawn(cmd as string, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        e.code === 'ENOENT'
          ? new EnvironmentError(
              'ENOIPTABLES',
              `${cmd} not found`,
              'install iptables, or use --shadow-backend nft',
            )
          : e,
      );
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, stderr });
    });
  });
