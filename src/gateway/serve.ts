/**
 * Assembles a running gateway from its configuration: attestation policy, policy store
 * and enclave index, enforcement backend, TUN device, the two DTLS listeners, the
 * control socket, signal handling and database watching. Whatever startup opened is
 * closed again if a later step fails, so a failed start leaves nothing behind.
 */
import { loadAttestationPolicy, type AttestationPolicyOptions } from '../attestation/index.js';
import { DtlsServer, type DtlsIdentity } from '../dtls/index.js';
import type { Enforcer } from '../enforce/types.js';
import { openPolicySource, type PgPolicyMirror, type PolicySource } from '../store/index.js';
import { TunDevice, GATEWAY_TUN_MTU } from '../tunnel/index.js';
import { InputError, errorMessage } from '../util/errors.js';
import { formatIpv4 } from '../util/ipv4.js';
import type { Logger } from '../util/log.js';
import { ControlServer, prepareControlPath } from './control.js';
import { controlDispatcher, reloadGateway } from './control-dispatch.js';
import { EnclaveIndex } from './enclave-index.js';
import { PgPolicyFollower } from './policy-follow.js';
import { provideAppList } from '../policy/index.js';
import { redactUrl } from '../pg/index.js';
import { createEnforcer, type NftConfig } from './enforcers.js';
import { purgeStaleConntrack } from './recovery.js';
import { Gateway } from './gateway.js';
import type { ChannelListener, ListenChannels } from './types.js';
import { createShadowService, type ShadowConfig } from '../shadow/setup.js';
import { GatewayMetrics, serveMetrics, type HandshakeSlots } from '../audit/metrics.js';
import { LeaseRecorder, LeaseStore } from '../audit/lease-store.js';
import { fanOut, leaseObserver } from '../audit/observers.js';
import type { GatewayObserver } from './context.js';
import type { ShadowService } from '../shadow/service.js';
import { GatewayLeases } from '../fleet/gateway-leases.js';

export interface ServeConfig {
  host: string;
  port: number;
  identities: DtlsIdentity[];
  dbPath: string | undefined;
  netfilter: boolean;
  nft: NftConfig | undefined;
  attestation: AttestationPolicyOptions;
  requireSigner: boolean;
  tun: { name: string; existing: boolean };
  controlPath: string;
  timeouts: { idleMs: number; setupMs: number; ackTries: number };
  limits: { maxSessions: number; maxHandshakes: number };
  /** How often the database is checked for changes (hot reload); default 1000 ms. */
  dbPollMs?: number;
  /** PostgreSQL store: fallback poll of the policy version besides NOTIFY; default 5000 ms. */
  pgPollMs?: number;
  /** Port shadowing (-s): the control service on 2409 at every enclave subnet's gateway IP. */
  shadow?: ShadowConfig;
  /** Prometheus metrics endpoint (--metrics HOST:PORT): GET /metrics. */
  metrics?: { host: string; port: number };
  /** Lease history (--lease-db, --lease-retention); absent: none kept. */
  leases?: { path: string; retentionDays: number };
  /** Shared enclave registry (--registry postgres://…): fleet-wide unique enclave IPs (docs/fleet.md). */
  registry?: { url: string; gatewayId: string; leaseTtlMs: number };
  /** Runs first on SIGHUP, before the database and policy are re-read: config-file reload. */
  onReload?: (running: { gateway: Gateway; enforcer: Enforcer | undefined }) => Promise<void>;
}

export interface RunningGateway {
  gateway: Gateway;
  /** Resolves when the gateway has shut down (after SIGINT/SIGTERM or stop()). */
  closed: Promise<void>;
  stop(reason?: string): Promise<void>;
}

export async function startGateway(config: ServeConfig, log: Logger): Promise<RunningGateway> {
  const cleanups: (() => Promise<void> | void)[] = [];
  const cleanup = async () => {
    for (const fn of cleanups.reverse()) {
      try {
        await fn();
      } catch (err) {
        log.warn({ err: errorMessage(err) }, 'cleanup step failed');
      }
    }
  };
  try {
    await prepareControlPath(config.controlPath);
    const attestation = loadAttestationPolicy(config.attestation);
    let store: PolicySource | undefined;
    let mirror: PgPolicyMirror | undefined;
    if (config.dbPath !== undefined) {
      const opened = await openPolicySource(config.dbPath);
      const s = opened.source;
      store = s;
      mirror = opened.mirror;
      cleanups.push(() => opened.close());
      if (mirror) {
        // The nft backend resolves app names of --policy synchronously: from the in-memory copy.
        const m = mirror;
        cleanups.push(provideAppList(config.dbPath, () => m.listApps()));
      }
      if (config.netfilter && s.schema !== 'netfilter') {
        throw new InputError(
          `-n needs a netfilter database, but ${redactUrl(config.dbPath)} is a ${s.schema} database`,
          'create one with: seng db init -d FILE --schema netfilter',
        );
      }
      if (!config.netfilter && !config.nft && s.schema === 'netfilter') {
        throw new InputError(
          `${redactUrl(config.dbPath)} is a netfilter database, which needs -n (kernel module) or --nft (nftables)`,
          'without either, use a vanilla database (seng db init --schema vanilla)',
        );
      }
    }
    const index = new EnclaveIndex(store, { requireSigner: config.requireSigner });
    const enforcer: Enforcer | undefined = createEnforcer(config, log);
    if (enforcer) {
      // Fail fast (e.g. kernel module missing) before any device exists; flush/reconcile stale state.
      await enforcer.start();
      cleanups.push(() => enforcer.stop());
    }
    // Crash recovery: no conntrack entry of an earlier run's enclaves survives into this one.
    await purgeStaleConntrack(
      index.subnets().map((p) => p.cidr),
      { enforcing: enforcer !== undefined, log },
    );

    // SENG_NATIVE_FORWARD=0 keeps every packet on the JS path (A/B measurements, debugging).
    const nativeForward = process.env.SENG_NATIVE_FORWARD !== '0';
    const device = await TunDevice.open({
      name: config.tun.name,
      // The native data path segments TSO reads and coalesces writes into GSO frames (docs/dtls.md);
      // SENG_TUN_OFFLOAD=0 turns that off alone (A/B measurements).
      offload: nativeForward && process.env.SENG_TUN_OFFLOAD !== '0',
      mtu: GATEWAY_TUN_MTU,
      // Without --tun-existing: attach to a pre-created TUN device of that name (the original's
      // setup script makes one), else create it; --tun-existing requires it to exist.
      create: config.tun.existing ? false : 'auto',
      up: true,
      addresses: index.subnets().map((p) => `${formatIpv4(p.gateway)}/${p.cidr.prefix}`),
      logger: log,
    });
    cleanups.push(() => device.close());

    const dtls: { channel: HandshakeSlots['channel']; server: DtlsServer }[] = [];
    const listen: ListenChannels = async (port, verifyPeer): Promise<ChannelListener> => {
      const server = await DtlsServer.listen({
        host: config.host,
        port,
        identities: config.identities,
        verifyPeer,
        mtu: 1500,
        handshakeTimeoutMs: config.timeouts.setupMs,
        idleTimeoutMs: config.timeouts.idleMs,
        maxSessions: config.limits.maxSessions,
        maxHandshakes: config.limits.maxHandshakes,
        // A client host that reboots brings all of its enclaves back at once: every one of them
        // may hold a handshake slot (the cookie exchange has proven the address already).
        maxHandshakesPerAddress: config.limits.maxHandshakes,
        // Admission keeps the attested identity; the certificate DER need not live per session.
        retainPeerChain: false,
        // The receive channel's application data is opened and forwarded on the addon's receive
        // thread when forwarding is native (SENG_NATIVE_RECV_THREAD=0: on the event loop).
        receiveThread: port === config.port && nativeForward && process.env.SENG_NATIVE_RECV_THREAD !== '0',
        logger: log,
      });
      dtls.push({ channel: port === config.port ? 'receive' : 'send', server });
      return server;
    };

    // Observers (metrics, lease audit) are attached once the gateway exists, before it starts.
    const observers: GatewayObserver[] = [];
    const gatewayId = `${config.host}:${config.port}`;
    const recorder = config.leases ? openLeaseRecorder(config.leases, gatewayId, log) : undefined;
    if (recorder) {
      recorder.start();
      observers.push(leaseObserver(recorder, gatewayId));
      // Runs after gateway.stop() (cleanups run in reverse): the sessions' ends are written too.
      cleanups.push(() => recorder.stop());
    }

    // Started before the gateway and stopped after it (cleanups run in reverse), so the
    // sessions' releases are written before this gateway's row goes.
    const leases = config.registry
      ? new GatewayLeases({
          url: config.registry.url,
          gatewayId: config.registry.gatewayId,
          address: `${config.host}:${config.port}`,
          leaseTtlMs: config.registry.leaseTtlMs,
          log,
        })
      : undefined;
    if (leases) {
      await leases.start();
      cleanups.push(() => leases.stop());
    }

    let shadow: ShadowService | undefined;
    const gateway = new Gateway({
      ...(leases ? { leases } : {}),
      port: config.port,
      ...(config.shadow ? { shadowHooks: { enclaveEnding: async (ip) => shadow?.enclaveEnding(ip) } } : {}),
      listen,
      attestation,
      index,
      device,
      ...(enforcer ? { enforcer, enforcerStarted: true } : {}),
      nativeForward,
      mtu: GATEWAY_TUN_MTU,
      observer: fanOut(observers),
      timeouts: {
        ackIntervalMs: Math.max(200, Math.floor(config.timeouts.setupMs / config.timeouts.ackTries)),
        ackTries: config.timeouts.ackTries,
        sendSessionMs: config.timeouts.setupMs,
        idleMs: config.timeouts.idleMs,
      },
      logger: log,
    });
    if (config.metrics) {
      const metrics = new GatewayMetrics({
        gateway,
        pools: () => index.subnets(),
        handshakes: () =>
          dtls.map(({ channel, server }) => ({
            channel,
            inProgress: server.stats().handshakes,
            limit: config.limits.maxHandshakes,
          })),
      });
      observers.push(metrics.observer);
      if (recorder) recorder.onError = () => metrics.leaseStoreError();
      const endpoint = await serveMetrics(metrics, config.metrics, log);
      cleanups.push(() => endpoint.close());
    }
    await gateway.start();
    cleanups.push(() => gateway.stop());
    if (leases) {
      leases.onLeaseLost = (ip) =>
        void gateway.kick({ ip }, 'lease-lost: the registry gave this IP to another session');
    }
    if (config.shadow) {
      const service = createShadowService(
        config.shadow,
        gateway,
        index.subnets().map((p) => p.gateway),
        log,
      );
      await service.start();
      shadow = service;
      // Runs before gateway.stop(): every shadow is gone before the sessions end.
      cleanups.push(() => service.stop());
    }

    // PostgreSQL: follow NOTIFY seng_policy (the 1 s poll below then only sees the in-memory copy).
    let follower: PgPolicyFollower | undefined;
    if (mirror) {
      const f = new PgPolicyFollower(mirror, (force) => gateway.reloadIndex(force), log, {
        ...(config.pgPollMs === undefined ? {} : { pollMs: config.pgPollMs }),
      });
      await f.start();
      follower = f;
      cleanups.push(() => f.stop());
    }

    // SIGHUP: the config file first (if any), then database and policy.
    const reload = async () => {
      await config.onReload?.({ gateway, enforcer });
      await follower?.refreshNow();
      return reloadGateway({ gateway, enforcer, log });
    };
    const control = await ControlServer.listen(
      config.controlPath,
      controlDispatcher({
        gateway,
        index,
        enforcer,
        log,
        info: {
          listen: `${config.host}:${config.port}/${config.port + 1}`,
          tun: config.tun.name,
          database: config.dbPath === undefined ? null : redactUrl(config.dbPath),
        },
        ...(shadow ? { shadows: () => shadow!.list() } : {}),
      }),
    );
    cleanups.push(() => control.close());

    const poll = setInterval(() => {
      gateway
        .reloadIndex()
        .catch((err: unknown) => log.error({ err: errorMessage(err) }, 'database reload failed'));
    }, config.dbPollMs ?? 1000);
    poll.unref();
    cleanups.push(() => clearInterval(poll));

    let resolveClosed!: () => void;
    const closed = new Promise<void>((r) => (resolveClosed = r));
    let stopping: Promise<void> | undefined;
    const stop = (reason = 'stop'): Promise<void> => {
      stopping ??= (async () => {
        log.info(
          { event: 'shutdown', reason, sessions: gateway.status().length },
          `shutting down (${reason})`,
        );
        process.off('SIGINT', onInt);
        process.off('SIGTERM', onTerm);
        process.off('SIGHUP', onHup);
        await cleanup();
        log.info({ event: 'stopped' }, 'gateway stopped');
        resolveClosed();
      })();
      return stopping;
    };
    const onInt = () => void stop('SIGINT');
    const onTerm = () => void stop('SIGTERM');
    const onHup = () =>
      void reload().catch((err: unknown) => log.error({ err: errorMessage(err) }, 'reload failed'));
    process.on('SIGINT', onInt);
    process.on('SIGTERM', onTerm);
    process.on('SIGHUP', onHup);
    if (process.env.SENG_TEST_HOOKS === '1') installBlockHook(log);

    log.info(
      {
        event: 'listening',
        receive: `${config.host}:${config.port}`,
        send: `${config.host}:${config.port + 1}`,
        tun: config.tun.name,
        subnets: index.subnets().map((p) => p.label),
        database: config.dbPath === undefined ? null : redactUrl(config.dbPath),
        ...(config.registry
          ? { registry: redactUrl(config.registry.url), gatewayId: config.registry.gatewayId }
          : {}),
        mode: index.mode,
        enforcement: enforcer?.name ?? 'none',
        control: config.controlPath,
      },
      `seng gateway listening on ${config.host}:${config.port}/${config.port + 1}`,
    );
    return { gateway, closed, stop };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

/**
 * Test hook (SENG_TEST_HOOKS=1 only): SIGUSR2 busy-waits the JavaScript thread for 1 s, as a long
 * attestation or reload would, to show that established sessions keep forwarding meanwhile
 * (test/integration/gateway/recv-thread.test.ts). Logs the blocked interval afterwards.
 */
function installBlockHook(log: Logger): void {
  process.on('SIGUSR2', () => {
    const from = Date.now();
    while (Date.now() - from < 1000) {
      // busy: no event-loop turn
    }
    log.info(
      { event: 'test-js-blocked', from, to: Date.now() },
      'test hook: JavaScript thread blocked for 1 s',
    );
  });
}

/** The lease history's writer, or undefined (logged) when its store cannot be opened: not fatal. */
function openLeaseRecorder(
  leases: NonNullable<ServeConfig['leases']>,
  gateway: string,
  log: Logger,
): LeaseRecorder | undefined {
  try {
    const store = LeaseStore.open(leases.path);
    return new LeaseRecorder(store, { gateway, log, retentionDays: leases.retentionDays });
  } catch (err) {
    log.error(
      { event: 'lease-store-failed', op: 'open', path: leases.path, err: errorMessage(err) },
      `no lease history: ${errorMessage(err)}`,
    );
    return undefined;
  }
}
