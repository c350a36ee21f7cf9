/**
 * The ShadowServer control service against a real `seng blocker` server on loopback, with
 * an in-memory rule backend: the flows of SPEC §6.4 and the fixes of §6.8 (FAILED and
 * disconnect remove the rules, a correct CloseNotify releases the blocker's port, refusals
 * are explicit DENIED, nothing is installed for an ending enclave).
 */
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { BlockerServer } from '../../../src/shadow/blocker-server.js';
import { ShadowService } from '../../../src/shadow/service.js';
import type { ShadowRule, ShadowRuleBackend } from '../../../src/shadow/rules.js';
import { selfSignedIdentity } from '../../../src/shadow/tls-identity.js';
import {
  FrameReader,
  decodeShadowReply,
  encodeControlMessage,
  encodeListenConfirm,
  frame,
} from '../../../src/shadow/protocol.js';
import { ShadowedListener } from '../../../src/sim/shadow.js';
import { parseIpv4 } from '../../../src/util/ipv4.js';

const LOOPBACK = parseIpv4('127.0.0.1');
const identity = selfSignedIdentity();

class MemoryRules implements ShadowRuleBackend {
  readonly name = 'memory';
  readonly log: string[] = [];
  readonly live = new Set<string>();
  failAdd = false;
  private key = (r: ShadowRule) => `${r.port}/${r.proto}->${r.enclaveIp}`;
  async start(): Promise<void> {
    this.log.push('start');
    this.live.clear();
  }
  async add(r: ShadowRule): Promise<void> {
    if (this.failAdd) throw new Error('nft says no');
    this.log.push(`add ${this.key(r)}`);
    this.live.add(this.key(r));
  }
  async remove(r: ShadowRule): Promise<void> {
    this.log.push(`remove ${this.key(r)}`);
    this.live.delete(this.key(r));
  }
  async stop(): Promise<void> {
    this.log.push('stop');
    this.live.clear();
  }
}

let blocker: BlockerServer;
let service: ShadowService;
let rules: MemoryRules;
let controlPort: number;
let active: boolean;
const purged: (number | undefined)[] = [];

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

beforeEach(async () => {
  blocker = new BlockerServer({
    host: '127.0.0.1',
    port: 0,
    ...identity,
    reserveAddress: '127.0.0.2',
    confirmTimeoutMs: 5000,
  });
  const bound = await blocker.listen();
  rules = new MemoryRules();
  active = true;
  purged.length = 0;
  service = new ShadowService({
    lookup: {
      activeEnclave: (ip) =>
        active && ip === LOOPBACK
          ? {
              enclaveIp: LOOPBACK,
              hostIp: LOOPBACK,
              mrEnclave: Buffer.alloc(32, 1),
              mrSigner: Buffer.alloc(32, 2),
              appName: 'web',
              gatewayIp: LOOPBACK,
            }
          : undefined,
    },
    rules,
    addresses: [LOOPBACK],
    port: 0,
    blockerPort: bound.port,
    stepTimeoutMs: 1000,
    confirmTimeoutMs: 1000,
    purge: async (f) => {
      purged.push(f.port);
      return 0;
    },
  });
  await service.start();
  controlPort = service.boundPorts()[0] as number;
});

afterEach(async () => {
  await service.stop();
  await blocker.close();
});

/** Opens a control connection, sends a request and returns the reply plus the open socket. */
async function ask(
  port: number,
  handle = 600,
): Promise<{ granted: boolean; sock: net.Socket; reader: FrameReader }> {
  const sock = net.connect({ host: '127.0.0.1', port: controlPort });
  sock.on('error', () => undefined);
  const reader = new FrameReader(sock);
  sock.write(frame(encodeControlMessage({ kind: 'request', handle, port, proto: 6 })));
  const granted = decodeShadowReply(await reader.read(128, 5000, 'reply'));
  return { granted, sock, reader };
}

const waitFor = async (fn: () => boolean, ms = 3000): Promise<void> => {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error('condition not met');
    await new Promise((r) => setTimeout(r, 10));
  }
};

test('granted, confirmed, then a close notify removes the rules and releases the blocker', async () => {
  const port = await freePort();
  const app = new ShadowedListener({
    gateway: '127.0.0.1',
    enclaveIp: '127.0.0.1',
    port,
    controlPort,
    handle: 700,
  });
  assert.deepEqual(await app.listen(), { granted: true });
  await waitFor(() => service.list().length === 1 && blocker.reservations()[0]?.state === 'reserved');
  assert.deepEqual(rules.log, ['start', `add ${port}/6->${LOOPBACK}`]);
  assert.equal(service.list()[0]?.state, 'active');
  await app.close();
  await waitFor(() => service.list().length === 0 && blocker.reservations().length === 0);
  assert.deepEqual(rules.log.slice(2), [`remove ${port}/6->${LOOPBACK}`]);
  assert.deepEqual(purged, [port]);
});

test('a FAILED confirmation removes the rules and the reservation (the original kept the rule)', async () => {
  const port = await freePort();
  const { granted, sock } = await ask(port);
  assert.equal(granted, true);
  sock.end(frame(encodeListenConfirm(false)));
  await waitFor(
    () => rules.live.size === 0 && service.list().length === 0 && blocker.reservations().length === 0,
  );
  assert.deepEqual(rules.log.slice(1), [`add ${port}/6->${LOOPBACK}`, `remove ${port}/6->${LOOPBACK}`]);
});

test('no confirmation within the deadline counts as FAILED', async () => {
  const port = await freePort();
  const { granted } = await ask(port);
  assert.equal(granted, true);
  await waitFor(() => rules.live.size === 0 && blocker.reservations().length === 0, 4000);
});

test('an enclave ending mid-transaction: enclaveEnding resolves only once its rules are gone', async () => {
  const port = await freePort();
  const { granted } = await ask(port);
  assert.equal(granted, true);
  assert.equal(rules.live.size, 1);
  await service.enclaveEnding(LOOPBACK);
  assert.equal(rules.live.size, 0, 'a rule survived enclaveEnding');
  await waitFor(() => blocker.reservations().length === 0);
});

test('enclaveEnding removes committed shadows and tells the blocker', async () => {
  const port = await freePort();
  const { sock } = await ask(port);
  sock.end(frame(encodeListenConfirm(true)));
  await waitFor(
    () => service.list()[0]?.state === 'active' && blocker.reservations()[0]?.state === 'reserved',
  );
  await service.enclaveEnding(LOOPBACK);
  assert.equal(rules.live.size, 0);
  await waitFor(() => blocker.reservations().length === 0 && service.list().length === 0);
});

test('refusals are explicit DENIED: already shadowed, blocker IN_USE, rule install failure', async () => {
  const port = await freePort();
  const first = await ask(port, 600);
  assert.equal(first.granted, true);
  const dup = await ask(port, 601);
  assert.equal(dup.granted, false, 'the same host port twice');
  first.sock.end(frame(encodeListenConfirm(true)));
  await waitFor(() => service.list()[0]?.state === 'active');

  const busy = await freePort();
  const squatter = net.createServer();
  await new Promise<void>((r) => squatter.listen(busy, '0.0.0.0', () => r()));
  const inUse = await ask(busy, 602);
  assert.equal(inUse.granted, false, 'port in use on the host');
  squatter.close();

  rules.failAdd = true;
  const other = await freePort();
  const failed = await ask(other, 603);
  assert.equal(failed.granted, false, 'rule install failure');
  await waitFor(() => blocker.reservations().length === 1); // only the first one
  assert.equal(rules.live.size, 1);
});

test('a source that is no active enclave gets no answer and installs nothing', async () => {
  active = false;
  const sock = net.connect({ host: '127.0.0.1', port: controlPort });
  sock.on('error', () => undefined);
  const reader = new FrameReader(sock);
  sock.write(frame(encodeControlMessage({ kind: 'request', handle: 1, port: 4711, proto: 6 })));
  await assert.rejects(reader.read(128, 2000, 'reply'), /closed before/);
  assert.deepEqual(rules.log, ['start']);
});

test('shutdown removes every shadow, releases the blocker and drops the rule set', async () => {
  const port = await freePort();
  const { sock } = await ask(port);
  sock.end(frame(encodeListenConfirm(true)));
  await waitFor(
    () => service.list()[0]?.state === 'active' && blocker.reservations()[0]?.state === 'reserved',
  );
  await service.stop();
  assert.deepEqual(rules.log.slice(-2), [`remove ${port}/6->${LOOPBACK}`, 'stop']);
  assert.equal(blocker.reservations().length, 0);
});

test('enclaveEnding aborts a transaction stuck on a silent blocker instead of waiting out its deadline', async () => {
  const silent = net.createServer((s) => s.on('error', () => undefined));
  const contacted = new Promise<void>((r) => silent.once('connection', () => r()));
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
  const slowRules = new MemoryRules();
  const slow = new ShadowService({
    lookup: {
      activeEnclave: (ip) =>
        ip === LOOPBACK
          ? {
              enclaveIp: LOOPBACK,
              hostIp: LOOPBACK,
              mrEnclave: Buffer.alloc(32, 1),
              mrSigner: Buffer.alloc(32, 2),
              appName: undefined,
              gatewayIp: LOOPBACK,
            }
          : undefined,
    },
    rules: slowRules,
    addresses: [LOOPBACK],
    port: 0,
    blockerPort: (silent.address() as net.AddressInfo).port,
    // Far longer than the test may take: only the abort can end the transaction in time.
    stepTimeoutMs: 120_000,
    purge: async () => 0,
  });
  await slow.start();
  try {
    const sock = net.connect({ host: '127.0.0.1', port: slow.boundPorts()[0] as number });
    sock.on('error', () => undefined);
    sock.write(frame(encodeControlMessage({ kind: 'request', handle: 9, port: 4999, proto: 6 })));
    await contacted;
    const outcome = await Promise.race([
      slow.enclaveEnding(LOOPBACK).then(() => 'ended'),
      new Promise((r) => setTimeout(() => r('stuck'), 10_000).unref()),
    ]);
    assert.equal(outcome, 'ended');
    assert.deepEqual(slowRules.log, ['start']);
    assert.equal(slow.list().length, 0);
  } finally {
    await slow.stop();
    silent.close();
  }
});

test('one enclave cannot hold more than 8 control connections at once', async () => {
  const socks = Array.from({ length: 9 }, () => {
    const s = net.connect({ host: '127.0.0.1', port: controlPort });
    s.on('error', () => undefined);
    return { s, reader: new FrameReader(s) };
  });
  const results = await Promise.all(
    socks.map(({ reader }) =>
      reader.read(128, 5000, 'reply').then(
        (b) => b.toString('hex'),
        (e: Error) => (/closed before/.test(e.message) ? 'closed' : e.message),
      ),
    ),
  );
  // Silent connections: eight are served (DENIED at their read deadline), one is cut off.
  assert.equal(results.filter((r) => r === '0800').length, 8);
  assert.equal(results.filter((r) => r === 'closed').length, 1);
  for (const { s } of socks) s.destroy();
});
