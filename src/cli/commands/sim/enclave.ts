import { Flags } from '@oclif/core';
import { readFileSync, statSync } from 'node:fs';
import { SengCommand } from '../../base.js';
import { EnvironmentError, InputError } from '../../../util/errors.js';
import { SIM_CIPHERS, SimEnclave } from '../../../sim/enclave.js';
import { toPem } from '../../../attestation/x509.js';
import { readCertificateFile } from '../../attestation-flags.js';
import { SimShadowProcess } from '../../../sim/shadow.js';

export default class SimEnclaveCommand extends SengCommand<typeof SimEnclaveCommand> {
  static override summary =
    'Simulate an enclave running the SENG Runtime: attest, get an IP, tunnel a TUN device through the gateway.';
  static override description = `Connects like a SENG client (two DTLS sessions, IpAssignment/IpAssignACK) with an RA-TLS certificate from "seng sim cert". With --tun it creates a TUN device (moved into --netns if given), configures the assigned IP and routes, and forwards packets, so ping/iperf3/nc in that namespace talk through the gateway.
Prints one JSON line {"event":"ready",...} on stdout when the tunnel is up; runs until SIGINT/SIGTERM (exit 0) or until the gateway ends the session (exit 3).

Cipher suite: the one matching the pinned gateway certificate's key (RSA: ECDHE-RSA-AES256-GCM-SHA384, EC: ECDHE-ECDSA-AES128-GCM-SHA256, SPEC §1.1), so a gateway with both identities serves the pinned one; --cipher overrides.
Data path: with --tun, both sessions continue on the native record layer after the setup; a thread reads the TUN device in batches (offload on) and sends the records with sendmmsg, and the gateway's records are written to the device inside the addon, as the gateway does ("forwarding":"native" in the ready line). SENG_NATIVE_FORWARD=0 (or --spoof-source) keeps every packet in JavaScript ("forwarding":"js").
Keepalive: the gateway ends a session after its idle timeout (default 120 s) without a packet from the enclave; unless --keepalive 0, the simulator sends an ICMP echo request from its enclave IP to the gateway IP whenever it has sent nothing for --keepalive seconds (the gateway's kernel answers it).`;
  static override examples = [
    '<%= config.bin %> sim enclave --gateway 10.0.0.1 --cert app.crt --key app.key --gateway-cert gw.crt --tun senc0 --netns app1 --route 10.99.0.0/24',
  ];
  static override enableJsonFlag = false;
  static override flags = {
    gateway: Flags.string({ summary: 'Gateway address.', default: '127.0.0.1' }),
    port: Flags.integer({
      summary: 'Gateway receive-tunnel port P (send tunnel: P+1).',
      default: 12345,
      min: 1,
      max: 65534,
    }),
    cert: Flags.string({
      summary: 'RA-TLS client certificate (PEM or DER) from seng sim cert.',
      required: true,
    }),
    key: Flags.string({ summary: 'Private key of --cert (PEM).', required: true }),
    'gateway-cert': Flags.string({
      summary: "The gateway's certificate (PEM or DER), pinned; its key type selects the cipher suite.",
      required: true,
    }),
    cipher: Flags.option({
      options: [SIM_CIPHERS.rsa, SIM_CIPHERS.ec] as const,
      summary: 'Offer only this cipher suite (default: the one for the key of --gateway-cert).',
    })(),
    keepalive: Flags.integer({
      summary: 'Send an ICMP echo to the gateway IP after this many idle seconds (0 = never).',
      default: 30,
      min: 0,
      max: 86400,
      helpValue: 'SECONDS',
    }),
    tun: Flags.string({
      summary: 'Create this TUN device and forward its packets (omit for a control-plane-only client).',
    }),
    netns: Flags.string({ summary: 'Move the TUN device into this network namespace.', dependsOn: ['tun'] }),
    route: Flags.string({
      summary: 'Route this CIDR through the tunnel (repeatable).',
      multiple: true,
      multipleNonGreedy: true,
      dependsOn: ['tun'],
    }),
    'local-address': Flags.string({ summary: 'Local address to send from.' }),
    'second-local-address': Flags.string({
      summary: 'Misbehave: open the second session from this local address.',
    }),
    'spoof-source': Flags.string({
      summary: 'Misbehave: rewrite the source of every packet to this address.',
    }),
    'skip-ack': Flags.boolean({ summary: 'Misbehave: never send IpAssignACK.' }),
    'second-cert': Flags.string({
      summary: 'Misbehave: present this certificate on the second session.',
      dependsOn: ['second-key'],
    }),
    'second-key': Flags.string({ summary: 'Key of --second-cert.', dependsOn: ['second-cert'] }),
    shadow: Flags.integer({
      summary:
        'Listen on this TCP port (an echo server) and ask the gateway (seng serve -s) to shadow it at the host IP (repeatable; needs --tun). Prints {"event":"shadow",...} per port.',
      multiple: true,
      multipleNonGreedy: true,
      min: 1,
      max: 65535,
      dependsOn: ['tun'],
    }),
  };

  async run(): Promise<void> {
    const f = this.flags;
    const certPem = certificatePem(f.cert, 'RA-TLS certificate');
    const sim = new SimEnclave({
      gateway: f.gateway,
      port: f.port,
      certPem,
      keyPem: privateKeyPem(f.key),
      gatewayCertPem: certificatePem(f['gateway-cert'], 'gateway certificate'),
      ...(f.cipher ? { cipherList: f.cipher } : {}),
      keepaliveMs: f.keepalive * 1000,
      ...(f['second-cert']
        ? {
            secondCertPem: certificatePem(f['second-cert'], 'second certificate'),
            secondKeyPem: privateKeyPem(f['second-key'] as string),
          }
        : {}),
      skipAck: f['skip-ack'],
      ...(f['spoof-source'] ? { spoofSource: f['spoof-source'] } : {}),
      ...(f.tun
        ? { tun: { name: f.tun, ...(f.netns ? { netns: f.netns } : {}), routes: f.route ?? [] } }
        : {}),
      ...(f['local-address'] ? { localAddress: f['local-address'] } : {}),
      ...(f['second-local-address'] ? { secondLocalAddress: f['second-local-address'] } : {}),
      logger: this.logger,
    });
    const assignment = await sim.connect();
    process.stdout.write(
      `${JSON.stringify({
        event: 'ready',
        ...assignment,
        tun: sim.tun?.name ?? null,
        forwarding: sim.tun ? (sim.dispatch ? 'native' : 'js') : null,
      })}\n`,
    );
    this.logger.info(
      { event: 'ready', ...assignment },
      `enclave IP ${assignment.ip}/${assignment.prefix} via ${assignment.gateway}`,
    );
    const shadow = f.shadow?.length
      ? new SimShadowProcess({
          gateway: assignment.gateway,
          enclaveIp: assignment.ip,
          ports: f.shadow,
          ...(f.netns ? { netns: f.netns } : {}),
        })
      : undefined;
    shadow?.start((e) => process.stdout.write(`${JSON.stringify(e)}\n`));
    const exitCode = await new Promise<number>((resolve) => {
      // A signal's own close (which emits 'closed' too) exits 0.
      let stopping = false;
      // Shadowed listeners close first: their close notify still needs the tunnel.
      const stop = () => {
        stopping = true;
        void (shadow?.stop() ?? Promise.resolve())
          .then(() => sim.close('stopped by signal'))
          .then(() => resolve(0));
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      sim.once('closed', (reason: string) => {
        if (stopping) return;
        this.logger.warn({ event: 'closed', reason }, `session ended: ${reason}`);
        void (shadow?.stop(1000) ?? Promise.resolve()).then(() => resolve(3));
      });
    });
    process.exitCode = exitCode;
  }
}

/**
 * A certificate file as PEM text. DER is told apart by its first byte (a SEQUENCE), not by
 * searching for "-----BEGIN": a DCAP RA-TLS certificate in DER embeds its PCK chain as PEM.
 */
function certificatePem(path: string, what: string): string {
  const bytes = readCertificateFile(path, what);
  return bytes[0] === 0x30 ? toPem(bytes) : bytes.toString('utf8');
}

/** A private key file (PEM), checked to be one so a swapped --cert/--key is caught early. */
function privateKeyPem(path: string): string {
  const hint = 'pass the PKCS#8 PEM key written by `seng sim cert --key`';
  let text: string;
  try {
    if (statSync(path).isDirectory()) throw new InputError(`key ${path} is a directory, not a file`, hint);
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if (err instanceof InputError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    throw new EnvironmentError(
      code === 'ENOENT' ? 'ENOENT' : 'EREAD',
      `cannot read key ${path}: ${code ?? String(err)}`,
      hint,
      err,
    );
  }
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text))
    throw new InputError(`key ${path} is not a PEM private key`, hint);
  return text;
}
