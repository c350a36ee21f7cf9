/**
 * What an operator does to a running gateway (through the control socket, signals and the
 * database watch): list sessions, kick them, and reload the database — which ends the
 * sessions the new database would no longer admit and pushes category changes to the
 * firewall backend.
 */
import { errorMessage } from '../util/errors.js';
import { formatIpv4, type Ipv4 } from '../util/ipv4.js';
import type { GatewayContext } from './context.js';
import type { EnclaveIndex } from './enclave-index.js';
import {
  appLabel,
  describeEnclave,
  registration,
  totalCounters,
  type Counters,
  type Enclave,
  type EnclaveStatus,
} from './enclave.js';
import type { Teardown } from './teardown.js';

/** Which sessions `seng kick` ends. */
export type KickSelector = { ip: Ipv4 } | { app: string } | { host: Ipv4 } | { all: true };

export interface ReloadResult {
  /** Apps whose categories changed. */
  changedApps: number;
  /** Enclave IPs whose sessions were ended because the database no longer admits them. */
  ended: string[];
}

export class Operations {
  constructor(
    private readonly ctx: GatewayContext,
    private readonly teardown: Teardown,
  ) {}

  status(): EnclaveStatus[] {
    return [...this.ctx.table.all].map((e) => describeEnclave(e));
  }

  /** Gateway-wide traffic and drops since start: ended sessions plus the live ones, read now. */
  traffic(): Counters {
    const sum = { ...this.ctx.endedTraffic };
    for (const e of this.ctx.table.all) {
      const c = totalCounters(e);
      for (const k of Object.keys(sum) as (keyof Counters)[]) sum[k] += c[k];
    }
    return sum;
  }

  /** Ends the sessions the selector matches; returns them as they were just before. */
  async kick(selector: KickSelector, reason = 'kicked by admin'): Promise<EnclaveStatus[]> {
    const victims = this.ctx.table.live().filter((e) => matches(e, selector));
    const described = victims.map((e) => describeEnclave(e));
    await Promise.all(victims.map((e) => this.teardown.end(e, reason)));
    return described;
  }

  /**
   * Re-reads the database. Sessions the new database would no longer admit (app removed,
   * measurements or host subnets changed, moved to another enclave subnet) are ended first,
   * so a revoked app loses its network access at once; then category changes of the
   * remaining active apps are pushed to the enforcer.
   */
  async reload(force = false): Promise<ReloadResult> {
    const index = this.ctx.opts.index;
    const generation = index.generation;
    const changed = index.reload(force);
    // A reload that read the database again (it changed, or an operator forced it) re-decides
    // admission from scratch: no attestation verdict survives it. The database poll calls this
    // every second; an unchanged database keeps the verdicts (clearing them there made every
    // certificate pay a full attestation again once a second).
    if (force || index.generation !== generation) this.ctx.attestations.clear();
    const ended = index.generation === generation ? [] : await this.endRevoked(index);
    for (const change of changed) {
      const active = [...this.ctx.table.all].filter(
        (e) => e.joined && e.state !== 'closing' && e.identity.mrEnclave.equals(change.mrEnclave),
      );
      for (const e of active) e.categories = change.categories;
      if (active.length === 0) continue;
      const started = performance.now();
      try {
        await this.ctx.opts.enforcer?.updateCategories(
          change.mrEnclave,
          change.categories,
          active.map(registration),
        );
        this.ctx.opts.observer?.enforcement?.('update', performance.now() - started, true);
        this.ctx.log.info(
          {
            event: 'categories-updated',
            mrEnclave: change.mrEnclave.toString('hex'),
            categories: change.categories,
            enclaves: active.length,
          },
          'categories of an active app changed',
        );
      } catch (err) {
        this.ctx.opts.observer?.enforcement?.('update', performance.now() - started, false);
        this.ctx.log.error({ event: 'enforcement-failed', err: errorMessage(err) }, 'category update failed');
      }
    }
    return { changedApps: changed.length, ended };
  }

  /** Ends every session the index would no longer admit as it was; returns their IPs. */
  private async endRevoked(index: EnclaveIndex): Promise<string[]> {
    const revoked: [Enclave, string][] = [];
    for (const e of this.ctx.table.live()) {
      const reason = revocationReason(e, index);
      if (reason !== undefined) revoked.push([e, reason]);
    }
    await Promise.all(revoked.map(([e, reason]) => this.teardown.end(e, reason)));
    return revoked.map(([e]) => formatIpv4(e.ip));
  }
}

function matches(e: Enclave, s: KickSelector): boolean {
  if ('all' in s) return true;
  if ('ip' in s) return e.ip === s.ip;
  if ('host' in s) return e.clientIp === s.host;
  return e.appName === s.app;
}

/**
 * Why the index would no longer admit this enclave as it was admitted, or undefined if it
 * still would: the same app, from the same client host, into the same enclave subnet.
 */
export function revocationReason(e: Enclave, index: EnclaveIndex): string | undefined {
  const admission = index.admit(e.identity.mrEnclave, e.identity.mrSigner, e.clientIp);
  const app = appLabel(e);
  if (!admission.ok) {
    return admission.check === 'allowlist'
      ? `app ${app} removed from the allowlist`
      : `app ${app} no longer admitted: ${admission.reason}`;
  }
  if (admission.appName !== e.appName) {
    return admission.appName === undefined
      ? `app ${app} removed from the allowlist`
      : `app ${app} is now registered as ${admission.appName}`;
  }
  if (admission.pool !== e.pool) return `app ${app} moved to enclave subnet ${admission.pool.label}`;
  return undefined;
}
