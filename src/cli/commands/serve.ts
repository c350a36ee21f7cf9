import { Args, Flags } from '@oclif/core';
import { readFileSync } from 'node:fs';
import { SengCommand } from '../base.js';
import { InputError } from '../../util/errors.js';
import { isIpv4 } from '../../util/ipv4.js';
import { startGateway, type ServeConfig } from '../../gateway/serve.js';
import { DEFAULT_CONTROL_PATH } from '../../gateway/control.js';
import { tableFlag } from '../policy-flags.js';

export default class Serve extends SengCommand<typeof Serve> {
  static override summary =
    'Run the SENG gateway: attest enclaves, assign enclave IPs, tunnel their packets into a TUN interface.';
  static override description = `Listens for DTLS on PORT (enclave → gateway) and PORT+1 (gateway → enclave) at IPV4.
Enclaves are attested from their RA-TLS client certificates and admitted by the database (-d): a vanilla database is an allowlist with host and enclave subnets; with -n a netfilter database supplies categories for the seng kernel module. Without -d every attested enclave is admitted into 192.168.28.0/24.
Runs until SIGINT/SIGTERM (graceful: every session is closed and its IP and firewall state released). SIGHUP re-reads the database and the policy.`;
  static override examples = [
    '<%= config.bin %> serve --cert gw.crt --key gw.key -d policy.db 10.0.0.1 12345',
    '<%= config.bin %> serve --cert gw-rsa.crt --key gw-rsa.key --cert gw-ec.crt --key gw-ec.key -n -d nf.db 10.0.0.1 12345',
    '<%= config.bin %> serve --cert gw.crt --key gw.key --nft --policy rules/examples/spec-sample.yaml -d nf.db 10.0.0.1 12345',
  ];
  static override enableJsonFlag = false;
  static override args = {
    ipv4: Args.string({ description: 'IPv4 address to listen on (not 0.0.0.0).', default: '127.0.0.1' }),
    port: Args.integer({
      description: 'Receive-tunnel UDP port P; the send tunnel uses P+1.',
      default: 12345,
      min: 1,
      max: 65534,
    }),
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
      summary: 'Attach to a TUN device an admin created (ip tuntap add …) instead of creating one.',
    }),
    control: Flags.string({
      summary: 'Control socket for seng status / seng kick.',
      default: DEFAULT_CONTROL_PATH,
    }),
    'idle-timeout': Flags.integer({
      summary: 'Seconds without a packet from an enclave before its session ends.',
      default: 120,
      min: 1,
    }),
    'setup-timeout': Flags.integer({
      summary: 'Seconds allowed for each setup step (handshake, ACK, second session).',
      default: 5,
      min: 1,
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
    }),
    'max-handshakes': Flags.integer({
      summary: 'Maximum concurrent DTLS handshakes per port.',
      default: 256,
      min: 1,
    }),
  };

  async run(): Promise<void> {
    const f = this.flags;
    const host = this.args.ipv4;
    if (host === '0.0.0.0') {
      throw new InputError(
        'refusing to listen on 0.0.0.0',
        'the second tunnel must come from the same client IP to the same gateway address; give the address clients reach, e.g. 10.0.0.1',
      );
    }
    if (!isIpv4(host)) throw new InputError(`"${host}" is not an IPv4 address`);
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
    const config: ServeConfig = {
      host,
      port: this.args.port,
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
    };
    const running = await startGateway(config, this.logger);
    await running.closed;
  }
}

function readText(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new InputError(
      `cannot read ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
    );
  }
}
