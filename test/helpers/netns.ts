/**
 * Network-namespace toolkit for integration tests (needs root).
 *
 *   import { after } from 'node:test';
 *   import { createNetns, vethPair, cleanupAll, waitFor } from '../../helpers/netns.js';
 *   after(cleanupAll);
 *   const ns = await createNetns('gw');                       // sg-gw-<pid>-<n>, loopback up
 *   const v = await vethPair(null, ns, { addrA: '10.9.0.1/24', addrB: '10.9.0.2/24' });
 *   await ns.exec('ping', ['-c1', '-W1', '10.9.0.1']);       // rejects on non-zero exit
 *   const srv = ns.spawn('iperf3', ['-s', '-1']);             // tracked, killed by cleanupAll()
 *
 * Everything created through this module (namespaces, veth pairs, processes) is recorded in
 * a per-process registry. `cleanupAll()` tears all of it down; a synchronous best-effort
 * version of the same runs on process exit and on SIGINT/SIGTERM/SIGHUP, so an interrupted
 * test run does not leave namespaces behind. `reapStale()` removes namespaces left by test
 * processes that died with SIGKILL (their names carry the dead PID).
 *
 * Names: namespaces are `sg-<tag>-<pid>-<n>`; interfaces are `<tag4>-<pid36>-<n36><a|b>`
 * (at most 15 characters, the kernel's IFNAMSIZ-1), unique per test process.
 */
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';

export interface ExecOptions {
  /** Written to the child's stdin (which is closed afterwards). */
  input?: string | Buffer;
  /** Kill the command (SIGKILL) after this long; default 30 s. */
  timeoutMs?: number;
  /** Extra environment variables (merged over process.env). */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Reject when the exit code is not 0 (default true). */
  check?: boolean;
}

export interface ExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly result: ExecResult,
  ) {
    super(
      `command failed (${result.signal ? `signal ${result.signal}` : `exit ${result.code}`}): ${command}\n` +
        `${result.stderr.trim()}${result.stdout.trim() ? `\nstdout: ${result.stdout.trim()}` : ''}`,
    );
    this.name = 'CommandError';
  }
}

export interface SpawnInOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Default ['ignore', 'pipe', 'pipe']. */
  stdio?: SpawnOptions['stdio'];
}

export interface Netns {
  /** The namespace name, usable with `ip -n NAME` / `ip netns exec NAME`. */
  readonly name: string;
  /** Runs a command inside the namespace and collects its output. */
  exec(cmd: string, args?: string[], opts?: ExecOptions): Promise<ExecResult>;
  /** Synchronous variant of exec (for setup code that cannot await). */
  execSync(cmd: string, args?: string[], opts?: Omit<ExecOptions, 'input'> & { input?: string }): ExecResult;
  /** Shortcut for `ip -n NAME ARGS…`. */
  ip(...args: string[]): Promise<ExecResult>;
  /**
   * Starts a long-running command inside the namespace in its own process group. The
   * process is tracked: cleanupAll()/destroy() kill it (SIGTERM, then SIGKILL).
   */
  spawn(cmd: string, args?: string[], opts?: SpawnInOptions): ChildProcess;
  /** Deletes the namespace after killing every process still inside it. Idempotent. */
  destroy(): Promise<void>;
  readonly destroyed: boolean;
}

export interface VethEnd {
  /** Namespace of this end, or null for the root namespace. */
  ns: Netns | null;
  /** Interface name (≤ 15 characters). */
  name: string;
  /** Address with prefix as given (e.g. '10.9.0.1/24'), if any. */
  cidr: string | undefined;
  /** Address without prefix, if any. */
  address: string | undefined;
}

export interface VethPair {
  a: VethEnd;
  b: VethEnd;
  /** Deletes the pair (deleting one end removes both). Idempotent. */
  destroy(): Promise<void>;
}

export interface VethOptions {
  /** Address (CIDR with host part, e.g. '10.9.0.1/24') for end A. */
  addrA?: string;
  addrB?: string;
  /** Link MTU for both ends. */
  mtu?: number;
  /**
   * Area tag for the generated names (first 4 characters used); default: the tag of nsB's
   * (else nsA's) namespace, e.g. 'gw' for sg-gw-<pid>-<n>.
   */
  tag?: string;
  /** Override the generated interface names (must be ≤ 15 characters). */
  nameA?: string;
  nameB?: string;
}

// ---------------------------------------------------------------------------------------------
// Registry

const namespaces = new Map<string, NetnsImpl>();
const processes = new Set<ChildProcess>();
/** Root-namespace veth ends we created (ends inside a namespace die with it). */
const rootLinks = new Set<string>();
let counter = 0;
let hooksInstalled = false;

function nextId(): number {
  counter += 1;
  return counter;
}

function sanitizeTag(tag: string, max: number): string {
  const clean = tag.toLowerCase().replace(/[^a-z0-9]/g, '');
  return (clean || 'x').slice(0, max);
}

/** Unique interface name `<tag4>-<pid36>-<n36><suffix>`, ≤ 15 characters. */
export function uniqueIfName(tag: string, suffix = ''): string {
  const name = `${sanitizeTag(tag, 4)}-${process.pid.toString(36)}-${nextId().toString(36)}${suffix}`;
  if (name.length > 15) throw new Error(`interface name ${name} longer than 15 characters`);
  return name;
}

function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', cleanupAllSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = (): void => {
      cleanupAllSync();
      process.removeListener(sig, handler);
      process.kill(process.pid, sig);
    };
    process.on(sig, handler);
  }
}

function killProcessTree(child: ChildProcess, signal: NodeJS.Signals): void {
  const pid = child.pid;
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal); // its own process group (spawned detached)
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      /* already gone */
    }
  }
}

function isRunning(child: ChildProcess): boolean {
  return child.pid !== undefined && child.exitCode === null && child.signalCode === null;
}

async function stopProcess(child: ChildProcess, graceMs = 2000): Promise<void> {
  if (!isRunning(child)) {
    processes.delete(child);
    return;
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  killProcessTree(child, 'SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([
    exited.then(() => false),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), graceMs);
    }),
  ]);
  clearTimeout(timer);
  if (timedOut) {
    killProcessTree(child, 'SIGKILL');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 2000))]);
  }
  processes.delete(child);
}

/** Kills tracked processes, deletes veth pairs and namespaces created by this process. */
export async function cleanupAll(): Promise<void> {
  await Promise.all([...processes].map((p) => stopProcess(p)));
  for (const link of [...rootLinks]) {
    await run('ip', ['link', 'del', link], { check: false });
    rootLinks.delete(link);
  }
  for (const ns of [...namespaces.values()]) await ns.destroy();
}

/** Synchronous best-effort cleanup for process exit and signals. */
export function cleanupAllSync(): void {
  for (const p of processes) if (isRunning(p)) killProcessTree(p, 'SIGKILL');
  processes.clear();
  for (const link of rootLinks) spawnSync('ip', ['link', 'del', link], { stdio: 'ignore', timeout: 5000 });
  rootLinks.clear();
  for (const ns of namespaces.values()) ns.destroySync();
  namespaces.clear();
}

/**
 * Deletes namespaces named `sg-*-<pid>-<n>` whose creating process no longer exists (left
 * behind by a test process killed with SIGKILL). Returns the names it deleted.
 */
export function reapStale(): string[] {
  const dir = '/var/run/netns';
  if (!existsSync(dir)) return [];
  const reaped: string[] = [];
  for (const name of readdirSync(dir)) {
    const m = /^sg-[a-z0-9]+-(\d+)-\d+$/.exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || pidAlive(pid)) continue;
    killNamespacePidsSync(name);
    const r = spawnSync('ip', ['netns', 'delete', name], { stdio: 'ignore', timeout: 5000 });
    if (r.status === 0) reaped.push(name);
  }
  return reaped;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function killNamespacePidsSync(name: string): void {
  const r = spawnSync('ip', ['netns', 'pids', name], { encoding: 'utf8', timeout: 5000 });
  for (const line of (r.stdout ?? '').split('\n')) {
    const pid = Number(line.trim());
    if (Number.isInteger(pid) && pid > 1 && pid !== process.pid) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Commands

/** Runs a command (in the root namespace) and collects its output. */
export function run(cmd: string, args: string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
  const shown = [cmd, ...args].join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: opts.env ? { ...process.env, ...opts.env } : process.env,
      cwd: opts.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      stderr += `\n[killed after ${opts.timeoutMs ?? 30_000} ms]`;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 30_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${shown}: ${err.message}`, { cause: err }));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const result: ExecResult = { code, signal, stdout, stderr };
      if ((opts.check ?? true) && code !== 0) reject(new CommandError(shown, result));
      else resolve(result);
    });
    child.stdin.on('error', () => {
      /* the command may exit without reading its input */
    });
    child.stdin.end(opts.input ?? '');
  });
}

/** Synchronous variant of run(). */
export function runSync(
  cmd: string,
  args: string[] = [],
  opts: Omit<ExecOptions, 'input'> & { input?: string } = {},
): ExecResult {
  const r = spawnSync(cmd, args, {
    input: opts.input ?? '',
    encoding: 'utf8',
    env: opts.env ? { ...process.env, ...opts.env } : process.env,
    cwd: opts.cwd,
    timeout: opts.timeoutMs ?? 30_000,
  });
  if (r.error) throw new Error(`cannot run ${cmd}: ${r.error.message}`, { cause: r.error });
  const result: ExecResult = { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
  if ((opts.check ?? true) && r.status !== 0) throw new CommandError([cmd, ...args].join(' '), result);
  return result;
}

/** Spawns a tracked long-running process (in its own process group) in the root namespace. */
export function spawnTracked(cmd: string, args: string[] = [], opts: SpawnInOptions = {}): ChildProcess {
  installExitHooks();
  const child = spawn(cmd, args, {
    env: opts.env ? { ...process.env, ...opts.env } : process.env,
    cwd: opts.cwd,
    stdio: opts.stdio ?? ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  processes.add(child);
  child.once('exit', () => processes.delete(child));
  child.on('error', () => processes.delete(child));
  return child;
}

/** Kills a tracked process (SIGTERM, SIGKILL after graceMs) and waits until it has exited. */
export function stop(child: ChildProcess, graceMs = 2000): Promise<void> {
  return stopProcess(child, graceMs);
}

// ---------------------------------------------------------------------------------------------
// Namespaces

class NetnsImpl implements Netns {
  destroyed = false;
  constructor(readonly name: string) {}

  private wrap(cmd: string, args: string[]): string[] {
    return ['netns', 'exec', this.name, cmd, ...args];
  }

  private assertAlive(): void {
    if (this.destroyed) throw new Error(`namespace ${this.name} was destroyed`);
  }

  exec(cmd: string, args: string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
    this.assertAlive();
    return run('ip', this.wrap(cmd, args), opts);
  }

  execSync(cmd: string, args: string[] = [], opts: Omit<ExecOptions, 'input'> & { input?: string } = {}) {
    this.assertAlive();
    return runSync('ip', this.wrap(cmd, args), opts);
  }

  ip(...args: string[]): Promise<ExecResult> {
    this.assertAlive();
    return run('ip', ['-n', this.name, ...args]);
  }

  spawn(cmd: string, args: string[] = [], opts: SpawnInOptions = {}): ChildProcess {
    this.assertAlive();
    // `ip netns exec` execs the command in place, so the child's PID is the command's PID.
    return spawnTracked('ip', this.wrap(cmd, args), opts);
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    // Processes we started in here first (graceful), then anything else still inside it.
    const mine = [...processes].filter((p) => p.spawnargs[3] === this.name && p.spawnargs[1] === 'netns');
    await Promise.all(mine.map((p) => stopProcess(p)));
    killNamespacePidsSync(this.name);
    await run('ip', ['netns', 'delete', this.name], { check: false });
    namespaces.delete(this.name);
  }

  destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    killNamespacePidsSync(this.name);
    spawnSync('ip', ['netns', 'delete', this.name], { stdio: 'ignore', timeout: 5000 });
  }
}

/** Creates a fresh namespace `sg-<tag>-<pid>-<n>` with its loopback interface up. */
export async function createNetns(tag: string): Promise<Netns> {
  installExitHooks();
  const name = `sg-${sanitizeTag(tag, 20)}-${process.pid}-${nextId()}`;
  await run('ip', ['netns', 'add', name]);
  const ns = new NetnsImpl(name);
  namespaces.set(name, ns);
  try {
    await run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  } catch (err) {
    await ns.destroy();
    throw err;
  }
  return ns;
}

function nsTag(ns: Netns | null): string | undefined {
  return ns ? /^sg-([a-z0-9]+)-\d+-\d+$/.exec(ns.name)?.[1] : undefined;
}

/**
 * Creates a veth pair between two namespaces (null = root namespace), assigns the optional
 * addresses and brings both ends up. Interface names are unique (see uniqueIfName).
 */
export async function vethPair(
  nsA: Netns | null,
  nsB: Netns | null,
  opts: VethOptions = {},
): Promise<VethPair> {
  installExitHooks();
  const tag = opts.tag ?? nsTag(nsB) ?? nsTag(nsA) ?? 'veth';
  const nameA = opts.nameA ?? uniqueIfName(tag, 'a');
  const nameB = opts.nameB ?? uniqueIfName(tag, 'b');
  for (const n of [nameA, nameB])
    if (n.length > 15) throw new Error(`interface name ${n} longer than 15 characters`);
  // Create in the root namespace, then move: the root end is tracked until it is moved.
  await run('ip', ['link', 'add', nameA, 'type', 'veth', 'peer', 'name', nameB]);
  rootLinks.add(nameA);
  rootLinks.add(nameB);
  const ends: [Netns | null, string, string | undefined][] = [
    [nsA, nameA, opts.addrA],
    [nsB, nameB, opts.addrB],
  ];
  try {
    for (const [ns, name] of ends) {
      if (!ns) continue;
      await run('ip', ['link', 'set', name, 'netns', ns.name]);
      rootLinks.delete(name);
    }
    for (const [ns, name, cidr] of ends) {
      const pre = ns ? ['-n', ns.name] : [];
      if (opts.mtu !== undefined) await run('ip', [...pre, 'link', 'set', name, 'mtu', String(opts.mtu)]);
      if (cidr) await run('ip', [...pre, 'addr', 'add', cidr, 'dev', name]);
      await run('ip', [...pre, 'link', 'set', name, 'up']);
    }
  } catch (err) {
    await deleteLink(nsA, nameA);
    throw err;
  }
  const end = (ns: Netns | null, name: string, cidr: string | undefined): VethEnd => ({
    ns,
    name,
    cidr,
    address: cidr?.split('/')[0],
  });
  let gone = false;
  return {
    a: end(nsA, nameA, opts.addrA),
    b: end(nsB, nameB, opts.addrB),
    async destroy() {
      if (gone) return;
      gone = true;
      await deleteLink(nsA, nameA);
    },
  };

  async function deleteLink(ns: Netns | null, name: string): Promise<void> {
    if (!ns || !ns.destroyed) {
      await run('ip', [...(ns ? ['-n', ns.name] : []), 'link', 'del', name], { check: false });
    }
    rootLinks.delete(nameA);
    rootLinks.delete(nameB);
  }
}

// ---------------------------------------------------------------------------------------------
// Waiting and node scripts

/**
 * Polls `predicate` (sync or async) until it returns a truthy value, which is returned.
 * Rejects with `message` (or a default) after timeoutMs. Exceptions from the predicate count
 * as "not yet"; the last one is attached as the cause on timeout.
 */
export async function waitFor<T>(
  predicate: () => T | Promise<T>,
  timeoutMs = 5000,
  opts: { intervalMs?: number; message?: string } = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await predicate();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      throw new Error(opts.message ?? `waitFor: condition not met within ${timeoutMs} ms`, {
        cause: lastError,
      });
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 25));
  }
}

/**
 * Runs a node script (e.g. a compiled helper in dist/test/...) to completion inside `ns`
 * (or the root namespace for null) with the running node binary.
 */
export function runIn(
  ns: Netns | null,
  script: string,
  args: string[] = [],
  opts: ExecOptions = {},
): Promise<ExecResult> {
  return ns
    ? ns.exec(process.execPath, [script, ...args], opts)
    : run(process.execPath, [script, ...args], opts);
}

/** Starts a long-running node script inside `ns` (or root for null); tracked for cleanup. */
export function spawnIn(
  ns: Netns | null,
  script: string,
  args: string[] = [],
  opts: SpawnInOptions = {},
): ChildProcess {
  return ns
    ? ns.spawn(process.execPath, [script, ...args], opts)
    : spawnTracked(process.execPath, [script, ...args], opts);
}

/**
 * Resolves with the first line of the child's stdout (or stderr with `stream: 'stderr'`)
 * that matches `pattern` (and its match). Rejects on timeout or if the child exits first; the
 * error message includes the output seen so far.
 */
export function waitForLine(
  child: ChildProcess,
  pattern: RegExp,
  timeoutMs = 10_000,
  opts: { stream?: 'stdout' | 'stderr' } = {},
): Promise<{ line: string; match: RegExpExecArray }> {
  const stream = opts.stream === 'stderr' ? child.stderr : child.stdout;
  if (!stream) return Promise.reject(new Error(`waitForLine: child has no piped ${opts.stream ?? 'stdout'}`));
  return new Promise((resolve, reject) => {
    let buf = '';
    let seen = '';
    const finish = (err: Error | null, value?: { line: string; match: RegExpExecArray }): void => {
      clearTimeout(timer);
      stream.off('data', onData);
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve(value as { line: string; match: RegExpExecArray });
    };
    const onData = (d: Buffer | string): void => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        seen += line + '\n';
        const match = pattern.exec(line);
        if (match) return finish(null, { line, match });
      }
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void =>
      finish(
        new Error(`process exited (${signal ?? code}) before printing ${pattern}; output:\n${seen}${buf}`),
      );
    const timer = setTimeout(
      () => finish(new Error(`no line matching ${pattern} within ${timeoutMs} ms; output:\n${seen}${buf}`)),
      timeoutMs,
    );
    stream.on('data', onData);
    child.on('exit', onExit);
  });
}

/** Names of links in a namespace (or root for null), e.g. to assert a device is gone. */
export async function linkNames(ns: Netns | null): Promise<string[]> {
  const r = await run('ip', [...(ns ? ['-n', ns.name] : []), '-o', 'link', 'show']);
  return r.stdout
    .split('\n')
    .map((l) => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1])
    .filter((n): n is string => n !== undefined);
}

// ---------------------------------------------------------------------------------------------
// Node agents: a node script running in a namespace, driven over JSON lines on stdin/stdout

/** A reply ({ id, ok, ...result } or { id, ok: false, code, message }) or an event ({ event, ... }). */
export type AgentMessage = Record<string, unknown> & {
  id?: number;
  ok?: boolean;
  event?: string;
  code?: string;
  message?: string;
};

export interface AgentStartOptions {
  /** Extra node flags, e.g. ['--expose-gc']. */
  nodeArgs?: string[];
  env?: NodeJS.ProcessEnv;
  /** How long to wait for the agent's ready event (default 10 s). */
  readyTimeoutMs?: number;
}

/**
 * Test side of a node agent. The agent script calls serveAgent(); the test does
 *   const agent = await NodeAgent.start(ns, script);
 *   const r = await agent.ok('open', { name: 'tunX' });    // rejects on { ok: false }
 *   const ev = await agent.waitForEvent((e) => e.event === 'icmp');
 *   await agent.exit();                                     // closes stdin, waits, kills if needed
 * The process is tracked like any ns.spawn() child, so cleanupAll() kills it too.
 */
export class NodeAgent {
  /** Events received so far, in order. */
  readonly events: AgentMessage[] = [];
  private stderrText = '';
  private nextId = 1;
  private readonly pending = new Map<number, (r: AgentMessage) => void>();

  private constructor(readonly child: ChildProcess) {
    let buf = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        this.receive(line);
      }
    });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      this.stderrText += d;
    });
    child.once('exit', (code, signal) => {
      const msg: AgentMessage = {
        ok: false,
        code: 'EAGENTEXIT',
        message: `agent exited (${signal ?? code}) before replying; stderr:\n${this.stderrText}`,
      };
      for (const resolve of this.pending.values()) resolve(msg);
      this.pending.clear();
    });
  }

  static async start(
    ns: Netns | null,
    script: string,
    args: string[] = [],
    opts: AgentStartOptions = {},
  ): Promise<NodeAgent> {
    const argv = [...(opts.nodeArgs ?? []), script, ...args];
    const spawnOpts: SpawnInOptions = {
      stdio: ['pipe', 'pipe', 'pipe'],
      ...(opts.env ? { env: opts.env } : {}),
    };
    const child = ns
      ? ns.spawn(process.execPath, argv, spawnOpts)
      : spawnTracked(process.execPath, argv, spawnOpts);
    const agent = new NodeAgent(child);
    await agent.waitForEvent((e) => e.event === 'ready', opts.readyTimeoutMs ?? 10_000);
    return agent;
  }

  /** Everything the agent wrote to stderr so far. */
  get stderr(): string {
    return this.stderrText;
  }

  private receive(line: string): void {
    if (line.trim() === '') return;
    let msg: AgentMessage;
    try {
      msg = JSON.parse(line) as AgentMessage;
    } catch {
      this.events.push({ event: 'stdout', line });
      return;
    }
    if (typeof msg.event === 'string') {
      this.events.push(msg);
    } else if (typeof msg.id === 'number') {
      this.pending.get(msg.id)?.(msg);
      this.pending.delete(msg.id);
    } else {
      this.events.push({ event: 'stdout', line });
    }
  }

  /** Sends a command; resolves with the reply, successful or not. */
  call(cmd: string, args: Record<string, unknown> = {}, timeoutMs = 15_000): Promise<AgentMessage> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        reject(new Error(`agent has exited; stderr:\n${this.stderrText}`));
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`agent: no reply to ${cmd} within ${timeoutMs} ms; stderr:\n${this.stderrText}`));
      }, timeoutMs);
      this.pending.set(id, (r) => {
        clearTimeout(timer);
        resolve(r);
      });
      this.child.stdin?.write(JSON.stringify({ ...args, id, cmd }) + '\n');
    });
  }

  /** Like call(), but rejects when the agent replies { ok: false }. */
  async ok(cmd: string, args: Record<string, unknown> = {}, timeoutMs?: number): Promise<AgentMessage> {
    const r = await this.call(cmd, args, timeoutMs);
    if (r.ok !== true) throw new Error(`agent command ${cmd} failed: ${r.code ?? ''} ${r.message ?? ''}`);
    return r;
  }

  /** The first event (already received or future) matching `predicate`. */
  async waitForEvent(predicate: (e: AgentMessage) => boolean, timeoutMs = 5000): Promise<AgentMessage> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.events.find(predicate);
      if (found) return found;
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(
          `agent exited (${this.child.signalCode ?? this.child.exitCode}); stderr:\n${this.stderrText}`,
        );
      }
      if (Date.now() >= deadline) {
        throw new Error(`agent: no matching event within ${timeoutMs} ms; stderr:\n${this.stderrText}`);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Closes the agent's stdin (serveAgent then runs its onClose and exits), kills it if needed. */
  async exit(timeoutMs = 5000): Promise<void> {
    this.child.stdin?.end();
    try {
      await waitFor(() => this.child.exitCode !== null || this.child.signalCode !== null, timeoutMs);
    } catch {
      await stopProcess(this.child);
    }
  }
}

export type AgentHandler = (
  cmd: string,
  args: Record<string, unknown>,
) => Promise<Record<string, unknown> | void> | Record<string, unknown> | void;

/**
 * Agent side: serves commands from stdin (one JSON object per line, `{ id, cmd, ...args }`)
 * and writes `{ id, ok: true, ...result }` or `{ id, ok: false, code, message }` replies (code
 * from the error's `code` property). Prints `{ event: 'ready', pid }` first. When stdin
 * closes, runs `onClose` and exits with code 0. Returns `emit(event, data)` for unsolicited
 * events.
 */
export function serveAgent(
  handler: AgentHandler,
  opts: { onClose?: () => Promise<void> | void } = {},
): { emit(event: string, data?: Record<string, unknown>): void } {
  const write = (obj: unknown): void => {
    process.stdout.write(JSON.stringify(obj) + '\n');
  };
  let buf = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (d: string) => {
    buf += d;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      let msg: { id?: unknown; cmd?: unknown } & Record<string, unknown>;
      try {
        msg = JSON.parse(line) as typeof msg;
      } catch {
        write({ event: 'bad-input', line });
        continue;
      }
      const { id, cmd, ...args } = msg;
      Promise.resolve()
        .then(() => handler(String(cmd), args))
        .then(
          (result) => write({ ...(result ?? {}), id, ok: true }),
          (err: unknown) => {
            const e = err as { code?: unknown; message?: unknown };
            write({
              id,
              ok: false,
              code: typeof e?.code === 'string' ? e.code : 'ERR',
              message: typeof e?.message === 'string' ? e.message : String(err),
            });
          },
        );
    }
  });
  process.stdin.on('end', () => {
    Promise.resolve()
      .then(() => opts.onClose?.())
      .finally(() => process.exit(0));
  });
  write({ event: 'ready', pid: process.pid });
  return { emit: (event, data = {}) => write({ ...data, event }) };
}
