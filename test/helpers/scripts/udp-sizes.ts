// UDP echo check for namespace tests.
//   node udp-sizes.js serve PORT                 echoes every datagram; prints "listening"
//   node udp-sizes.js send HOST PORT SIZE...     sends one datagram of each payload SIZE (each
//     numbered, random content), up to 3 tries for lost ones, and prints
//     {"sent":n,"echoed":n,"corrupt":n,"lost":[sizes]}; an echo must be byte-identical.
import { createSocket } from 'node:dgram';
import { randomBytes } from 'node:crypto';

const [mode, ...rest] = process.argv.slice(2);

if (mode === 'serve') {
  const sock = createSocket('udp4');
  sock.on('message', (msg, rinfo) => sock.send(msg, rinfo.port, rinfo.address));
  sock.bind(Number(rest[0] ?? 7100), '0.0.0.0', () => process.stdout.write('listening\n'));
  process.on('SIGTERM', () => sock.close(() => process.exit(0)));
} else if (mode === 'send') {
  const [host = '127.0.0.1', portText = '7100', ...sizeTexts] = rest;
  const port = Number(portText);
  const sizes = sizeTexts.map(Number);
  // Each payload starts with its index (4 bytes), so a size of at least 4 is needed.
  const payloads = sizes.map((n, i) => {
    const p = randomBytes(Math.max(4, n));
    p.writeUInt32BE(i, 0);
    return p;
  });
  const pending = new Set(payloads.map((_, i) => i));
  let corrupt = 0;
  const sock = createSocket('udp4');
  sock.on('message', (msg) => {
    if (msg.length < 4) return;
    const i = msg.readUInt32BE(0);
    if (!pending.has(i)) return;
    if (!msg.equals(payloads[i]!)) corrupt++;
    pending.delete(i);
  });
  const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const run = async () => {
    for (let attempt = 0; attempt < 3 && pending.size > 0; attempt++) {
      let inFlight = 0;
      for (const i of [...pending]) {
        sock.send(payloads[i]!, port, host);
        // A window of 32 datagrams, so socket buffers never overflow by themselves.
        if (++inFlight % 32 === 0) await pause(20);
      }
      for (let waited = 0; waited < 2000 && pending.size > 0; waited += 50) await pause(50);
    }
    const lost = [...pending].map((i) => payloads[i]!.length);
    process.stdout.write(
      `${JSON.stringify({ sent: payloads.length, echoed: payloads.length - pending.size, corrupt, lost })}\n`,
    );
    sock.close();
  };
  sock.bind(0, () => void run());
} else {
  process.stderr.write('usage: udp-sizes.js serve PORT | send HOST PORT SIZE...\n');
  process.exit(2);
}
