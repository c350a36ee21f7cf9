/**
 * A throwaway network for `seng demo`: named network namespaces joined by veth pairs,
 * and the processes started inside them. Everything created is recorded and torn down
 * by `destroy()` (processes by PID, then namespaces), also on SIGINT/SIGTERM.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { EnvironmentError, SengError } from '../util/errors.js';

/**
 * A short-lived command died of SIGINT/SIGTERM: the user pressed Ctrl-C (the terminal signals
 * the whole foreground process group, so the probe dies with it) or the demo is being stopped.
 */
export class DemoInterrupted extends SengError {
  constructor() {
    super('EINTERRUPTED', 'stopped');
  }
}

export class Topology {
  readonly prefix: string;
  private readonly namespaces: string[] = [];
  private readonly children: ChildProcess[] = [];
  private vethCount = 0;

  constructor(prefix: string) {
    this.prefix = prefix;
  }

  /** Runs a command and returns stdout; throws with its stderr when it fails. */
  run(cmd: string, args: string[], input?: string): string {
    const r = spawnSync(cmd, args, { encoding: 'utf8', input: input ?? '', timeout: 30_000 });
    if (r.signal === 'SIGINT' || r.signal === 'SIGTERM') throw new DemoInterrupted();
    if (r.status !== 0) {
      throw new EnvironmentError(
        'EDEMO',
        `${cmd} ${args.join(' ')} failed: ${(r.stderr || r.error?.message || '').trim()}`,
      );
    }
    return r.stdout;
  }

  netns(role: string): string {
    const name = `${this.prefix}-${role}`;
    this.run('ip', ['netns', 'add', name]);
    this.namespaces.push(name);
    this.run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    return name;
  }

  /** Joins two namespaces with a veth pair and gives each end an address (CIDR). */
  veth(nsA: string, addrA: string, nsB: string, addrB: string): void {
    const n = this.vethCount++;
    const a = `${this.prefix}v${n}a`.slice(-15);
    const b = `${this.prefix}v${n}b`.slice(-15);
    this.run('ip', ['link', 'add', a, 'netns', nsA, 'type', 'veth', 'peer', 'name', b, 'netns', nsB]);
    this.run('ip', ['-n', nsA, 'addr', 'add', addrA, 'dev', a]);
    this.run('ip', ['-n', nsB, 'addr', 'add', addrB, 'dev', b]);
    this.run('ip', ['-n', nsA, 'link', 'set', a, 'up']);
    this.run('ip', ['-n', nsB, 'link', 'set', b, 'up']);
  }

  exec(ns: string, cmd: string, args: string[], input?: string): string {
    return this.run('ip', ['netns', 'exec', ns, cmd, ...args], input);
  }

  /**
   * Starts a long-running process inside a namespace; it is killed by destroy(). It gets its
   * own process group, so Ctrl-C on the terminal does not kill the gateway or an enclave in
   * the middle of a probe round: the demo stops them in order.
   */
  spawn(ns: string, cmd: string, args: string[]): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    this.children.push(child);
    return child;
  }

  async destroy(): Promise<void> {
    const alive = this.children.filter((c) => c.exitCode === null && c.signalCode === null);
    for (const c of alive) c.kill('SIGTERM');
    await Promise.all(
      alive.map(
        (c) =>
          new Promise<void>((resolve) => {
            const t = setTimeout(() => {
              c.kill('SIGKILL');
              resolve();
            }, 5000);
            c.once('exit', () => {
              clearTimeout(t);
              resolve();
            });
          }),
      ),
    );
    for (const ns of this.namespaces.splice(0).reverse()) spawnSync('ip', ['netns', 'del', ns]);
  }
}

/** Resolves with the first line of a child's stream that matches, or rejects when it exits first. */
export function lineFrom(
  child: ChildProcess,
  stream: 'stdout' | 'stderr',
  pattern: RegExp,
  timeoutMs: number,
): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const src = child[stream];
    const done = (err?: Error, line?: string) => {
      clearTimeout(timer);
      src?.off('data', onData);
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve(line as string);
    };
    const onData = (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (pattern.test(line)) return done(undefined, line);
      }
    };
    const onExit = (code: number | null) =>
      done(new EnvironmentError('EDEMO', `process exited (${code}) before printing ${pattern}`));
    const timer = setTimeout(
      () => done(new EnvironmentError('EDEMO', `timed out waiting for ${pattern}`)),
      timeoutMs,
    );
    src?.on('data', onData);
    child.once('exit', onExit);
  });
}
