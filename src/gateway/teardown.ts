/**
 * Ending a session, for whatever reason (close_notify, idle, setup failure, kick, revocation,
 * shutdown). Whatever ends a session frees everything it held, in the order enforcement
 * needs: stop routing, close both channels, leave the firewall (unregister; the
 * conntrack purge follows it, or is part of it), and only then release the IP — once its
 * purge has run — or quarantine it if the firewall could not confirm the removal or purge.
 */
import { errorMessage } from '../util/errors.js';
import { formatIpv4 } from '../util/ipv4.js';
import type { GatewayContext } from './context.js';
import { auditIdentity, registration, totalCounters, type Counters, type Enclave } from './enclave.js';

export class Teardown {
  constructor(
    private readonly ctx: GatewayContext,
    private readonly onEnded: (e: Enclave, reason: string) => void,
    /** Stops the data path to the enclave (forwarding.ts deactivate). */
    private readonly deactivate: (e: Enclave) => void = () => {},
  ) {}

  /** Ends an enclave's session for `reason`; idempotent. Resolves when its IP is free again. */
  end(e: Enclave, reason: string): Promise<void> {
    if (e.ended) return e.ended;
    // Assign before finishing: closing a channel emits 'close' synchronously, which re-enters here.
    let done!: () => void;
    e.ended = new Promise<void>((resolve) => (done = resolve));
    void this.finish(e, reason).finally(done);
    return e.ended;
  }

  private async finish(e: Enclave, reason: string): Promise<void> {
    const wasActive = e.state === 'active';
    e.state = 'closing';
    this.ctx.table.setAwaiting(e, false);
    clearTimeout(e.timer);
    this.ctx.table.unroute(e);
    this.deactivate(e);
    e.recv.close(reason);
    e.send?.close(reason);
    // Order matters: leave the firewall (unregister + conntrack purge) before the IP can be reused.
    if (e.joining) await e.joining;
    const unshadowed = await this.endShadows(e);
    const left = e.joined ? await this.leave(e) : true;
    if (left && unshadowed && (await this.purged(e))) {
      // With a fleet registry the lease ends there first; the IP returns to the pool after.
      if (this.ctx.opts.leases) this.ctx.opts.leases.release(e.pool, e.ip, e.sessionId, reason);
      else e.pool.release(e.ip);
    } else {
      // Quarantined: with a fleet registry its lease stays too, so no other gateway takes it.
      // The firewall may still attribute this IP to the old app: never hand it out again.
      this.ctx.stats.quarantined++;
      this.ctx.log.error(
        { event: 'ip-quarantined', enclaveIp: formatIpv4(e.ip) },
        `enclave IP ${formatIpv4(e.ip)} is quarantined until restart: the firewall could not confirm its removal`,
      );
    }
    const traffic = totalCounters(e);
    this.ctx.table.all.delete(e);
    addInto(this.ctx.endedTraffic, traffic);
    this.ctx.stats.ended++;
    // The audit event of the session's end (docs/operations.md).
    this.ctx.log.info(
      {
        event: wasActive ? 'session-end' : 'setup-failed',
        ...auditIdentity(e),
        client: `${e.clientAddress}:${e.clientPort}`,
        reason,
        durationMs: Date.now() - e.since.getTime(),
        ...traffic,
      },
      `${wasActive ? 'session ended' : 'setup failed'} for ${formatIpv4(e.ip)}: ${reason}`,
    );
    this.ctx.opts.observer?.ended?.(e, reason, wasActive);
    this.onEnded(e, reason);
  }

  /** Removes the enclave's port shadows (DNAT rules) before its IP can be reused; false if that failed. */
  private async endShadows(e: Enclave): Promise<boolean> {
    try {
      await this.ctx.opts.shadowHooks?.enclaveEnding(e.ip);
      return true;
    } catch (err) {
      this.ctx.log.error(
        { event: 'shadow-teardown-failed', enclaveIp: formatIpv4(e.ip), err: errorMessage(err) },
        'shadow teardown failed',
      );
      return false;
    }
  }

  /** Waits for the conntrack purge that follows a leave (backends with `purged`); false if it failed. */
  private async purged(e: Enclave): Promise<boolean> {
    try {
      await this.ctx.opts.enforcer?.purged?.(e.ip);
      return true;
    } catch (err) {
      this.ctx.log.error(
        { event: 'conntrack-purge-failed', enclaveIp: formatIpv4(e.ip), err: errorMessage(err) },
        'conntrack purge after leave failed',
      );
      return false;
    }
  }

  /** Removes the enclave from the firewall; false if the backend could not confirm it. */
  private async leave(e: Enclave): Promise<boolean> {
    const started = performance.now();
    try {
      await this.ctx.opts.enforcer?.leave(registration(e));
      this.ctx.opts.observer?.enforcement?.('leave', performance.now() - started, true);
      return true;
    } catch (err) {
      this.ctx.opts.observer?.enforcement?.('leave', performance.now() - started, false);
      this.ctx.log.error(
        { event: 'enforcement-failed', enclaveIp: formatIpv4(e.ip), err: errorMessage(err) },
        'firewall unregistration failed',
      );
      return false;
    } finally {
      e.joined = false;
    }
  }
}

function addInto(sum: Counters, c: Counters): void {
  for (const k of Object.keys(sum) as (keyof Counters)[]) sum[k] += c[k];
}
