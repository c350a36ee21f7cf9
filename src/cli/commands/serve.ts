import { Flags } from '@oclif/core';
import { readFileSync, statSync } from 'node:fs';
import { SengCommand } from '../base.js';
import { ipv4Arg, tunnelPortArg, usageError } from '../usage.js';
import { InputError } from '../../util/errors.js';
import { startGateway, type ServeConfig } from '../../gateway/serve.js';
import { DEFAULT_CONTROL_PATH } from '../../gateway/control.js';
import { checkInterfaceName } from '../../shadow/rules.js';
import { tableFlag } from '../policy-flags.js';
import { parseListenAddress } from '../../audit/metrics.js';
import { DEFAULT_LEASE_DB, DEFAULT_LEASE_RETENTION_DAYS } from '../../audit/lease-store.js';

export default class Serve extends SengCommand<typeof Serve> {
  static override summary =
    'Run the SENG gateway: attest enclaves, assign enclave IPs, tunnel their packets into a TUN interface.';
  static override description = `Listens for DTLS on PORT (enclave → gateway) and PORT+1 (gateway → enclave) at IPV4.
Enclaves are attested from their RA-TLS client certificates and admitted by the database (-d): a vanilla database is an allowlist with host and enclave subnets; with -n a netfilter database supplies categories for the seng kernel module. Without -d every attested enclave is admitted into 192.168.28.0/24.
Runs until SIGINT/SIGTERM (graceful: every session is closed and its IP and firewall state released). SIGHUP re-reads the database and the policy.
With -s (ShadowServer) an enclave can make a listening TCP port reachable at its untrusted host's IP: the gateway reserves the port with the socket blocker on that host (seng blocker) and DNATs <host IP>:port to the enclave (docs/shadow.md).`;
  static override examples = [
    '<%= config.bin %> serve --cert gw.crt --key gw.key -d policy.db 10.0.0.1 12345',
    '<%= config.bin %> serve --cert gw-rsa.crt --key gw-rsa.key --cert gw-ec.crt --key gw-ec.key -n -d nf.db 10.0.0.1 12345',
    '<%= config.bin %> serve --cert gw.crt --key gw.key --nft --policy rules/examples/spec-sample.yaml -d nf.db 10.0.0.1 12345',
    '<%= config.bin %> serve --cert gw.crt --key gw.key -d policy.db -s --shadow-interface eth1 10.0.0.1 12345',
  ];
  static override enableJsonFlag = false;
  static override args = {
    ipv4: ipv4Arg('IPv4 address to listen on (not 0.0.0.0).', '127.0.0.1'),
    port: tunnelPortArg('Receive-tunnel UDP port P (1-65534); the send tunnel uses P+1.'),
  };
  static override flags = {
    db: Flags.string({ char: 'd', summary: 'Policy database (vanilla; netfilter with -n).', env: 'SENG_DB' }),
    netfilter: Flags.boolean({
      char: 'n',
      summary: 'Netfilter-extension mode: feed the seng kernel module (needs -d).',
      dependsOn: ['db'],
    }),
    nft: Flags.boolean({
      summary: 'Enforce per-app policy with nftables sets (no kernel module needed).',
      exclusive: ['netfilter'],
    }),
    policy: Flags.string({
      summary: 'Policy file to compile and apply with --nft (see rules/).',
      dependsOn: ['nft'],
    }),
    'nft-table': tableFlag({ summary: 'nftables table owned by seng.', default: 'seng' }),
    cert: Flags.string({
      summary: 'Server certificate (PEM); repeat for RSA and ECDSA identities.',
      required: true,
      multiple: true,
      multipleNonGreedy: true,
    }),
    key: Flags.string({
      summary: 'Private key (PEM) of each --cert, in the same order.',
      required: true,
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
        'Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9464; docs/metrics-and-audit.md).',
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
  };

  async run(): Promise<void> {
    const f = this.flags;
    // Both positional arguments have defaults (see usage.ts); oclif's types do not know that.
    const host = this.args.ipv4 ?? '127.0.0.1';
    if (host === '0.0.0.0') {
      throw new InputError(
        'refusing to listen on 0.0.0.0',
        'the second tunnel must come from the same client IP to the same gateway address; give the address clients reach, e.g. 10.0.0.1',
      );
    }
    if (!IFNAME_RE.test(f.tun))
      usageError(`--tun "${f.tun}" is not a network interface name (1-15 characters, no "/", ":" or spaces)`);
    if (f.control.length === 0) usageError('--control needs a socket path');
    if (f.cert.length !== f.key.length) {
      throw new InputError(
        `${f.cert.length} --cert but ${f.key.length} --key`,
        'give one --key per --cert, in the same order',
      );
    }
    const identities = f.cert.map((certPath, i) => ({
      certPem: readText(certPath, 'certificate'),
      keyPem: readText(f.key[i] as string, 'key'),
    }));
    const metrics = f.metrics === undefined ? undefined : metricsAddress(f.metrics);
    if (f['lease-db'] === '') usageError('--lease-db needs a file path (or "none")');
    const config: ServeConfig = {
      host,
      port: this.args.port ?? 12345,
      identities,
      dbPath: f.db,
      netfilter: f.netfilter,
      nft: f.nft ? { policyPath: f.policy, table: f['nft-table'] } : undefined,
      attestation: {
        iasRootPath: f['ias-root'],
        sgxRootPath: f['sgx-root'],
        allowDebug: f['allow-debug'],
        allowStatus: f['allow-status'],
        minIsvSvn: f['min-isv-svn'],
      },
      requireSigner: f['require-signer'],
      tun: { name: f.tun, existing: f['tun-existing'] },
      controlPath: f.control,
      timeouts: {
        idleMs: f['idle-timeout'] * 1000,
        setupMs: f['setup-timeout'] * 1000,
        ackTries: f['ack-tries'],
      },
      limits: { maxSessions: f['max-sessions'], maxHandshakes: f['max-handshakes'] },
      ...(metrics ? { metrics } : {}),
      ...(f['lease-db'] === 'none'
        ? {}
        : { leases: { path: f['lease-db'], retentionDays: f['lease-retention'] } }),
      ...(f.shadow
        ? {
            shadow: {
              backend: f['shadow-backend'],
              iface: checkInterfaceName(f['shadow-interface']),
              stepTimeoutMs: Math.min(5, f['setup-timeout']) * 1000,
            },
          }
        : {}),
    };
    const running = await startGateway(config, this.logger);
    await running.closed;
  }
}

function metricsAddress(value: string): { host: string; port: number } {
  try {
    return parseListenAddress(value);
  } catch (err) {
    usageError((err as Error).message);
  }
}

/** Linux interface names: at most IFNAMSIZ-1 = 15 bytes, no slash, colon or whitespace. */
const IFNAME_RE = /^[^/:\s]{1,15}$/;

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
