/** Which registry `seng serve` uses when none is named: the -d database when it is PostgreSQL. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { registryUrlOf } from '../../../src/cli/commands/serve.js';
import { parseServeConfig } from '../../../src/gateway/config-file.js';

const PG = 'postgres://seng@db.example/seng';

test('a PostgreSQL policy store is the registry unless another one or "none" is named', () => {
  assert.equal(registryUrlOf({ db: PG }), PG);
  assert.equal(registryUrlOf({ db: 'postgresql://a@b/c' }), 'postgresql://a@b/c');
  assert.equal(registryUrlOf({ db: PG, registry: 'postgres://x@y/z' }), 'postgres://x@y/z');
  assert.equal(registryUrlOf({ db: PG, registry: 'none' }), undefined);
});

test('a SQLite policy store or none gives no registry unless one is named', () => {
  assert.equal(registryUrlOf({ db: '/etc/seng/policy.db' }), undefined);
  assert.equal(registryUrlOf({}), undefined);
  assert.equal(registryUrlOf({ db: 'policy.db', registry: PG }), PG);
});

test('a config file may name gateway-id with a postgres:// db and no registry key', () => {
  const withPg = parseServeConfig(`db: ${PG}\ngateway-id: site1-gw1\n`);
  assert.deepEqual(withPg.issues, []);
  const withFile = parseServeConfig('db: /etc/seng/policy.db\ngateway-id: site1-gw1\n');
  assert.match(withFile.issues.map((i) => i.message).join('\n'), /gateway-id needs a registry/);
  const optedOut = parseServeConfig(`db: ${PG}\nregistry: none\ngateway-id: site1-gw1\n`);
  assert.match(optedOut.issues.map((i) => i.message).join('\n'), /gateway-id needs a registry/);
});
