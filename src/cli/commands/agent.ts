import { Flags } from '@oclif/core';
import { SengCommand } from '../base.js';
import { usageError } from '../usage.js';
import { tableFlag } from '../policy-flags.js';
import { FleetAgent } from '../../fleet/agent.js';
import { isPostgresUrl, redactUrl } from '../../pg/index.js';
import { KmodEnforcer } from '../../enforce/kmod.js';
import { NftEnforcer } from '../../enforce/nft.js';
import type { Enforcer } from '../../enforce/types.js';

export default class Agent extends SengCommand<typeof Agent> {
  static override summary =
    "Firewall agent: keep this host's nftables sets (or seng kernel module) equal to the fleet's live enclaves.";
  static override description = `Runs on a firewall host that is not a gateway. Follows the enclave registry (the PostgreSQL database the gateways lease enclave IPs in: seng serve --registry) and keeps this host's enforcement state equal to the live leases: with --nft the enclave sets of the nftables table (the same sets seng serve --nft fills, so a policy installed here with seng rules apply matches the fleet's enclaves), with -n the seng kernel module's enclave entries.
With -d postgres://… (a netfilter-layout policy store, seng db init --schema netfilter) the apps' names and categories come from that policy and are re-read on every change (NOTIFY seng_policy), so this host agrees with the gateways; the registry defaults to the same database. Without -d, categories come from the registry's own database when it holds such a policy, else from the lease rows.
On start and after every lost connection it resynchronises completely (entries of enclaves that ended meanwhile are removed, their conntrack entries purged). It also reclaims the leases of gateways whose heartbeat stopped (their lease TTL). Runs until SIGINT/SIGTERM; on stop it removes the entries it added (enclave rules then match nobody). See docs/fleet.md.`;
  static override examples = [
    '<%= config.bin %> agent -d postgres://seng@db.example/seng --nft',
    '<%= config.bin %> agent --registry postgres://seng@db.example/seng --nft',
    '<%= config.bin %> agent --registry "postgres://seng@/seng?host=/run/postgresql" --nft --table seng',
    '<%= config.bin %> agent --registry postgres://seng@db.example/seng -n',
  ];
  static override enableJsonFlag = false;
  static override flags = {
    db: Flags.string({
      char: 'd',
      summary:
        'PostgreSQL policy store (postgres://…, netfilter layout): app categories come from it; also the registry unless --registry is given.',
      env: 'SENG_DB',
      helpValue: 'URL',
    }),
    registry: Flags.string({
      summary: 'The enclave registry (postgres://… URL, the one the gateways use; default: -d).',
      env: 'SENG_REGISTRY',
      helpValue: 'URL',
    }),
    nft: Flags.boolean({ summary: 'Enforce with nftables sets on this host.', exclusive: ['netfilter'] }),
    netfilter: Flags.boolean({
      char: 'n',
      summary: 'Enforce with the seng kernel module on this host.',
      exclusive: ['nft'],
    }),
    table: tableFlag({ summary: 'nftables table whose sets are kept (with --nft).', default: 'seng' }),
    'reclaim-every': Flags.integer({
      summary: 'Seconds between reclaims of the leases of lost gateways.',
      default: 5,
      min: 1,
      max: 3600,
    }),
    batch: Flags.integer({
      summary: 'Enclave joins or leaves written together (one kernel transaction with --nft).',
      default: 500,
      min: 1,
      max: 100_000,
    }),
  };

  async run(): Promise<void> {
    const f = this.flags;
    if (f.db !== undefined && !isPostgresUrl(f.db))
      usageError(
        `-d "${redactUrl(f.db)}" is not a postgres:// or postgresql:// URL (the agent follows a PostgreSQL policy store only)`,
      );
    const registry = f.registry ?? f.db;
    if (registry === undefined)
      usageError('give the registry: -d postgres://… (policy and registry) or --registry URL');
    if (!isPostgresUrl(registry))
      usageError(`--registry "${redactUrl(registry)}" is not a postgres:// or postgresql:// URL`);
    if (!f.nft && !f.netfilter) usageError('give the backend to keep in sync: --nft or -n');
    const enforcer: Enforcer = f.nft
      ? new NftEnforcer({ tableName: f.table, logger: this.logger })
      : new KmodEnforcer({ logger: this.logger });
    const agent = new FleetAgent({
      url: registry,
      ...(f.db === undefined ? {} : { policyUrl: f.db }),
      enforcer,
      log: this.logger,
      reclaimEveryMs: f['reclaim-every'] * 1000,
      batchSize: f.batch,
    });
    let stopping: Promise<void> | undefined;
    const stopped = new Promise<void>((resolve) => {
      const stop = (signal: string): void => {
        stopping ??= (async () => {
          this.logger.info({ event: 'shutdown', reason: signal }, `agent shutting down (${signal})`);
          await agent.stop();
          this.logger.info({ event: 'stopped' }, 'agent stopped');
          resolve();
        })();
      };
      process.once('SIGINT', () => stop('SIGINT'));
      process.once('SIGTERM', () => stop('SIGTERM'));
    });
    this.logger.info(
      {
        event: 'agent-starting',
        registry: redactUrl(registry),
        ...(f.db === undefined ? {} : { policy: redactUrl(f.db) }),
        backend: enforcer.name,
      },
      `seng agent starting (${enforcer.name})`,
    );
    await agent.start();
    await stopped;
  }
}
