/**
 * The benchmark's network lab, built from the namespace toolkit of the tests
 * (test/helpers/netns.ts, names `sg-bn-<pid>-<n>`, interfaces `bn-<pid36>-<n36>a|b`):
 *
 *   raw  (10.50.0.2) ──veth──┐
 *   ovc  (10.51.0.2) ──veth──┤ gw (10.50/51/52.0.1, 10.99.0.1; ip_forward; seng serve / openvpn server)
 *   sh   (10.52.0.2) ──veth──┘        └──veth── svc (10.99.0.2, iperf3 -s)
 *   app  (TUN of seng sim enclave running in sh; routes 10.99.0.0/24 through the tunnel)
 *
 * raw: plain routing (the machine's limit); ovc: OpenVPN client; sh/app: seng enclave host
 * and its app. Everything created here is torn down by `cleanupAll()` (also on exit/signals).
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createSimCa, createSimCertificate, type SimCa } from '../../src/attestation/index.js';
import { createNetns, vethPair, waitForLine, stop, type Netns } from '../../test/helpers/netns.js';

export {
  cleanupAll,
  cleanupAllSync,
  stop,
  waitForLine,
  createNetns,
  vethPair,
} from '../../test/helpers/netns.js';
export type { Netns } from '../../test/helpers/netns.js';

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const sengBin = join(repoRoot, 'bin', 'run.js');
export const distBench = join(repoRoot, 'dist', 'bench');

export const GW_RAW = '10.50.0.1';
export const GW_OVPN = '10.51.0.1';
export const GW_SENG = '10.52.0.1';
export const SENG_HOST = '10.52.0.2';
export const SERVICE = '10.99.0.2';
export const ENCLAVE_SUBNET = '10.128.0.0/16';
export const SENG_PORT = 12345;
export const MR_ENCLAVE = 'be'.repeat(32);
export const MR_SIGNER = 'ab'.repeat(32);

export type Suite = 'rsa' | 'ec';
export const SUITE_NAMES: Record<Suite, string> = {
  rsa: 'ECDHE-RSA-AES256-GCM-SHA384 (RSA-3072)',
  ec: 'ECDHE-ECDSA-AES128-GCM-SHA256 (P-256)',
};

export interface Lab {
  dir: string;
  ca: SimCa;
  gw: Netns;
  svc: Netns;
  raw: Netns;
  ovc: Netns;
  sh: Netns;
  app: Netns;
  /** Gateway identities per suite. */
  gwKeys: Record<Suite, { cert: string; key: string; certPem: string }>;
  db: string;
  destroy(): void;
}

function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: 'ignore' });
}

export async function buildLab(): Promise<Lab> {
  const dir = mkdtempSync(join(tmpdir(), `seng-bench-${process.pid}-`));
  const gw = await createNetns('bn');
  const svc = await createNetns('bn');
  const raw = await createNetns('bn');
  const ovc = await createNetns('bn');
  const sh = await createNetns('bn');
  const app = await createNetns('bn');
  await vethPair(gw, raw, { addrA: `${GW_RAW}/24`, addrB: '10.50.0.2/24', tag: 'bn' });
  await vethPair(gw, ovc, { addrA: `${GW_OVPN}/24`, addrB: '10.51.0.2/24', tag: 'bn' });
  await vethPair(gw, sh, { addrA: `${GW_SENG}/24`, addrB: `${SENG_HOST}/24`, tag: 'bn' });
  await vethPair(gw, svc, { addrA: '10.99.0.1/24', addrB: `${SERVICE}/24`, tag: 'bn' });
  await svc.ip('route', 'add', 'default', 'via', '10.99.0.1');
  await raw.ip('route', 'add', '10.99.0.0/24', 'via', GW_RAW);
  await gw.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  for (const ns of [gw, svc, raw, ovc, sh, app])
    await ns.exec('sysctl', ['-qw', 'net.ipv6.conf.all.disable_ipv6=1'], { check: false });
  const ca = createSimCa(join(dir, 'ca'));
  const gwKeys = {} as Lab['gwKeys'];
  for (const suite of ['rsa', 'ec'] as const) {
    const cert = join(dir, `gw-${suite}.crt`);
    const key = join(dir, `gw-${suite}.key`);
    const alg =
      suite === 'rsa' ? ['-newkey', 'rsa:3072'] : ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'];
    openssl([
      'req',
      '-x509',
      ...alg,
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-subj',
      '/CN=seng-bench-gw',
      '-days',
      '2',
    ]);
    gwKeys[suite] = { cert, key, certPem: readFileSync(cert, 'utf8') };
  }
  // Policy store: one app, allowed from the enclave hosts, a /16 enclave subnet (room for 10,000 sessions).
  const db = join(dir, 'bench.db');
  sengCli(['db', 'init', '-d', db, '--schema', 'vanilla']);
  sengCli(['db', 'subnet', 'add', '-d', db, ENCLAVE_SUBNET]);
  sengCli([
    'db',
    'app',
    'add',
    '-d',
    db,
    'bench-app',
    '--mrenclave',
    MR_ENCLAVE,
    '--mrsigner',
    MR_SIGNER,
    '--host-subnet',
    '10.52.0.0/24',
    '--enclave-subnet',
    ENCLAVE_SUBNET,
  ]);
  return {
    dir,
    ca,
    gw,
    svc,
    raw,
    ovc,
    sh,
    app,
    gwKeys,
    db,
    destroy: () => rmSync(dir, { recursive: true, force: true }),
  };
}

export function sengCli(args: string[]): string {
  return execFileSync(process.execPath, [sengBin, ...args, '--log-level', 'warn'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

export interface AppCert {
  certPem: string;
  keyPem: string;
  cert: string;
  key: string;
}

let certCounter = 0;
/** An RA-TLS (EPID) certificate of the benchmark app with a fresh key. */
export function appCert(lab: Lab, suite: Suite): AppCert {
  const c = createSimCertificate(lab.ca, {
    kind: 'epid',
    mrEnclave: MR_ENCLAVE,
    mrSigner: MR_SIGNER,
    keyType: suite === 'rsa' ? 'rsa3072' : 'p256',
  });
  const n = certCounter++;
  const cert = join(lab.dir, `app${n}.crt`);
  const key = join(lab.dir, `app${n}.key`);
  writeFileSync(cert, c.certPem);
  writeFileSync(key, c.keyPem, { mode: 0o600 });
  return { certPem: c.certPem, keyPem: c.keyPem, cert, key };
}

/** A child process whose stderr is drained (last lines kept for error messages). */
export interface Proc {
  child: ChildProcess;
  pid: number | undefined;
  tail(): string;
  /** Last stdout line matching /Mark-Compact/ (node --trace-gc), if any. */
  lastMajorGc(): string | undefined;
  /** Counts of `reason` in JSON log lines with "event":"rejected" (seng serve), since the last call. */
  takeRejections(): Record<string, number>;
  stop(): Promise<void>;
}

export function drained(child: ChildProcess): Proc {
  const lines: string[] = [];
  let rejections: Record<string, number> = {};
  let buf = '';
  const keep = (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      if (line.includes('"event":"rejected"')) {
        try {
          const reason = String((JSON.parse(line) as { reason?: unknown }).reason ?? 'unknown').slice(0, 120);
          rejections[reason] = (rejections[reason] ?? 0) + 1;
        } catch {
          /* not JSON */
        }
      }
      lines.push(line);
      if (lines.length > 40) lines.shift();
      buf = buf.slice(nl + 1);
    }
  };
  child.stderr?.on('data', keep);
  // Keep stdout flowing (readers like waitForLine attach their own listeners); remember the
  // last major GC line of --trace-gc.
  let lastGc: string | undefined;
  let out = '';
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
    const nl = out.lastIndexOf('\n');
    if (nl < 0) return;
    for (const line of out.slice(0, nl).split('\n')) if (line.includes('Mark-Compact')) lastGc = line;
    out = out.slice(nl + 1);
  });
  return {
    child,
    pid: child.pid,
    tail: () => lines.join('\n'),
    lastMajorGc: () => lastGc,
    takeRejections: () => {
      const r = rejections;
      rejections = {};
      return r;
    },
    stop: () => stop(child, 8000),
  };
}

export interface GatewayOptions {
  suite: Suite;
  idleTimeoutS?: number;
  maxSessions?: number;
  maxHandshakes?: number;
  /** Prefix the command (e.g. taskset -c 0). */
  wrap?: string[];
  logLevel?: string;
  /** Extra node options (e.g. --cpu-prof). */
  nodeArgs?: string[];
  /** Another policy database than the lab's vanilla one. */
  db?: string;
  /** Extra `seng serve` options (e.g. --nft --policy FILE). */
  extraArgs?: string[];
}

export const controlPath = (lab: Lab): string => join(lab.dir, `control-${process.pid}.sock`);

/** Starts `seng serve` in the gateway namespace (one identity: the suite's) and waits until it listens. */
export async function startGateway(lab: Lab, o: GatewayOptions): Promise<Proc> {
  const k = lab.gwKeys[o.suite];
  const args = [
    sengBin,
    'serve',
    '--cert',
    k.cert,
    '--key',
    k.key,
    '--ias-root',
    join(lab.dir, 'ca', 'ias-root.pem'),
    '--sgx-root',
    join(lab.dir, 'ca', 'sgx-root.pem'),
    '-d',
    o.db ?? lab.db,
    ...(o.extraArgs ?? []),
    '--control',
    controlPath(lab),
    '--tun',
    `bn${process.pid.toString(36)}fa`,
    '--idle-timeout',
    String(o.idleTimeoutS ?? 600),
    '--max-sessions',
    String(o.maxSessions ?? 10000),
    '--max-handshakes',
    String(o.maxHandshakes ?? 256),
    '--log-format',
    'json',
    '--log-level',
    o.logLevel ?? 'info',
    GW_SENG,
    String(SENG_PORT),
  ];
  // SENG_BENCH_GATEWAY_WRAP (space-separated) prefixes the gateway's command, for experiments
  // such as `env MALLOC_ARENA_MAX=1`; the report records it.
  const extra = (process.env.SENG_BENCH_GATEWAY_WRAP ?? '').split(' ').filter(Boolean);
  const cmd = [...extra, ...(o.wrap ?? []), process.execPath, ...(o.nodeArgs ?? []), ...args];
  const child = lab.gw.spawn('sh', ['-c', 'ulimit -n 65536 2>/dev/null; exec "$@"', 'sh', ...cmd]);
  const p = drained(child);
  await waitForLine(child, /"event":"listening"/, 30_000, { stream: 'stderr' }).catch((err: unknown) => {
    throw new Error(`seng serve did not start: ${String(err)}\n${p.tail()}`);
  });
  return p;
}

/** Starts `seng sim enclave` in the enclave host namespace with its TUN in the app namespace. */
export async function startSim(
  lab: Lab,
  cert: AppCert,
  suite: Suite,
  wrap: string[] = [],
  nodeArgs: string[] = [],
): Promise<Proc> {
  const k = lab.gwKeys[suite];
  const args = [
    sengBin,
    'sim',
    'enclave',
    '--gateway',
    GW_SENG,
    '--port',
    String(SENG_PORT),
    '--cert',
    cert.cert,
    '--key',
    cert.key,
    '--gateway-cert',
    k.cert,
    '--tun',
    `bn${process.pid.toString(36)}en`,
    '--netns',
    lab.app.name,
    '--route',
    '10.99.0.0/24',
    '--log-format',
    'json',
    '--log-level',
    'warn',
  ];
  const child = lab.sh.spawn('sh', [
    '-c',
    'exec "$@"',
    'sh',
    ...wrap,
    process.execPath,
    ...nodeArgs,
    ...args,
  ]);
  const p = drained(child);
  await waitForLine(child, /^\{"event":"ready"/, 30_000).catch((err: unknown) => {
    throw new Error(`seng sim enclave did not come up: ${String(err)}\n${p.tail()}`);
  });
  return p;
}

/** Pins every thread of the processes to the CPUs (e.g. "0" or "0,1"). */
export function pin(pids: (number | undefined)[], cpus: string): void {
  for (const pid of pids) {
    if (pid === undefined) continue;
    execFileSync('taskset', ['-a', '-pc', cpus, String(pid)], { stdio: 'ignore' });
  }
}
