/**
 * `seng demo`: a complete SENG deployment in throwaway network namespaces, so an admin
 * sees per-app enforcement work without SGX hardware or a kernel module:
 *
 *   host1 10.50.0.2 ─┐                       ┌─ service 10.99.0.2 (:8080 web, :8443 admin)
 *   (DemoEnclave)    ├─ gateway 10.50.0.1 ───┘
 *   host2 10.51.0.2 ─┘  seng serve --nft, demo database + demo policy
 *   (SENG-NGINX, DemoEnclave)
 *
 * Each round, every enclave tries both service ports through its tunnel; the table shows
 * what got through and which policy rule decided (from seng's reference evaluator of the
 * kernel match semantics), and flags any disagreement between the two.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createSimCa, createSimCertificate } from '../attestation/index.js';
import { evaluate, parsePolicy, appDirectoryFromList, type Registration } from '../policy/index.js';
import { DEMO_MEASUREMENTS, Store } from '../store/index.js';
import { EnvironmentError } from '../util/errors.js';
import { parseIpv4 } from '../util/ipv4.js';
import type { Logger } from '../util/log.js';
import { DemoInterrupted, lineFrom, Topology } from './topology.js';

export const DEMO_POLICY = `# seng demo policy: apps and categories, not IPs.
version: 1
defaults: { input: accept, forward: drop, output: accept }
rules:
  - name: service-replies
    description: The service answers whoever reached it.
    chain: forward
    src-addr: 10.99.0.2
    action: accept
  - name: demo-apps-web
    description: Apps in category Demo may use the web service.
    chain: forward
    src-cat: Demo
    protocol: tcp
    dport: 8080
    action: accept
    counter: true
  - name: admin-from-trusted-hosts
    description: Only enclaves on hosts in 10.50.0.0/24 may reach the admin port.
    chain: forward
    src-host: 10.50.0.0/24
    protocol: tcp
    dport: 8443
    action: accept
    counter: true
`;

const GATEWAY = '10.50.0.1';
const SERVICE = '10.99.0.2';
const PORTS = [
  { port: 8080, label: 'web :8080' },
  { port: 8443, label: 'admin :8443' },
];

export interface DemoOptions {
  /** Probe rounds before exiting; undefined = until SIGINT/SIGTERM. */
  rounds?: number;
  json: boolean;
  intervalMs?: number;
  logger: Logger;
  print: (text: string) => void;
}

export interface ProbeResult {
  app: string;
  host: string;
  enclaveIp: string;
  port: number;
  reached: boolean;
  expected: 'accept' | 'drop' | 'reject';
  rule: string | null;
  agrees: boolean;
}

interface DemoEnclave {
  app: string;
  host: string;
  appNs: string;
  enclaveIp: string;
  reg: Registration;
}

const PROBE = `const s=require('net').connect(+process.argv[2],process.argv[1]);const t=setTimeout(()=>{console.log('timeout');process.exit(0)},+process.argv[3]);s.on('connect',()=>{console.log('ok');process.exit(0)});s.on('error',e=>{console.log(e.code);process.exit(0)});`;
const SERVER = `for(const p of process.argv.slice(1))require('net').createServer(c=>c.end()).listen(+p,'0.0.0.0');console.log('listening');`;

export interface DemoOutcome {
  /** Every complete probe round (a round cut short by Ctrl-C is left out). */
  rounds: ProbeResult[][];
  /** True when SIGINT/SIGTERM ended the demo (its normal end without --rounds). */
  stopped: boolean;
}

export async function runDemo(opts: DemoOptions): Promise<DemoOutcome> {
  if (process.getuid?.() !== 0) {
    throw new EnvironmentError(
      'EDEMO',
      'seng demo needs root',
      'it creates network namespaces, TUN devices and nftables rules: run it with sudo',
    );
  }
  const log = opts.logger;
  const dir = mkdtempSync(join(tmpdir(), 'seng-demo-'));
  const topo = new Topology(`sgd${process.pid % 100000}`);
  const rounds: ProbeResult[][] = [];
  let stopRequested = false;
  const onSignal = () => (stopRequested = true);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const sengBin = fileURLToPath(new URL('../../../bin/run.js', import.meta.url));
    // 1. Policy store, attestation test authority, certificates.
    const db = join(dir, 'demo.db');
    Store.create(db, 'netfilter', { demo: true }).close();
    const policyPath = join(dir, 'demo-policy.yaml');
    writeFileSync(policyPath, DEMO_POLICY);
    const ca = createSimCa(join(dir, 'ca'));
    const certFor = (name: keyof typeof DEMO_MEASUREMENTS) => {
      const c = createSimCertificate(ca, { kind: 'epid', ...DEMO_MEASUREMENTS[name] });
      writeFileSync(join(dir, `${name}.crt`), c.certPem);
      writeFileSync(join(dir, `${name}.key`), c.keyPem, { mode: 0o600 });
      return { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
    };
    topo.run('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      join(dir, 'gw.key'),
      '-out',
      join(dir, 'gw.crt'),
      '-subj',
      '/CN=seng-demo-gateway',
      '-days',
      '1',
    ]);

    // 2. The network.
    log.info('building the demo network (namespaces gateway, host1, host2, service)');
    const gw = topo.netns('gw');
    const h1 = topo.netns('h1');
    const h2 = topo.netns('h2');
    const svc = topo.netns('svc');
    const app1 = topo.netns('app1');
    const app2 = topo.netns('app2');
    const app3 = topo.netns('app3');
    topo.veth(gw, `${GATEWAY}/24`, h1, '10.50.0.2/24');
    topo.veth(gw, '10.51.0.1/24', h2, '10.51.0.2/24');
    topo.veth(gw, '10.99.0.1/24', svc, `${SERVICE}/24`);
    topo.run('ip', ['-n', svc, 'route', 'add', 'default', 'via', '10.99.0.1']);
    topo.run('ip', ['-n', h2, 'route', 'add', 'default', 'via', '10.51.0.1']);
    topo.exec(gw, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    const server = topo.spawn(svc, process.execPath, ['-e', SERVER, '8080', '8443']);
    await lineFrom(server, 'stdout', /listening/, 10_000);

    // 3. The gateway.
    log.info('starting seng serve --nft with the demo database and policy');
    const serve = topo.spawn(gw, process.execPath, [
      sengBin,
      'serve',
      // The demo's leases live and die with its temporary directory.
      '--lease-db',
      join(dir, 'leases.db'),
      '--cert',
      join(dir, 'gw.crt'),
      '--key',
      join(dir, 'gw.key'),
      '-d',
      db,
      '--nft',
      '--policy',
      policyPath,
      '--ias-root',
      join(dir, 'ca', 'ias-root.pem'),
      '--sgx-root',
      join(dir, 'ca', 'sgx-root.pem'),
      '--control',
      join(dir, 'control.sock'),
      '--log-format',
      'json',
      GATEWAY,
      '12345',
    ]);
    await lineFrom(serve, 'stderr', /"event":"listening"/, 30_000);

    // 4. Two apps on two untrusted hosts.
    const enclaves: DemoEnclave[] = [];
    const start = async (
      name: keyof typeof DEMO_MEASUREMENTS,
      app: string,
      host: string,
      hostIp: string,
      appNs: string,
      categories: string[],
    ) => {
      const { cert, key } = certFor(name);
      const sim = topo.spawn(host, process.execPath, [
        sengBin,
        'sim',
        'enclave',
        '--gateway',
        GATEWAY,
        '--cert',
        cert,
        '--key',
        key,
        '--gateway-cert',
        join(dir, 'gw.crt'),
        '--tun',
        `demo${enclaves.length}`,
        '--netns',
        appNs,
        '--route',
        '10.99.0.0/24',
        '--log-format',
        'json',
      ]);
      const ready = JSON.parse(await lineFrom(sim, 'stdout', /"event":"ready"/, 30_000)) as { ip: string };
      log.info(`${app} on ${hostIp} connected as ${ready.ip}`);
      enclaves.push({
        app,
        host: hostIp,
        appNs,
        enclaveIp: ready.ip,
        reg: { mrEnclave: DEMO_MEASUREMENTS[name].mrEnclave, categories, hostIp: parseIpv4(hostIp) },
      });
    };
    await start('DemoEnclave', 'DemoEnclave', h1, '10.50.0.2', app1, ['Demo']);
    await start('NGINX', 'SENG-NGINX', h2, '10.51.0.2', app2, ['Server']);
    await start('DemoEnclave', 'DemoEnclave', h2, '10.51.0.2', app3, ['Demo']);

    // 5. Probe and explain.
    const policy = parsePolicy(DEMO_POLICY, 'demo-policy.yaml');
    const apps = appDirectoryFromList([
      { name: 'DemoEnclave', mrEnclave: DEMO_MEASUREMENTS.DemoEnclave.mrEnclave },
      { name: 'SENG-NGINX', mrEnclave: DEMO_MEASUREMENTS.NGINX.mrEnclave },
    ]);
    const regs = new Map(enclaves.map((e) => [parseIpv4(e.enclaveIp), e.reg]));
    if (!opts.json) opts.print(explainHeader());
    for (let round = 1; !stopRequested && (opts.rounds === undefined || round <= opts.rounds); round++) {
      const results: ProbeResult[] = [];
      for (const e of enclaves) {
        for (const { port } of PORTS) {
          const out = topo
            .exec(e.appNs, process.execPath, ['-e', PROBE, SERVICE, String(port), '1000'])
            .trim();
          const verdict = evaluate(
            policy,
            {
              chain: 'forward',
              src: parseIpv4(e.enclaveIp),
              dst: parseIpv4(SERVICE),
              protocol: 'tcp',
              dport: port,
              sport: 40000,
            },
            regs,
            apps,
          );
          const reached = out === 'ok';
          results.push({
            app: e.app,
            host: e.host,
            enclaveIp: e.enclaveIp,
            port,
            reached,
            expected: verdict.action,
            rule: verdict.rule ?? null,
            agrees: reached === (verdict.action === 'accept'),
          });
        }
      }
      rounds.push(results);
      opts.print(opts.json ? JSON.stringify({ round, results }) : renderRound(round, results));
      if (opts.rounds === undefined || round < opts.rounds)
        await sleepUnless(opts.intervalMs ?? 2000, () => stopRequested);
    }
    return { rounds, stopped: stopRequested };
  } catch (err) {
    // Ctrl-C while a probe or setup command ran: that command died of the signal. Stopping is
    // what the user asked for, so it is not an error; everything is still cleaned up below.
    if (err instanceof DemoInterrupted || stopRequested) return { rounds, stopped: true };
    throw err;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    log.info('cleaning up the demo network');
    await topo.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

function explainHeader(): string {
  return [
    'seng demo: two apps (three enclaves) on two untrusted hosts reach a service through the SENG gateway.',
    'Policy (forward chain, default drop):',
    '  demo-apps-web            category Demo may use tcp/8080',
    '  admin-from-trusted-hosts enclaves on hosts in 10.50.0.0/24 may use tcp/8443',
    'Press Ctrl-C to stop; everything is removed on exit.',
    '',
  ].join('\n');
}

function renderRound(round: number, results: ProbeResult[]): string {
  const lines = [`round ${round}`];
  for (const r of results) {
    const label = PORTS.find((p) => p.port === r.port)?.label ?? String(r.port);
    const outcome = r.reached ? 'ALLOWED' : 'DROPPED';
    const why = r.rule ? `rule ${r.rule}` : 'forward default: drop';
    const flag = r.agrees ? '' : '   <-- differs from the policy!';
    lines.push(
      `  ${r.app.padEnd(12)} host ${r.host.padEnd(10)} ${r.enclaveIp.padEnd(14)} → ${label.padEnd(12)} ${outcome}  (${why})${flag}`,
    );
  }
  return lines.join('\n');
}

function sleepUnless(ms: number, stop: () => boolean): Promise<void> {
  return new Promise((resolve) => {
    const started = Date.now();
    const tick = setInterval(() => {
      if (stop() || Date.now() - started >= ms) {
        clearInterval(tick);
        resolve();
      }
    }, 100);
  });
}
