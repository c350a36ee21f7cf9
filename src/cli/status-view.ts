/** How `seng status` draws a gateway's status (shared by the single shot and --watch). */
import type { EnclaveStatus } from '../gateway/gateway.js';
import type { ShadowStatus } from '../shadow/service.js';
import { table } from './store-flags.js';

export interface StatusResult {
  listen: string;
  tun: string;
  enforcement: string;
  database: string | null;
  subnets: { subnet: string; gateway: string; inUse: number; free: number }[];
  stats: Record<string, number>;
  sessions: EnclaveStatus[];
  /** Present when the gateway runs the ShadowServer (-s). */
  shadows?: ShadowStatus[];
}

/** 42s, 3m05s, 2h07m, 3d04h. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const p = (n: number) => String(n).padStart(2, '0');
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${p(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${p(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86400)}d${p(Math.floor((s % 86400) / 3600))}h`;
}

/** "Ns ago" since the enclave's last packet, or "-" if it sent none yet. */
function lastSeen(x: EnclaveStatus, nowMs: number): string {
  if (x.packetsIn === 0 || typeof x.lastSeen !== 'string') return '-';
  return `${formatDuration((nowMs - Date.parse(x.lastSeen)) / 1000)} ago`;
}

export function renderStatus(s: StatusResult, nowMs = Date.now()): string[] {
  const lines = [
    `gateway ${s.listen}  tun ${s.tun}  enforcement ${s.enforcement}  database ${s.database ?? '-'}`,
    `subnets: ${s.subnets.map((x) => `${x.subnet} (${x.inUse} in use, ${x.free} free)`).join(', ')}`,
    '',
    ...table(
      [
        'ENCLAVE IP',
        'STATE',
        'APP',
        'MRENCLAVE',
        'CLIENT',
        'AGE',
        'LAST SEEN',
        'PKTS IN/OUT',
        'BYTES IN/OUT',
        'DROPS',
      ],
      s.sessions.map((x) => [
        x.enclaveIp,
        x.state,
        x.app ?? '-',
        `${String(x.mrEnclave).slice(0, 16)}…`,
        x.client,
        formatDuration(x.ageSeconds ?? (nowMs - Date.parse(x.since)) / 1000),
        lastSeen(x, nowMs),
        `${x.packetsIn}/${x.packetsOut}`,
        `${x.bytesIn}/${x.bytesOut}`,
        String((x.spoofedDropped ?? 0) + (x.malformedDropped ?? 0) + (x.oversizeDropped ?? 0)),
      ]),
    ).split('\n'),
  ];
  if (s.shadows) {
    lines.push(
      '',
      ...table(
        ['SHADOWED', 'ENCLAVE', 'STATE', 'APP', 'SINCE'],
        s.shadows.map((x) => [
          `${x.hostIp}:${x.port}/${x.proto}`,
          x.enclaveIp,
          x.state,
          x.app ?? '-',
          x.since,
        ]),
      ).split('\n'),
    );
  }
  return lines;
}

/**
 * `--watch` takes an optional SECONDS: oclif flags need a value, so a bare --watch (last,
 * or followed by another flag) gets the default inserted before parsing.
 */
export function withWatchDefault(argv: readonly string[], seconds = 2): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    out.push(a);
    if (a === '--watch' && !/^\d+$/.test(argv[i + 1] ?? '')) out.push(String(seconds));
  }
  return out;
}

/** `seng status --fleet`: the registry's gateways and, with --json, its live leases. */
export interface FleetStatus {
  registry: string;
  gateways: {
    id: string;
    address: string;
    pid: number;
    state: 'live' | 'lost';
    heartbeatAgeSeconds: number;
    leaseTtlSeconds: number;
    startedAt: string;
    enclaves: number;
  }[];
  leases: {
    enclaveIp: string;
    subnet: string;
    gateway: string;
    app: string | null;
    mrEnclave: string;
    mrSigner: string;
    hostIp: string;
    categories: string[];
    sessionId: string;
    since: string;
  }[];
}

export function renderFleet(s: FleetStatus, nowMs = Date.now()): string[] {
  const live = s.gateways.filter((g) => g.state === 'live').length;
  return [
    `registry ${s.registry}: ${live} live gateway(s), ${s.gateways.length - live} lost, ${s.leases.length} live lease(s)`,
    '',
    ...table(
      ['GATEWAY', 'ADDRESS', 'STATE', 'HEARTBEAT', 'TTL', 'ENCLAVES', 'UP'],
      s.gateways.map((g) => [
        g.id,
        g.address,
        g.state,
        `${formatDuration(g.heartbeatAgeSeconds)} ago`,
        formatDuration(g.leaseTtlSeconds),
        String(g.enclaves),
        formatDuration((nowMs - Date.parse(g.startedAt)) / 1000),
      ]),
    ).split('\n'),
  ];
}
