/**
 * The data path: packets between the enclaves' DTLS channels and the TUN device.
 *
 * Enclave → network (receive channel, port P):
 *   1. The enclave's runtime sends one IPv4 packet per DTLS record to UDP port P.
 *   2. src/dtls/endpoint.ts: the addon's UDP socket is read in batches (recvmmsg) by the DTLS
 *      addon's receive thread (native/dtls/src/recv_thread.cc; SENG_NATIVE_RECV_THREAD=0: by
 *      the JS event loop's uv_poll instead, as before).
 *   3. Native fast path, on that thread: activate() below calls channel.forwardTo, which routes
 *      the session in the thread's table (peer address:port → the session's record layer and
 *      the enclave IP). A datagram of a routed session whose records are all application data
 *      is decrypted there (record_layer.cc: replay window, AES-GCM), each packet checked with the
 *      addon's copy of the packet rule (tun_forward.cc, same order as classifyEnclavePacket) and
 *      written straight to the TUN fd; JS never sees it and a busy JS thread (handshakes,
 *      attestation, reloads) does not delay it. With TUN offload (seng serve opens the device
 *      with IFF_VNET_HDR when the native path is on) the valid packets of one recvmmsg batch
 *      are written together at the end of the batch by the thread's own writer (tun_writer.cc):
 *      consecutive TCP segments of a flow coalesced into one GSO frame (seng_gro_* in
 *      native/common/seng_net.c), everything else behind a zero virtio_net_hdr.
 *      Everything else (handshakes, alerts, close_notify, records the rule refuses) is queued
 *      to the JS thread and goes up as before: the DTLS server's handlers, and invalid packets
 *      as a 'message' on the channel (src/dtls/session.ts) to step 4.
 *   4. fromEnclave() below (JS fallback): classifyEnclavePacket() in src/tunnel/packet.ts —
 *      THE rule of SPEC §1.4 (oversize, malformed, spoofed) — then device.write().
 *   5. src/tunnel/tun.ts + native/tun/src/tun.c: write(2) into the TUN device; the kernel
 *      routes the packet (and nftables / the seng module filter it).
 *
 * Network → enclave (send channel, port P+1):
 *   1. The kernel routes a packet for an enclave subnet into the TUN device.
 *   2. Native path (the default): native/dtls/src/tun_dispatch.cc, a thread of the DTLS
 *      addon, reads the TUN fd in batches (with offload: a frame may be a TSO super-packet of
 *      up to 64 KiB, cut into ≤ MTU packets with complete checksums by seng_tun_read /
 *      seng_gso_split, one record per segment as SPEC §1 requires), looks the destination
 *      up in its route table
 *      (route()/unroute() below keep it equal to the active enclaves), applies the same
 *      device-side rule as routeDevicePacket(), seals each packet with the send channel's
 *      native record layer (native/dtls/src/record_layer.cc) and sends the batch with
 *      sendmmsg(2) from port P+1 — no JS, not even on the event loop.
 *   3. JS fallback (SENG_NATIVE_FORWARD=0, or a channel without the native path, as in the
 *      unit tests' fakes): src/tunnel/tun.ts + native/tun/src/tun.c read in batches; fromDevice()
 *      below: routeDevicePacket() (src/tunnel/packet.ts) finds the enclave that owns the
 *      destination IP (EnclaveTable, O(1)) and refuses malformed, unknown-destination and
 *      oversize packets; the send channel seals one record per packet (src/dtls/session.ts).
 *
 * The enclave → network fast path of step 3 above lives in native/dtls/src/recv_thread.cc (the
 * thread, its route table and the queue to JS), record_layer.cc and tun_forward.cc (the packet
 * check and the TUN write); conn.cc runs the same check for records JS feeds in.
 *
 * Offload counters (TSO frames read and split, GSO frames written) are in the gateway's stats
 * (`offload`, see offloadStats() below).
 *
 * Every drop is counted by reason, per enclave and gateway-wide (native counters are read in
 * bulk). This module is the only place that moves packets.
 */
import { classifyEnclavePacket, routeDevicePacket, type PacketDropReason } from '../tunnel/packet.js';
import { formatIpv4, type Ipv4 } from '../util/ipv4.js';
import type { GatewayContext, OffloadStats } from './context.js';
import type { Enclave } from './enclave.js';
import type { ChannelListener, DeviceDispatch, DispatchRouteStats } from './types.js';

/** How long one bulk read of the native route counters serves status/metrics calls. */
const ROUTE_STATS_TTL_MS = 200;

/** At most one `spoofed` warning per enclave per interval (the counter keeps the total). */
const SPOOF_LOG_INTERVAL_MS = 1000;

export class Forwarding {
  private readonly lookup: (ip: Ipv4) => Enclave | undefined;
  /** The native device → enclave path, when the send listener offers one. */
  private dispatch: DeviceDispatch | undefined;
  private routeStatsCache: { at: number; map: Map<number, DispatchRouteStats> } | undefined;

  constructor(private readonly ctx: GatewayContext) {
    this.lookup = (ip) => ctx.table.byDestination(ip);
  }

  private nativeOn(): boolean {
    const fd = this.ctx.opts.device.fd;
    return (this.ctx.opts.nativeForward ?? true) && fd !== undefined && fd >= 0;
  }

  /** Starts reading the device: natively through the send listener when it can, else in JS. */
  attachDevice(sendListener: ChannelListener): void {
    const fd = this.ctx.opts.device.fd;
    const offload = this.ctx.opts.device.offload === true;
    if (this.nativeOn() && fd !== undefined) {
      this.dispatch = sendListener.dispatchFromTun?.(fd, this.ctx.mtu, undefined, offload);
    }
    if (!this.dispatch) this.ctx.opts.device.onPackets((packets) => this.fromDevice(packets));
  }

  /** Stops the native device reader (before the device closes). */
  detachDevice(): void {
    this.dispatch?.close();
    this.dispatch = undefined;
  }

  /** Both channels are up and the firewall knows the enclave: route packets to and from it. */
  activate(e: Enclave): void {
    const fd = this.ctx.opts.device.fd;
    const vnetHdr = this.ctx.opts.device.offload === true;
    if (this.nativeOn() && fd !== undefined) e.recv.forwardTo?.(fd, e.ip, this.ctx.mtu, { vnetHdr });
    this.ctx.table.route(e);
    if (e.send && this.dispatch?.route(e.ip, e.send)) {
      e.nativeOut = () => this.routeStats().get(e.ip);
    }
  }

  /** The enclave is ending: stop routing to it; its native counters join its JS ones. */
  deactivate(e: Enclave): void {
    if (!e.nativeOut) return;
    e.nativeOut = undefined;
    const out = this.dispatch?.unroute(e.ip);
    if (out) {
      e.counters.packetsOut += out.packets;
      e.counters.bytesOut += out.bytes;
      e.counters.oversize += out.oversize;
    }
  }

  /** Gateway-wide device-side drops counted natively (added to ctx.stats for reporting). */
  nativeDrops(): { malformed: number; unknownDestination: number; oversize: number } {
    const s = this.dispatch?.stats();
    return {
      malformed: s?.malformed ?? 0,
      unknownDestination: s?.unknownDestination ?? 0,
      oversize: s?.oversize ?? 0,
    };
  }

  /** What the TUN offloads did, when the device has them and the native path runs. */
  offloadStats(): OffloadStats | undefined {
    if (!this.dispatch || this.ctx.opts.device.offload !== true) return undefined;
    const s = this.dispatch.stats();
    const w = this.dispatch.writeStats?.();
    return {
      tsoFramesRead: s.gsoFrames ?? 0,
      tsoSegments: s.gsoSegments ?? 0,
      framesWritten: w?.frames ?? 0,
      gsoFramesWritten: w?.gsoFrames ?? 0,
      packetsWritten: w?.packets ?? 0,
    };
  }

  /** All routes' native counters, read in one call and reused briefly (status of many enclaves). */
  private routeStats(): Map<number, DispatchRouteStats> {
    const now = Date.now();
    if (!this.routeStatsCache || now - this.routeStatsCache.at > ROUTE_STATS_TTL_MS) {
      this.routeStatsCache = { at: now, map: this.dispatch?.routeStats() ?? new Map() };
    }
    return this.routeStatsCache.map;
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
