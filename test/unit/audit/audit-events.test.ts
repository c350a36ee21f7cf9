/** Each admission, rejection and session end is one log event naming the session and the enclave. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { formatIpv4 } from '../../../src/util/ipv4.js';
import { cert, harness } from '../../unit/gateway/fakes.js';

function capture() {
  const events: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line) events.push(JSON.parse(line));
      done();
    },
  });
  return { events, logger: pino({ level: 'info' }, stream) };
}

test('audit events: one per admission, rejection and end, each with session id and identity', async () => {
  const { events, logger } = capture();
  const h = harness(undefined, undefined, { logger });
  await h.gateway.start();
  const { ip } = await h.connect(cert.certDer, '10.0.0.7');
  // A second handshake with this certificate from another host binds to no first one.
  const refused = await h.handshake(12346, cert.certDer, '10.0.0.8');
  assert.ok('accept' in refused && !refused.accept);
  await h.gateway.kick({ all: true });
  await new Promise((r) => setImmediate(r));

  const of = (event: string) => events.filter((e) => e.event === event);
  assert.equal(of('admitted').length, 1);
  assert.equal(of('session-end').length, 1);
  assert.equal(of('rejected').length, 1);
  const [admitted, ended, rejected] = [of('admitted')[0]!, of('session-end')[0]!, of('rejected')[0]!];
  const identity = {
    enclaveIp: formatIpv4(ip),
    hostIp: '10.0.0.7',
    app: null,
    mrEnclave: '11'.repeat(32),
    mrSigner: '22'.repeat(32),
  };
  for (const e of [admitted, ended]) {
    assert.match(String(e.sessionId), /^[0-9a-f]{16}$/);
    for (const [k, v] of Object.entries(identity)) assert.equal(e[k], v, `${String(e.event)}.${k}`);
  }
  assert.equal(ended.sessionId, admitted.sessionId, 'one session id from admission to end');
  assert.equal(ended.reason, 'kicked by admin');
  assert.equal(rejected.check, 'send-tunnel');
  assert.equal(rejected.hostIp, '10.0.0.8');
  assert.equal(rejected.mrEnclave, '11'.repeat(32));
  assert.notEqual(rejected.sessionId, admitted.sessionId);
  const status = h.gateway.status();
  assert.equal(status.length, 0);
  await h.gateway.stop();
});
