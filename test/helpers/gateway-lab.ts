/**
 * A gateway test lab in network namespaces:
 *
 *   host1 (10.50.0.2, .3) ──veth── gw (10.50.0.1 / 10.51.0.1, tunFA, seng serve) ──veth── svc (10.99.0.2)
 *   host2 (10.51.0.2)     ──veth──┘
 *
 * Simulated enclaves run in host1/host2 (`seng sim enclave`), each moving its TUN device into
 * its own app namespace; the service namespace is reached through the tunnel (10.99.0.0/24 is
 * routed via the enclave's gateway). Everything is tracked by the netns toolkit for cleanup.
 */
import { cpSync, existsSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { createSimCa, createSimCertificate, loadSimCa, type SimCa } from '../../src/attestation/index.js';
import { createNetns, vethPair, waitForLine, stop, type Netns } from './netns.js';
import { sengBin } from './cli.js';

export const GW_HOST1 = '10.50.0.1';
export const GW_HOST2 = '10.51.0.1';
export const SERVICE = '10.99.0.2';

export interface Lab {
  dir: string;
  ca: SimCa;
  gw: Netns;
  host1: Netns;
  host2: Netns;
  svc: Netns;
  gwCert: string;
  gwKeys: { cert: string; key: string }[];
  control: string;
  cleanup(): void;
}

export interface AppCert {
  cert: string;
  key: string;
  mrEnclave: string;
  mrSigner: string;
}

let appCounter = 0;

export async function buildLab(tag: string): Promise<Lab> {
  const dir = mkdtempSync(join(tmpdir(), `seng-${tag}-`));
  const gw = await createNetns(`${tag}gw`);
  const host1 = await createNetns(`${tag}h1`);
  const host2 = await createNetns(`${tag}h2`);
  const svc = await createNetns(`${tag}sv`);
  await vethPair(gw, host1, { addrA: `${GW_HOST1}/24`, addrB: '10.50.0.2/24' });
  await host1.ip('addr', 'add', '10.50.0.3/24', 'dev', (await firstVeth(host1)) as string);
  await vethPair(gw, host2, { addrA: `${GW_HOST2}/24`, addrB: '10.51.0.2/24' });
  await vethPair(gw, svc, { addrA: '10.99.0.1/24', addrB: `${SERVICE}/24` });
  await svc.ip('route', 'add', 'default', 'via', '10.99.0.1');
  await gw.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  labIdentities(dir);
  const ca = loadSimCa(join(dir, 'ca'));
  const gwKeys = GW_KEY_KINDS.map((_, i) => ({
    cert: join(dir, `gw${i}.crt`),
    key: join(dir, `gw${i}.key`),
  }));
  const gwCert = join(dir, 'gw-all.crt');
  return {
    dir,
    ca,
    gw,
    host1,
    host2,
    svc,
    gwCert,
    gwKeys,
    control: join(dir, 'control.sock'),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** The gateway's two identities: RSA-3072 and EC P-256 (the simulator picks its suite by them). */
const GW_KEY_KINDS = ['rsa:3072', 'ec'];

/**
 * Writes a lab's keys into `dir`: the test authority (ca/) and the gateway's identities
 * (gw0/gw1 .crt/.key, gw-all.crt with both). Generating them costs about 2 s of CPU (RSA keys),
 * so within one run of scripts/run-tests.js (SENG_TEST_SHARED_DIR set) the first lab makes them
 * and every later lab gets its own copy of the same files; run alone, a lab makes its own.
 */
function labIdentities(dir: string): void {
  const shared = process.env.SENG_TEST_SHARED_DIR;
  if (!shared || !existsSync(shared)) {
    makeIdentities(dir);
    return;
  }
  const made = join(shared, 'lab-identities');
  if (!existsSync(made)) {
    const fresh = mkdtempSync(join(shared, 'lab-identities-'));
    makeIdentities(fresh);
    try {
      renameSync(fresh, made); // atomic: a file running at the same time may have won
    } catch {
      rmSync(fresh, { recursive: true, force: true });
    }
  }
  cpSync(made, dir, { recursive: true });
}

function makeIdentities(dir: string): void {
  createSimCa(join(dir, 'ca'));
  const certs = GW_KEY_KINDS.map((kind, i) => {
    const cert = join(dir, `gw${i}.crt`);
    const key = join(dir, `gw${i}.key`);
    const args = kind === 'ec' ? ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'] : ['-newkey', kind];
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        ...args,
        '-nodes',
        '-keyout',
        key,
        '-out',
        cert,
        '-subj',
        '/CN=seng-test-gw',
        '-days',
        '2',
      ],
      { stdio: 'ignore' },
    );
    return cert;
  });
  execFileSync('sh', ['-c', `cat ${certs.join(' ')} > ${join(dir, 'gw-all.crt')}`]);
}

async function firstVeth(ns: Netns): Promise<string | undefined> {
  const r = await ns.ip('-o', 'link', 'show', 'type', 'veth');
  return /^\d+: ([^@:]+)/.exec(r.stdout)?.[1];
}

/** Writes an RA-TLS certificate for an app (EPID by default) into the lab directory. */
export function appCert(
  lab: Lab,
  mrEnclave: string,
  opts: { kind?: 'epid' | 'dcap'; keyType?: 'p256' | 'rsa3072'; mrSigner?: string } = {},
): AppCert {
  const mrSigner = opts.mrSigner ?? 'ab'.repeat(32);
  const c = createSimCertificate(lab.ca, {
    kind: opts.kind ?? 'epid',
    mrEnclave,
    mrSigner,
    keyType: opts.keyType ?? 'p256',
  });
  const n = appCounter++;
  const cert = join(lab.dir, `app${n}.crt`);
  const key = join(lab.dir, `app${n}.key`);
  writeFileSync(cert, c.certPem);
  writeFileSync(key, c.keyPem, { mode: 0o600 });
  return { cert, key, mrEnclave, mrSigner };
}

export interface Served {
  child: ChildProcess;
  log: string[];
  stop(): Promise<void>;
}

/** Starts `seng serve` in the gateway namespace and waits until it listens. */
export async function serve(
  lab: Lab,
  extra: string[],
  listen = GW_HOST1,
  opts: { env?: NodeJS.ProcessEnv; wrap?: string[]; port?: number } = {},
): Promise<Served> {
  // `wrap` runs the gateway under another command (e.g. setpriv to drop root).
  const [cmd, ...pre] = [...(opts.wrap ?? []), process.execPath];
  const child = lab.gw.spawn(
    cmd as string,
    [
      ...pre,
      sengBin,
      'serve',
      '--cert',
      lab.gwKeys[0]!.cert,
      '--key',
      lab.gwKeys[0]!.key,
      '--cert',
      lab.gwKeys[1]!.cert,
      '--key',
      lab.gwKeys[1]!.key,
      '--ias-root',
      join(lab.dir, 'ca', 'ias-root.pem'),
      '--sgx-root',
      join(lab.dir, 'ca', 'sgx-root.pem'),
      '--control',
      lab.control,
      '--log-format',
      'json',
      ...extra,
      listen,
      String(opts.port ?? 12345),
    ],
    // The lease history stays in the lab (never the host's /var/lib/seng) unless a test says otherwise.
    { env: { SENG_LEASE_DB: join(lab.dir, 'leases.db'), ...opts.env } },
  );
  const log: string[] = [];
  let buf = '';
  child.stderr?.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      log.push(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
    }
  });
  await waitForLine(child, /"event":"listening"/, 20_000, { stream: 'stderr' });
  return { child, log, stop: () => stop(child, 8000) };
}

export interface Sim {
  child: ChildProcess;
  ready:
    | { ip: string; prefix: number; gateway: string; tun: string | null; forwarding?: 'native' | 'js' | null }
    | undefined;
  exit: Promise<number | null>;
  stderr: () => string;
}

let tunCounter = 0;

/**
 * Starts `seng sim enclave` in `host`; with `app` its TUN goes into that namespace and
 * 10.99.0.0/24 is routed through the tunnel. Resolves once it is ready or has exited.
 */
export async function sim(
  lab: Lab,
  host: Netns,
  cert: AppCert,
  opts: { app?: Netns; gateway?: string; extra?: string[]; env?: Record<string, string> } = {},
): Promise<Sim> {
  const tun = `senc${process.pid % 1000}x${tunCounter++}`;
  const args = [
    sengBin,
    'sim',
    'enclave',
    '--gateway',
    opts.gateway ?? (host === lab.host2 ? GW_HOST2 : GW_HOST1),
    '--cert',
    cert.cert,
    '--key',
    cert.key,
    '--gateway-cert',
    lab.gwCert,
    '--log-format',
    'json',
    ...(opts.app ? ['--tun', tun, '--netns', opts.app.name, '--route', '10.99.0.0/24'] : []),
    ...(opts.extra ?? []),
  ];
  const child = host.spawn(process.execPath, args, opts.env ? { env: opts.env } : {});
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const s: Sim = { child, ready: undefined, exit, stderr: () => stderr };
  const ready = waitForLine(child, /^\{"event":"ready"/, 20_000)
    .then((r) => JSON.parse(r.line) as Sim['ready'])
    .catch(() => undefined);
  const result = await Promise.race([ready, exit.then(() => undefined)]);
  s.ready = result ?? undefined;
  return s;
}
