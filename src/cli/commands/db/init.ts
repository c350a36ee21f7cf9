import { Flags } from '@oclif/core';
import { existsSync, rmSync } from 'node:fs';
import { SengCommand } from '../../base.js';
import { InputError } from '../../../util/errors.js';
import { Store } from '../../../store/index.js';

export default class DbInit extends SengCommand<typeof DbInit> {
  static override summary = 'Create a new policy database with the vanilla or netfilter layout of SENG.';
  static override description =
    'The layout is byte-compatible with the original SENG SQL scripts. vanilla: allowlist with host and enclave subnets (seng serve -d). netfilter: apps and categories (seng serve -n -d).';
  static override examples = [
    '<%= config.bin %> db init -d /etc/seng/policy.db --schema vanilla',
    '<%= config.bin %> db init -d demo.db --schema netfilter --demo',
  ];
  static override flags = {
    db: Flags.string({ char: 'd', summary: 'Path of the database file to create.', required: true }),
    schema: Flags.option({
      options: ['vanilla', 'netfilter'] as const,
      summary: 'Database layout.',
      required: true,
    })(),
    demo: Flags.boolean({ summary: 'Insert the demo rows of the original SENG scripts.' }),
    force: Flags.boolean({ summary: 'Replace an existing file.' }),
  };

  async run(): Promise<{ path: string; schema: string; demo: boolean }> {
    const { db: path, schema, demo, force } = this.flags;
    if (existsSync(path)) {
      if (!force)
        throw new InputError(`${path} already exists`, 'pass --force to replace it (its content is lost)');
      rmSync(path);
    }
    Store.create(path, schema, { demo }).close();
    this.log(`created ${schema} database ${path}${demo ? ' with demo content' : ''}`);
    return { path, schema, demo };
  }
}
