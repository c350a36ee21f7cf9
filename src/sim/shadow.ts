/**
 * The SENG Runtime's side of port shadowing (SPEC §6.4), for the enclave simulator: a
 * listener that asks the gateway's ShadowServer (`<gateway IP>:2409`, reached through the
 * tunnel from the enclave IP) to shadow its port, waits for the reply, listens only when
 * GRANTED, confirms NOW_LISTENING or FAILED, and sends a close notify when it closes.
 * The listener echoes what it receives, so tests can check that `<host IP>:X` reaches it.
 *
 * A simulated enclave whose TUN device lives in another network namespace runs this in a
 * child process inside that namespace (`shadow-runner.js`); SimShadowProcess manages it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { errorMessage } from '../util/errors.js';
import {
  CONTROL_PORT,
  FrameReader,
  MAX_CONTROL_BODY,
  decodeShadowReply,
  encodeControlMessage,
  encodeListenConfirm,
  frame,
} from '../shadow/protocol.js';

export interface ShadowedListenerOptions {
  /** The enclave subnet's gateway IP. */
  gateway: string;
  /** The enclave IP (local address of the control connection and of the listener). */
  enclaveIp: string;
  port: number;
  /** The runtime's socket descriptor (opaque to the gateway); default 512 + port % 512. */
  handle?: number;
  controlPort?: number;
  /** How long to wait for the gateway's reply (the runtime waits forever); default 15000 ms. */
  timeoutMs?: number;
}

export type ShadowOutcome = { granted: true } | { granted: false; reason: string };

/** One shadowed echo listener, as the runtime's listen()/close() hooks drive it. */
export class ShadowedListener {
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  readonly handle: number;

  constructor(private readonly opts: ShadowedListenerOptions) {
    this.handle = opts.handle ?? 512 + (opts.port % 512);
  }

  private connect(): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const s = net.connect({
        host: this.opts.gateway,
        port: this.opts.controlPort ?? CONTROL_PORT,
        localAddress: this.opts.enclaveIp,
      });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new Error('connect timeout'));
      }, this.opts.timeoutMs ?? 15_000);
      s.once('connect', () => {
        clearTimeout(timer);
        resolve(s);
      });
      s.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  /** listen(): request, reply, listen on GRANTED, confirm. DENIED and EOF both mean EADDRINUSE. */
  async listen(): Promise<ShadowOutcome> {
    let control: net.Socket;
    try {
      control = await this.connect();
    } catch (err) {
      return { granted: false, reason: `ShadowServer unreachable: ${errorMessage(err)}` };
    }
    control.on('error', () => undefined);
    try {
      const reader = new FrameReader(control);
      control.write(
        frame(encodeControlMessage({ kind: 'request', handle: this.handle, port: this.opts.port, proto: 6 })),
      );
      let granted: boolean;
      try {
        granted = decodeShadowReply(
          await reader.read(MAX_CONTROL_BODY, this.opts.timeoutMs ?? 15_000, 'reply'),
        );
      } catch (err) {
        return { granted: false, reason: errorMessage(err) };
      }
      if (!granted) return { granted: false, reason: 'DENIED' };
      let listening = true;
      try {
        await this.startServer();
      } catch (err) {
        listening = false;
        control.write(frame(encodeListenConfirm(false)));
        return { granted: false, reason: `listen failed: ${errorMessage(err)}` };
      }
      control.write(frame(encodeListenConfirm(listening)));
      return { granted: true };
    } finally {
      control.end();
    }
  }

  private startServer(): Promise<void> {
    const server = net.createServer((s) => {
      this.sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => this.sockets.delete(s));
      s.pipe(s);
    });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: this.opts.enclaveIp, port: this.opts.port }, () => {
        server.off('error', reject);
        this.server = server;
        resolve();
      });
    });
  }

  /** close(): the close notify first (no reply awaited, errors ignored), then the socket. */
  async close(): Promise<void> {
    if (!this.server) return;
    const server = this.server;
    this.server = undefined;
    try {
      const control = await this.connect();
      control.on('error', () => undefined);
      await new Promise<void>((resolve) => {
        control.end(frame(encodeControlMessage({ kind: 'close', handle: this.handle })), () => resolve());
      });
      control.destroy();
    } catch {
      // The runtime ignores errors of the close notify.
    }
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  }
}

export interface ShadowEvent {
  event: 'shadow';
  port: number;
  granted: boolean;
  reason?: string;
}

/**
 * Shadowed listeners in a child process, optionally inside a network namespace (where the
 * enclave's TUN device is). Emits one ShadowEvent per port; stop() closes them (close notify).
 */
export class SimShadowProcess {
  private child: ChildProcess | undefined;
  private exited: Promise<void> | undefined;

  constructor(
    private readonly opts: { gateway: string; enclaveIp: string; ports: number[]; netns?: string },
  ) {}

  start(onEvent: (e: ShadowEvent) => void): void {
    const runner = fileURLToPath(new URL('./shadow-runner.js', import.meta.url));
    const args = [runner, this.opts.gateway, this.opts.enclaveIp, ...this.opts.ports.map(String)];
    const cmd =
      this.opts.netns === undefined
        ? [process.execPath, ...args]
        : ['ip', 'netns', 'exec', this.opts.netns, process.execPath, ...args];
    const child = spawn(cmd[0] as string, cmd.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      try {
        onEvent(JSON.parse(line) as ShadowEvent);
      } catch {
        // not ours
      }
    });
  }

  /** Closes the listeners (each sends its close notify), within `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}
