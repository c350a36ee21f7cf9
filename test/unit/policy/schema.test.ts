import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../../helpers/cli.js';
import { parsePolicy } from '../../../src/policy/parse.js';
import { compilePolicy } from '../../../src/policy/compile.js';
import { appDirectoryFromDb } from '../../../src/policy/index.js';
import { emptyAppDirectory } from '../../../src/policy/apps.js';
import { iptablesText } from '../../../src/policy/iptables.js';
import { Store } from '../../../src/store/index.js';

interface Schema {
  required: string[];
  properties: Record<string, unknown>;
  $defs: { rule: { required: string[]; properties: Record<string, unknown> } };
}

test('the JSON schema lists exactly the keys the validator accepts', () => {
  const schema = JSON.parse(readFileSync(join(repoRoot, 'rules', 'policy.schema.json'), 'utf8')) as Schema;
  assert.deepEqual(Object.keys(schema.properties).sort(), [
    'defaults',
    'established',
    'rules',
    'table',
    'version',
  ]);
  assert.deepEqual(schema.$defs.rule.required, ['name', 'chain', 'action']);
  // Every schema key is accepted by the parser, and an unknown one is not.
  for (const key of Object.keys(schema.$defs.rule.properties)) {
    const text = `version: 1\nrules:\n  - { name: a, chain: forward, action: drop, ${key}: ~ }\n`;
    try {
      parsePolicy(text);
    } catch (e) {
      assert.doesNotMatch(String((e as Error).message), /unknown key/, key);
    }
  }
  assert.throws(
    () => parsePolicy('version: 1\nrules:\n  - { name: a, chain: forward, action: drop, sprot: 1 }\n'),
    /unknown key/,
  );
});

test('every shipped example is valid and renders in both formats', () => {
  const dir = join(repoRoot, 'rules', 'examples');
  const tmp = mkdtempSync(join(tmpdir(), 'seng-pol-db-'));
  try {
    // App names in the examples come from the demo netfilter database.
    const db = join(tmp, 'nf.db');
    Store.create(db, 'netfilter', { demo: true }).close();
    const apps = appDirectoryFromDb(db);
    const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'));
    assert.ok(files.length >= 3);
    for (const f of files) {
      const p = parsePolicy(readFileSync(join(dir, f), 'utf8'), f);
      const c = compilePolicy(p, { apps: f.includes('demo') ? apps : emptyAppDirectory });
      assert.ok(c.rules.length > 0);
      assert.match(iptablesText(c), /^COMMIT$/m);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
