/** `seng help` for the db topics shows each topic's own description (oclif.topics in package.json). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot, seng } from '../../helpers/cli.js';

const topics = (
  JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as {
    oclif: { topics: Record<string, { description: string }> };
  }
).oclif.topics;

for (const topic of ['db app', 'db category', 'db subnet']) {
  test(`help for "${topic}" shows the topic's description, not a command's`, () => {
    const description = topics[topic.replace(/ /g, ':')]?.description;
    assert.ok(description, `package.json oclif.topics has "${topic}"`);
    for (const args of [
      ['help', ...topic.split(' ')],
      [...topic.split(' '), '--help'],
    ]) {
      const r = seng(args);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.split('\n')[0], description);
    }
  });
}

test('help db lists the db topics with their own descriptions and the new commands', () => {
  const r = seng(['help', 'db']);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /db app +Allowed apps/);
  assert.match(r.stdout, /db export +Write the whole policy store/);
  assert.match(r.stdout, /db import +Restore a policy store/);
  const app = seng(['help', 'db', 'app']);
  assert.match(app.stdout, /db app set +Change an app/);
  assert.match(app.stdout, /db app show +Show every field/);
});

test('the -d flag documents SENG_DB', () => {
  const r = seng(['db', 'app', 'list', '--help']);
  assert.match(r.stdout, /SENG_DB/);
});
