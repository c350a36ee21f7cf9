/**
 * What a running gateway does for each control-socket request (control.ts carries them):
 * status, kick (by enclave IP, app, client host or all), reload (as SIGHUP) and policy
 * (apply a policy file through the running backend, when it has that capability).
 */
import type { Enforcer } from '../enforce/types.js';
import { InputError, SengError } from '../util/errors.js';
import { formatIpv4, parseIpv4 } from '../util/ipv4.js';
import type { Logger } from '../util/log.js';
import type { ControlHandler, ControlRequest, KickRequest } from './control.js';
import type { EnclaveIndex } from './enclave-index.js';
import type { Gateway, KickSelector } from './gateway.js';

export interface DispatchContext {
  gateway: Gateway;
  index: EnclaveIndex;
  enforcer: Enforcer | undefined;
  log: Logger;
  /** Static facts for `seng status`. */
  info: { listen: string; tun: string; database: string | null };
  /** The ShadowServer's current shadows (seng serve -s), for `seng status`. */
  shadows?: () => unknown[];
}

export interface ReloadReply {
  changedApps: number;
  ended: string[];
  policy: string | null;
}

/** Re-reads the database (ending revoked sessions) and the policy file, if the backend has one. */
export async function reloadGateway(ctx: Omit<DispatchContext, 'index' | 'info'>): Promise<ReloadReply> {
  const { changedApps, ended } = await ctx.gateway.reloadIndex(true);
  const policy = ctx.enforcer?.reloadPolicy ? await ctx.enforcer.reloadPolicy() : null;
  ctx.log.info({ event: 'reloaded', changedApps, ended, policy }, 'reloaded database and policy');
  return { changedApps, ended, policy };
}

export function controlDispatcher(ctx: DispatchContext): ControlHandler {
  return async (req: ControlRequest) => {
    switch (req.cmd) {
      case 'status':
        return status(ctx);
      case 'kick': {
        const ended = await ctx.gateway.kick(kickSelector(req));
        return { kicked: ended.length > 0, ended };
      }
      case 'policy':
        return applyPolicy(ctx, req.path, req.confirmSeconds);
      case 'confirm':
        return confirmPolicy(ctx, req.rollback === true);
      case 'reload':
        return reloadGateway(ctx);
    }
  };
}

function status(ctx: DispatchContext) {
  return {
    ...ctx.info,
    enforcement: ctx.enforcer?.name ?? 'none',
    subnets: ctx.index
      .subnets()
      .map((p) => ({ subnet: p.label, gateway: formatIpv4(p.gateway), inUse: p.inUse, free: p.free })),
    stats: ctx.gateway.stats,
    sessions: ctx.gateway.status(),
    ...(ctx.shadows ? { shadows: ctx.shadows() } : {}),
  };
}

/** Exactly one of ip, app, host, all. */
export function kickSelector(req: KickRequest): KickSelector {
  const given = [req.ip, req.app, req.host, req.all ? true : undefined].filter((x) => x !== undefined);
  if (given.length !== 1) {
    throw new InputError('kick needs exactly one of: enclave IP, app, host, all');
  }
  if (req.ip !== undefined) return { ip: parseIpv4(String(req.ip)) };
  if (req.host !== undefined) return { host: parseIpv4(String(req.host)) };
  if (req.app !== undefined) return { app: String(req.app) };
  return { all: true };
}

async function applyPolicy(ctx: DispatchContext, path: string, confirmSeconds?: number) {
  if (!ctx.enforcer?.usePolicyFile) {
    throw new SengError(
      'ENOTNFT',
      `this gateway enforces with ${ctx.enforcer?.name ?? 'nothing'}, not nftables`,
      {
        hint: 'apply the rules directly (seng rules apply --no-gateway), or start seng serve --nft',
      },
    );
  }
  const summary = await ctx.enforcer.usePolicyFile(
    path,
    confirmSeconds === undefined ? {} : { confirmWithinMs: confirmSeconds * 1000 },
  );
  ctx.log.info(
    { event: 'policy-applied', policy: summary, confirmSeconds: confirmSeconds ?? null },
    `applied policy ${summary}${confirmSeconds === undefined ? '' : `, pending confirmation within ${confirmSeconds} s`}`,
  );
  return { policy: summary, sessions: ctx.gateway.status().length };
}

/** Keeps (or, with `rollback`, declines) a policy change applied with confirmSeconds. */
async function confirmPolicy(ctx: DispatchContext, rollback: boolean) {
  const e = ctx.enforcer;
  if (!e?.confirmPolicy || !e.rollbackPolicy) {
    throw new SengError('ENOTNFT', `this gateway enforces with ${e?.name ?? 'nothing'}, not nftables`, {
      hint: 'only seng serve --nft applies policies with confirmation',
    });
  }
  const waiting = rollback ? await e.rollbackPolicy() : e.confirmPolicy();
  return { waiting, confirmed: waiting && !rollback, rolledBack: waiting && rollback };
}
