/**
 * Section `soak` (issue 13): fuzzing and connect/disconnect soak of a running gateway
 * (`seng serve --nft`, P-256 suite, the probe of bench/lib/probe.ts preloaded), driven by
 * bench/workers/fuzz.ts in the enclave host's namespace — the worker the CI-sized test
 * test/integration/gateway/fuzz-soak.test.ts runs with small counts.
 *
 *   fuzz     ≥ 1,000,000 malformed, truncated, replayed and reordered datagrams to both ports
 *            (P and P+1) from other addresses, while one established enclave is pinged through
 *            the gateway; then: gateway alive, enclave still forwarding, no growth in handshake
 *            slots, sessions, IPs, native objects, set elements; RSS and JS heap before/after.
 *   cycles   ≥ 10,000 connect → one packet → disconnect cycles (16 in flight); then nothing
 *            left: sessions, IPs, live DTLS-addon objects, handshake slots, nftables set
 *            elements, conntrack entries of the enclave subnet.
 *   forged   a shorter fuzz that also sends from the established sessions' own address:port
 *            (records reach the session's record layer); last, because it may end the session.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createSimCertificate } from '../src/attestation/index.js';
import {
  GW_SENG,
  MR_ENCLAVE,
  MR_SIGNER,
  SENG_HOST,
  SENG_PORT,
  SERVICE,
  controlPath,
  sengBin,
  sengCli,
  startGateway,
  type Lab,
  type Proc,
} from './lib/lab.js';
import { errorText, log, round, type BenchOptions } from './lib/util.js';
import { startWorker, type ClientsWorker } from './lib/workers.js';
import {
  gatewayState,
  probeNodeArgs,
  settle,
  type GatewayState,
  type StateSource,
} from './lib/gateway-state.js';
import { certPool } from './admission.js';
import type { FuzzReport } from './lib/dgram-fuzz.js';

export interface FuzzPhase {
  report: FuzzReport;
  /** Pings of the established enclave during the fuzzing (every 5 %): tried / answered. */
  pingsDuring: { tried: number; ok: number };
  forwardsAfter: boolean;
  gatewayAlive: boolean;
  victimCloseReason?: string;
  /** Growth of counts that must not grow (empty = none), after waiting `settleSeconds`. */
  leaks: Record<string, number>;
  settleSeconds: number;
  before: GatewayState;
  after: GatewayState;
  /**
   * UDP counters of the gateway's namespace over the phase (/proc/net/snmp): datagrams its
   * sockets received, and those the kernel dropped because a socket's buffer was full.
   */
  udp?: { inDatagrams: number; rcvbufErrors: number };
  /** RSS and JS heap (after a full GC) growth over the phase, KiB. */
  rssGrowthKiB: number;
  jsHeapGrowthKiB: number;
}

export interface CyclePhase {
  cycles: number;
  setups: number;
  failures: number;
  errors?: Record<string, number>;
  seconds: number;
  gatewayAlive: boolean;
  forwardsAfter: boolean;
  leaks: Record<string, number>;
  settleSeconds: number;
  before: GatewayState;
  after: GatewayState;
}

export interface SoakResult {
  fuzz?: FuzzPhase;
  cycles?: CyclePhase;
  forged?: FuzzPhase;
  errors: string[];
}

const POLICY = `version: 1
defaults: { input: accept, forward: drop, output: accept }
rules:
  - name: service-replies
    chain: forward
    src-addr: ${SERVICE}
    action: accept
`;

export async function runSoak(lab: Lab, opts: BenchOptions): Promise<SoakResult> {
  const counts = opts.quick
    ? { datagrams: 50_000, cycles: 300, forged: 5_000 }
    : { datagrams: 1_000_000, cycles: 10_000, forged: 20_000 };
  const result: SoakResult = { errors: [] };
  const db = join(lab.dir, 'soak-nf.db');
  sengCli(['db', 'init', '-d', db, '--schema', 'netfilter']);
  sengCli(['db', 'app', 'add', '-d', db, 'bench-app', '--mrenclave', MR_ENCLAVE, '--mrsigner', MR_SIGNER]);
  sengCli(['db', 'category', 'add', '-d', db, 'Soak', '--app', 'bench-app']);
  const policy = join(lab.dir, 'soak-policy.yaml');
  writeFileSync(policy, POLICY);
  // Conntrack on in the gateway's namespace, so leaves have entries to purge.
  await lab.gw.exec('nft', ['-f', '-'], {
    input:
      'table ip benchct {\n chain pre {\n  type filter hook prerouting priority -300; policy accept;\n  ct state new counter\n }\n}\n',
  });
  let gw: Proc | undefined;
  let worker: ClientsWorker | undefined;
  try {
    gw = await startGateway(lab, {
      suite: 'ec',
      db,
      extraArgs: ['--nft', '--policy', policy],
      nodeArgs: probeNodeArgs(),
      maxHandshakes: 256,
    });
    // The gateway with no enclave at all: what must remain once every session has ended.
    const empty = await gatewayState({
      sengBin,
      control: controlPath(lab),
      pid: gw.pid as number,
      ns: lab.gw,
      nftTable: 'seng',
      enclavePrefix: '192.0.2.', // nothing matches; conntrack is not compared with this state
    });
    const victim = createSimCertificate(lab.ca, {
      kind: 'epid',
      mrEnclave: MR_ENCLAVE,
      mrSigner: MR_SIGNER,
      keyType: 'p256',
      isvProdId: 60000,
    });
    worker = startWorker(lab.sh, lab.dir, 'fuzz.js', {
      gateway: GW_SENG,
      port: SENG_PORT,
      localAddress: SENG_HOST,
      gatewayCertPem: lab.gwKeys.ec.certPem,
      victim: { certPem: victim.certPem, keyPem: victim.keyPem },
      cycleCerts: await certPool(lab, 'ec', 16),
    });
    const ready = await worker.next(['ready'], 120_000);
    if (ready.forwards !== true) throw new Error('the established enclave does not forward before the soak');
    const src: StateSource = {
      sengBin,
      control: controlPath(lab),
      pid: gw.pid as number,
      ns: lab.gw,
      nftTable: 'seng',
      enclavePrefix: `${String(ready.ip).split('.').slice(0, 2).join('.')}.`,
    };
    const baseline = await gatewayState(src);
    const w = worker;
    const g = gw;
    const fuzzPhase = async (count: number, onSessionTuples: boolean): Promise<FuzzPhase> => {
      const before = await gatewayState(src);
      const udp0 = udpCounters(lab);
      w.send(JSON.stringify({ cmd: 'fuzz', count, onSessionTuples }));
      const r = await w.next(['fuzzed'], Math.max(600, count / 500) * 1000);
      const udp1 = udpCounters(lab);
      const alive = g.child.exitCode === null;
      const s = alive ? await settle(src, baseline, 30_000) : undefined;
      const after = s?.state ?? before;
      // When the phase ended the established session, compare with the empty gateway instead
      // (a lost session hides leaks from a comparison with the state that had it).
      if (s && after.sessions === 0) {
        const e = await settle(src, { ...empty, conntrack: after.conntrack }, 15_000);
        if (Object.keys(e.leaks).length) s.leaks = { ...s.leaks, ...prefixKeys('vsEmptyGateway.', e.leaks) };
      }
      return {
        report: r.report as FuzzReport,
        pingsDuring: r.pingsDuring as FuzzPhase['pingsDuring'],
        forwardsAfter: r.forwardsAfter === true,
        gatewayAlive: alive,
        ...(r.victimCloseReason ? { victimCloseReason: String(r.victimCloseReason) } : {}),
        leaks: s?.leaks ?? { gatewayExited: 1 },
        settleSeconds: s?.waitedSeconds ?? 0,
        before,
        after,
        ...(udp0 && udp1
          ? {
              udp: {
                inDatagrams: udp1.inDatagrams - udp0.inDatagrams,
                rcvbufErrors: udp1.rcvbufErrors - udp0.rcvbufErrors,
              },
            }
          : {}),
        rssGrowthKiB: after.rssKiB - before.rssKiB,
        jsHeapGrowthKiB: after.jsHeapUsedKiB - before.jsHeapUsedKiB,
      };
    };
    log(`soak: ${counts.datagrams} fuzzed datagrams to ports ${SENG_PORT} and ${SENG_PORT + 1}`);
    try {
      result.fuzz = await fuzzPhase(counts.datagrams, false);
      const f = result.fuzz;
      log(
        `  sent ${f.report.sent} in ${f.report.seconds} s; forwards after: ${f.forwardsAfter}; leaks ${JSON.stringify(f.leaks)}; RSS +${f.rssGrowthKiB} KiB`,
      );
    } catch (err) {
      result.errors.push(`fuzz: ${errorText(err)}`);
    }
    log(`soak: ${counts.cycles} connect/disconnect cycles`);
    try {
      const before = await gatewayState(src);
      w.send(JSON.stringify({ cmd: 'cycles', count: counts.cycles, concurrency: 16 }));
      const r = await w.next(['cycled'], Math.max(600, counts.cycles / 5) * 1000);
      const alive = g.child.exitCode === null;
      const s = alive ? await settle(src, baseline, 60_000) : undefined;
      w.send(JSON.stringify({ cmd: 'ping' }));
      const pong = alive ? await w.next(['pong'], 30_000) : { ok: false };
      const errors = r.errors as Record<string, number>;
      result.cycles = {
        cycles: Number(r.cycles),
        setups: Number(r.setups),
        failures: Number(r.failures),
        ...(Object.keys(errors).length ? { errors } : {}),
        seconds: round(Number(r.seconds), 1),
        gatewayAlive: alive,
        forwardsAfter: pong.ok === true,
        leaks: s?.leaks ?? { gatewayExited: 1 },
        settleSeconds: s?.waitedSeconds ?? 0,
        before,
        after: s?.state ?? before,
      };
      log(
        `  ${result.cycles.setups} setups, ${result.cycles.failures} failures in ${result.cycles.seconds} s; leaks ${JSON.stringify(result.cycles.leaks)}`,
      );
    } catch (err) {
      result.errors.push(`cycles: ${errorText(err)}`);
    }
    log(`soak: ${counts.forged} datagrams also from the established sessions' own address:port`);
    try {
      if (g.child.exitCode === null) {
        result.forged = await fuzzPhase(counts.forged, true);
        log(
          `  forwards after: ${result.forged.forwardsAfter}${result.forged.victimCloseReason ? ` (session ended: ${result.forged.victimCloseReason})` : ''}`,
        );
      }
    } catch (err) {
      result.errors.push(`forged: ${errorText(err)}`);
    }
  } finally {
    worker?.send(JSON.stringify({ cmd: 'exit' }));
    await worker?.proc.stop();
    await gw?.stop();
    for (const t of ['benchct', 'seng'])
      await lab.gw.exec('nft', ['delete', 'table', 'ip', t], { check: false });
  }
  return result;
}

function prefixKeys(prefix: string, o: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [`${prefix}${k}`, v]));
}

/** Udp: InDatagrams and RcvbufErrors of the gateway's namespace. */
function udpCounters(lab: Lab): { inDatagrams: number; rcvbufErrors: number } | undefined {
  const r = lab.gw.execSync('cat', ['/proc/net/snmp'], { check: false });
  const lines = r.stdout.split('\n').filter((l) => l.startsWith('Udp:'));
  if (lines.length < 2) return undefined;
  const head = (lines[0] as string).split(/\s+/);
  const vals = (lines[1] as string).split(/\s+/).map(Number);
  const get = (k: string) => vals[head.indexOf(k)] ?? NaN;
  return { inDatagrams: get('InDatagrams'), rcvbufErrors: get('RcvbufErrors') };
}
