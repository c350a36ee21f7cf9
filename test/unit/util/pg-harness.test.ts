import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { startPostgres, type PostgresServer } from '../../helpers/postgres.js';

let server: PostgresServer | undefined;
after(() => server?.stop());

test('the PostgreSQL test harness starts a private server and creates databases', async () => {
  server = await startPostgres();
  const url = await server.createDatabase();
  const r = await server.sql('SELECT current_database() AS db', [], url);
  assert.match(String(r.rows[0].db), /^seng_\d+_\d+$/);
  server.pause();
  await assert.rejects(server.sql('SELECT 1', [], url));
  server.resume();
  const again = await server.sql('SELECT 1 AS one', [], url);
  assert.equal(again.rows[0].one, 1);
});
