import { Flags } from '@oclif/core';
import { accessSync, constants as fsConstants, existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { SengCommand } from '../../base.js';
import { createSqliteAtomically } from '../../store-flags.js';
import { InputError } from '../../../util/errors.js';
import { isPostgresUrl, redactUrl } from '../../../pg/index.js';
import { checkDatabasePath, createPolicyStore, StorePermissionError } from '../../../store/index.js';

export default class DbInit extends SengCommand<typeof DbInit> {
  static override summary = 'Create a new policy database with the vanilla or netfilter layout of SENG.';
  static override description =
    'The layout is byte-compatible with the original SENG SQL scripts. vanilla: allowlist with host and enclave subnets (seng serve -d). netfilter: apps and categories (seng serve -n -d). The directory must exist (mkdir -p /etc/seng). With --force an existing database is replaced atomically: the new file is written next to it and renamed over it, so a failure leaves the old one intact. With a postgres:// URL the policy tables (and the change trigger gateways follow) are created in that existing database, in one transaction; --force drops existing policy tables first, other tables are left alone.';
  static override examples = [
    'mkdir -p /etc/seng && <%= config.bin %> db init -d /etc/seng/policy.db --schema vanilla',
    '<%= config.bin %> db init -d demo.db --schema netfilter --demo',
    '<%= config.bin %> db init -d postgres://seng@db.example/seng --schema vanilla',
  ];
  static override flags = {
    db: Flags.string({
      char: 'd',
      summary: 'SQLite file or postgres:// URL of the policy store to create.',
      required: true,
    }),
    schema: Flags.option({
      options: ['vanilla', 'netfilter'] as const,
      summary: 'Database layout.',
      required: true,
    })(),
    demo: Flags.boolean({ summary: 'Insert the demo rows of the original SENG scripts.' }),
    force: Flags.boolean({ summary: 'Replace an existing file (or existing policy tables).' }),
  };

  async run(): Promise<{ path: string; schema: string; demo: boolean }> {
    const { db: path, schema, demo, force } = this.flags;
    if (isPostgresUrl(path)) {
      await (await createPolicyStore(path, schema, { demo, force })).close();
    } else {
      checkTarget(path, force);
      createSqliteAtomically(path, schema, { demo });
    }
    const shown = redactUrl(path);
    this.log(`created ${schema} database ${shown}${demo ? ' with demo content' : ''}`);
    return { path: shown, schema, demo };
  }
}

/** Refuses, with what to do, every target init cannot (or must not) write. */
function checkTarget(path: string, force: boolean): void {
  checkDatabasePath(path);
  if (existsSync(path) && !force) {
    throw new InputError(`${path} already exists`, 'pass --force to replace it (its content is lost)');
  }
  const dir = dirname(path);
  try {
    accessSync(dir, fsConstants.W_OK);
  } catch (err) {
    throw new StorePermissionError(
      `cannot create ${path}: directory ${dir} is not writable for this user`,
      `run as a user who may write ${dir} (ls -ld ${dir})`,
      err,
    );
  }
}
