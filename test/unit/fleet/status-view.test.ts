/** `seng status --fleet` rendering: gateways with state, heartbeat age, TTL, enclaves, uptime. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renderFleet, type FleetStatus } from '../../../src/cli/status-view.js';

const now = Date.parse('2026-12-01T10:00:00Z');

test('the fleet view lists every gateway with its state and counts the live ones', () => {
  const s: FleetStatus = {
    registry: 'postgres://seng@db/seng',
    gateways: [
      {
        id: 'site1:12345',
        address: '10.0.0.1:12345',
        pid: 10,
        state: 'live',
        heartbeatAgeSeconds: 4.2,
        leaseTtlSeconds: 30,
        startedAt: new Date(now - 7_260_000).toISOString(),
        enclaves: 3,
      },
      {
        id: 'site2:12345',
        address: '10.0.1.1:12345',
        pid: 11,
        state: 'lost',
        heartbeatAgeSeconds: 95,
        leaseTtlSeconds: 30,
        startedAt: new Date(now - 600_000).toISOString(),
        enclaves: 1,
      },
    ],
    leases: [],
  };
  const lines = renderFleet(s, now);
  assert.equal(lines[0], 'registry postgres://seng@db/seng: 1 live gateway(s), 1 lost, 0 live lease(s)');
  const rows = lines.slice(2).map((l) => l.trim().split(/\s{2,}/));
  assert.deepEqual(rows[0], ['GATEWAY', 'ADDRESS', 'STATE', 'HEARTBEAT', 'TTL', 'ENCLAVES', 'UP']);
  assert.deepEqual(rows[1], ['site1:12345', '10.0.0.1:12345', 'live', '4s ago', '30s', '3', '2h01m']);
  assert.deepEqual(rows[2], ['site2:12345', '10.0.1.1:12345', 'lost', '1m35s ago', '30s', '1', '10m00s']);
});
