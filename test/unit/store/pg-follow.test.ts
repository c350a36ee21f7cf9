/**
 * The gateway's follower of a PostgreSQL policy (src/gateway/policy-follow.ts) against a real
 * server: a NOTIFY leads to a reload, a change that sent no notification is found by the
 * fallback poll, and a server restart is logged once, survived, and followed by a full reload.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startPostgres, type PostgresServer } from '../../helpers/postgres.js';
import { waitFor } from '../../helpers/netns.js';
import { PgPolicyMirror, PgStore, createPolicyStore, type PolicyStore } from '../../../src/store/index.js';
import { PgPolicyFollower } from '../../../src/gateway/policy-follow.js';
import type { Logger } from '../../../src/util/log.js';

let server: PostgresServer;
before(async () => {
  server = await startPostgres();
});
after(() => server?.stop());

function recordingLogger(events: string[]): Logger {
  const record = (obj: object) => {
    const event = (obj as { event?: string }).event;
    if (event) events.push(event);
  };
  return { info: record, warn: record, error: record, debug: () => {} } as unknown as Logger;
}

test('notifications, the fallback poll and a server restart all lead to a reload', async () => {
  const url = await server.createDatabase();
  const writer: PolicyStore = await createPolicyStore(url, 'netfilter', { demo: true });
  const store = await PgStore.open(url);
  const mirror = await PgPolicyMirror.load(store);
  const events: string[] = [];
  const applied: boolean[] = [];
  const follower = new PgPolicyFollower(
    mirror,
    async (force) => applied.push(force),
    recordingLogger(events),
    {
      pollMs: 300,
    },
  );
  await follower.start();
  try {
    const categories = () => mirror.listApps().find((a) => a.name === 'DemoEnclave')?.categories ?? [];
    // 1. A change through seng: NOTIFY seng_policy.
    await writer.addCategory('DemoEnclave', 'Live');
    await waitFor(() => categories().includes('Live'), 5000, { message: 'notified change loaded' });
    await waitFor(() => applied.includes(false), 5000, { message: 'index reloaded' });

    // 2. A change that sent no notification (trigger disabled): the version poll finds it.
    await server.sql(
      `BEGIN;
       ALTER TABLE categories DISABLE TRIGGER USER;
       INSERT INTO categories(name, apps_id) VALUES ('Quiet', 1);
       ALTER TABLE categories ENABLE TRIGGER USER;
       UPDATE seng_policy_version SET version = version + 1;
       COMMIT`,
      [],
      url,
    );
    await waitFor(() => categories().includes('Quiet'), 5000, { message: 'polled change loaded' });

    // 3. The server goes away and comes back: logged, then a forced full reload.
    server.pause();
    await waitFor(() => events.includes('pg-disconnected'), 15_000, { message: 'pg-disconnected logged' });
    assert.ok(categories().includes('Quiet'), 'the last policy stays in memory');
    server.resume();
    await waitFor(() => applied.includes(true), 30_000, { message: 'forced reload after reconnecting' });
    await writer.removeCategory('DemoEnclave', 'Live');
    await waitFor(() => !categories().includes('Live'), 10_000, { message: 'change after restart loaded' });
    assert.equal(events.filter((e) => e === 'policy-reload-failed').length, 0);
  } finally {
    await follower.stop();
    await store.close();
    await writer.close();
  }
});
