/**
 * What a running gateway holds, from the outside, for leak checks (bench soak section and the
 * fuzz/soak test): sessions and enclave IPs in use (`seng status --json`), the DTLS addon's live
 * objects and the handshake slots in use (the probe preloaded with bench/lib/probe.js), JS heap
 * and RSS, nftables set elements (`nft -j list table`) and conntrack entries (all, and those of
 * the enclave subnet) in the gateway's namespace.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { distBench, type Netns } from './lab.js';
import { rssKiB, sleep } from './util.js';

/** Where bench/lib/probe.ts writes its snapshot (it is not imported: it would run here). */
const probePath = (pid: number): string => `/tmp/seng-probe-${pid}.json`;

/** Node arguments that preload the probe into `seng serve`. */
export const probeNodeArgs = (): string[] => ['--expose-gc', '--import', join(distBench, 'lib', 'probe.js')];

export interface ProbeSnapshot {
  native: Record<string, number>;
  dtls: { handshakes: number; sessions: number }[];
  memory: { rss: number; heapUsed: number; heapTotal: number; external: number; arrayBuffers: number };
}

/** Asks the probe in process `pid` for a snapshot (after a full GC). */
export async function probe(pid: number, timeoutMs = 10_000): Promise<ProbeSnapshot> {
  const file = probePath(pid);
  rmSync(file, { force: true });
  process.kill(pid, 'SIGUSR2');
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(file)) {
    if (Date.now() > deadline) throw new Error(`the gateway probe (pid ${pid}) did not answer`);
    await sleep(50);
  }
  const snap = JSON.parse(readFileSync(file, 'utf8')) as ProbeSnapshot;
  rmSync(file, { force: true });
  return snap;
}

export interface GatewayState {
  sessions: number;
  ipsInUse: number;
  /** Handshake slots in use, summed over both DTLS servers (P and P+1). */
  handshakes: number;
  /** Live objects of the DTLS addon (every `live*` counter of nativeStats()). */
  native: Record<string, number>;
  rssKiB: number;
  jsHeapUsedKiB: number;
  /** nftables set elements in the seng table (undefined without --nft). */
  nftElements?: number;
  conntrack: { all: number; enclaveSubnet: number };
}

interface StatusJson {
  subnets: { inUse: number }[];
  sessions: unknown[];
}

function statusJson(sengBin: string, control: string): StatusJson {
  const out = execFileSync(process.execPath, [sengBin, 'status', '--control', control, '--json'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return JSON.parse(out) as StatusJson;
}

/** Elements of every set in table `ip <table>`, summed. */
export function nftElements(ns: Netns, table: string): number {
  const r = ns.execSync('nft', ['-j', 'list', 'table', 'ip', table], { check: false });
  if (r.code !== 0) throw new Error(`nft list table ip ${table}: ${r.stderr.trim()}`);
  const j = JSON.parse(r.stdout) as { nftables: { set?: { elem?: unknown[] } }[] };
  return j.nftables.reduce((n, o) => n + (o.set?.elem?.length ?? 0), 0);
}

/** Conntrack entries in the namespace: all, and those with an address starting with `prefix`. */
export function conntrackCount(ns: Netns, prefix: string): { all: number; enclaveSubnet: number } {
  const r = ns.execSync('conntrack', ['-L'], { check: false });
  const lines = r.stdout.split('\n').filter((l) => l.includes('src='));
  const mine = lines.filter((l) => l.includes(`src=${prefix}`) || l.includes(`dst=${prefix}`));
  return { all: lines.length, enclaveSubnet: mine.length };
}

export interface StateSource {
  sengBin: string;
  control: string;
  pid: number;
  ns: Netns;
  /** nftables table of the gateway, when it runs with --nft. */
  nftTable?: string;
  /** Address prefix of the enclave subnet, e.g. "10.128." (for conntrack). */
  enclavePrefix: string;
}

export async function gatewayState(src: StateSource): Promise<GatewayState> {
  const s = statusJson(src.sengBin, src.control);
  const p = await probe(src.pid);
  const native: Record<string, number> = {};
  for (const [k, v] of Object.entries(p.native))
    if (k.startsWith('live') && typeof v === 'number') native[k] = v;
  return {
    sessions: s.sessions.length,
    ipsInUse: s.subnets.reduce((n, x) => n + x.inUse, 0),
    handshakes: p.dtls.reduce((n, d) => n + d.handshakes, 0),
    native,
    rssKiB: rssKiB(src.pid),
    jsHeapUsedKiB: Math.round(p.memory.heapUsed / 1024),
    ...(src.nftTable ? { nftElements: nftElements(src.ns, src.nftTable) } : {}),
    conntrack: conntrackCount(src.ns, src.enclavePrefix),
  };
}

/**
 * Growth of the counts that must come back to where they were (everything but memory and the
 * namespace's conntrack total, which holds the DTLS flows themselves until the kernel's
 * timeouts). Shrinking is not a leak (e.g. a conntrack entry of the baseline timing out).
 */
export function leaks(before: GatewayState, after: GatewayState): Record<string, number> {
  const out: Record<string, number> = {};
  const cmp = (k: string, a: number | undefined, b: number | undefined) => {
    if (a === undefined || b === undefined) return;
    if (b > a) out[k] = b - a;
  };
  cmp('sessions', before.sessions, after.sessions);
  cmp('ipsInUse', before.ipsInUse, after.ipsInUse);
  cmp('handshakes', before.handshakes, after.handshakes);
  for (const k of Object.keys(before.native)) cmp(`native.${k}`, before.native[k], after.native[k]);
  cmp('nftElements', before.nftElements, after.nftElements);
  cmp('conntrack.enclaveSubnet', before.conntrack.enclaveSubnet, after.conntrack.enclaveSubnet);
  return out;
}

/** Polls until nothing leaks compared with `before` (or the time is up); the last state. */
export async function settle(
  src: StateSource,
  before: GatewayState,
  timeoutMs: number,
): Promise<{ state: GatewayState; leaks: Record<string, number>; waitedSeconds: number }> {
  const t0 = Date.now();
  for (;;) {
    const state = await gatewayState(src);
    const l = leaks(before, state);
    if (!Object.keys(l).length || Date.now() - t0 > timeoutMs)
      return { state, leaks: l, waitedSeconds: Math.round((Date.now() - t0) / 100) / 10 };
    await sleep(1000);
  }
}
