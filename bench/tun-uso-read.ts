/**
 * Manual measurement (not part of `npm run bench`): what reading UDP super-packets from the TUN
 * device (TUN_F_USO4, docs/tunnel.md) saves the reader per datagram.
 *
 *   node dist/bench/tun-uso-read.js [--seconds 3] [--rounds 3] [--size 64] [--per-send 32]
 *
 * In a namespace of its own, a child process opens an offload TUN device (10.77.9.1/24) and reads
 * it with the TUN addon, as the gateway's service side does; a python3 sender in the same
 * namespace sends UDP_SEGMENT runs (`--per-send` datagrams of `--size` bytes each) to 10.77.9.2,
 * which routes into the device. Rounds alternate SENG_TUN_USO=1 (the device takes the runs whole)
 * and SENG_TUN_USO=0 (the kernel cuts them before the device: one read per datagram); the figure
 * is the reader's CPU time (user + system, all threads) per datagram read. The sender's CPU is
 * not counted (with USO off the kernel's segmentation runs in the sender's context).
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { cleanupAll, createNetns } from './lib/lab.js';

const SENDER = `
import socket, struct, sys, time
size, per, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(('10.77.9.2', 9))
buf = bytes(i & 0xff for i in range(size * per))
cmsg = [(17, 103, struct.pack('H', size))]
end, sent = time.time() + seconds, 0
while time.time() < end:
    for _ in range(64):
        try:
            s.sendmsg([buf], cmsg)
            sent += per
        except OSError:
            pass
print(sent)
`;

function opt(name: string, dflt: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}

/** In the namespace: open the device, read while the sender runs, report. */
async function child(seconds: number, size: number, perSend: number): Promise<void> {
  const { TunDevice } = await import('../src/tunnel/index.js');
  const dev = await TunDevice.open({ name: 'tunR', mtu: 1432, offload: true, addresses: ['10.77.9.1/24'] });
  let datagrams = 0;
  dev.onPackets((packets) => {
    datagrams += packets.length;
  });
  const cpu0 = process.cpuUsage();
  const s0 = dev.stats();
  const sender = spawn('python3', ['-c', SENDER, String(size), String(perSend), String(seconds)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  sender.stdout.on('data', (d: Buffer) => (out += d.toString()));
  await new Promise((r) => sender.once('exit', r));
  await new Promise((r) => setTimeout(r, 200));
  const cpu = process.cpuUsage(cpu0);
  const s1 = dev.stats();
  await dev.close();
  console.log(
    JSON.stringify({
      uso: s1.uso,
      sent: Number(out.trim()),
      datagrams,
      superPackets: s1.rxGso - s0.rxGso,
      wakeups: s1.rxWakeups - s0.rxWakeups,
      cpuMicros: cpu.user + cpu.system,
    }),
  );
}

async function main(): Promise<void> {
  const seconds = opt('--seconds', 3);
  const rounds = opt('--rounds', 3);
  const size = opt('--size', 64);
  const perSend = opt('--per-send', 32);
  if (process.argv[2] === 'child') return child(seconds, size, perSend);
  const ns = await createNetns('uso');
  try {
    for (let round = 0; round < rounds; round++) {
      for (const uso of ['1', '0']) {
        const c = ns.spawn(
          process.execPath,
          [fileURLToPath(import.meta.url), 'child', ...process.argv.slice(2)],
          {
            env: { SENG_TUN_USO: uso },
            stdio: ['ignore', 'pipe', 'inherit'],
          },
        );
        let out = '';
        c.stdout?.on('data', (d: Buffer) => (out += d.toString()));
        await new Promise((r) => c.once('exit', r));
        const r = JSON.parse(out.trim().split('\n').pop() ?? '{}') as {
          uso: boolean;
          sent: number;
          datagrams: number;
          superPackets: number;
          cpuMicros: number;
        };
        const perDatagram = r.datagrams > 0 ? r.cpuMicros / r.datagrams : NaN;
        console.log(
          `round ${round} USO ${r.uso ? 'on ' : 'off'}: ${r.datagrams} of ${r.sent} datagrams read, ` +
            `${r.superPackets} super-packets, reader ${(perDatagram * 1000).toFixed(0)} ns CPU per datagram`,
        );
      }
    }
  } finally {
    await cleanupAll();
  }
}

await main();
