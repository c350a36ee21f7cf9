/**
 * Fuzz/soak worker, run inside the enclave host's namespace by bench/soak.ts and by
 * test/integration/gateway/fuzz-soak.test.ts. Configuration: a JSON file (argv[2]); commands:
 * JSON lines on stdin; results: JSON lines on stdout.
 *
 * On start it connects one simulated enclave (the "established session") through a recording
 * relay (bench/lib/dgram-fuzz.ts), checks that it forwards (ICMP echo to the gateway's TUN
 * address and back), and prints {"event":"ready"}. Commands:
 *   {"cmd":"fuzz","count":N,"seed":S?,"maxRate":R?,"kinds":[…]?,"onSessionTuples":bool?}
 *        N datagrams to both ports; the established session is pinged during and after
 *        → {"event":"fuzzed",…}
 *   {"cmd":"cycles","count":N,"concurrency":C}       N connect → one ping → close cycles
 *        (distinct certificates per slot) → {"event":"cycled",…}
 *   {"cmd":"ping"} → {"event":"pong","ok":bool}
 *   {"cmd":"exit"}
 */
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { SimEnclave } from '../../src/sim/enclave.js';
import { Relay, fuzz, icmpEcho, isEchoReply, type FuzzKind } from '../lib/dgram-fuzz.js';

interface Config {
  gateway: string;
  port: number;
  localAddress: string;
  gatewayCertPem: string;
  victim: { certPem: string; keyPem: string };
  cycleCerts: { certPem: string; keyPem: string }[];
}

const cfg = JSON.parse(readFileSync(process.argv[2] as string, 'utf8')) as Config;
const emit = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);
const errText = (err: unknown) => (err instanceof Error ? err.message : String(err)).slice(0, 160);

function sim(c: { certPem: string; keyPem: string }, gateway: string, port: number): SimEnclave {
  return new SimEnclave({
    gateway,
    port,
    certPem: c.certPem,
    keyPem: c.keyPem,
    gatewayCertPem: cfg.gatewayCertPem,
    localAddress: cfg.localAddress,
    handshakeTimeoutMs: 20_000,
    assignmentTimeoutMs: 20_000,
  });
}

let pingSeq = 0;
/** ICMP echo from the enclave to the gateway's TUN address; true when the reply came back. */
function pingOnce(s: SimEnclave, timeoutMs: number): Promise<boolean> {
  const a = s.assignment;
  if (!a || s.closed) return Promise.resolve(false);
  const id = process.pid & 0xffff;
  const seq = ++pingSeq & 0xffff;
  return new Promise((resolve) => {
    const onPacket = (pkt: Buffer) => {
      if (!isEchoReply(pkt, id, seq)) return;
      done(true);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    const done = (ok: boolean) => {
      clearTimeout(timer);
      s.off('packet', onPacket);
      resolve(ok);
    };
    s.on('packet', onPacket);
    s.toGateway(icmpEcho(a.ip, a.gateway, id, seq));
  });
}

async function ping(s: SimEnclave, tries = 3): Promise<boolean> {
  for (let i = 0; i < tries; i++) if (await pingOnce(s, 2000)) return true;
  return false;
}

async function cycles(count: number, concurrency: number): Promise<Record<string, unknown>> {
  let started = 0;
  let setups = 0;
  let pings = 0;
  let failures = 0;
  const errors = new Map<string, number>();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async (_, slot) => {
      while (started < count) {
        started++;
        const s = sim(cfg.cycleCerts[slot % cfg.cycleCerts.length]!, cfg.gateway, cfg.port);
        try {
          await s.connect();
          setups++;
          // One packet per enclave, so the gateway has conntrack state to purge when it leaves.
          if (await pingOnce(s, 1000)) pings++;
        } catch (err) {
          failures++;
          errors.set(errText(err), (errors.get(errText(err)) ?? 0) + 1);
        }
        await s.close('soak cycle done');
      }
    }),
  );
  return {
    event: 'cycled',
    cycles: started,
    setups,
    pings,
    failures,
    errors: Object.fromEntries(errors),
    seconds: Math.round(performance.now() - t0) / 1000,
  };
}

async function main(): Promise<void> {
  const relay = await Relay.open(cfg.localAddress, cfg.gateway, cfg.port);
  const victim = sim(cfg.victim, cfg.localAddress, relay.localPort);
  let victimCloseReason: string | undefined;
  victim.once('closed', (reason: string) => (victimCloseReason = reason));
  const assignment = await victim.connect();
  const forwards = await ping(victim);
  emit({ event: 'ready', ip: assignment.ip, forwards, seeds: relay.recorded.length });
  const rl = createInterface({ input: process.stdin });
  for await (const line of rl) {
    let cmd: {
      cmd?: string;
      count?: number;
      concurrency?: number;
      seed?: number;
      maxRate?: number;
      kinds?: FuzzKind[];
      onSessionTuples?: boolean;
    };
    try {
      cmd = JSON.parse(line) as typeof cmd;
    } catch {
      continue;
    }
    try {
      if (cmd.cmd === 'exit') break;
      if (cmd.cmd === 'ping') emit({ event: 'pong', ok: await ping(victim) });
      else if (cmd.cmd === 'cycles') emit(await cycles(cmd.count ?? 1, cmd.concurrency ?? 1));
      else if (cmd.cmd === 'fuzz') {
        let pingsTried = 0;
        let pingsOk = 0;
        const report = await fuzz({
          count: cmd.count ?? 1000,
          gateway: cfg.gateway,
          gatewayPort: cfg.port,
          localAddress: cfg.localAddress,
          seeds: relay.recorded,
          sessionSockets: relay.upstream,
          ...(cmd.seed !== undefined ? { seed: cmd.seed } : {}),
          ...(cmd.maxRate !== undefined ? { maxRate: cmd.maxRate } : {}),
          ...(cmd.kinds ? { kinds: cmd.kinds } : {}),
          ...(cmd.onSessionTuples !== undefined ? { onSessionTuples: cmd.onSessionTuples } : {}),
          onProgress: async () => {
            pingsTried++;
            if (await pingOnce(victim, 1000)) pingsOk++;
          },
        });
        const forwardsAfter = await ping(victim);
        emit({
          event: 'fuzzed',
          report,
          pingsDuring: { tried: pingsTried, ok: pingsOk },
          forwardsAfter,
          victimClosed: victim.closed,
          ...(victimCloseReason ? { victimCloseReason } : {}),
        });
      }
    } catch (err) {
      emit({ event: 'error', error: errText(err) });
    }
  }
  await victim.close('fuzz worker done');
  relay.close();
  setTimeout(() => process.exit(0), 300).unref();
}

main().catch((err: unknown) => {
  emit({ event: 'error', error: errText(err) });
  process.exit(1);
});
