/**
 * How many handshakes a DTLS server runs at once. Starting more handshakes than the path can
 * finish in time does not admit anyone sooner: all of them slow down together (with RSA-3072,
 * 256 handshakes × ≈ 9 ms of signing each), and past the clients' setup timeout every one of them
 * is wasted work. The pacer keeps the number of concurrent handshakes where each still finishes
 * within a latency target: it grows by one with every handshake that finished in under half the
 * target and shrinks by a quarter (at most once per target period) when one took longer than the
 * target. Whatever made it slow counts — this server's CPU, or the clients': in a reconnect burst
 * the enclaves' own host is often the bottleneck (one host brings back all of its enclaves at
 * once), and pushing more handshakes at it only makes all of them miss their timeouts. New peers
 * beyond the limit wait in the hello queue (src/dtls/hello-queue.ts) and start as handshakes end.
 */
import { performance } from 'node:perf_hooks';

export interface HandshakePacerOptions {
  /** The hard limit (maxHandshakes). */
  max: number;
  /** A handshake should reach its verification within this many ms. */
  targetMs: number;
  /** The limit never goes below this (nor above max); default min(max, 32). */
  floor?: number;
  /** Clock in ms (tests pass their own). */
  now?: () => number;
}

export class HandshakePacer {
  private current: number;
  private readonly max: number;
  private readonly floor: number;
  private readonly targetMs: number;
  private readonly now: () => number;
  private lastCut = -Infinity;

  constructor(o: HandshakePacerOptions) {
    this.max = Math.max(1, Math.floor(o.max));
    this.floor = Math.min(this.max, Math.max(1, Math.floor(o.floor ?? 32)));
    this.targetMs = o.targetMs;
    this.now = o.now ?? (() => performance.now());
    // Start low: the first wave of a reconnect burst must not start every slot at once.
    this.current = this.floor;
  }

  /** Handshakes that may be in progress now. */
  get limit(): number {
    return this.current;
  }

  /** A handshake reached its verification `ms` after it started. */
  finished(ms: number): void {
    if (ms > this.targetMs) {
      const t = this.now();
      if (t - this.lastCut < this.targetMs) return; // one cut per period: the slow ones started together
      this.lastCut = t;
      this.current = Math.max(this.floor, Math.floor(this.current * 0.75));
    } else if (ms <= this.targetMs / 2) {
      this.current = Math.min(this.max, this.current + 1);
    }
  }
}
