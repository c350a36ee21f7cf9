import { Args, Flags } from '@oclif/core';
import { resolve } from 'node:path';
import { SengCommand } from '../../base.js';
import { createSqliteAtomically } from '../../store-flags.js';
import { isPostgresUrl, redactUrl } from '../../../pg/index.js';
import {
  createPolicyStore,
  openPolicyStore,
  policyStoreExists,
  StoreWriteError,
  type ImportCounts,
} from '../../../store/index.js';
import { validateDump, type ValidDump } from '../../../store/dump.js';
import { InputError } from '../../../util/errors.js';

export interface CopyJson extends ImportCounts {
  from: string;
  to: string;
  layout: string;
  created: boolean;
  replaced: boolean;
}

export default class DbCopy extends SengCommand<typeof DbCopy> {
  static override summary =
    'Copy a whole policy store (layout, ids, rows) between SQLite files and PostgreSQL databases.';
  static override description =
    'FROM and TO are SQLite paths or postgres:// URLs, in any combination. The target must be new or empty (a PostgreSQL database without policy tables counts as new); --force replaces a non-empty target, in one transaction (a SQLite file is written next to it and renamed over it). Only the policy tables are copied, never other tables of a database. `db export` of the copy equals that of the source.';
  static override examples = [
    '<%= config.bin %> db copy /etc/seng/policy.db postgres://seng@db.example/seng',
    '<%= config.bin %> db copy postgres://seng@/seng?host=/run/postgresql backup.db --force --json',
  ];
  static override args = {
    from: Args.string({ description: 'Source: SQLite file or postgres:// URL.', required: true }),
    to: Args.string({ description: 'Target: SQLite file or postgres:// URL.', required: true }),
  };
  static override flags = {
    force: Flags.boolean({ summary: 'Replace the content (and layout) of a non-empty target.' }),
  };

  async run(): Promise<CopyJson> {
    const { from, to } = this.args;
    if (sameTarget(from, to)) {
      throw new InputError(
        `${redactUrl(from)} is both source and target`,
        'copy to another file or database',
      );
    }
    const source = await openPolicyStore(from, { readonly: true });
    let dump: ValidDump;
    try {
      dump = validateDump(await source.exportDump());
    } finally {
      await source.close();
    }
    const result = await copyInto(to, dump, this.flags.force);
    const out: CopyJson = { from: redactUrl(from), to: redactUrl(to), layout: dump.layout, ...result };
    this.log(
      `copied the ${dump.layout} store ${out.from} to ${result.created ? 'new ' : ''}${out.to}: ${out.apps} app row(s), ${out.subnets} enclave subnet(s), ${out.categories} category row(s)${out.replaced ? ' (replaced its content)' : ''}`,
    );
    return out;
  }
}

function sameTarget(a: string, b: string): boolean {
  if (isPostgresUrl(a) || isPostgresUrl(b)) return a === b;
  return resolve(a) === resolve(b);
}

/** Writes `dump` into a new, empty or (with force) replaced target. */
async function copyInto(
  to: string,
  dump: ValidDump,
  force: boolean,
): Promise<ImportCounts & { created: boolean; replaced: boolean }> {
  const counts = { subnets: dump.subnets.length, apps: dump.apps.length, categories: dump.categories.length };
  if (!(await policyStoreExists(to))) {
    await (await createPolicyStore(to, dump.layout, { rows: dump })).close();
    return { ...counts, created: true, replaced: false };
  }
  const target = await openPolicyStore(to);
  let sameLayout: boolean;
  try {
    sameLayout = target.schema === dump.layout;
    if (sameLayout) {
      await target.importDump(dump, { replace: force, flag: '--force' });
      return { ...counts, created: false, replaced: force };
    }
    if (!force) {
      throw new StoreWriteError(
        `${target.target} is a ${target.schema} database, but the source is a ${dump.layout} database`,
        'pass --force to replace it (its content and layout are lost), or copy to a new target',
      );
    }
  } finally {
    await target.close();
  }
  // Another layout: replace the whole store in one step.
  if (isPostgresUrl(to))
    await (await createPolicyStore(to, dump.layout, { rows: dump, force: true })).close();
  else createSqliteAtomically(to, dump.layout, { rows: dump });
  return { ...counts, created: false, replaced: true };
}
