import { Flags } from '@oclif/core';
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { SengCommand } from '../../base.js';
import { dbFlag, fileError } from '../../store-flags.js';
import { openPolicyStore } from '../../../store/index.js';
import type { PolicyDump } from '../../../store/dump.js';

export default class DbExport extends SengCommand<typeof DbExport> {
  static override summary = 'Write the whole policy store (layout, subnets, apps, categories) as JSON.';
  static override description =
    'A backup that `seng db import` restores exactly: every row with its id, addresses as stored. JSON, not YAML: no implicit typing can turn a measurement into a number, and it is what --json prints everywhere else.';
  static override examples = [
    '<%= config.bin %> db export -d /etc/seng/policy.db --out policy-backup.json',
    '<%= config.bin %> db export -d nf.db | jq .apps',
    '<%= config.bin %> db export -d postgres://seng@db.example/seng -o policy.json',
  ];
  static override flags = {
    db: dbFlag,
    out: Flags.string({ char: 'o', summary: 'Write to this file (replaced atomically) instead of stdout.' }),
  };

  async run(): Promise<PolicyDump | { path: string; layout: string; apps: number }> {
    const store = await openPolicyStore(this.flags.db, { readonly: true });
    let dump: PolicyDump;
    try {
      dump = await store.exportDump();
    } finally {
      await store.close();
    }
    const text = `${JSON.stringify(dump, null, 2)}\n`;
    const out = this.flags.out;
    if (out === undefined) {
      if (this.jsonEnabled()) return dump;
      process.stdout.write(text);
      return dump;
    }
    writeAtomically(out, text);
    this.log(`exported the ${dump.layout} store ${store.target} (${dump.apps.length} app rows) to ${out}`);
    return { path: out, layout: dump.layout, apps: dump.apps.length };
  }
}

/** Writes a file under a temporary name and renames it into place; file errors become typed errors. */
function writeAtomically(path: string, text: string): void {
  const temp = join(dirname(path), `.${basename(path)}.seng-export-${process.pid}`);
  try {
    writeFileSync(temp, text, { flag: 'wx' });
    renameSync(temp, path);
  } catch (err) {
    rmSync(temp, { force: true });
    throw fileError(err, path);
  }
}
