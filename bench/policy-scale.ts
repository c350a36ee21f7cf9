/**
 * Section "policy-scale" (issue 15: policy cost independent of scale), in its own namespaces:
 *
 *   src (10.128.0.10/16) ──veth── router (nft tables of the worker, ip_forward) ──veth── dst (10.61.0.2)
 *
 * The worker (bench/workers/policy-scale.ts) runs in the router namespace and installs, in
 * turn, the compiled ruleset with 10 rules / 10 enclaves and with 10,000 rules / 100,000
 * enclaves, and a category policy (10,000 rules, 9,000 of them src-cat over 1,000 categories,
 * 100,000 enclaves; three rounds, alternating, against drift), then the same 10,000 rules
 * as the old linear chain. For each, 64-byte UDP datagrams go from src (a registered enclave whose
 * app's rule is the last of the list) through the router's forward hook at full speed
 * (two iperf3 streams) and the datagrams/s delivered at dst are recorded. Then a burst of
 * 10,000 joins and of 10,000 leaves through NftEnforcer.joinMany/leaveMany: time and
 * kernel transactions, with the large policy and with the category policy (src-cat rules
 * dispatched by category run; the profile chains the joins create are counted). `npm run bench -- --only policy-scale` runs it alone (≈ 2 min).
 */
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { createNetns, distBench, drained, vethPair, type Netns } from './lib/lab.js';
import { errorText, log, round, sleep, type BenchOptions } from './lib/util.js';

export interface ScaleRate {
  config: 'small' | 'large' | 'linear' | 'category';
  rules: number;
  enclaves: number;
  round: number;
  /** Datagrams/s delivered at the receiver (sender at unlimited rate). */
  deliveredPps: number;
  sentPps: number;
  applyMs?: number;
  joinMs?: number;
  /** Category profile chains the setup's joins created (category ruleset). */
  profileChains?: number;
  error?: string;
}

export interface PolicyScaleResult {
  rates: ScaleRate[];
  /** Mean delivered rate of large / small (target ≥ 0.95), and of the old linear shape / small. */
  ratio?: number;
  linearRatio?: number;
  /** Mean delivered rate of the category policy (src-cat rules dispatched by category run) / small. */
  categoryRatio?: number;
  burst?: Burst;
  /** The same burst with the category policy (enclaves in two categories). */
  categoryBurst?: Burst & { profileChains: number };
  errors: string[];
}

interface Burst {
  size: number;
  joinMs: number;
  joinTransactions: number;
  leaveMs: number;
  leaveTransactions: number;
}

async function udpMax(src: Netns, seconds: number): Promise<{ sent: number; delivered: number }> {
  const r = await src.exec(
    'iperf3',
    ['-c', '10.61.0.2', '-u', '-l', '64', '-b', '0', '-P', '2', '-t', String(seconds), '-J'],
    { timeoutMs: (seconds + 20) * 1000, check: false },
  );
  const j = JSON.parse(r.stdout) as {
    error?: string;
    end: { sum?: { packets: number; lost_packets: number; seconds: number } };
  };
  if (j.error || !j.end.sum) throw new Error(`iperf3: ${j.error ?? 'no UDP summary'}`);
  const s = j.end.sum;
  return { sent: s.packets / s.seconds, delivered: (s.packets - s.lost_packets) / s.seconds };
}

const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

export async function runPolicyScale(opts: BenchOptions): Promise<PolicyScaleResult> {
  const result: PolicyScaleResult = { rates: [], errors: [] };
  const router = await createNetns('ps');
  const src = await createNetns('ps');
  const dst = await createNetns('ps');
  try {
    await vethPair(src, router, { addrA: '10.128.0.10/16', addrB: '10.128.255.254/16', tag: 'ps' });
    await vethPair(router, dst, { addrA: '10.61.0.1/24', addrB: '10.61.0.2/24', tag: 'ps' });
    await src.ip('route', 'add', '10.61.0.0/24', 'via', '10.128.255.254');
    await dst.ip('route', 'add', 'default', 'via', '10.61.0.1');
    await router.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    const server = drained(dst.spawn('iperf3', ['-s']));
    const worker = drained(
      router.spawn(
        process.execPath,
        [join(distBench, 'workers', 'policy-scale.js'), ...(opts.quick ? ['--quick'] : [])],
        { stdio: ['pipe', 'pipe', 'pipe'] },
      ),
    );
    const events = createInterface({ input: worker.child.stdout! })[Symbol.asyncIterator]();
    const next = async (): Promise<Record<string, unknown>> => {
      const r = await Promise.race([
        events.next(),
        new Promise<never>((_, reject) =>
          setTimeout(() => reject(new Error('policy-scale worker: timed out')), 300_000).unref(),
        ),
      ]);
      if (r.done) throw new Error(`policy-scale worker ended: ${worker.tail()}`);
      const m = JSON.parse(r.value) as Record<string, unknown>;
      if (m.event === 'error') throw new Error(`policy-scale worker: ${String(m.error)}`);
      return m;
    };
    const seconds = opts.quick ? 3 : 4;
    try {
      let installed: Record<string, unknown> | undefined;
      for (;;) {
        const m = await next();
        if (m.event === 'installed') {
          installed = m;
          log(`policy-scale: installed ${JSON.stringify(m)}`);
          continue;
        }
        if (m.event !== 'ready') {
          if (m.event === 'burst' || m.event === 'categoryBurst') {
            const b: Burst = {
              size: Number(m.size),
              joinMs: round(Number(m.joinMs), 1),
              joinTransactions: Number(m.joinTransactions),
              leaveMs: round(Number(m.leaveMs), 1),
              leaveTransactions: Number(m.leaveTransactions),
            };
            if (m.event === 'burst') result.burst = b;
            else result.categoryBurst = { ...b, profileChains: Number(m.profileChains) };
            log(`policy-scale: ${String(m.event)} ${JSON.stringify(m)}`);
            continue;
          }
          break;
        }
        const rate: ScaleRate = {
          config: m.config as ScaleRate['config'],
          rules: Number(m.rules),
          enclaves: Number(m.enclaves),
          round: Number(m.round),
          deliveredPps: NaN,
          sentPps: NaN,
          ...(installed && {
            applyMs: round(Number(installed.applyMs), 1),
            joinMs: round(Number(installed.joinMs), 1),
            ...(m.config === 'category' && { profileChains: Number(installed.profileChains) }),
          }),
        };
        try {
          await sleep(300);
          const r = await udpMax(src, seconds);
          rate.deliveredPps = Math.round(r.delivered);
          rate.sentPps = Math.round(r.sent);
        } catch (err) {
          rate.error = errorText(err);
        }
        result.rates.push(rate);
        log(`policy-scale: ${JSON.stringify(rate)}`);
        worker.child.stdin?.write('next\n');
      }
    } catch (err) {
      result.errors.push(errorText(err));
    } finally {
      worker.child.stdin?.end();
      await worker.stop();
      await server.stop();
    }
  } finally {
    for (const ns of [src, dst, router]) await ns.destroy();
  }
  const of = (c: ScaleRate['config']): number[] =>
    result.rates.filter((r) => r.config === c && Number.isFinite(r.deliveredPps)).map((r) => r.deliveredPps);
  const small = of('small');
  if (small.length && of('large').length) result.ratio = round(mean(of('large')) / mean(small), 3);
  if (small.length && of('category').length)
    result.categoryRatio = round(mean(of('category')) / mean(small), 3);
  if (small.length && of('linear').length) result.linearRatio = round(mean(of('linear')) / mean(small), 3);
  return result;
}
