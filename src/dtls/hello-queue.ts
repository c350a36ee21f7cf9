/**
 * ClientHellos that proved their address (a valid cookie) but could not start a handshake yet,
 * because the handshake slots or the pacer's limit were taken. Without it such a hello was
 * dropped and the client had to retransmit it (DTLS clients back off 1, 2, 4, 8 s ...): during a
 * reconnect burst the server idled between the clients' retransmissions while thousands of them
 * waited, and the unlucky ones hit their setup timeout. With it a slot that frees starts the
 * oldest waiting hello at once.
 *
 * First in, first out (a Map keeps insertion order); one entry per peer (address:port), so a
 * client's retransmission of a queued hello keeps its place instead of adding a duplicate; a hello
 * with a new client random from a queued peer (the client restarted) replaces the bytes, keeping
 * the place. Bounded in entries, in entries per IPv4 address and in age: an entry older than
 * `maxAgeMs` is dropped, never started (its client has probably given up; a handshake started
 * towards it would only hold a slot until the deadline). Only the datagram is kept (a few
 * hundred bytes), not an OpenSSL object.
 */

export interface QueuedHello {
  key: number;
  ip: number;
  port: number;
  /** A copy of the whole datagram (the ClientHello with its cookie). */
  datagram: Buffer;
  /** The ClientHello's random (hex): equal for retransmissions of the same hello. */
  random: string;
  /** When it was first queued (clock of the queue). */
  queuedAt: number;
}

export interface HelloQueueOptions {
  /** Entries at most. */
  max: number;
  /** Entries per IPv4 address at most (all its ports). */
  maxPerAddress: number;
  /** An entry older than this is dropped instead of started. */
  maxAgeMs: number;
  /** Clock in ms (tests pass their own). */
  now?: () => number;
}

export interface HelloQueueStats {
  /** Entries now. */
  queued: number;
  /** Hellos queued since start (retransmissions of a queued hello not counted). */
  enqueued: number;
  /** Retransmissions (or restarts) of a queued peer's hello: no new entry. */
  repeated: number;
  /** Entries dropped because they were older than maxAgeMs. */
  expired: number;
  /** Hellos refused because the queue (or the address's share of it) was full. */
  full: number;
}

export type OfferResult = 'queued' | 'repeated' | 'full';

export class HelloQueue {
  private readonly entries = new Map<number, QueuedHello>();
  private readonly perAddress = new Map<number, number>();
  private readonly max: number;
  private readonly maxPerAddress: number;
  private readonly maxAgeMs: number;
  private readonly now: () => number;
  private readonly counts = { enqueued: 0, repeated: 0, expired: 0, full: 0 };

  constructor(o: HelloQueueOptions) {
    this.max = Math.max(0, Math.floor(o.max));
    this.maxPerAddress = Math.max(0, Math.floor(o.maxPerAddress));
    this.maxAgeMs = o.maxAgeMs;
    this.now = o.now ?? (() => performance.now());
  }

  get size(): number {
    return this.entries.size;
  }

  stats(): HelloQueueStats {
    return { queued: this.entries.size, ...this.counts };
  }

  /**
   * A cookie-verified ClientHello that cannot start now. `datagram` is copied only when a new
   * entry is made (or a restarted peer's entry is updated).
   */
  offer(key: number, ip: number, port: number, datagram: Uint8Array, random: string): OfferResult {
    const known = this.entries.get(key);
    if (known) {
      this.counts.repeated++;
      if (known.random !== random) {
        known.datagram = Buffer.from(datagram);
        known.random = random;
      }
      return 'repeated';
    }
    this.dropExpired();
    if (this.entries.size >= this.max || (this.perAddress.get(ip) ?? 0) >= this.maxPerAddress) {
      this.counts.full++;
      return 'full';
    }
    this.entries.set(key, { key, ip, port, datagram: Buffer.from(datagram), random, queuedAt: this.now() });
    this.perAddress.set(ip, (this.perAddress.get(ip) ?? 0) + 1);
    this.counts.enqueued++;
    return 'queued';
  }

  /** Whether the peer has an entry. */
  has(key: number): boolean {
    return this.entries.has(key);
  }

  /** The client random of the peer's queued hello, if any. */
  randomOf(key: number): string | undefined {
    return this.entries.get(key)?.random;
  }

  /** Removes the peer's entry (it started by another way, or the server closes). */
  delete(key: number): void {
    const e = this.entries.get(key);
    if (e) this.remove(e);
  }

  /**
   * Removes and returns the oldest entry that has not expired and for which `admissible` (e.g.
   * the per-address handshake limit) holds; expired entries met on the way are dropped. Looks at
   * no more than `scan` live entries, so that one address at its limit cannot make this walk the
   * whole queue on every freed slot.
   */
  take(admissible: (e: QueuedHello) => boolean = () => true, scan = 64): QueuedHello | undefined {
    this.dropExpired();
    let looked = 0;
    for (const e of this.entries.values()) {
      if (looked++ >= scan) break;
      if (admissible(e)) {
        this.remove(e);
        return e;
      }
    }
    return undefined;
  }

  clear(): void {
    this.entries.clear();
    this.perAddress.clear();
  }

  /** Entries are in the order they were queued, so the expired ones are at the front. */
  private dropExpired(): void {
    const limit = this.now() - this.maxAgeMs;
    for (const e of this.entries.values()) {
      if (e.queuedAt >= limit) break;
      this.remove(e);
      this.counts.expired++;
    }
  }

  private remove(e: QueuedHello): void {
    this.entries.delete(e.key);
    const n = (this.perAddress.get(e.ip) ?? 0) - 1;
    if (n > 0) this.perAddress.set(e.ip, n);
    else this.perAddress.delete(e.ip);
  }
}
