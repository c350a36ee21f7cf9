import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { startPostgres, type PostgresServer } from '../../helpers/postgres.js';
import { PgListener, isConnectionError, redactUrl, withRetry } from '../../../src/pg/index.js';

let server: PostgresServer | undefined;
after(() => server?.stop());

test('redactUrl hides passwords', () => {
  assert.equal(redactUrl('postgres://u:secret@h:5432/db'), 'postgres://u:***@h:5432/db');
  assert.equal(redactUrl('postgres://u@h/db'), 'postgres://u@h/db');
});

test('PgListener delivers NOTIFY and reconnects (announcing it) after the server restarts', async () => {
  server = await startPostgres();
  const url = await server.createDatabase();
  const l = new PgListener(url, ['seng_test']);
  const connected: boolean[] = [];
  l.on('connected', (first) => connected.push(first));
  await l.start();
  assert.deepEqual(connected, [true]);
  const got = once(l, 'notification');
  await server.sql(`SELECT pg_notify('seng_test', 'hello')`, [], url);
  assert.deepEqual(await got, ['seng_test', 'hello']);

  const lost = once(l, 'disconnected');
  server.pause();
  await lost;
  // While the server is down a query fails with a connection error (what withRetry retries).
  await assert.rejects(server.sql('SELECT 1', [], url), (err) => isConnectionError(err));
  const back = once(l, 'connected');
  server.resume();
  assert.deepEqual(await back, [false]);
  const again = once(l, 'notification');
  await withRetry(() => server!.sql(`SELECT pg_notify('seng_test', 'again')`, [], url));
  assert.deepEqual(await again, ['seng_test', 'again']);
  await l.stop();
});

test('withRetry does not retry SQL errors', async () => {
  let calls = 0;
  await assert.rejects(
    withRetry(async () => {
      calls++;
      throw Object.assign(new Error('syntax error'), { code: '42601' });
    }),
  );
  assert.equal(calls, 1);
});
