import { Flags } from '@oclif/core';
import { readFileSync } from 'node:fs';
import { SengCommand } from '../base.js';
import { InputError, SengError } from '../../util/errors.js';
import { isIpv4 } from '../../util/ipv4.js';
import { BlockerServer } from '../../shadow/blocker-server.js';
import { BLOCKER_PORT } from '../../shadow/protocol.js';
import { selfSignedIdentity } from '../../shadow/tls-identity.js';

export default class Blocker extends SengCommand<typeof Blocker> {
  static override summary =
    'Run the client socket blocker on an enclave host: reserve the ports a ShadowServer gateway shadows.';
  static override description = `Runs on the untrusted host of shielded apps, next to their SENG runtimes. A gateway started with "seng serve -s" connects here (TLS 1.2, port 2834, as the original cli_sock_blocker) before it DNATs <this host's IP>:PORT to an enclave, and this process reserves PORT by binding it on every address, so no process on this host can take it. The reservation ends when the gateway sends a close notify (the app closed its socket or disconnected), when the app fails to listen, or when this process exits.
The gateway does not verify this server's certificate and this server asks none from the gateway (wire compatibility): restrict who may connect with --gateway. Without --cert/--key a throwaway self-signed certificate is made at start.
Prints one JSON line {"event":"listening",...} on stdout when ready; runs until SIGINT/SIGTERM, then releases every port.`;
  static override examples = [
    '<%= config.bin %> blocker --gateway 10.0.0.1',
    '<%= config.bin %> blocker --listen 10.0.0.2 --cert blocker.crt --key blocker.key',
  ];
  static override enableJsonFlag = false;
  static override flags = {
    listen: Flags.string({
      summary: 'Address to listen on (the host IP the gateway sees).',
      default: '0.0.0.0',
    }),
    port: Flags.integer({ summary: 'TCP port to listen on.', default: BLOCKER_PORT, min: 1, max: 65535 }),
    cert: Flags.string({
      summary: 'TLS certificate (PEM, RSA key for mbedTLS-era gateways).',
      dependsOn: ['key'],
    }),
    key: Flags.string({ summary: 'Private key of --cert (PEM).', dependsOn: ['cert'] }),
    gateway: Flags.string({
      summary:
        'Only accept connections from this gateway address (repeatable; default: anyone, like the original).',
      multiple: true,
      multipleNonGreedy: true,
    }),
    'reserve-address': Flags.string({
      summary: 'Address the reservations bind (default: all addresses, so nothing can squat the port).',
      default: '0.0.0.0',
    }),
    'confirm-timeout': Flags.integer({
      summary: "Seconds to wait for the gateway's relayed listen confirmation before releasing a port.",
      default: 30,
      min: 1,
    }),
  };

  async run(): Promise<void> {
    const f = this.flags;
    for (const [what, ip] of [
      ['--listen', f.listen],
      ['--reserve-address', f['reserve-address']],
      ...(f.gateway ?? []).map((g) => ['--gateway', g]),
    ] as [string, string][]) {
      if (!isIpv4(ip)) throw new InputError(`${what} "${ip}" is not an IPv4 address`);
    }
    const identity =
      f.cert && f.key ? { certPem: readText(f.cert), keyPem: readText(f.key) } : selfSignedIdentity();
    const server = new BlockerServer({
      host: f.listen,
      port: f.port,
      ...identity,
      reserveAddress: f['reserve-address'],
      confirmTimeoutMs: f['confirm-timeout'] * 1000,
      ...(f.gateway ? { allowedPeers: f.gateway } : {}),
      logger: this.logger,
    });
    let bound: { address: string; port: number };
    try {
      bound = await server.listen();
    } catch (err) {
      throw new SengError(
        'EBLOCKERLISTEN',
        `cannot listen on ${f.listen}:${f.port}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
        { hint: 'is another socket blocker running? binding ports below 1024 needs root' },
      );
    }
    process.stdout.write(`${JSON.stringify({ event: 'listening', ...bound, selfSigned: !f.cert })}\n`);
    this.logger.info(
      { event: 'listening', ...bound },
      `socket blocker listening on ${bound.address}:${bound.port}`,
    );
    await new Promise<void>((resolve) => {
      const stop = () => void server.close().then(resolve);
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
    this.logger.info({ event: 'stopped' }, 'socket blocker stopped; every port released');
  }
}

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new InputError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}
