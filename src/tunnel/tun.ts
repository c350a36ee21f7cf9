/**
 * TUN devices (IFF_TUN | IFF_NO_PI: every read and write is one bare IP packet).
 *
 *   const tun = await TunDevice.open({ name: 'tunFA', mtu: 1432,
 *                                      addresses: ['192.168.28.1/24', '172.16.28.1/24'] });
 *   tun.onPackets((packets) => { for (const p of packets) route(p); });  // one call per wakeup
 *   tun.write(packet);   // false = dropped (queue full, oversize, rejected); never blocks
 *   await tun.close();   // removes the device (and addresses) only if we created them
 *
 * Reading happens on the Node event loop through the native addon's libuv poll watcher: each
 * time the fd becomes readable, every queued packet (up to `batch`) is read and handed over in
 * one callback. Link configuration (MTU, addresses, up) goes over rtnetlink, not `ip`.
 */
import { EventEmitter } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { EnvironmentError, InputError, SengError, errorMessage } from '../util/errors.js';
import { parseIpv4 } from '../util/ipv4.js';
import { silentLogger, type Logger } from '../util/log.js';
import { validateInterfaceName } from '../util/names.js';
import { LinkConfig } from './link.js';
import {
  TUN_FLAG_MULTI_QUEUE,
  TUN_FLAG_OFFLOAD,
  loadTunAddon,
  type NativeErrnoError,
  type NativeTunHandle,
  type NativeTunStats,
} from './native.js';

/** MTU of the gateway's TUN device (SPEC §1.1, §3). */
export const GATEWAY_TUN_MTU = 1432;
export const DEFAULT_BATCH = 64;
/** Most queues `queues` may ask for (the kernel allows 256; more than the cores is no use). */
export const MAX_QUEUES = 64;

const IFF_TUN = 0x0001;
const IFF_TAP = 0x0002;
const IFF_MULTI_QUEUE = 0x0100;

const EAGAIN = 11;
const EBADF = 9;
const EBADFD = 77;

export interface TunOpenOptions {
  /** Interface name, 1–15 characters (a pattern such as 'tun%d' lets the kernel choose). */
  name: string;
  /** Link MTU to set; default: keep the device's MTU (1500 for a new device). */
  mtu?: number;
  /** IPv4 addresses with prefix, e.g. '192.168.28.1/24'. */
  addresses?: string[];
  /**
   * true (default): create a new device, failing if the name exists;
   * false: attach to an existing (admin pre-created, persistent) device, failing if missing;
   * 'auto': attach if it exists, otherwise create.
   */
  create?: boolean | 'auto';
  /** Bring the link up (default true). */
  up?: boolean;
  /** Most packets delivered per wakeup (1–4096, default 64). */
  batch?: number;
  /** Device transmit queue length (packets the kernel queues for us to read; default 500). */
  txQueueLen?: number;
  /** Disable IPv6 on a device we create, so no router solicitations appear (default true). */
  disableIpv6?: boolean;
  /**
   * Offloads (IFF_VNET_HDR, TUN_F_CSUM | TUN_F_TSO4): the kernel may hand over TCP
   * super-packets of up to 64 KiB, which the addon segments into packets of at most the MTU
   * before they reach JS; writeBatch() coalesces TCP segments (and same-size UDP datagrams) of a
   * flow into GSO writes. Default false.
   */
  offload?: boolean;
  /** Number of queues (IFF_MULTI_QUEUE when > 1): one fd per queue, 1–64; default 1. */
  queues?: number;
  logger?: Logger;
}

export interface TunStats extends NativeTunStats {
  /** Writes refused because the packet was larger than the MTU. */
  txOversize: number;
}

/** `queue` is the index of the queue (fd) the packets were read from (0 with one queue). */
export type PacketsCallback = (packets: Buffer[], queue: number) => void;

interface TunEvents {
  packets: [packets: Buffer[], queue: number];
  error: [err: SengError];
  close: [];
}

interface ParsedAddress {
  address: number;
  prefix: number;
  text: string;
}

function parseHostCidr(text: string): ParsedAddress {
  const m = /^([^/]+)\/(\d{1,2})$/.exec(text.trim());
  const prefix = m ? Number(m[2]) : -1;
  if (!m || prefix < 1 || prefix > 32) {
    throw new InputError(
      `"${text}" is not an interface address`,
      'write it as ADDRESS/PREFIX with the host part, e.g. 192.168.28.1/24',
    );
  }
  return { address: parseIpv4(m[1] as string), prefix, text: `${m[1]}/${prefix}` };
}

function openError(err: unknown, name: string, mode: 0 | 1): SengError {
  const e = err as NativeErrnoError;
  const code = typeof e?.code === 'string' ? e.code : '';
  const base = errorMessage(err);
  switch (code) {
    case 'ENOENT':
    case 'ENXIO':
      return new EnvironmentError(
        'ETUN_NODEV',
        `/dev/net/tun is not available: ${base}`,
        'the kernel needs TUN support; create the node with: mkdir -p /dev/net && mknod /dev/net/tun c 10 200',
        err,
      );
    case 'EPERM':
    case 'EACCES':
      // open(2) of the device node failed on its file mode, before any capability check.
      if (code === 'EACCES' && base.includes('/dev/net/tun')) {
        return new EnvironmentError(
          'ETUN_PERM',
          `not allowed to open /dev/net/tun: ${base}`,
          'the node must be readable and writable by the service user; distributions ship it as mode 0666 (udev): chmod 0666 /dev/net/tun',
          err,
        );
      }
      return new EnvironmentError(
        'ETUN_PERM',
        `not allowed to ${mode === 0 ? 'create' : 'attach to'} TUN device ${name}: ${base}`,
        'run as root or with CAP_NET_ADMIN (attaching to a persistent device needs its owner or CAP_NET_ADMIN)',
        err,
      );
    case 'EBUSY':
      return mode === 0
        ? new EnvironmentError(
            'ETUN_EXISTS',
            `a network device named ${name} already exists`,
            `attach to it (seng serve --tun-existing; TunDevice.open create: false or 'auto') or remove it: ip link del ${name}`,
            err,
          )
        : new EnvironmentError(
            'ETUN_BUSY',
            `TUN device ${name} is in use by another process`,
            'stop the other process (a single-queue TUN device accepts one reader)',
            err,
          );
    case 'ENODEV':
      return new EnvironmentError(
        'ETUN_MISSING',
        `TUN device ${name} does not exist`,
        `create it first (ip tuntap add dev ${name} mode tun) or let seng create it`,
        err,
      );
    case 'EINVAL':
      return new EnvironmentError(
        'ETUN_TYPE',
        `cannot use ${name} as a TUN device: ${base}`,
        'the existing device is not a TUN device of the requested queue mode (TAP, multi-queue or another link type)',
        err,
      );
    default:
      return new EnvironmentError('ETUN_OPEN', `cannot open TUN device ${name}: ${base}`, undefined, err);
  }
}

export class TunDevice extends EventEmitter<TunEvents> {
  /** Actual interface name. */
  readonly name: string;
  /** Interface index in this network namespace. */
  readonly index: number;
  /** True if this TunDevice created the interface (close() then deletes it). */
  readonly created: boolean;
  private currentMtu: number;
  /** Queue 0: writes go here. */
  private readonly handle: NativeTunHandle;
  private readonly handles: readonly NativeTunHandle[];
  /** Whether the fds carry a virtio_net_hdr (offload on). */
  readonly offload: boolean;
  private readonly logger: Logger;
  /** Addresses we added to a device we attached to (removed again on close). */
  private readonly addedAddresses: ParsedAddress[];
  private packetCb: PacketsCallback | null = null;
  private reading = false;
  private paused = false;
  private closed = false;
  private closing: Promise<void> | undefined;
  private txOversize = 0;

  private constructor(
    handles: NativeTunHandle[],
    offload: boolean,
    index: number,
    created: boolean,
    mtu: number,
    added: ParsedAddress[],
    logger: Logger,
  ) {
    super();
    this.handles = handles;
    this.handle = handles[0] as NativeTunHandle;
    this.offload = offload;
    this.readers = handles.map((_, q) => this.readerFor(q));
    this.name = this.handle.name;
    this.index = index;
    this.created = created;
    this.currentMtu = mtu;
    this.addedAddresses = added;
    this.logger = logger;
    // Adding a 'packets' listener starts reading (after it is registered).
    (this as EventEmitter).on('newListener', (event: string | symbol) => {
      if (event === 'packets') queueMicrotask(() => this.startReading());
    });
  }

  /** Opens (creates or attaches to) a TUN device and configures it. */
  static async open(opts: TunOpenOptions): Promise<TunDevice> {
    const logger = opts.logger ?? silentLogger;
    const name = opts.name;
    if (typeof name !== 'string') throw new InputError(`${String(name)} is not an interface name`);
    validateInterfaceName(name, { template: true });
    if (opts.mtu !== undefined && (!Number.isInteger(opts.mtu) || opts.mtu < 68 || opts.mtu > 65535)) {
      throw new InputError(
        `MTU ${opts.mtu} is out of range`,
        'use an integer between 68 and 65535 (1432 for the gateway)',
      );
    }
    const batch = opts.batch ?? DEFAULT_BATCH;
    if (!Number.isInteger(batch) || batch < 1 || batch > 4096) {
      throw new InputError(`batch ${batch} is out of range`, 'use an integer between 1 and 4096');
    }
    if (opts.txQueueLen !== undefined && (!Number.isInteger(opts.txQueueLen) || opts.txQueueLen < 1)) {
      throw new InputError(`txQueueLen ${opts.txQueueLen} is not a positive integer`);
    }
    const queues = opts.queues ?? 1;
    if (!Number.isInteger(queues) || queues < 1 || queues > MAX_QUEUES) {
      throw new InputError(`queues ${queues} is out of range`, `use an integer between 1 and ${MAX_QUEUES}`);
    }
    const addresses = (opts.addresses ?? []).map(parseHostCidr);

    const addon = loadTunAddon();
    const create = opts.create ?? true;
    const exists = addon.ifIndex(name) !== 0;
    const mode: 0 | 1 = create === false || (create === 'auto' && exists) ? 1 : 0;
    if (mode === 1 && exists) checkAttachable(name, queues > 1);
    const offload = opts.offload ?? false;
    const flags = (offload ? TUN_FLAG_OFFLOAD : 0) | (queues > 1 ? TUN_FLAG_MULTI_QUEUE : 0);
    const handles: NativeTunHandle[] = [];
    try {
      // The first queue creates (or attaches); the others attach to the same device.
      for (let q = 0; q < queues; q++) {
        handles.push(
          new addon.TunHandle(
            q === 0 ? name : (handles[0] as NativeTunHandle).name,
            q === 0 ? mode : 1,
            batch,
            flags,
            opts.mtu ?? 1500,
          ),
        );
      }
    } catch (err) {
      for (const h of handles) h.close();
      throw openError(err, name, handles.length === 0 ? mode : 1);
    }
    const handle = handles[0] as NativeTunHandle;
    const created = mode === 0;
    const index = addon.ifIndex(handle.name);
    const added: ParsedAddress[] = [];
    let link: LinkConfig | undefined;
    try {
      if (index === 0) {
        throw new EnvironmentError('ETUN_OPEN', `TUN device ${handle.name} vanished right after opening it`);
      }
      link = LinkConfig.open();
      if (created && (opts.disableIpv6 ?? true)) disableIpv6(handle.name, logger);
      if (opts.mtu !== undefined) await link.setMtu(index, opts.mtu, handle.name);
      if (opts.txQueueLen !== undefined) await link.setTxQueueLen(index, opts.txQueueLen, handle.name);
      for (const a of addresses) {
        if (await link.addAddress(index, a.address, a.prefix, handle.name)) added.push(a);
      }
      if (opts.up ?? true) await link.setUp(index, true, handle.name);
      const info = await link.getLink(index);
      for (const h of handles) h.setMtu(info.mtu);
      const dev = new TunDevice(handles, offload, index, created, info.mtu, created ? [] : added, logger);
      logger.debug(
        {
          tun: dev.name,
          index,
          created,
          mtu: info.mtu,
          offload,
          queues,
          addresses: addresses.map((a) => a.text),
        },
        created ? 'created TUN device' : 'attached to TUN device',
      );
      return dev;
    } catch (err) {
      // Undo: closing the fds removes a device we created; addresses added to an attached one
      // are removed explicitly.
      for (const h of handles) h.close();
      if (!created && link) {
        for (const a of added) await link.delAddress(index, a.address, a.prefix, handle.name).catch(() => {});
      }
      throw err;
    } finally {
      link?.close();
    }
  }

  /**
   * The device fd of queue 0 (-1 once closed), so a native forwarder (the DTLS layer) can write
   * packets straight into the device. Valid until close(). With `offload` every write on it
   * must start with a virtio_net_hdr (native/common: seng_tun_write_vnet, seng_gro_write).
   */
  get fd(): number {
    return this.closed ? -1 : this.handle.fd();
  }

  /** One fd per queue (`queues` option), for per-core forwarding; empty once closed. */
  get fds(): number[] {
    return this.closed ? [] : this.handles.map((h) => h.fd());
  }

  /** Number of queues (fds). */
  get queues(): number {
    return this.handles.length;
  }

  /** Link MTU; write() drops larger packets. */
  get mtu(): number {
    return this.currentMtu;
  }

  /** Changes the link MTU. */
  async setMtu(mtu: number): Promise<void> {
    if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw new InputError(`MTU ${mtu} is out of range`);
    const link = LinkConfig.open();
    try {
      await link.setMtu(this.index, mtu, this.name);
      this.currentMtu = mtu;
      for (const h of this.handles) h.setMtu(mtu);
    } finally {
      link.close();
    }
  }

  /**
   * Sets the fast packet callback (one call per wakeup with every packet read) and starts
   * reading. Pass null to remove it. 'packets' event listeners, if any, are called as well.
   */
  onPackets(cb: PacketsCallback | null): void {
    this.packetCb = cb;
    if (cb) this.startReading();
  }

  /** Stops reading (packets queue in the kernel, then drop) until resume(). */
  pause(): void {
    this.paused = true;
    if (this.reading && !this.closed) for (const h of this.handles) h.stop();
    this.reading = false;
  }

  resume(): void {
    this.paused = false;
    this.startReading();
  }

  /** Whether an active reader keeps the Node process alive (default: it does). */
  ref(): void {
    for (const h of this.handles) h.ref();
  }

  unref(): void {
    for (const h of this.handles) h.unref();
  }

  /**
   * Writes one IP packet. Never blocks. Returns false if the packet was dropped: larger than
   * the MTU, the device queue full (EAGAIN), the link down (EIO) or otherwise rejected by the
   * kernel (see stats()). Throws ETUN_CLOSED after close() and ETUN_GONE if the interface was
   * deleted under us.
   */
  write(packet: Uint8Array): boolean {
    if (packet.length > this.currentMtu) {
      this.txOversize++;
      return false;
    }
    const r = this.handle.write(packet);
    if (r >= 0) return true;
    if (r === -EAGAIN) return false;
    return this.writeFailed(-r);
  }

  /**
   * Writes several packets; returns how many were written (the others were dropped). With
   * `offload`, consecutive TCP segments of one flow are coalesced into one GSO write.
   */
  writeBatch(packets: readonly Uint8Array[]): number {
    if (!this.offload) {
      let n = 0;
      for (let i = 0; i < packets.length; i++) if (this.write(packets[i] as Uint8Array)) n++;
      return n;
    }
    let fitting: readonly Uint8Array[] = packets;
    if (packets.some((p) => p.length > this.currentMtu)) {
      fitting = packets.filter((p) => p.length <= this.currentMtu);
      this.txOversize += packets.length - fitting.length;
    }
    const r = this.handle.writeBatch(fitting);
    return r >= 0 ? r : (this.writeFailed(-r), 0);
  }

  /** Counters, summed over the queues. */
  stats(): TunStats {
    const sum = this.handle.stats();
    for (let q = 1; q < this.handles.length; q++) {
      const s = (this.handles[q] as NativeTunHandle).stats() as unknown as Record<string, number | boolean>;
      const acc = sum as unknown as Record<string, number | boolean>;
      for (const [k, v] of Object.entries(s)) if (typeof v === 'number') acc[k] = (acc[k] as number) + v;
    }
    return { ...sum, txOversize: this.txOversize };
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Stops reading and closes the fd (synchronously, before the first await). Then removes
   * what we created: the device itself if we created it, else the addresses we added.
   * Idempotent; concurrent calls share one promise.
   */
  close(): Promise<void> {
    if (!this.closing) this.closing = this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    this.closed = true;
    this.reading = false;
    for (const h of this.handles) h.close();
    const addon = loadTunAddon();
    let link: LinkConfig | undefined;
    try {
      if (this.created) {
        // A non-persistent TUN device disappears with its last fd; delete it if someone made it
        // persistent meanwhile (same name and index, so it is still ours).
        if (addon.ifIndex(this.name) === this.index) {
          link = LinkConfig.open();
          await link.deleteLink(this.index, this.name);
        }
      } else if (this.addedAddresses.length > 0 && addon.ifIndex(this.name) === this.index) {
        link = LinkConfig.open();
        for (const a of this.addedAddresses)
          await link.delAddress(this.index, a.address, a.prefix, this.name);
      }
    } catch (err) {
      this.logger.warn({ tun: this.name, err: errorMessage(err) }, 'TUN cleanup incomplete');
    } finally {
      link?.close();
    }
    this.logger.debug({ tun: this.name, created: this.created }, 'closed TUN device');
    this.emit('close');
  }

  private startReading(): void {
    if (this.reading || this.paused || this.closed) return;
    if (!this.packetCb && this.listenerCount('packets') === 0) return;
    this.handles.forEach((h, q) => h.start(this.readers[q] as NativeReader));
    this.reading = true;
  }

  /** One reader closure per queue for the device's lifetime. */
  private readonly readers: readonly NativeReader[];

  /**
   * The addon calls the reader once per wakeup; per packet only a Buffer view into the
   * wakeup's slab is created.
   */
  private readerFor(queue: number): NativeReader {
    return (slab, ends, errno) => {
      if (slab !== null && ends !== null) {
        const count = ends.length >>> 2;
        const packets = new Array<Buffer>(count);
        let start = 0;
        for (let i = 0; i < count; i++) {
          const end = ends.readUInt32LE(i << 2);
          packets[i] = slab.subarray(start, end);
          start = end;
        }
        const cb = this.packetCb;
        if (cb !== null) cb(packets, queue);
        if (this.listenerCount('packets') > 0) this.emit('packets', packets, queue);
      }
      if (errno !== 0) this.readFailed(errno);
    };
  }

  private readFailed(errno: number): void {
    if (!this.reading) return; // another queue already reported it
    this.reading = false;
    if (this.closed) return;
    for (const h of this.handles) h.stop();
    const gone = errno === EBADFD || errno === EBADF;
    const err = new EnvironmentError(
      gone ? 'ETUN_GONE' : 'ETUN_READ',
      gone
        ? `TUN device ${this.name} went away (errno ${errno})`
        : `reading TUN device ${this.name} failed (errno ${errno})`,
      gone ? 'someone deleted the interface; restart to recreate it' : undefined,
    );
    this.report(err);
  }

  private writeFailed(errno: number): boolean {
    if (errno === EBADF) {
      throw new EnvironmentError('ETUN_CLOSED', `TUN device ${this.name} is closed`);
    }
    if (errno === EBADFD) {
      throw new EnvironmentError(
        'ETUN_GONE',
        `TUN device ${this.name} went away`,
        'someone deleted the interface; restart to recreate it',
      );
    }
    // This one packet was refused (EIO: link down; EINVAL: malformed; ENOMEM, ...): counted in
    // txErrors, the device stays usable.
    return false;
  }

  private report(err: SengError): void {
    if (this.listenerCount('error') > 0) this.emit('error', err);
    else this.logger.error({ tun: this.name, code: err.code }, err.message);
  }

  /** Human-readable summary for logs. */
  describe(): string {
    const extras = `${this.offload ? ', offload' : ''}${this.handles.length > 1 ? `, ${this.handles.length} queues` : ''}`;
    return `${this.name} (#${this.index}, mtu ${this.currentMtu}, ${this.created ? 'created' : 'attached'}${extras})`;
  }
}

type NativeReader = (slab: Buffer | null, ends: Buffer | null, errno: number) => void;

/**
 * The TUN flags of an existing device (IFF_TUN, IFF_TAP, IFF_MULTI_QUEUE, ...), or null if the
 * device is not a TUN/TAP device (veth, dummy, bridge, ...: no tun_flags in sysfs).
 */
export function existingTunFlags(name: string): number | null {
  try {
    const text = readFileSync(`/sys/class/net/${name}/tun_flags`, 'utf8').trim();
    const flags = Number.parseInt(text, 16);
    return Number.isNaN(flags) ? null : flags;
  } catch {
    return null;
  }
}

/**
 * Refuses to attach to a device seng cannot use: not TUN/TAP, a TAP (Ethernet frames), or a
 * different queue mode. The packet-information header needs no check: attaching sets IFF_NO_PI
 * (and IFF_VNET_HDR) for the device, whatever the creator chose.
 */
function checkAttachable(name: string, multiQueue: boolean): void {
  const flags = existingTunFlags(name);
  const remove = `remove it (ip link del ${name}) or choose another name (seng serve --tun NAME)`;
  if (flags === null) {
    throw new EnvironmentError('ETUN_TYPE', `${name} exists but is not a TUN device`, remove);
  }
  if ((flags & IFF_TAP) !== 0 || (flags & IFF_TUN) === 0) {
    throw new EnvironmentError(
      'ETUN_TYPE',
      `${name} is a TAP device (Ethernet frames), not a TUN device`,
      `recreate it as TUN (ip link del ${name}; ip tuntap add dev ${name} mode tun) or choose another name`,
    );
  }
  if (((flags & IFF_MULTI_QUEUE) !== 0) !== multiQueue) {
    throw new EnvironmentError(
      'ETUN_TYPE',
      `${name} is a ${multiQueue ? 'single' : 'multi'}-queue TUN device, but ${multiQueue ? 'several queues were' : 'one queue was'} requested`,
      multiQueue
        ? `recreate it with: ip tuntap add dev ${name} mode tun multi_queue`
        : `recreate it without multi_queue, or open it with queues > 1`,
    );
  }
}

function disableIpv6(name: string, logger: Logger): void {
  try {
    writeFileSync(`/proc/sys/net/ipv6/conf/${name}/disable_ipv6`, '1');
  } catch (err) {
    // No IPv6 in this kernel/namespace: nothing to disable.
    logger.debug({ tun: name, err: errorMessage(err) }, 'could not disable IPv6 on TUN device');
  }
}
