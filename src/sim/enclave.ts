/**
 * The enclave simulator: behaves on the wire like the SENG Runtime (SPEC §1) — RA-TLS
 * client certificate, pinned gateway certificate, receive tunnel to P with
 * IpAssignment/IpAssignACK, send tunnel to P+1 — and moves packets between a TUN
 * device and the two sessions, so ordinary programs in a network namespace talk
 * through the gateway. Misbehaviour switches (spoofed source, no ACK, another
 * certificate on the second session) exist for tests.
 */
import { spawnSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { dtlsConnect, type DtlsSession } from '../dtls/index.js';
import { decodeIpAssignment, encodeIpAssignAck } from '../proto/messages.js';
import { TunDevice, ipv4UpdateChecksum, setIpv4Source } from '../tunnel/index.js';
import { EnvironmentError, SengError, errorMessage } from '../util/errors.js';
import { formatIpv4, fromWire, maskToPrefix, parseIpv4, toWire, type Ipv4 } from '../util/ipv4.js';
import { silentLogger, type Logger } from '../util/log.js';

export interface SimEnclaveOptions {
  gateway: string;
  port: number;
  certPem: string;
  keyPem: string;
  /** The gateway's certificate(s), pinned as the only trust anchor. */
  gatewayCertPem: string;
  /** Present this certificate/key on the second (send) session instead (misbehaviour). */
  secondCertPem?: string;
  secondKeyPem?: string;
  /** Don't send IpAssignACK (misbehaviour). */
  skipAck?: boolean;
  /** Rewrite the source address of every outgoing packet (misbehaviour). */
  spoofSource?: string;
  /** TUN device: name, and the network namespace to move it into (default: stay here). */
  tun?: { name: string; netns?: string; routes?: string[] } | undefined;
  localAddress?: string;
  /** Send the second session from this local address instead (misbehaviour). */
  secondLocalAddress?: string;
  handshakeTimeoutMs?: number;
  /** How long to wait for IpAssignment after the first handshake; default 5000 ms. */
  assignmentTimeoutMs?: number;
  logger?: Logger;
}

export interface Assignment {
  ip: string;
  netmask: string;
  prefix: number;
  gateway: string;
}

export class SimEnclaveError extends SengError {
  constructor(message: string, hint?: string) {
    super('ESIM', message, hint === undefined ? {} : { hint });
  }
}

/** One simulated enclave; 'closed' (reason) is emitted once when it ends. */
export class SimEnclave extends EventEmitter {
  assignment: Assignment | undefined;
  recv: DtlsSession | undefined;
  send: DtlsSession | undefined;
  tun: TunDevice | undefined;
  private closedReason: string | undefined;
  private readonly opts: SimEnclaveOptions;
  private readonly log: Logger;
  private spoof: Ipv4 | undefined;
  readonly counters = { toGateway: 0, fromGateway: 0 };

  constructor(opts: SimEnclaveOptions) {
    super();
    this.opts = opts;
    this.log = opts.logger ?? silentLogger;
    this.spoof = opts.spoofSource === undefined ? undefined : parseIpv4(opts.spoofSource);
  }

  get closed(): boolean {
    return this.closedReason !== undefined;
  }

  /** Runs the setup of SPEC §1.2 and, with `tun`, plumbs the TUN device. */
  async connect(): Promise<Assignment> {
    const o = this.opts;
    const common = {
      host: o.gateway,
      caPem: o.gatewayCertPem,
      mtu: 1500,
      handshakeTimeoutMs: o.handshakeTimeoutMs ?? 5000,
      idleTimeoutMs: 0,
      logger: this.log,
      ...(o.localAddress ? { localAddress: o.localAddress } : {}),
    };
    try {
      this.recv = await dtlsConnect({ ...common, port: o.port, certPem: o.certPem, keyPem: o.keyPem });
      this.recv.on('close', (reason: string) => void this.close(`receive tunnel closed: ${reason}`));
      const assignment = await this.awaitAssignment(this.recv);
      this.assignment = assignment;
      if (o.skipAck) {
        // A client that never acknowledges just waits; the gateway must give up on it.
        const recv = this.recv;
        const reason = await new Promise<string>((resolve) => recv.once('close', resolve));
        throw new SimEnclaveError(`the gateway closed the session while waiting for IpAssignACK: ${reason}`);
      }
      this.recv.send(encodeIpAssignAck(toWire(parseIpv4(assignment.ip))));
      this.send = await dtlsConnect({
        ...common,
        port: o.port + 1,
        certPem: o.secondCertPem ?? o.certPem,
        keyPem: o.secondKeyPem ?? o.keyPem,
        ...(o.secondLocalAddress ? { localAddress: o.secondLocalAddress } : {}),
      });
      this.send.on('close', (reason: string) => void this.close(`send tunnel closed: ${reason}`));
      if (o.tun) await this.plumb(o.tun, assignment);
      this.send.on('message', (pkt: Buffer) => {
        this.counters.fromGateway++;
        this.tun?.write(pkt);
        this.emit('packet', pkt);
      });
      return assignment;
    } catch (err) {
      await this.close(`setup failed: ${errorMessage(err)}`);
      throw err;
    }
  }

  private awaitAssignment(session: DtlsSession): Promise<Assignment> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        reject(
          new SimEnclaveError(
            'no IpAssignment from the gateway',
            'was the enclave admitted? see the gateway log',
          ),
        );
      }, this.opts.assignmentTimeoutMs ?? 5000);
      const onMessage = (record: Buffer) => {
        cleanup();
        try {
          const a = decodeIpAssignment(record);
          const mask = fromWire(a.netmask);
          resolve({
            ip: formatIpv4(fromWire(a.ip)),
            netmask: formatIpv4(mask),
            prefix: maskToPrefix(mask),
            gateway: formatIpv4(fromWire(a.gwIp)),
          });
        } catch (err) {
          reject(err);
        }
      };
      const onClose = (reason: string) => {
        cleanup();
        reject(
          new SimEnclaveError(`the gateway closed the receive tunnel before assigning an IP: ${reason}`),
        );
      };
      const cleanup = () => {
        clearTimeout(timer);
        session.off('message', onMessage);
        session.off('close', onClose);
      };
      session.on('message', onMessage);
      session.on('close', onClose);
    });
  }

  private async plumb(
    tun: { name: string; netns?: string; routes?: string[] },
    a: Assignment,
  ): Promise<void> {
    this.tun = await TunDevice.open({
      name: tun.name,
      create: true,
      up: tun.netns === undefined,
      mtu: 1432,
      logger: this.log,
    });
    const ns = tun.netns;
    const run = (full: string[]) => {
      const r = spawnSync('ip', full, { encoding: 'utf8' });
      if (r.status !== 0)
        throw new EnvironmentError('ESIM_NET', `ip ${full.join(' ')} failed: ${r.stderr.trim()}`);
    };
    // `ip` inside the target namespace (or here when there is none).
    const ip = (...args: string[]) => run(ns === undefined ? args : ['-n', ns, ...args]);
    if (ns !== undefined) {
      run(['link', 'set', 'dev', tun.name, 'netns', ns]);
      // The fd keeps working across namespaces; cleanup happens when it closes.
      ip('link', 'set', 'dev', tun.name, 'mtu', '1432', 'up');
      ip('link', 'set', 'dev', 'lo', 'up');
      // Moving a device resets its IPv6 settings; keep router solicitations out of the tunnel.
      spawnSync('ip', ['netns', 'exec', ns, 'sysctl', '-qw', `net.ipv6.conf.${tun.name}.disable_ipv6=1`]);
    }
    ip('addr', 'add', `${a.ip}/${a.prefix}`, 'dev', tun.name);
    for (const route of tun.routes ?? []) ip('route', 'replace', route, 'via', a.gateway, 'dev', tun.name);
    this.tun.onPackets((packets) => {
      for (const p of packets) this.toGateway(p);
    });
  }

  /** Sends one IPv4 packet into the receive tunnel (applying the spoof switch). */
  toGateway(packet: Buffer): boolean {
    if (!this.recv || this.closed) return false;
    if (this.spoof !== undefined && packet.length >= 20) {
      setIpv4Source(packet, this.spoof);
      ipv4UpdateChecksum(packet);
    }
    this.counters.toGateway++;
    return this.recv.send(packet);
  }

  async close(reason = 'closed by simulator'): Promise<void> {
    if (this.closedReason !== undefined) return;
    this.closedReason = reason;
    this.recv?.close();
    this.send?.close();
    await this.tun?.close();
    this.emit('closed', reason);
  }
}
