/**
 * Prometheus metrics of a running gateway (seng serve --metrics HOST:PORT), with prom-client.
 *
 * Event metrics (admissions, setup latency, enforcement operations) are updated through the
 * gateway's observer hooks, once per session event. Everything the data path counts (packets,
 * bytes, drops, sessions, pool usage, DTLS handshakes) is read at scrape time from the
 * counters the gateway keeps anyway — the native forwarder's included (Gateway.traffic() goes
 * through totalCounters) — so no JavaScript runs per packet for metrics.
 *
 * Labels are bounded: app names (from the policy database), admission check names, subnets,
 * directions, drop reasons, operations. Never an enclave or host IP. Metric list and
 * meanings: docs/operations.md.
 */
import { createServer, type Server } from 'node:http';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Counters } from '../gateway/enclave.js';
import type { EnforcementOp, GatewayObserver, GatewayStats, Rejection } from '../gateway/context.js';
import { InputError, errorMessage } from '../util/errors.js';
import type { Logger } from '../util/log.js';

/** What the metrics read from a gateway at scrape time (Gateway implements it). */
export interface MetricsSource {
  readonly stats: GatewayStats;
  traffic(): Counters;
  activeByApp(): Map<string, number>;
}

/** An enclave subnet's pool usage. */
export interface PoolUsage {
  readonly label: string;
  readonly inUse: number;
  readonly free: number;
}

/** One DTLS listener's handshake slots. */
export interface HandshakeSlots {
  /** receive (port P) or send (port P+1). */
  channel: 'receive' | 'send';
  inProgress: number;
  limit: number;
}

export interface MetricsInputs {
  gateway: MetricsSource;
  pools: () => readonly PoolUsage[];
  handshakes?: () => readonly HandshakeSlots[];
  /** Also export the Node.js process metrics (process_*, nodejs_*); default true. */
  processMetrics?: boolean;
}

/** Drop reasons as the gateway's stats name them → their label value. */
const DROP_REASONS = {
  spoofed: 'spoofed_source',
  unknownDestination: 'unknown_destination',
  oversize: 'oversize',
  malformed: 'malformed',
} as const satisfies Partial<Record<keyof GatewayStats, string>>;

const SETUP_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const ENFORCEMENT_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5];

export class GatewayMetrics {
  readonly registry = new Registry();
  private readonly admissions: Counter<'result' | 'reason'>;
  private readonly setup: Histogram;
  private readonly enforcement: Histogram<'op'>;
  private readonly enforcementFailures: Counter<'op'>;
  private readonly auditErrors: Counter;

  constructor(inputs: MetricsInputs) {
    const registers = [this.registry];
    if (inputs.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
    const { gateway } = inputs;

    new Gauge({
      name: 'seng_sessions_active',
      help: 'Active enclave sessions (attested, registered, forwarding), per app.',
      labelNames: ['app'],
      registers,
      collect() {
        this.reset();
        for (const [app, n] of gateway.activeByApp()) this.set({ app }, n);
      },
    });
    this.admissions = new Counter({
      name: 'seng_admissions_total',
      help: 'Admission decisions: result="admitted" (reason="ok") or "rejected" with the failed check as reason.',
      labelNames: ['result', 'reason'],
      registers,
    });
    this.setup = new Histogram({
      name: 'seng_session_setup_seconds',
      help: "Time from the first handshake's certificate verification to the session being active.",
      buckets: SETUP_BUCKETS,
      registers,
    });
    new Counter({
      name: 'seng_sessions_ended_total',
      help: 'Sessions ended (after being active or during setup).',
      registers,
      collect() {
        this.reset();
        this.inc(gateway.stats.ended);
      },
    });
    // Traffic: read once per scrape, shared by the packet and byte counters.
    let traffic: Counters | undefined;
    const readTraffic = (): Counters => (traffic ??= gateway.traffic());
    new Counter({
      name: 'seng_packets_total',
      help: 'Packets forwarded: direction="from_enclave" (enclave → network) or "to_enclave".',
      labelNames: ['direction'],
      registers,
      collect() {
        traffic = undefined;
        const t = readTraffic();
        this.reset();
        this.inc({ direction: 'from_enclave' }, t.packetsIn);
        this.inc({ direction: 'to_enclave' }, t.packetsOut);
      },
    });
    new Counter({
      name: 'seng_bytes_total',
      help: 'Bytes of forwarded IPv4 packets, by direction (as seng_packets_total).',
      labelNames: ['direction'],
      registers,
      collect() {
        const t = readTraffic();
        this.reset();
        this.inc({ direction: 'from_enclave' }, t.bytesIn);
        this.inc({ direction: 'to_enclave' }, t.bytesOut);
      },
    });
    new Counter({
      name: 'seng_packets_dropped_total',
      help: 'Packets the gateway dropped, by reason (spoofed_source, unknown_destination, oversize, malformed).',
      labelNames: ['reason'],
      registers,
      collect() {
        this.reset();
        for (const [key, reason] of Object.entries(DROP_REASONS))
          this.inc({ reason }, gateway.stats[key as keyof typeof DROP_REASONS]);
      },
    });
    this.enforcement = new Histogram({
      name: 'seng_enforcement_seconds',
      help: 'Duration of firewall-backend operations: op="join", "leave" or "update" (categories).',
      labelNames: ['op'],
      buckets: ENFORCEMENT_BUCKETS,
      registers,
    });
    this.enforcementFailures = new Counter({
      name: 'seng_enforcement_failures_total',
      help: 'Firewall-backend operations that failed, by op.',
      labelNames: ['op'],
      registers,
    });
    new Gauge({
      name: 'seng_pool_addresses_in_use',
      help: 'Enclave IPs handed out, per enclave subnet.',
      labelNames: ['subnet'],
      registers,
      collect() {
        this.reset();
        for (const p of inputs.pools()) this.set({ subnet: p.label }, p.inUse);
      },
    });
    new Gauge({
      name: 'seng_pool_addresses',
      help: 'Enclave IPs an enclave subnet can hand out (its size, without the gateway address).',
      labelNames: ['subnet'],
      registers,
      collect() {
        this.reset();
        for (const p of inputs.pools()) this.set({ subnet: p.label }, p.inUse + p.free);
      },
    });
    const handshakes = inputs.handshakes;
    if (handshakes) {
      new Gauge({
        name: 'seng_dtls_handshakes_in_progress',
        help: 'DTLS handshakes in progress, per listener (channel="receive" on port P, "send" on P+1).',
        labelNames: ['channel'],
        registers,
        collect() {
          this.reset();
          for (const h of handshakes()) this.set({ channel: h.channel }, h.inProgress);
        },
      });
      new Gauge({
        name: 'seng_dtls_handshakes_limit',
        help: 'Concurrent DTLS handshakes allowed per listener (--max-handshakes).',
        labelNames: ['channel'],
        registers,
        collect() {
          this.reset();
          for (const h of handshakes()) this.set({ channel: h.channel }, h.limit);
        },
      });
    }
    this.auditErrors = new Counter({
      name: 'seng_lease_store_errors_total',
      help: 'Failed writes to the lease store (the lease history misses those events; the log has them).',
      registers,
    });
  }

  /** The hooks to hand the gateway (GatewayOptions.observer). */
  readonly observer: GatewayObserver = {
    rejected: (r: Rejection) => this.admissions.inc({ result: 'rejected', reason: boundedReason(r.check) }),
    admitted: (_e, setupMs) => {
      this.admissions.inc({ result: 'admitted', reason: 'ok' });
      this.setup.observe(setupMs / 1000);
    },
    enforcement: (op: EnforcementOp, ms: number, ok: boolean) => {
      this.enforcement.observe({ op }, ms / 1000);
      if (!ok) this.enforcementFailures.inc({ op });
    },
  };

  /** Counts a failed lease-store write (see lease-store.ts). */
  leaseStoreError(): void {
    this.auditErrors.inc();
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}

/**
 * An attestation failure names every failed check ("quote-signature,tcb-status"); the first
 * one is the label, so the label set stays the fixed set of check names.
 */
function boundedReason(check: string): string {
  return check.split(',')[0] || 'unknown';
}

/** Parses --metrics HOST:PORT (IPv4, a name, or [IPv6]). */
export function parseListenAddress(value: string): { host: string; port: number } {
  const colon = value.lastIndexOf(':');
  const hint = 'give HOST:PORT, e.g. 127.0.0.1:9464';
  if (colon <= 0) throw new InputError(`--metrics "${value}" is not HOST:PORT`, hint);
  let host = value.slice(0, colon);
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  const portText = value.slice(colon + 1);
  const port = Number(portText);
  if (!/^\d+$/.test(portText) || port < 1 || port > 65535)
    throw new InputError(`--metrics "${value}": port must be 1-65535`, hint);
  if (host === '' || /[\s/]/.test(host)) throw new InputError(`--metrics "${value}": bad host`, hint);
  return { host, port };
}

/** Serves GET /metrics; anything else is 404. Resolves once it listens. */
export async function serveMetrics(
  metrics: GatewayMetrics,
  address: { host: string; port: number },
  log: Logger,
): Promise<{ server: Server; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (req.method !== 'GET' || path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: scrape /metrics\n');
      return;
    }
    metrics.text().then(
      (body) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(body),
      (err: unknown) => {
        log.error({ event: 'metrics-failed', err: errorMessage(err) }, 'metrics collection failed');
        res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics collection failed\n');
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new InputError(
          `cannot serve metrics on ${address.host}:${address.port}: ${err.code ?? err.message}`,
          'pick a free port and a local address for --metrics',
        ),
      ),
    );
    server.listen(address.port, address.host, () => resolve());
  });
  log.info(
    { event: 'metrics-listening', address: `${address.host}:${address.port}` },
    `metrics on http://${address.host}:${address.port}/metrics`,
  );
  return {
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
