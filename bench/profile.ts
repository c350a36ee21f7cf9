/**
 * Profiling pass (part of the full run, or `--only profile`): runs the seng gateway and the
 * simulator under `node --cpu-prof` for a UDP 64-byte flood, a TCP stream and an admission
 * burst, and summarizes where each process's main thread spends its time: self time per
 * function (top entries) and per bucket (native code called from JS such as the DTLS and TUN
 * addons and syscalls, garbage collection, JS). The .cpuprofile files are written under the
 * lab directory and deleted with it; the summaries go into the results.
 */
import { readdirSync, readFileSync, mkdirSync } from 'node:fs';
import { join, basename } from 'node:path';
import { appCert, startGateway, startSim, drained, SERVICE, type Lab } from './lib/lab.js';
import { errorText, log, round, sleep, type BenchOptions } from './lib/util.js';
import { certPool } from './admission.js';
import { startClients } from './lib/workers.js';
import { GW_SENG, SENG_PORT } from './lib/lab.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface ProfileSummary {
  process: string;
  scenario: string;
  seconds: number;
  /** Share of sampled time per bucket (idle excluded from the denominator). */
  buckets: Record<string, number>;
  top: { fn: string; share: number }[];
}

function summarize(file: string, process: string, scenario: string): ProfileSummary {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  p.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)));
  let busy = 0;
  const buckets: Record<string, number> = {};
  const fns = new Map<string, number>();
  for (const [id, t] of self) {
    const n = byId.get(id);
    if (!n) continue;
    const { functionName, url, lineNumber } = n.callFrame;
    if (functionName === '(idle)') continue;
    busy += t;
    let bucket: string;
    if (functionName === '(garbage collector)') bucket = 'gc';
    else if (functionName === '(program)') bucket = 'program (native outside JS frames)';
    else if (url === '' || url.startsWith('node:')) bucket = 'node core / native builtins';
    else if (url.includes('/node_modules/')) bucket = 'dependencies (JS)';
    else bucket = 'seng (JS, incl. calls into addons)';
    buckets[bucket] = (buckets[bucket] ?? 0) + t;
    const name = `${functionName || '(anonymous)'} ${url ? `${basename(url)}:${lineNumber + 1}` : ''}`.trim();
    fns.set(name, (fns.get(name) ?? 0) + t);
  }
  const share = (t: number) => round(t / busy, 3);
  return {
    process,
    scenario,
    seconds: round((p.endTime - p.startTime) / 1e6, 1),
    buckets: Object.fromEntries(Object.entries(buckets).map(([k, v]) => [k, share(v)])),
    top: [...fns.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 12)
      .map(([fn, t]) => ({ fn, share: share(t) })),
  };
}

function newest(dir: string): string | undefined {
  const files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
  return files.length ? join(dir, files.sort().at(-1) as string) : undefined;
}

export async function runProfile(lab: Lab, opts: BenchOptions): Promise<ProfileSummary[]> {
  const out: ProfileSummary[] = [];
  const seconds = opts.quick ? 3 : 6;
  const scenarios: { name: string; iperf?: string[]; admission?: boolean }[] = [
    { name: 'udp64', iperf: ['-u', '-b', '0', '-l', '64'] },
    { name: 'tcp1', iperf: [] },
    { name: 'admission-c16', admission: true },
  ];
  const server = drained(lab.svc.spawn('iperf3', ['-s', '-p', '5202']));
  await sleep(300);
  try {
    for (const sc of scenarios) {
      const gwDir = join(lab.dir, 'prof', sc.name, 'gateway');
      const simDir = join(lab.dir, 'prof', sc.name, 'sim');
      mkdirSync(gwDir, { recursive: true });
      mkdirSync(simDir, { recursive: true });
      try {
        const gw = await startGateway(lab, {
          suite: 'ec',
          nodeArgs: ['--cpu-prof', '--cpu-prof-dir', gwDir],
        });
        try {
          if (sc.iperf) {
            const sim = await startSim(
              lab,
              appCert(lab, 'ec'),
              'ec',
              [],
              ['--cpu-prof', '--cpu-prof-dir', simDir],
            );
            try {
              await lab.app.exec(
                'iperf3',
                ['-c', SERVICE, '-p', '5202', '-t', String(seconds), ...sc.iperf],
                {
                  timeoutMs: (seconds + 20) * 1000,
                  check: false,
                },
              );
            } finally {
              await sim.stop();
            }
            const f = newest(simDir);
            if (f) out.push(summarize(f, 'seng sim enclave', sc.name));
          } else {
            const certs = await certPool(lab, 'ec', 16);
            const w = startClients(lab.sh, lab.dir, {
              mode: 'admission',
              gateway: GW_SENG,
              port: SENG_PORT,
              gatewayCertPem: lab.gwKeys.ec.certPem,
              certs,
              concurrency: 16,
              seconds,
            });
            try {
              await w.next(['result'], (seconds + 60) * 1000);
            } finally {
              await w.proc.stop();
            }
          }
        } finally {
          await gw.stop();
        }
        const f = newest(gwDir);
        if (f) out.push(summarize(f, 'seng serve', sc.name));
        else log(`profile ${sc.name}: the gateway wrote no profile`);
      } catch (err) {
        log(`profile ${sc.name} failed: ${errorText(err)}`);
        out.push({
          process: 'seng serve',
          scenario: sc.name,
          seconds: 0,
          buckets: {},
          top: [{ fn: `error: ${errorText(err)}`, share: 0 }],
        });
      }
      for (const s of out.filter((x) => x.scenario === sc.name))
        log(
          `profile ${sc.name} ${s.process}: ${JSON.stringify(s.buckets)} top ${s.top
            .slice(0, 4)
            .map((t) => `${t.fn} ${t.share}`)
            .join(', ')}`,
        );
    }
  } finally {
    await server.stop();
  }
  return out;
}
