/**
 * Runs inside a test network namespace (started with `ip netns exec`): installs a policy
 * with NftEnforcer, registers enclaves through it, sends one UDP packet per case over
 * loopback from the chosen source address, and reports which cases arrived. Then the
 * listed enclaves leave, and everything is sent again. Input and output: JSON on stdin/stdout.
 */
import { createSocket, type Socket } from 'node:dgram';
import { execFileSync } from 'node:child_process';
import { NftEnforcer } from '../../../src/enforce/nft.js';
import { parsePolicy } from '../../../src/policy/parse.js';
import { compilePolicy } from '../../../src/policy/compile.js';
import { appDirectoryFromList } from '../../../src/policy/apps.js';
import { parseIpv4 } from '../../../src/util/ipv4.js';
import type { EnclaveRegistration } from '../../../src/enforce/types.js';

export interface WorkerInput {
  policy: string;
  apps: { name: string; mrEnclave: string }[];
  regs: { ip: string; mrEnclave: string; categories: string[]; host: string }[];
  packets: { id: number; src: string; dst: string; dport: number }[];
  leave: string[];
  /** A second policy applied with applyPolicy() after phase 1 (live sessions stay). */
  reload?: string;
  /** Join and leave through joinMany/leaveMany (else concurrent join/leave calls). */
  many?: boolean;
  /** Category changes of live enclaves (app → new categories), made after phase 1 / the reload. */
  changes?: { mrEnclave: string; categories: string[] }[];
}

export interface WorkerOutput {
  phase1: number[];
  phase2: number[];
  /** After the reload (when `reload` was given), before anyone leaves. */
  phaseReload?: number[];
  /** After the category changes (when `changes` were given), before anyone leaves. */
  phaseChanged?: number[];
  /** Profile chains the enforcer created in its batches. */
  profileChains: number;
  setsAfterLeave: Record<string, string[]>;
  conntrackBefore: number;
  conntrackAfter: number;
  /** Kernel transactions (netlink batches) of the joins, and of the leaves. */
  joinBatches: number;
  leaveBatches: number;
}

async function readStdin(): Promise<string> {
  let s = '';
  for await (const chunk of process.stdin) s += String(chunk);
  return s;
}

function bindUdp(addr: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createSocket('udp4');
    s.once('error', reject);
    s.bind(port, addr, () => resolve(s));
  });
}

function conntrackCount(ips: string[]): number {
  let n = 0;
  for (const ip of ips) {
    for (const dir of ['-s', '-d']) {
      const out = execFileSync('conntrack', ['-L', dir, ip], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      n += out.split('\n').filter((l) => l.trim()).length;
    }
  }
  return n;
}

async function sendAll(input: WorkerInput): Promise<number[]> {
  const received = new Set<number>();
  const receivers: Socket[] = [];
  const targets = new Set(input.packets.map((p) => `${p.dst}:${p.dport}`));
  for (const t of targets) {
    const [addr, port] = t.split(':') as [string, string];
    const s = await bindUdp(addr, Number(port));
    s.on('message', (m) => received.add(Number(m.toString())));
    receivers.push(s);
  }
  const senders = new Map<string, Socket>();
  for (const src of new Set(input.packets.map((p) => p.src))) senders.set(src, await bindUdp(src, 0));
  for (const p of input.packets) {
    const s = senders.get(p.src) as Socket;
    await new Promise<void>((resolve) => s.send(String(p.id), p.dport, p.dst, () => resolve()));
  }
  await new Promise((r) => setTimeout(r, 400));
  for (const s of [...receivers, ...senders.values()]) s.close();
  return [...received].sort((a, b) => a - b);
}

async function main(): Promise<void> {
  const input = JSON.parse(await readStdin()) as WorkerInput;
  const apps = appDirectoryFromList(input.apps);
  const compiled = compilePolicy(parsePolicy(input.policy, 'semantics.yaml'), { apps });
  const enforcer = new NftEnforcer({ policy: compiled });
  await enforcer.start();
  const regs = new Map<string, EnclaveRegistration>();
  for (const r of input.regs) {
    regs.set(r.ip, {
      enclaveIp: parseIpv4(r.ip),
      mrEnclave: Buffer.from(r.mrEnclave, 'hex'),
      mrSigner: Buffer.alloc(32),
      hostIp: parseIpv4(r.host),
      categories: r.categories,
    });
  }
  // All admissions at once: one batch.
  const b0 = enforcer.stats.batches;
  if (input.many) await enforcer.joinMany([...regs.values()]);
  else await Promise.all([...regs.values()].map((r) => enforcer.join(r)));
  const joinBatches = enforcer.stats.batches - b0;
  const phase1 = await sendAll(input);
  let phaseReload: number[] | undefined;
  if (input.reload !== undefined) {
    await enforcer.applyPolicy(compilePolicy(parsePolicy(input.reload, 'reload.yaml'), { apps }));
    phaseReload = await sendAll(input);
  }
  let phaseChanged: number[] | undefined;
  if (input.changes) {
    for (const c of input.changes) {
      const app = Buffer.from(c.mrEnclave, 'hex');
      await enforcer.updateCategories(app, c.categories, [...regs.values()]);
      for (const r of regs.values()) if (r.mrEnclave.equals(app)) r.categories = [...c.categories];
    }
    phaseChanged = await sendAll(input);
  }
  const conntrackBefore = conntrackCount(input.leave);
  const b1 = enforcer.stats.batches;
  const leavers = input.leave.map((ip) => regs.get(ip) as EnclaveRegistration);
  if (input.many) await enforcer.leaveMany(leavers);
  else await Promise.all(leavers.map((r) => enforcer.leave(r)));
  const leaveBatches = enforcer.stats.batches - b1;
  // The purge follows the leave (the gateway releases the IP only after it).
  await Promise.all(input.leave.map((ip) => enforcer.purged(parseIpv4(ip))));
  const conntrackAfter = conntrackCount(input.leave);
  const listing = JSON.parse(
    execFileSync('nft', ['-j', 'list', 'table', 'ip', compiled.table], { encoding: 'utf8' }),
  ) as { nftables: { set?: { name: string; elem?: string[] } }[] };
  const setsAfterLeave: Record<string, string[]> = {};
  for (const it of listing.nftables) if (it.set) setsAfterLeave[it.set.name] = it.set.elem ?? [];
  const phase2 = await sendAll(input);
  await enforcer.stop();
  const out: WorkerOutput = {
    phase1,
    phase2,
    setsAfterLeave,
    conntrackBefore,
    conntrackAfter,
    joinBatches,
    leaveBatches,
    profileChains: enforcer.stats.profileChains,
    ...(phaseReload && { phaseReload }),
    ...(phaseChanged && { phaseChanged }),
  };
  process.stdout.write(JSON.stringify(out));
}

main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
