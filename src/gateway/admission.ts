/**
 * Admission (SPEC §1.2): how an enclave becomes an active session.
 *
 *   handshake 1 (port P)    verifyRecv: RA-TLS certificate → attestation → enclave index
 *                           (allowlist, host subnet, enclave subnet)
 *   receive channel         onRecvSession: take an IP from the subnet's pool (claimed in the
 *                           fleet's registry first with seng serve --registry), send
 *                           IpAssignment (resent on a timer), wait for IpAssignACK (onAck)
 *   handshake 2 (port P+1)  verifySend: same client IP, same quote and key as the first
 *   send channel            onSendSession → join: register with the firewall backend, then
 *                           hand the enclave to the data path (activate)
 *
 * Every step has a deadline; any failure ends the session through teardown.ts.
 */
import {
  certificateHash,
  keyBindingHash,
  parseRaTlsCertificate,
  quoteFingerprint,
  type AttestedIdentity,
  type Evidence,
} from '../attestation/index.js';
import { randomBytes } from 'node:crypto';
import { decodeIpAssignAck, encodeIpAssignment } from '../proto/messages.js';
import { errorMessage } from '../util/errors.js';
import { formatIpv4, parseIpv4, toWire, type Ipv4 } from '../util/ipv4.js';
import type { GatewayContext, LeaseAuthority, Rejection } from './context.js';
import {
  appLabel,
  auditIdentity,
  newCounters,
  registration,
  type Enclave,
  type EnclaveState,
} from './enclave.js';
import type { IpPool } from './ip-pool.js';
import type { EnclaveChannel, PeerVerdict } from './types.js';

/** What the first handshake's verification hands to the session handler. */
interface RecvContext {
  kind: 'recv';
  sessionId: string;
  setupStartMs: number;
  identity: AttestedIdentity;
  pool: IpPool;
  appName: string | undefined;
  categories: string[];
}

interface SendContext {
  kind: 'send';
  enclave: Enclave;
}

/** What admission needs from the other parts of the gateway. */
export interface AdmissionHooks {
  /** A record from an active enclave (the data path). */
  fromEnclave(e: Enclave, record: Buffer): void;
  /** The enclave is registered and both channels are up: start forwarding. */
  activate(e: Enclave): void;
  /** Ends the session (teardown). */
  end(e: Enclave, reason: string): Promise<void>;
  admitted(e: Enclave): void;
}

type Peer = { address: string; port: number };

export class Admission {
  constructor(
    private readonly ctx: GatewayContext,
    private readonly hooks: AdmissionHooks,
  ) {}

  // ------------------------------------------------------------------ handshake 1 (port P)

  async verifyRecv(chain: Buffer[], peer: Peer): Promise<PeerVerdict> {
    const sessionId = newSessionId();
    const setupStartMs = Date.now();
    let measured: { mrEnclave: Buffer; mrSigner: Buffer } | undefined;
    const reject = (check: string, reason: string, app?: string): PeerVerdict => {
      this.rejected({
        sessionId,
        check,
        reason,
        hostIp: peer.address,
        client: `${peer.address}:${peer.port}`,
        ...(measured
          ? { mrEnclave: measured.mrEnclave.toString('hex'), mrSigner: measured.mrSigner.toString('hex') }
          : {}),
        ...(app === undefined ? {} : { app }),
      });
      return { accept: false, reason };
    };
    if (this.ctx.stopping) return reject('shutdown', 'the gateway is shutting down');
    const leaf = chain[0];
    if (!leaf) return reject('certificate', 'no client certificate');
    // Parsed and verified once per distinct certificate: a reconnecting enclave presents the
    // same bytes, and only passing results are cached (src/attestation/cache.ts).
    const outcome = this.ctx.attestations.attest(leaf, this.ctx.opts.attestation);
    if (!outcome.ok) {
      if (outcome.stage === 'verify') measured = outcome;
      if (outcome.stage === 'parse') {
        return reject('certificate', `not an RA-TLS certificate: ${errorMessage(outcome.error)}`);
      }
      const details = outcome.result.checks
        .filter((c) => c.required && !c.ok)
        .map((c) => `${c.name}: ${c.detail}`)
        .join('; ');
      return reject(outcome.result.failed.join(','), `attestation failed (${details})`);
    }
    const { identity } = outcome;
    measured = identity;
    this.ctx.log.debug(
      {
        event: 'attested',
        client: `${peer.address}:${peer.port}`,
        cached: outcome.cached,
        fingerprint: identity.fingerprint,
      },
      `attestation of ${peer.address}:${peer.port} ${outcome.cached ? 'from the cache' : 'verified'}`,
    );
    const admission = this.ctx.opts.index.admit(
      identity.mrEnclave,
      identity.mrSigner,
      parseIpv4(peer.address),
    );
    if (!admission.ok) {
      const app = this.ctx.opts.index.describe(identity.mrEnclave).appName;
      return reject(admission.check, admission.reason, app);
    }
    const context: RecvContext = {
      kind: 'recv',
      sessionId,
      setupStartMs,
      identity,
      pool: admission.pool,
      appName: admission.appName,
      categories: admission.categories,
    };
    return { accept: true, context };
  }

  onRecvSession(channel: EnclaveChannel): void {
    const ctx = channel.verifyContext as RecvContext | undefined;
    if (!ctx || ctx.kind !== 'recv' || this.ctx.stopping) {
      channel.close('not admitted');
      return;
    }
    const leases = this.ctx.opts.leases;
    if (leases) {
      void this.claimFromRegistry(channel, ctx, leases);
      return;
    }
    const ip = ctx.pool.allocate();
    if (ip === undefined) {
      this.refuseIp(channel, ctx, 'subnet-full', `enclave subnet ${ctx.pool.label} is full`);
      return;
    }
    this.assign(channel, ctx, ip);
  }

  /**
   * With a fleet registry the IP is claimed in the shared database first (src/fleet): the
   * client may close its channel, or the gateway begin to stop, while the claim is in flight,
   * and then the claimed lease is given back at once.
   */
  private async claimFromRegistry(
    channel: EnclaveChannel,
    ctx: RecvContext,
    leases: LeaseAuthority,
  ): Promise<void> {
    let closed: string | undefined;
    const onClose = (reason: string): void => {
      closed = reason;
    };
    channel.on('close', onClose);
    const result = await leases.claim(ctx.pool, {
      sessionId: ctx.sessionId,
      app: ctx.appName ?? null,
      mrEnclave: ctx.identity.mrEnclave.toString('hex'),
      mrSigner: ctx.identity.mrSigner.toString('hex'),
      hostIp: channel.remoteAddress,
      categories: ctx.categories,
    });
    channel.off('close', onClose);
    if (!result.ok) {
      this.refuseIp(channel, ctx, result.check, result.reason);
      return;
    }
    if (closed !== undefined || this.ctx.stopping) {
      const reason = closed !== undefined ? `receive tunnel closed: ${closed}` : 'server-shutdown';
      leases.release(ctx.pool, result.ip, ctx.sessionId, reason);
      if (closed === undefined) channel.close('the gateway is shutting down');
      return;
    }
    this.assign(channel, ctx, result.ip);
  }

  /** No IP for this session (subnet full, registry unreachable): the attempt is rejected. */
  private refuseIp(channel: EnclaveChannel, ctx: RecvContext, check: string, reason: string): void {
    this.rejected(
      {
        sessionId: ctx.sessionId,
        check,
        reason,
        hostIp: channel.remoteAddress,
        client: `${channel.remoteAddress}:${channel.remotePort}`,
        mrEnclave: ctx.identity.mrEnclave.toString('hex'),
        mrSigner: ctx.identity.mrSigner.toString('hex'),
        app: ctx.appName ?? null,
      },
      { subnet: ctx.pool.label },
    );
    channel.close(check === 'subnet-full' ? 'enclave subnet full' : 'enclave registry unreachable');
  }

  /** The session has its IP: track it and send IpAssignment. */
  private assign(channel: EnclaveChannel, ctx: RecvContext, ip: Ipv4): void {
    const now = Date.now();
    const e: Enclave = {
      sessionId: ctx.sessionId,
      setupStartMs: ctx.setupStartMs,
      state: 'assigning',
      ip,
      pool: ctx.pool,
      clientIp: parseIpv4(channel.remoteAddress),
      clientAddress: channel.remoteAddress,
      clientPort: channel.remotePort,
      identity: ctx.identity,
      appName: ctx.appName,
      categories: ctx.categories,
      recv: channel,
      send: undefined,
      since: new Date(now),
      counters: newCounters(),
      timer: undefined,
      joined: false,
      joining: undefined,
      lastSpoofLog: 0,
      ended: undefined,
    };
    this.ctx.table.all.add(e);
    // A second handshake may bind to it from now on; it waits for the ACK if that comes first.
    this.ctx.table.setAwaiting(e, true);
    channel.on('message', (record: Buffer) => {
      if (e.state === 'active') this.hooks.fromEnclave(e, record);
      else if (e.state === 'assigning') this.onAck(e, record);
      // awaiting-send / joining: the client sends nothing meaningful before both channels exist.
    });
    channel.on('close', (reason: string) => void this.hooks.end(e, `receive tunnel closed: ${reason}`));
    this.sendAssignment(e, 1);
  }

  private sendAssignment(e: Enclave, attempt: number): void {
    if (e.state !== 'assigning') return;
    const { ackTries, ackIntervalMs } = this.ctx.timeouts;
    if (attempt > ackTries) {
      void this.hooks.end(e, `no IpAssignACK after ${ackTries} IpAssignment(s)`);
      return;
    }
    e.recv.send(
      encodeIpAssignment({
        ip: toWire(e.ip),
        netmask: toWire(e.pool.cidr.mask),
        gwIp: toWire(e.pool.gateway),
      }),
    );
    e.timer = setTimeout(() => this.sendAssignment(e, attempt + 1), ackIntervalMs);
  }

  private onAck(e: Enclave, record: Buffer): void {
    let echoed: number;
    try {
      echoed = decodeIpAssignAck(record);
    } catch (err) {
      void this.hooks.end(e, errorMessage(err));
      return;
    }
    if (echoed !== toWire(e.ip)) {
      void this.hooks.end(
        e,
        `IpAssignACK echoed ${formatIpv4(toWire(echoed))} instead of ${formatIpv4(e.ip)}`,
      );
      return;
    }
    clearTimeout(e.timer);
    e.state = 'awaiting-send';
    const ms = this.ctx.timeouts.sendSessionMs;
    e.timer = setTimeout(() => void this.hooks.end(e, `no send-tunnel handshake within ${ms} ms`), ms);
  }

  // ---------------------------------------------------------------- handshake 2 (port P+1)

  async verifySend(chain: Buffer[], peer: Peer): Promise<PeerVerdict> {
    const client = `${peer.address}:${peer.port}`;
    let evidence: Evidence | undefined;
    const reject = (reason: string): PeerVerdict => {
      this.rejected({
        // A second handshake that binds to no first one is an attempt of its own (own session id).
        sessionId: newSessionId(),
        check: 'send-tunnel',
        reason,
        hostIp: peer.address,
        client,
        ...(evidence
          ? { mrEnclave: evidence.mrEnclave.toString('hex'), mrSigner: evidence.mrSigner.toString('hex') }
          : {}),
      });
      return { accept: false, reason };
    };
    const leaf = chain[0];
    if (!leaf) return reject('no client certificate');
    const fromHost = this.ctx.table.awaitingFrom(peer.address);
    // SENG clients present the very certificate of their first session: equal bytes (by
    // SHA-256 of the DER) mean an equal quote and key, with no second parse.
    const certHash = certificateHash(leaf);
    let enclave = fromHost.find((e) => e.identity.certHash === certHash);
    if (!enclave) {
      try {
        evidence = parseRaTlsCertificate(leaf);
      } catch (err) {
        return reject(`not an RA-TLS certificate: ${errorMessage(err)}`);
      }
      const fingerprint = quoteFingerprint(evidence);
      const keyHash = keyBindingHash(evidence.certificate).toString('hex');
      const sameQuote = fromHost.filter((e) => e.identity.fingerprint === fingerprint);
      if (sameQuote.length === 0) {
        const elsewhere = this.ctx.table
          .awaitingAnywhere()
          .find((e) => e.identity.fingerprint === fingerprint);
        return reject(
          elsewhere
            ? `the receive tunnel with this quote came from another IP (${elsewhere.clientAddress})`
            : 'no receive tunnel awaits a send tunnel with this quote',
        );
      }
      enclave = sameQuote.find((e) => e.identity.keyHash === keyHash);
      if (!enclave) return reject("the certificate key differs from the receive tunnel's");
    }
    if (enclave.state === 'assigning') {
      // The client opens this tunnel right after sending its IpAssignACK on the other port,
      // whose datagrams another path reads: on a busy gateway this certificate can be verified
      // before the ACK record was. SPEC §1.2 order (ACK, then the send tunnel) is kept by
      // waiting for it, at most until the setup would be abandoned for the missing ACK.
      const state = await this.ackOrEnd(enclave);
      if (state !== 'awaiting-send') {
        return reject(
          state === 'assigning' || state === 'closing'
            ? 'the receive tunnel ended without an IpAssignACK'
            : 'another send tunnel took this enclave',
        );
      }
    }
    // Claim it now, so two concurrent handshakes cannot both bind to the same enclave.
    enclave.state = 'joining';
    this.ctx.table.setAwaiting(enclave, false);
    const context: SendContext = { kind: 'send', enclave };
    return { accept: true, context };
  }

  /**
   * Resolves when `e` leaves 'assigning': a record on its receive channel was read as its ACK
   * (or refused, ending the setup), or the channel closed (as it does when a session ends, also
   * when the ACK deadline passes), or, only as a bound, one ACK interval after that deadline.
   * Its value is the enclave's state then.
   */
  private ackOrEnd(e: Enclave): Promise<EnclaveState> {
    return new Promise((resolve) => {
      const finish = (): void => {
        clearTimeout(bound);
        e.recv.off('message', afterRecord);
        e.recv.off('close', finish);
        resolve(e.state);
      };
      // Added after assign()'s own 'message' listener, so onAck has run when this one does.
      const afterRecord = (): void => {
        if (e.state !== 'assigning') finish();
      };
      const { ackIntervalMs, ackTries } = this.ctx.timeouts;
      const bound = setTimeout(finish, ackIntervalMs * (ackTries + 1));
      e.recv.on('message', afterRecord);
      e.recv.on('close', finish);
    });
  }

  onSendSession(channel: EnclaveChannel): void {
    const ctx = channel.verifyContext as SendContext | undefined;
    const e = ctx?.kind === 'send' ? ctx.enclave : undefined;
    if (!e || e.state !== 'joining' || e.send) {
      channel.close('not admitted');
      return;
    }
    e.send = channel;
    clearTimeout(e.timer);
    // The enclave never sends on its send channel; liveness is judged on the receive channel.
    channel.setIdleTimeout(0);
    channel.on('close', (reason: string) => void this.hooks.end(e, `send tunnel closed: ${reason}`));
    void this.join(e);
  }

  /** Registers the enclave with the firewall backend, then activates it (unless it ended meanwhile). */
  private async join(e: Enclave): Promise<void> {
    const enforcer = this.ctx.opts.enforcer;
    const observer = this.ctx.opts.observer;
    let failure: unknown;
    e.joining = (async () => {
      const started = performance.now();
      try {
        await enforcer?.join(registration(e));
        e.joined = enforcer !== undefined;
        if (enforcer) observer?.enforcement?.('join', performance.now() - started, true);
      } catch (err) {
        failure = err;
        observer?.enforcement?.('join', performance.now() - started, false);
      }
    })();
    await e.joining;
    if (failure !== undefined) {
      this.ctx.log.error(
        { event: 'enforcement-failed', enclaveIp: formatIpv4(e.ip), err: errorMessage(failure) },
        'firewall registration failed',
      );
      await this.hooks.end(e, `firewall registration failed: ${errorMessage(failure)}`);
      return;
    }
    // Ended while joining: teardown waited for the join and undoes it.
    if (e.state !== 'joining') return;
    e.state = 'active';
    e.recv.setIdleTimeout(this.ctx.timeouts.idleMs);
    this.hooks.activate(e);
    this.ctx.stats.admitted++;
    const setupMs = Date.now() - e.setupStartMs;
    // The audit event of the admission (docs/operations.md).
    this.ctx.log.info(
      {
        event: 'admitted',
        ...auditIdentity(e),
        kind: e.identity.kind,
        setupMs,
        client: `${e.clientAddress}:${e.clientPort}`,
        categories: e.categories,
      },
      `admitted ${appLabel(e)} from ${e.clientAddress} as ${formatIpv4(e.ip)}`,
    );
    this.ctx.opts.observer?.admitted?.(e, setupMs);
    this.hooks.admitted(e);
  }

  /** Counts, logs (the audit event of a rejection) and reports one refused attempt. */
  private rejected(r: Rejection, extra: Record<string, unknown> = {}): void {
    this.ctx.stats.rejected++;
    this.ctx.log.warn({ event: 'rejected', ...r, ...extra }, `rejected ${r.client}: ${r.reason}`);
    this.ctx.opts.observer?.rejected?.(r);
  }
}

/** Random bytes drawn in blocks: one randomBytes() call costs ≈ 9 µs, a slice of a block ≈ 0.4 µs. */
const ID_BLOCK_BYTES = 8 * 256;
let idBlock = Buffer.alloc(0);
let idOffset = 0;

/** A random 64-bit session id in hex. */
function newSessionId(): string {
  if (idOffset + 8 > idBlock.length) {
    idBlock = randomBytes(ID_BLOCK_BYTES);
    idOffset = 0;
  }
  const id = idBlock.toString('hex', idOffset, idOffset + 8);
  idOffset += 8;
  return id;
}
