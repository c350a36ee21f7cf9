/**
 * How many handshakes a DTLS server runs at once. Every handshake in progress shares the one
 * JavaScript thread, so starting more than the CPU finishes in time does not admit anyone sooner:
 * all of them slow down together (with RSA-3072, 256 handshakes × ≈ 9 ms of signing each), and
 * past the clients' setup timeout every one of them is wasted work. The pacer keeps the number of
 * concurrent handshakes where each still finishes within a latency target: it grows by one with
 * every handshake that finished in under half the target (or while the event loop has time to
 * spare) and shrinks by a quarter (at most once per target period) when one took longer than the
 * target while the event loop was saturated — a handshake slowed by its client or the network is
 * no reason to hold others back. New peers beyond the limit get their HelloVerifyRequest but no
 * handshake; DTLS clients retransmit their ClientHello and are served once a slot frees up (or
 * wait in the hello queue, src/dtls/hello-queue.ts, when it is on), instead of starting a
 * handshake that stalls.
 */
import { performance } from 'node:perf_hooks';

/** Event-loop utilisation at or above which the server counts as saturated. */
const SATURATED = 0.9;

export interface HandshakePacerOptions {
  /** The hard limit (maxHandshakes). */
  max: number;
  /** A handshake should reach its verification within this many ms. */
  targetMs: number;
  /** The limit never goes below this (nor above max); default min(max, 32). */
  floor?: number;
  /** Clock in ms (tests pass their own). */
  now?: () => number;
  /** Busy fraction of this thread lately, 0..1 (default: the event loop's utilisation). */
  busy?: () => number;
}

/** The event loop's utilisation over the last ≥ 250 ms (re-sampled at most that often). */
function eventLoopBusy(): () => number {
  let last = performance.eventLoopUtilization();
  let lastAt = performance.now();
  let value = 0;
  return () => {
    const t = performance.now();
    if (t - lastAt >= 250) {
      const cur = performance.eventLoopUtilization();
      value = performance.eventLoopUtilization(cur, last).utilization;
      last = cur;
      lastAt = t;
    }
    return value;
  };
}

export class HandshakePacer {
  private current: number;
  private readonly max: number;
  private readonly floor: number;
  private readonly targetMs: number;
  private readonly now: () => number;
  private readonly busy: () => number;
  private lastCut = -Infinity;

  constructor(o: HandshakePacerOptions) {
    this.max = Math.max(1, Math.floor(o.max));
    this.floor = Math.min(this.max, Math.max(1, Math.floor(o.floor ?? 32)));
    this.targetMs = o.targetMs;
    this.now = o.now ?? (() => performance.now());
    this.busy = o.busy ?? eventLoopBusy();
    // Start low: the first wave of a reconnect burst must not start every slot at once.
    this.current = this.floor;
  }

  /** Handshakes that may be in progress now. */
  get limit(): number {
    return this.current;
  }

  /** A handshake reached its verification `ms` after it started. */
  finished(ms: number): void {
    const saturated = this.busy() >= SATURATED;
    if (ms > this.targetMs && saturated) {
      const t = this.now();
      if (t - this.lastCut < this.targetMs) return; // one cut per period: the slow ones started together
      this.lastCut = t;
      this.current = Math.max(this.floor, Math.floor(this.current * 0.75));
    } else if (ms <= this.targetMs / 2 || !saturated) {
      this.current = Math.min(this.max, this.current + 1);
    }
  }
}
