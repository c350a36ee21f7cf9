/**
 * The ShadowServer control service (`seng serve -s`, SPEC §6): enclaves connect to
 * `<their gateway IP>:2409` through their tunnel and ask to shadow a listening port.
 *
 * Flow per connection (one transaction, every step under a deadline, connections served
 * concurrently, firewall changes serialised):
 *   1. authorise by the connection's source IP (must be an active enclave's; else close);
 *   2. read ShadowSrvMsg; a request is checked (port 1…65535 untruncated, proto 6/17, not
 *      already shadowed on that host, per-enclave limit), a close notify removes that shadow;
 *   3. ask the blocker on `<host IP>:2834` to reserve the port (TLS 1.2);
 *   4. on GRANTED install the DNAT rules, answer GRANTED, read ListenStartConfirm and relay
 *      it to the blocker; NOW_LISTENING commits, FAILED (or nothing) removes the rules;
 *   5. every refusal of our own is an explicit DENIED (the runtime treats it like EOF).
 * Shadows end on close notify, FAILED, enclave disconnect (before the IP is released:
 * see ShadowHooks) and shutdown; each end removes the rules, purges the DNATed flows'
 * conntrack entries and sends the blocker a correct CloseNotify{port, proto}.
 */
import net from 'node:net';
import { errorMessage, SengError } from '../util/errors.js';
import { formatIpv4, parseIpv4, type Ipv4 } from '../util/ipv4.js';
import { silentLogger, type Logger } from '../util/log.js';
import { BlockerConnection, releaseAtBlocker, type BlockerClientOptions } from './blocker-client.js';
import { purgeShadowFlows, type PurgeShadowFlows } from './conntrack.js';
import {
  BlockerReply,
  CONTROL_PORT,
  FrameReader,
  MAX_CONTROL_BODY,
  blockerReplyName,
  decodeControlMessage,
  decodeListenConfirm,
  encodeShadowReply,
  frame,
  protoName,
  type ShadowProto,
} from './protocol.js';
import type { ShadowRule, ShadowRuleBackend } from './rules.js';
import type { EnclaveLookup, ShadowEnclave, ShadowHooks } from './types.js';

export interface ShadowServiceOptions {
  lookup: EnclaveLookup;
  rules: ShadowRuleBackend;
  /** Gateway IPs to listen on (the enclave subnets' gateways). */
  addresses: Ipv4[];
  /** Control port (default 2409). */
  port?: number;
  /** Deadline of each step (reads, blocker connect/handshake/reply), ms; default 3000. */
  stepTimeoutMs?: number;
  /** Deadline for the enclave's ListenStartConfirm after GRANTED, ms; default 5000. */
  confirmTimeoutMs?: number;
  /** Blocker port (default 2834). */
  blockerPort?: number;
  /** Shadows one enclave may hold at once (default 64). */
  maxPerEnclave?: number;
  /** Concurrent control connections (default 256). */
  maxConnections?: number;
  purge?: PurgeShadowFlows;
  logger?: Logger;
}

export interface ShadowStatus {
  enclaveIp: string;
  hostIp: string;
  port: number;
  proto: 'tcp' | 'udp';
  handle: number;
  state: 'pending' | 'active';
  app: string | null;
  since: string;
}

interface Shadow {
  rule: ShadowRule;
  handle: number;
  state: 'pending' | 'active' | 'ending';
  installed: boolean;
  app: string | undefined;
  since: Date;
}

interface Transaction {
  socket: net.Socket;
  /** Aborts the blocker exchange (enclave ending, shutdown). */
  abort: AbortController;
  done: Promise<void>;
}

/** Concurrent control connections one enclave may have open. */
const MAX_CONNECTIONS_PER_ENCLAVE = 8;

/** A refusal of ours: answered with an explicit DENIED. */
class Refusal extends SengError {
  constructor(message: string) {
    super('ESHADOWDENIED', message);
  }
}

const shadowKey = (hostIp: Ipv4, proto: ShadowProto, port: number): string =>
  `${formatIpv4(hostIp)}/${protoName(proto)}/${port}`;

export class ShadowService implements ShadowHooks {
  private readonly log: Logger;
  private readonly stepMs: number;
  private readonly confirmMs: number;
  private readonly blocker: BlockerClientOptions;
  private readonly maxPerEnclave: number;
  private readonly purge: PurgeShadowFlows;
  private readonly servers: net.Server[] = [];
  /** Every shadow (pending or active) by host IP / proto / port: one owner per host port. */
  private readonly shadows = new Map<string, Shadow>();
  private readonly inflight = new Map<Ipv4, Set<Transaction>>();
  private readonly ending = new Set<Ipv4>();
  /** Blocker releases running in the background (awaited by stop()). */
  private readonly releases = new Set<Promise<void>>();
  private firewall: Promise<void> = Promise.resolve();
  private stopping = false;
  readonly stats = { granted: 0, denied: 0, refusedSources: 0, removed: 0 };

  constructor(private readonly opts: ShadowServiceOptions) {
    this.log = (opts.logger ?? silentLogger).child({ component: 'shadow' });
    this.stepMs = opts.stepTimeoutMs ?? 3000;
    this.confirmMs = opts.confirmTimeoutMs ?? 5000;
    this.blocker = { timeoutMs: this.stepMs, ...(opts.blockerPort ? { port: opts.blockerPort } : {}) };
    this.maxPerEnclave = opts.maxPerEnclave ?? 64;
    this.purge = opts.purge ?? ((f) => purgeShadowFlows(f));
  }

  /** Flushes stale rules (rule backend start) and listens on every gateway IP. */
  async start(): Promise<void> {
    await this.opts.rules.start();
    try {
      for (const ip of new Set(this.opts.addresses)) await this.listenOn(ip);
    } catch (err) {
      await this.closeServers();
      await this.opts.rules.stop().catch(() => undefined);
      throw err;
    }
    this.log.info(
      {
        event: 'shadow-listening',
        addresses: this.opts.addresses.map(formatIpv4),
        port: this.opts.port ?? CONTROL_PORT,
        backend: this.opts.rules.name,
      },
      `ShadowServer listening on ${this.opts.addresses.map((a) => `${formatIpv4(a)}:${this.opts.port ?? CONTROL_PORT}`).join(', ')}`,
    );
  }

  private listenOn(ip: Ipv4): Promise<void> {
    const server = net.createServer((socket) => this.onConnection(socket));
    server.maxConnections = this.opts.maxConnections ?? 256;
    this.servers.push(server);
    return new Promise((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(
          new SengError(
            'ESHADOWLISTEN',
            `cannot listen on ${formatIpv4(ip)}:${this.opts.port ?? CONTROL_PORT}: ${err.code ?? err.message}`,
            {
              hint: 'the enclave subnet gateway must be an address of the TUN device; is another ShadowServer running?',
            },
          ),
        ),
      );
      server.listen({ host: formatIpv4(ip), port: this.opts.port ?? CONTROL_PORT, backlog: 64 }, () => {
        server.removeAllListeners('error');
        server.on('error', (err) =>
          this.log.error({ err: errorMessage(err) }, 'ShadowServer listener failed'),
        );
        resolve();
      });
    });
  }

  /** The bound control ports, one per address (tests listen on port 0). */
  boundPorts(): number[] {
    return this.servers.map((s) => (s.address() as net.AddressInfo | null)?.port ?? 0);
  }

  /** Current shadows (for `seng status`). */
  list(): ShadowStatus[] {
    return [...this.shadows.values()]
      .filter((s) => s.state !== 'ending')
      .map((s) => ({
        enclaveIp: formatIpv4(s.rule.enclaveIp),
        hostIp: formatIpv4(s.rule.hostIp),
        port: s.rule.port,
        proto: protoName(s.rule.proto),
        handle: s.handle,
        state: s.state === 'active' ? 'active' : 'pending',
        app: s.app ?? null,
        since: s.since.toISOString(),
      }));
  }

  // ------------------------------------------------------------------- connections

  private onConnection(socket: net.Socket): void {
    socket.on('error', () => undefined);
    const source = (socket.remoteAddress ?? '').replace(/^::ffff:/, '');
    let ip: Ipv4 | undefined;
    try {
      ip = parseIpv4(source);
    } catch {
      ip = undefined;
    }
    const enclave =
      ip === undefined || this.stopping || this.ending.has(ip)
        ? undefined
        : this.opts.lookup.activeEnclave(ip);
    if (ip === undefined || !enclave) {
      this.stats.refusedSources++;
      this.log.warn(
        { event: 'shadow-refused', source },
        `ShadowServer connection from ${source}: not an active enclave`,
      );
      socket.destroy();
      return;
    }
    let set = this.inflight.get(ip);
    if (!set) this.inflight.set(ip, (set = new Set()));
    if (set.size >= MAX_CONNECTIONS_PER_ENCLAVE) {
      // One enclave must not hold every connection slot of the service.
      this.stats.refusedSources++;
      this.log.warn(
        { event: 'shadow-refused', source, reason: 'too many concurrent connections' },
        `ShadowServer connection from ${source}: ${set.size} already open`,
      );
      socket.destroy();
      return;
    }
    const tx: Transaction = { socket, abort: new AbortController(), done: Promise.resolve() };
    set.add(tx);
    const enclaveIp = ip;
    tx.done = this.transaction(enclave, socket, tx.abort.signal)
      .catch((err: unknown) =>
        this.log.error(
          { event: 'shadow-error', enclaveIp: source, err: errorMessage(err) },
          'ShadowServer transaction failed',
        ),
      )
      .finally(() => {
        socket.end();
        setTimeout(() => socket.destroy(), this.stepMs).unref();
        set.delete(tx);
        if (set.size === 0 && this.inflight.get(enclaveIp) === set) this.inflight.delete(enclaveIp);
      });
  }

  private async transaction(enclave: ShadowEnclave, socket: net.Socket, signal: AbortSignal): Promise<void> {
    const reader = new FrameReader(socket);
    const who = formatIpv4(enclave.enclaveIp);
    let msg;
    try {
      msg = decodeControlMessage(await reader.read(MAX_CONTROL_BODY, this.stepMs, 'ShadowSrvMsg'));
    } catch (err) {
      this.deny(socket, who, undefined, errorMessage(err));
      return;
    }
    if (msg.kind === 'close') {
      await this.closeNotify(enclave.enclaveIp, msg.handle);
      return;
    }
    const { port, proto, handle } = msg;
    let shadow: Shadow | undefined;
    let conn: BlockerConnection | undefined;
    try {
      shadow = this.claim(enclave, port, proto, handle);
      try {
        conn = await BlockerConnection.open(enclave.hostIp, { ...this.blocker, signal });
      } catch (err) {
        throw new Refusal(`socket blocker unavailable: ${errorMessage(err)}`);
      }
      const reply = await conn
        .ask({ kind: 'block', port, proto, mrEnclave: enclave.mrEnclave, mrSigner: enclave.mrSigner })
        .catch((err: unknown) => {
          throw new Refusal(errorMessage(err));
        });
      if (reply !== BlockerReply.GRANTED) {
        conn.close();
        conn = undefined;
        throw new Refusal(`socket blocker answered ${blockerReplyName(reply)}`);
      }
      await this.install(shadow);
      socket.write(frame(encodeShadowReply(true)));
      let listening = false;
      try {
        listening = decodeListenConfirm(
          await reader.read(MAX_CONTROL_BODY, this.confirmMs, 'ListenStartConfirm'),
        );
      } catch (err) {
        this.log.warn(
          { event: 'shadow-unconfirmed', enclaveIp: who, port, err: errorMessage(err) },
          `shadow of ${who}:${port} not confirmed: ${errorMessage(err)}`,
        );
      }
      // The blocker learns the outcome first: it keeps or releases its reservation.
      conn.confirm(listening && !this.ending.has(enclave.enclaveIp));
      conn = undefined;
      if (!listening || this.ending.has(enclave.enclaveIp)) {
        await this.drop(shadow, {
          notifyBlocker: false,
          reason: listening ? 'enclave ending' : 'listen failed',
        });
        return;
      }
      shadow.state = 'active';
      this.stats.granted++;
      this.log.info(
        {
          event: 'shadow-granted',
          enclaveIp: who,
          hostIp: formatIpv4(enclave.hostIp),
          port,
          proto: protoName(proto),
          handle,
          app: enclave.appName ?? null,
        },
        `shadowing ${formatIpv4(enclave.hostIp)}:${port}/${protoName(proto)} → ${who}`,
      );
    } catch (err) {
      if (conn) conn.confirm(false);
      if (shadow) await this.drop(shadow, { notifyBlocker: false, reason: 'refused' });
      if (err instanceof Refusal) this.deny(socket, who, port, err.message);
      else {
        this.deny(socket, who, port, errorMessage(err));
        throw err;
      }
    }
  }

  private deny(socket: net.Socket, who: string, port: number | undefined, reason: string): void {
    this.stats.denied++;
    if (!socket.destroyed) socket.write(frame(encodeShadowReply(false)));
    this.log.warn(
      { event: 'shadow-denied', enclaveIp: who, port: port ?? null, reason },
      `shadow request of ${who} denied: ${reason}`,
    );
  }

  /** Reserves the host port in our table (pending), or refuses. */
  private claim(enclave: ShadowEnclave, port: number, proto: ShadowProto, handle: number): Shadow {
    const key = shadowKey(enclave.hostIp, proto, port);
    if (this.shadows.has(key)) throw new Refusal(`${key} is already shadowed`);
    const mine = [...this.shadows.values()].filter((s) => s.rule.enclaveIp === enclave.enclaveIp);
    if (mine.some((s) => s.handle === handle && s.state !== 'ending'))
      throw new Refusal(`handle ${handle} already has a shadow`);
    if (mine.length >= this.maxPerEnclave)
      throw new Refusal(`the enclave already holds ${mine.length} shadows`);
    const shadow: Shadow = {
      rule: { hostIp: enclave.hostIp, port, proto, enclaveIp: enclave.enclaveIp },
      handle,
      state: 'pending',
      installed: false,
      app: enclave.appName,
      since: new Date(),
    };
    this.shadows.set(key, shadow);
    return shadow;
  }

  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.firewall.then(fn);
    this.firewall = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private async install(shadow: Shadow): Promise<void> {
    await this.serialize(async () => {
      // Checked under the firewall lock: an ending enclave never gets a new rule.
      if (this.ending.has(shadow.rule.enclaveIp) || this.stopping)
        throw new Refusal('the enclave is disconnecting');
      try {
        await this.opts.rules.add(shadow.rule);
      } catch (err) {
        throw new Refusal(`installing the DNAT rules failed: ${errorMessage(err)}`);
      }
      shadow.installed = true;
    });
  }

  /**
   * Ends a shadow: rules out (serialised), conntrack entries of its flows purged, record
   * gone; optionally the blocker told (in the background unless `awaitBlocker`).
   */
  private async drop(
    shadow: Shadow,
    opts: { notifyBlocker: boolean; reason: string; awaitBlocker?: boolean },
  ): Promise<boolean> {
    shadow.state = 'ending';
    const { rule } = shadow;
    let removed = true;
    if (shadow.installed) {
      await this.serialize(async () => {
        try {
          await this.opts.rules.remove(rule);
          shadow.installed = false;
        } catch (err) {
          removed = false;
          this.log.error(
            {
              event: 'shadow-rule-error',
              enclaveIp: formatIpv4(rule.enclaveIp),
              port: rule.port,
              err: errorMessage(err),
            },
            'removing DNAT rules failed',
          );
        }
      });
      try {
        await this.purge({ enclaveIp: rule.enclaveIp, port: rule.port, proto: rule.proto });
      } catch (err) {
        this.log.warn({ event: 'shadow-conntrack', err: errorMessage(err) }, 'purging shadowed flows failed');
      }
      this.stats.removed++;
      this.log.info(
        {
          event: 'shadow-removed',
          enclaveIp: formatIpv4(rule.enclaveIp),
          hostIp: formatIpv4(rule.hostIp),
          port: rule.port,
          proto: protoName(rule.proto),
          reason: opts.reason,
        },
        `shadow of ${formatIpv4(rule.hostIp)}:${rule.port} removed (${opts.reason})`,
      );
    }
    const key = shadowKey(rule.hostIp, rule.proto, rule.port);
    if (opts.notifyBlocker) {
      const release = releaseAtBlocker(rule.hostIp, rule.port, rule.proto, this.blocker)
        .then((reply) =>
          this.log.debug(
            { event: 'blocker-released', port: rule.port, reply: blockerReplyName(reply) },
            'blocker released the port',
          ),
        )
        .catch((err: unknown) =>
          this.log.warn(
            {
              event: 'blocker-release-failed',
              hostIp: formatIpv4(rule.hostIp),
              port: rule.port,
              err: errorMessage(err),
            },
            `could not tell the socket blocker to release ${rule.port}: ${errorMessage(err)}`,
          ),
        )
        .finally(() => {
          if (this.shadows.get(key) === shadow) this.shadows.delete(key);
          this.releases.delete(release);
        });
      this.releases.add(release);
      if (opts.awaitBlocker) await release;
      return removed;
    }
    if (this.shadows.get(key) === shadow) this.shadows.delete(key);
    return removed;
  }

  private async closeNotify(enclaveIp: Ipv4, handle: number): Promise<void> {
    const shadow = [...this.shadows.values()].find(
      (s) => s.rule.enclaveIp === enclaveIp && s.handle === handle && s.state === 'active',
    );
    if (!shadow) {
      this.log.info(
        { event: 'shadow-close-unknown', enclaveIp: formatIpv4(enclaveIp), handle },
        'close notify for no shadow',
      );
      return;
    }
    await this.drop(shadow, { notifyBlocker: true, reason: 'close notify', awaitBlocker: true });
  }

  // ------------------------------------------------------------------------ teardown

  async enclaveEnding(ip: Ipv4): Promise<void> {
    this.ending.add(ip);
    try {
      const txs = [...(this.inflight.get(ip) ?? [])];
      for (const tx of txs) this.abort(tx);
      await Promise.all(txs.map((t) => t.done));
      const mine = [...this.shadows.values()].filter((s) => s.rule.enclaveIp === ip && s.state === 'active');
      const removed = await Promise.all(
        // The blocker is told before the IP is released too (bounded by the step deadlines).
        mine.map((s) =>
          this.drop(s, { notifyBlocker: true, awaitBlocker: true, reason: 'enclave disconnected' }),
        ),
      );
      if (removed.includes(false))
        throw new SengError('ESHADOWRULE', `DNAT rules to ${formatIpv4(ip)} could not be removed`);
    } finally {
      this.ending.delete(ip);
    }
  }

  /** Shutdown: no new connections, transactions aborted, every shadow removed, blockers told. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const closing = this.closeServers();
    const txs = [...this.inflight.values()].flatMap((s) => [...s]);
    for (const tx of txs) this.abort(tx);
    await Promise.all(txs.map((t) => t.done));
    const all = [...this.shadows.values()].filter((s) => s.state === 'active');
    await Promise.all(all.map((s) => this.drop(s, { notifyBlocker: true, reason: 'shutdown' })));
    await Promise.all([...this.releases]);
    await closing;
    await this.serialize(() => this.opts.rules.stop()).catch((err: unknown) =>
      this.log.error({ err: errorMessage(err) }, 'removing the shadow rules failed'),
    );
    this.log.info({ event: 'shadow-stopped', removed: all.length }, 'ShadowServer stopped');
  }

  private abort(tx: Transaction): void {
    tx.abort.abort();
    tx.socket.destroy();
  }

  private async closeServers(): Promise<void> {
    await Promise.all(this.servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}
