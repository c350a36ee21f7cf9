/**
 * The enclave simulator: behaves on the wire like the SENG Runtime (SPEC §1) — RA-TLS
 * client certificate, pinned gateway certificate, receive tunnel to P with
 * IpAssignment/IpAssignACK, send tunnel to P+1 — and moves packets between a TUN
 * device and the two sessions, so ordinary programs in a network namespace talk
 * through the gateway. Misbehaviour switches (spoofed source, no ACK, another
 * certificate on the second session) exist for tests.
 *
 * Data path (with a TUN device): by default the gateway's native machinery, so that the
 * simulator is not what limits a benchmark. Both sessions are handed off to the native record
 * layer after the setup exchange; a dispatch thread reads the TUN device in batches (offload on:
 * TSO super-packets are cut into ≤ MTU packets), seals each packet as a record of the receive
 * tunnel (P) and sends the batch with sendmmsg(2) (TunDispatch with a default route); records of
 * the send tunnel (P+1) are read by a native receive thread (UDP GRO), opened there in place and
 * written to the device, TCP segments coalesced into GSO writes (forwardTo routes the session in
 * the thread, checking the destination is the enclave IP). The JS path (one SSL_write + send per
 * packet, one TUN write per record) remains for SENG_NATIVE_FORWARD=0, nativeForward: false and
 * the spoofSource switch.
 */
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { EventEmitter } from 'node:events';
import {
  dispatchFromTunToSession,
  dtlsConnect,
  handOffClientSession,
  type DtlsSession,
  type TunDispatch,
} from '../dtls/index.js';
import { decodeIpAssignment, encodeIpAssignAck } from '../proto/messages.js';
import {
  TunDevice,
  ICMP_ECHO_REQUEST,
  internetChecksum,
  ipv4UpdateChecksum,
  setIpv4Source,
} from '../tunnel/index.js';
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
  /**
   * OpenSSL cipher list offered to the gateway; default: chosen from the pinned certificate's
   * key type (see `cipherForGatewayCert`).
   */
  cipherList?: string;
  /**
   * Send an ICMP echo request from the enclave IP to the gateway IP when nothing was sent for
   * this long (ms), so the gateway's idle timeout does not end a quiet session; 0/undefined = off.
   */
  keepaliveMs?: number;
  /** How long to wait for IpAssignment after the first handshake; default 5000 ms. */
  assignmentTimeoutMs?: number;
  /**
   * Move the TUN device's packets natively (dispatch thread, native record layer, batched
   * sends/receives, offload); default true unless SENG_NATIVE_FORWARD=0. Off with spoofSource.
   */
  nativeForward?: boolean;
  logger?: Logger;
}

export interface Assignment {
  ip: string;
  netmask: string;
  prefix: number;
  gateway: string;
}

/** The DTLS 1.2 suites of SPEC §1.1, by the gateway key they authenticate. */
export const SIM_CIPHERS = {
  rsa: 'ECDHE-RSA-AES256-GCM-SHA384',
  ec: 'ECDHE-ECDSA-AES128-GCM-SHA256',
} as const;

/**
 * The suite(s) to offer given the pinned gateway certificate(s): the RSA suite for an RSA
 * key, the ECDSA suite for an EC key. Offering both would let a gateway with both identities
 * pick the RSA one, whose certificate is then not the pinned one.
 */
export function cipherForGatewayCert(pem: string): string {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  const suites = new Set<string>();
  for (const block of blocks) {
    let type: string | undefined;
    try {
      type = new X509Certificate(block).publicKey.asymmetricKeyType;
    } catch (err) {
      throw new SimEnclaveError(
        `the pinned gateway certificate cannot be parsed: ${errorMessage(err)}`,
        'pass the PEM (or DER) certificate the gateway serves with --cert',
      );
    }
    if (type === 'rsa' || type === 'rsa-pss') suites.add(SIM_CIPHERS.rsa);
    else if (type === 'ec') suites.add(SIM_CIPHERS.ec);
    else
      throw new SimEnclaveError(
        `the pinned gateway certificate has a ${String(type)} key`,
        'SENG gateways use RSA or EC P-256 keys (SPEC §1.1)',
      );
  }
  if (suites.size === 0)
    throw new SimEnclaveError(
      'the pinned gateway certificate holds no CERTIFICATE block',
      'pass the PEM (or DER) certificate the gateway serves with --cert',
    );
  return [...suites].join(':');
}

/** An IPv4 ICMP echo request src → dst (the gateway's kernel answers it; harmless keepalive). */
export function icmpEchoRequest(src: Ipv4, dst: Ipv4, id: number, seq: number): Buffer {
  const payload = Buffer.from('seng-keepalive');
  const p = Buffer.alloc(20 + 8 + payload.length);
  p[0] = 0x45;
  p.writeUInt16BE(p.length, 2);
  p.writeUInt16BE(seq & 0xffff, 4); // identification
  p[8] = 64; // TTL
  p[9] = 1; // ICMP
  p.writeUInt32BE(src >>> 0, 12);
  p.writeUInt32BE(dst >>> 0, 16);
  ipv4UpdateChecksum(p);
  p[20] = ICMP_ECHO_REQUEST;
  p.writeUInt16BE(id & 0xffff, 24);
  p.writeUInt16BE(seq & 0xffff, 26);
  payload.copy(p, 28);
  p.writeUInt16BE(internetChecksum(p, 20, p.length), 22);
  return p;
}

/** The tunnel MTU of SPEC §1.4: the TUN device's MTU and the largest inner packet. */
const SIM_MTU = 1432;

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
  /** The native enclave → gateway path (undefined on the JS path). */
  dispatch: TunDispatch | undefined;
  private closedReason: string | undefined;
  private readonly opts: SimEnclaveOptions;
  private readonly log: Logger;
  private spoof: Ipv4 | undefined;
  private keepaliveTimer: NodeJS.Timeout | undefined;
  private lastTx = 0;
  /** Set per packet sent (cheaper than a clock read); the keepalive tick turns it into lastTx. */
  private sentSinceTick = false;
  /** Packets of the JS path (the native path counts in nativeStats()), keepalives sent. */
  readonly counters = { toGateway: 0, fromGateway: 0, keepalives: 0 };
  /** Dispatch packets at the last keepalive tick (native path: activity without JS). */
  private dispatchedAtTick = 0;

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
      cipherList: o.cipherList ?? cipherForGatewayCert(o.gatewayCertPem),
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
      const native = o.tun !== undefined && this.nativeForwardWanted();
      this.send = await dtlsConnect({
        ...common,
        port: o.port + 1,
        certPem: o.secondCertPem ?? o.certPem,
        keyPem: o.secondKeyPem ?? o.keyPem,
        ...(o.secondLocalAddress ? { localAddress: o.secondLocalAddress } : {}),
        // The gateway → enclave stream: read it in full recvmmsg batches.
        receiveBatch: 32,
        socketBufferBytes: 4 << 20,
        // Native path: a receive thread opens and forwards it (GRO reads) once routed by forwardTo.
        receiveThread: native,
      });
      this.send.on('close', (reason: string) => void this.close(`send tunnel closed: ${reason}`));
      if (o.tun) await this.plumb(o.tun, assignment, native);
      // Records the native check leaves to JS (and every record on the JS path).
      this.send.on('message', (pkt: Buffer) => {
        this.counters.fromGateway++;
        this.tun?.write(pkt);
        this.emit('packet', pkt);
      });
      if (native) this.startNativeForwarding(assignment);
      else
        this.tun?.onPackets((packets) => {
          for (const p of packets) this.toGateway(p);
        });
      this.startKeepalive(assignment);
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

  private nativeForwardWanted(): boolean {
    if (this.spoof !== undefined) return false; // the rewrite happens in JS
    return this.opts.nativeForward ?? process.env.SENG_NATIVE_FORWARD !== '0';
  }

  /**
   * Hands both sessions off to the native record layer and starts the two native paths. When a
   * session cannot be handed off (a suite the native layer lacks) the JS path takes over.
   */
  private startNativeForwarding(a: Assignment): void {
    const tun = this.tun;
    if (!tun || !this.recv || !this.send) return;
    if (!handOffClientSession(this.recv) || !handOffClientSession(this.send)) {
      this.log.warn({ event: 'native-forward-off' }, 'native record layer unavailable; forwarding in JS');
      tun.onPackets((packets) => {
        for (const p of packets) this.toGateway(p);
      });
      return;
    }
    this.send.forwardTo(tun.fd, parseIpv4(a.ip), SIM_MTU, {
      vnetHdr: tun.offload,
      checkDestination: true,
    });
    this.dispatch = dispatchFromTunToSession(this.recv, tun.fd, SIM_MTU, { vnetHdr: tun.offload });
    this.log.debug({ event: 'native-forward', offload: tun.offload }, 'forwarding natively');
  }

  /**
   * Packets the native paths moved (zero on the JS path); `fromGatewayByThread`: the part of
   * `fromGateway` the send session's receive thread opened and wrote to the device.
   */
  nativeStats(): { toGateway: number; fromGateway: number; fromGatewayByThread: number } {
    return {
      toGateway: this.dispatch?.stats().packets ?? 0,
      fromGateway: this.send?.forwardStats().packets ?? 0,
      fromGatewayByThread: this.send?.receiveRoute?.stats().packets ?? 0,
    };
  }

  private async plumb(
    tun: { name: string; netns?: string; routes?: string[] },
    a: Assignment,
    offload: boolean,
  ): Promise<void> {
    this.tun = await TunDevice.open({
      name: tun.name,
      create: true,
      up: tun.netns === undefined,
      mtu: SIM_MTU,
      offload,
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
      ip('link', 'set', 'dev', tun.name, 'mtu', String(SIM_MTU), 'up');
      ip('link', 'set', 'dev', 'lo', 'up');
      // Moving a device resets its IPv6 settings; keep router solicitations out of the tunnel.
      spawnSync('ip', ['netns', 'exec', ns, 'sysctl', '-qw', `net.ipv6.conf.${tun.name}.disable_ipv6=1`]);
    }
    ip('addr', 'add', `${a.ip}/${a.prefix}`, 'dev', tun.name);
    for (const route of tun.routes ?? []) ip('route', 'replace', route, 'via', a.gateway, 'dev', tun.name);
  }

  private startKeepalive(a: Assignment): void {
    const every = this.opts.keepaliveMs ?? 0;
    if (every <= 0) return;
    const src = parseIpv4(a.ip);
    const dst = parseIpv4(a.gateway);
    const id = process.pid & 0xffff;
    this.lastTx = Date.now();
    // Check a few times per interval so a keepalive goes out at most `every` after the last packet.
    const tick = Math.max(100, Math.min(1000, Math.floor(every / 4)));
    this.keepaliveTimer = setInterval(() => {
      const now = Date.now();
      const dispatched = this.dispatch?.stats().packets ?? 0;
      if (dispatched !== this.dispatchedAtTick) {
        this.dispatchedAtTick = dispatched;
        this.sentSinceTick = true;
      }
      if (this.sentSinceTick) {
        this.sentSinceTick = false;
        this.lastTx = now;
      }
      if (this.closed || !this.recv || now - this.lastTx < every) return;
      this.counters.keepalives++;
      this.lastTx = now;
      this.recv.send(icmpEchoRequest(src, dst, id, this.counters.keepalives));
      this.log.debug({ event: 'keepalive', seq: this.counters.keepalives }, 'keepalive sent');
    }, tick);
    this.keepaliveTimer.unref();
  }

  /** Sends one IPv4 packet into the receive tunnel (applying the spoof switch). */
  toGateway(packet: Buffer): boolean {
    if (!this.recv || this.closed) return false;
    if (this.spoof !== undefined && packet.length >= 20) {
      setIpv4Source(packet, this.spoof);
      ipv4UpdateChecksum(packet);
    }
    this.counters.toGateway++;
    this.sentSinceTick = true;
    return this.recv.send(packet);
  }

  async close(reason = 'closed by simulator'): Promise<void> {
    if (this.closedReason !== undefined) return;
    this.closedReason = reason;
    clearInterval(this.keepaliveTimer);
    if (this.dispatch)
      this.log.info({ event: 'native-stats', ...this.nativeStats() }, 'native forwarding ended');
    // The dispatch thread first: it reads the device and seals with the receive session.
    this.dispatch?.close();
    // Stops the send session's forwarding and removes its receive-thread route before the device closes.
    this.send?.forwardTo(-1, 0, SIM_MTU);
    this.recv?.close();
    this.send?.close();
    await this.tun?.close();
    this.emit('closed', reason);
  }
}
