import { Args, Flags } from '@oclif/core';
import { readFileSync } from 'node:fs';
import { SengCommand } from '../../base.js';
import { dbFlag } from '../../store-flags.js';
import {
  createPolicyStore,
  openPolicyStore,
  policyStoreExists,
  StoreIoError,
  StorePathError,
  StorePermissionError,
} from '../../../store/index.js';
import { validateDump } from '../../../store/dump.js';
import { InputError } from '../../../util/errors.js';

export default class DbImport extends SengCommand<typeof DbImport> {
  static override summary = 'Restore a policy store from a `seng db export` file, in one transaction.';
  static override description =
    'Everything in the file is checked first (the same rules as the db commands); then all rows are written in one transaction, so a failed import changes nothing. The database must be empty unless --replace is given; a missing database (a PostgreSQL database without policy tables) is created with the layout of the file. Use - as FILE to read stdin.';
  static override examples = [
    '<%= config.bin %> db import -d /etc/seng/policy.db policy-backup.json --replace',
    '<%= config.bin %> db import -d restored.db policy-backup.json',
  ];
  static override args = {
    file: Args.string({ description: 'Export file (JSON), or - for stdin.', required: true }),
  };
  static override flags = {
    db: dbFlag,
    replace: Flags.boolean({ summary: 'Delete every row of the database first (in the same transaction).' }),
  };

  async run(): Promise<{
    path: string;
    layout: string;
    created: boolean;
    subnets: number;
    apps: number;
    categories: number;
  }> {
    const dump = validateDump(parseJson(readInput(this.args.file), this.args.file));
    const created = !(await policyStoreExists(this.flags.db));
    const store = created
      ? await createPolicyStore(this.flags.db, dump.layout, { rows: dump })
      : await openPolicyStore(this.flags.db);
    const path = store.target;
    let counts: { subnets: number; apps: number; categories: number };
    try {
      counts = created
        ? { subnets: dump.subnets.length, apps: dump.apps.length, categories: dump.categories.length }
        : await store.importDump(dump, { replace: this.flags.replace });
    } finally {
      await store.close();
    }
    this.log(
      `imported ${counts.apps} app row(s), ${counts.subnets} enclave subnet(s) and ${counts.categories} category row(s) into ${created ? 'new ' : ''}${dump.layout} database ${path}`,
    );
    return { path, layout: dump.layout, created, ...counts };
  }
}

function readInput(file: string): string {
  try {
    return readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT')
      throw new StorePathError(`${file} does not exist`, 'pass the file seng db export wrote', err);
    if (code === 'EISDIR')
      throw new StorePathError(`${file} is a directory`, 'pass the file seng db export wrote', err);
    if (code === 'EACCES' || code === 'EPERM') {
      throw new StorePermissionError(`cannot read ${file}: permission denied`, `check ls -l ${file}`, err);
    }
    if (typeof code === 'string') {
      throw new StoreIoError(`cannot read ${file}: ${(err as Error).message}`, `check ls -l ${file}`, err);
    }
    throw err;
  }
}

function parseJson(text: string, file: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new InputError(
      `${file} is not valid JSON: ${(err as Error).message}`,
      'pass a file written by seng db export',
    );
  }
}
