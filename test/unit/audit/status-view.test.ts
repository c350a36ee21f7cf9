/** `seng status` rendering: age, last seen, drops; the optional value of --watch. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  formatDuration,
  renderStatus,
  withWatchDefault,
  type StatusResult,
} from '../../../src/cli/status-view.js';
import type { EnclaveStatus } from '../../../src/gateway/gateway.js';

const now = Date.parse('2026-12-01T10:00:00Z');
const session = (over: Partial<EnclaveStatus>): EnclaveStatus => ({
  enclaveIp: '192.168.28.2',
  state: 'active',
  app: 'web',
  mrEnclave: 'a1'.repeat(32),
  mrSigner: 'ab'.repeat(32),
  categories: [],
  client: '10.0.0.7:40000',
  since: new Date(now - 3725_000).toISOString(),
  sessionId: '0123456789abcdef',
  ageSeconds: 3725,
  lastSeen: new Date(now - 4_000).toISOString(),
  packetsIn: 10,
  bytesIn: 1000,
  packetsOut: 20,
  bytesOut: 2000,
  spoofedDropped: 1,
  malformedDropped: 2,
  oversizeDropped: 3,
  ...over,
});

test('status rows show age, last seen and the sum of drops', () => {
  const s: StatusResult = {
    listen: '10.0.0.1:12345/12346',
    tun: 'tunFA',
    enforcement: 'none',
    database: null,
    subnets: [{ subnet: '192.168.28.0/24', gateway: '192.168.28.1', inUse: 2, free: 251 }],
    stats: {},
    sessions: [
      session({}),
      session({
        enclaveIp: '192.168.28.3',
        packetsIn: 0,
        spoofedDropped: 0,
        malformedDropped: 0,
        oversizeDropped: 0,
      }),
    ],
  };
  const lines = renderStatus(s, now);
  assert.match(
    lines.find((l) => l.includes('ENCLAVE IP')) ?? '',
    /AGE +LAST SEEN +PKTS IN\/OUT +BYTES IN\/OUT +DROPS/,
  );
  assert.match(
    lines.find((l) => l.startsWith('192.168.28.2')) ?? '',
    /1h02m +4s ago +10\/20 +1000\/2000 +6\s*$/,
  );
  assert.match(lines.find((l) => l.startsWith('192.168.28.3')) ?? '', /1h02m +- +0\/20 +1000\/2000 +0\s*$/);
});

test('durations', () => {
  assert.deepEqual([0, 59, 60, 185, 3600, 86399, 90000].map(formatDuration), [
    '0s',
    '59s',
    '1m00s',
    '3m05s',
    '1h00m',
    '23h59m',
    '1d01h',
  ]);
});

test('--watch without SECONDS gets the default, with SECONDS keeps it', () => {
  assert.deepEqual(withWatchDefault(['--watch']), ['--watch', '2']);
  assert.deepEqual(withWatchDefault(['--watch', '--json']), ['--watch', '2', '--json']);
  assert.deepEqual(withWatchDefault(['--watch', '5', '--json']), ['--watch', '5', '--json']);
  assert.deepEqual(withWatchDefault(['--watch=7']), ['--watch=7']);
  assert.deepEqual(withWatchDefault(['--control', 'x']), ['--control', 'x']);
});
