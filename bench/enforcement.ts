/**
 * Section 3 (policy and enforcement cost), in its own namespaces:
 *
 *   src (10.128.0.10/16) ──veth── router (nft table of the worker, ip_forward) ──veth── dst (10.61.0.2)
 *
 * The worker (bench/workers/nft.ts) runs in the router namespace and reports compile/apply,
 * join/leave and burst timings. For the per-packet cost, 64-byte UDP datagrams are sent from
 * src (itself a registered enclave IP) to dst through the router's forward chain of 1,000
 * rules, with 10 and then 10,000 enclaves registered: once at full speed (datagrams/s
 * delivered) and once at a fixed rate (machine CPU time per datagram, from /proc/stat).
 */
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { createNetns, distBench, drained, vethPair, type Netns } from './lib/lab.js';
import {
  errorText,
  log,
  machineBusySeconds,
  round,
  sleep,
  summarize,
  type BenchOptions,
} from './lib/util.js';

export interface PacketCost {
  enclaves: number;
  round: number;
  maxPps: number;
  fixedRatePps: number;
  fixedRateDelivered: number;
  /** Machine busy CPU (both cores) per datagram at the fixed rate, µs. */
  cpuMicrosecondsPerPacket: number;
  error?: string;
}

export interface EnforcementResult {
  policy?: {
    rules: number;
    sets: number;
    apps: number;
    categories: number;
    compileMs: number;
    applyMs: number;
  };
  join?: ReturnType<typeof summarize>;
  leave?: ReturnType<typeof summarize>;
  /** The conntrack purge of one IP alone. */
  purge?: ReturnType<typeof summarize>;
  burst?: { size: number; joinMs: number; joinBatches: number; leaveMs: number; leaveBatches: number };
  packetCost: PacketCost[];
  errors: string[];
}

/** Below what the 1,000-rule chain forwards with 10,000 enclaves, so both cases deliver it all. */
const FIXED_PPS = 8000;

async function udp(
  src: Netns,
  seconds: number,
  pps: number | 'max',
): Promise<{ sent: number; delivered: number; seconds: number }> {
  const rate = pps === 'max' ? '0' : String(pps * 64 * 8);
  const r = await src.exec(
    'iperf3',
    ['-c', '10.61.0.2', '-u', '-l', '64', '-b', rate, '-t', String(seconds), '-J'],
    {
      timeoutMs: (seconds + 20) * 1000,
      check: false,
    },
  );
  const j = JSON.parse(r.stdout) as {
    error?: string;
    end: { sum?: { packets: number; lost_packets: number; seconds: number } };
  };
  if (j.error || !j.end.sum) throw new Error(`iperf3: ${j.error ?? 'no UDP summary'}`);
  const s = j.end.sum;
  return {
    sent: s.packets / s.seconds,
    delivered: (s.packets - s.lost_packets) / s.seconds,
    seconds: s.seconds,
  };
}

export async function runEnforcement(opts: BenchOptions): Promise<EnforcementResult> {
  const result: EnforcementResult = { packetCost: [], errors: [] };
  const router = await createNetns('bn');
  const src = await createNetns('bn');
  const dst = await createNetns('bn');
  try {
    await vethPair(src, router, { addrA: '10.128.0.10/16', addrB: '10.128.255.254/16', tag: 'bn' });
    await vethPair(router, dst, { addrA: '10.61.0.1/24', addrB: '10.61.0.2/24', tag: 'bn' });
    await src.ip('route', 'add', '10.61.0.0/24', 'via', '10.128.255.254');
    await dst.ip('route', 'add', 'default', 'via', '10.61.0.1');
    await router.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    const server = drained(dst.spawn('iperf3', ['-s']));
    const worker = drained(
      router.spawn(
        process.execPath,
        [join(distBench, 'workers', 'nft.js'), ...(opts.quick ? ['--quick'] : [])],
        {
          stdio: ['pipe', 'pipe', 'pipe'],
        },
      ),
    );
    const events = createInterface({ input: worker.child.stdout! })[Symbol.asyncIterator]();
    const next = async (): Promise<Record<string, unknown>> => {
      const r = await Promise.race([
        events.next(),
        new Promise<never>((_, reject) =>
          setTimeout(() => reject(new Error('nft worker: timed out')), 300_000).unref(),
        ),
      ]);
      if (r.done) throw new Error(`nft worker ended: ${worker.tail()}`);
      const m = JSON.parse(r.value) as Record<string, unknown>;
      if (m.event === 'error') throw new Error(`nft worker: ${String(m.error)}`);
      return m;
    };
    try {
      const c = await next();
      result.policy = {
        rules: Number(c.rules),
        sets: Number(c.sets),
        apps: Number(c.apps),
        categories: Number(c.categories),
        compileMs: round(Number(c.compileMs), 1),
        applyMs: round(Number(c.applyMs), 1),
      };
      log(
        `enforcement: compile ${result.policy.compileMs} ms, apply ${result.policy.applyMs} ms (${result.policy.sets} sets)`,
      );
      const s = await next();
      result.join = summarize(s.joinMs as number[]);
      result.leave = summarize(s.leaveMs as number[]);
      result.purge = summarize(s.purgeMs as number[]);
      log(
        `enforcement: join median ${result.join.median} ms, leave median ${result.leave.median} ms, purge alone ${result.purge.median} ms`,
      );
      const b = await next();
      result.burst = {
        size: Number(b.size),
        joinMs: round(Number(b.joinMs), 1),
        joinBatches: Number(b.joinBatches),
        leaveMs: round(Number(b.leaveMs), 1),
        leaveBatches: Number(b.leaveBatches),
      };
      log(`enforcement: burst ${JSON.stringify(result.burst)}`);
      const seconds = opts.quick ? 3 : 6;
      for (;;) {
        const m = await next();
        if (m.event !== 'ready') break;
        const enclaves = Number(m.enclaves);
        const cost: PacketCost = {
          enclaves,
          round: Number(m.round),
          maxPps: NaN,
          fixedRatePps: FIXED_PPS,
          fixedRateDelivered: NaN,
          cpuMicrosecondsPerPacket: NaN,
        };
        try {
          await sleep(300);
          const max = await udp(src, seconds, 'max');
          cost.maxPps = Math.round(max.delivered);
          const busy0 = machineBusySeconds();
          const fixed = await udp(src, seconds, FIXED_PPS);
          const busy = machineBusySeconds() - busy0;
          cost.fixedRateDelivered = Math.round(fixed.delivered);
          cost.cpuMicrosecondsPerPacket = round((busy / (fixed.sent * fixed.seconds)) * 1e6, 2);
        } catch (err) {
          cost.error = errorText(err);
        }
        result.packetCost.push(cost);
        log(`enforcement: ${enclaves} enclaves: ${JSON.stringify(cost)}`);
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
  return result;
}
