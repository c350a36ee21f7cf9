/**
 * The data path: packets between the enclaves' DTLS channels and the TUN device.
 *
 * Enclave → network (receive channel, port P):
 *   1. The enclave's runtime sends one IPv4 packet per DTLS record to UDP port P.
 *   2. src/dtls/endpoint.ts: the addon's UDP socket reads datagrams in batches (recvmmsg).
 *   3. native/dtls/src/dtls.cc (Conn read loop): decrypts the record. Native fast path
 *      (most packets today): if forwarding is on for this channel (activate() below calls
 *      channel.forwardTo) and the record passes the addon's packet check, it is written
 *      straight to the TUN fd; JS never sees it. Everything else goes up to JS as a
 *      'message' on the channel (src/dtls/session.ts).
 *   4. fromEnclave() below (JS fallback): classifyEnclavePacket() in src/tunnel/packet.ts —
 *      THE rule of SPEC §1.4 (oversize, malformed, spoofed) — then device.write().
 *   5. src/tunnel/tun.ts + native/tun/src/tun.c: write(2) into the TUN device; the kernel
 *      routes the packet (and nftables / the seng module filter it).
 *
 * Network → enclave (send channel, port P+1):
 *   1. The kernel routes a packet for an enclave subnet into the TUN device.
 *   2. src/tunnel/tun.ts + native/tun/src/tun.c: read in batches, one onPackets() call per wakeup.
 *   3. fromDevice() below: routeDevicePacket() (src/tunnel/packet.ts) finds the enclave that
 *      owns the destination IP (EnclaveTable, O(1)) and refuses malformed, unknown-destination
 *      and oversize packets.
 *   4. The enclave's send channel encrypts it as one DTLS record (src/dtls/session.ts →
 *      native/dtls/src/dtls.cc) and sends it over UDP from port P+1 to the enclave.
 *
 * Every drop is counted by reason, per enclave and gateway-wide. This module is the only
 * place that moves packets, so a different fast path (e.g. a native gateway → enclave path)
 * replaces activate() / fromDevice() here and nothing else.
 */
import { classifyEnclavePacket, routeDevicePacket, type PacketDropReason } from '../tunnel/packet.js';
import { formatIpv4, type Ipv4 } from '../util/ipv4.js';
import type { GatewayContext } from './context.js';
import type { Enclave } from './enclave.js';

/** At most one `spoofed` warning per enclave per interval (the counter keeps the total). */
const SPOOF_LOG_INTERVAL_MS = 1000;

export class Forwarding {
  private readonly lookup: (ip: Ipv4) => Enclave | undefined;

  constructor(private readonly ctx: GatewayContext) {
    this.lookup = (ip) => ctx.table.byDestination(ip);
  }

  /** Both channels are up and the firewall knows the enclave: route packets to and from it. */
  activate(e: Enclave): void {
    const fd = this.ctx.opts.device.fd;
    if ((this.ctx.opts.nativeForward ?? true) && fd !== undefined && fd >= 0)
      e.recv.forwardTo?.(fd, e.ip, this.ctx.mtu);
    this.ctx.table.route(e);
  }

  /** A record from an active enclave that the native fast path did not forward. */
  fromEnclave(e: Enclave, packet: Buffer): void {
    const verdict = classifyEnclavePacket(packet, this.ctx.mtu, e.ip);
    if (verdict !== 'ok') {
      this.drop(verdict, e);
      if (verdict === 'spoofed') this.logSpoof(e, packet);
      return;
    }
    if (this.ctx.opts.device.write(packet)) {
      e.counters.packetsIn++;
      e.counters.bytesIn += packet.length;
    }
  }

  /** A batch of packets the kernel routed into the TUN device. */
  fromDevice(packets: Buffer[]): void {
    for (const packet of packets) {
      const target = routeDevicePacket(packet, this.ctx.mtu, this.lookup);
      if (typeof target === 'string') {
        this.drop(target, target === 'oversize' ? this.lookup(packet.readUInt32BE(16)) : undefined);
        continue;
      }
      if (target.send?.send(packet)) {
        target.counters.packetsOut++;
        target.counters.bytesOut += packet.length;
      }
    }
  }

  private drop(reason: PacketDropReason, e: Enclave | undefined): void {
    this.ctx.stats[reason]++;
    if (e !== undefined && reason !== 'unknownDestination') e.counters[reason]++;
  }

  private logSpoof(e: Enclave, packet: Buffer): void {
    const now = Date.now();
    if (now - e.lastSpoofLog < SPOOF_LOG_INTERVAL_MS) return;
    e.lastSpoofLog = now;
    const source = formatIpv4(packet.readUInt32BE(12));
    this.ctx.log.warn(
      { event: 'spoofed', enclaveIp: formatIpv4(e.ip), source, dropped: e.counters.spoofed },
      `dropped packet with spoofed source ${source} from enclave ${formatIpv4(e.ip)}`,
    );
  }
}
