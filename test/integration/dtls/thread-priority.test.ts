// The forwarding threads (the server's receive thread and a TUN dispatch thread) run at a lower
// nice value than the JavaScript thread when the process may lower it (root / CAP_SYS_NICE), so
// that forwarding wins the CPU over handshakes when it is contended; SENG_FORWARD_NICE sets the
// change (0: off). Checked against the kernel's view of each thread (/proc/self/task/TID/stat).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { DtlsServer } from '../../../src/dtls/index.js';
import { loadAddon } from '../../../src/dtls/native.js';
import { CertDir, type TestIdentity } from '../../fixtures/dtls/certs.js';

let certs: CertDir;
let srv: TestIdentity;

/** The nice value of one of this process's threads, as the kernel reports it. */
function kernelNice(tid: number): number {
  const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
  // Fields after the command name (which may contain spaces): state is field 3, nice field 19.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(rest[19 - 3]);
}

/** Whether this process may lower a nice value (root or CAP_SYS_NICE in the effective set). */
function mayLowerNice(): boolean {
  const status = readFileSync('/proc/self/status', 'utf8');
  const eff = /CapEff:\s*([0-9a-f]+)/.exec(status)?.[1] ?? '0';
  return (BigInt(`0x${eff}`) & (1n << 23n)) !== 0n; // CAP_SYS_NICE = 23
}

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function withForwardNice<T>(value: string | undefined, run: () => Promise<T>): Promise<T> {
  const before = process.env.SENG_FORWARD_NICE;
  if (value === undefined) delete process.env.SENG_FORWARD_NICE;
  else process.env.SENG_FORWARD_NICE = value;
  try {
    return await run();
  } finally {
    if (before === undefined) delete process.env.SENG_FORWARD_NICE;
    else process.env.SENG_FORWARD_NICE = before;
  }
}

/** Starts a server (receive thread) and a dispatch thread, returns their stats once both run. */
async function forwardingThreads(): Promise<{
  recv: { tid: number; nice: number; priorityRaised: boolean };
  dispatch: { tid: number; nice: number; priorityRaised: boolean };
  close: () => Promise<void>;
}> {
  const server = await DtlsServer.listen({
    host: '127.0.0.1',
    port: 0,
    identities: [{ certPem: srv.certPem, keyPem: srv.keyPem }],
    verifyPeer: () => Promise.resolve({ accept: true }),
  });
  const device = loadAddon().openUdp('127.0.0.1', 0, 1 << 16);
  const dispatch = server.dispatchFromTun(device.fd, 1432, 16);
  await until(() => (server.receiveThreadStats()?.tid ?? 0) > 0 && dispatch.stats().tid > 0, 'both threads');
  const r = server.receiveThreadStats()!;
  const d = dispatch.stats();
  return {
    recv: { tid: r.tid, nice: r.nice, priorityRaised: r.priorityRaised },
    dispatch: { tid: d.tid, nice: d.nice, priorityRaised: d.priorityRaised },
    close: async () => {
      dispatch.close();
      loadAddon().closeFd(device.fd);
      await server.close();
    },
  };
}

describe('forwarding thread priority', { timeout: 60_000 }, () => {
  before(() => {
    certs = new CertDir();
    srv = certs.make('prio-srv', 'ec');
  });
  after(() => certs.cleanup());

  it('runs the receive and dispatch threads 10 nice levels below the JavaScript thread when allowed', async () => {
    const jsNice = kernelNice(process.pid);
    const t = await withForwardNice(undefined, forwardingThreads);
    try {
      const expected = Math.max(-20, jsNice - 10);
      for (const [name, th] of Object.entries({ recv: t.recv, dispatch: t.dispatch })) {
        assert.notEqual(th.tid, process.pid, `${name}: a thread of its own`);
        assert.equal(th.nice, kernelNice(th.tid), `${name}: reports the kernel's value`);
        if (mayLowerNice() && jsNice > -20) {
          assert.equal(th.priorityRaised, true, name);
          assert.equal(th.nice, expected, name);
        } else {
          // Without CAP_SYS_NICE only an RLIMIT_NICE that allows it lowers the value; else it stays.
          assert.equal(th.nice, th.priorityRaised ? expected : jsNice, name);
        }
      }
      assert.equal(kernelNice(process.pid), jsNice, 'the JavaScript thread keeps its nice value');
    } finally {
      await t.close();
    }
  });

  it('leaves the threads at the process nice value with SENG_FORWARD_NICE=0', async () => {
    const jsNice = kernelNice(process.pid);
    const t = await withForwardNice('0', forwardingThreads);
    try {
      for (const th of [t.recv, t.dispatch]) {
        assert.equal(th.priorityRaised, false);
        assert.equal(kernelNice(th.tid), jsNice);
      }
    } finally {
      await t.close();
    }
  });
});
