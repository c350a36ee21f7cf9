// Sends bounded garbage to DTLS ports: node udp-garbage.js HOST PORT1,PORT2 COUNT SEED
// Random datagrams, truncated/garbled DTLS-looking records and ClientHellos without cookies.
import { createSocket } from 'node:dgram';

const [host = '127.0.0.1', portsText = '12345', countText = '500', seedText = '1'] = process.argv.slice(2);
const ports = portsText.split(',').map(Number);
let seed = Number(seedText) >>> 0 || 1;
const rand = () => {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 0x100000000;
};
const sock = createSocket('udp4');
const count = Number(countText);
let sent = 0;
function datagram(): Buffer {
  const len = Math.floor(rand() * 1400);
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = Math.floor(rand() * 256);
  const kind = rand();
  if (len >= 13 && kind < 0.5) {
    // DTLS 1.2 record header: handshake (22) or app data (23), version fefd, epoch 0/1.
    b[0] = kind < 0.25 ? 22 : 23;
    b[1] = 0xfe;
    b[2] = 0xfd;
    b.writeUInt16BE(kind < 0.1 ? 0 : 1, 3);
    b.writeUInt16BE(Math.min(len - 13, Math.floor(rand() * 2000)), 11);
    if (len > 25 && b[0] === 22) b[13] = 1; // ClientHello without a valid cookie
  }
  return b;
}
function next(): void {
  if (sent >= count) {
    sock.close();
    process.stdout.write(`${JSON.stringify({ sent })}\n`);
    return;
  }
  const port = ports[sent % ports.length] as number;
  sent++;
  sock.send(datagram(), port, host, () => setImmediate(next));
}
next();
