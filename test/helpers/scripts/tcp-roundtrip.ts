// TCP client for namespace tests: node tcp-roundtrip.js HOST PORT BYTES
// Sends BYTES random bytes, reads the echo, prints {"sent":sha256,"received":sha256,"bytes":n}.
import { connect } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';

const [host = '127.0.0.1', portText = '7000', bytesText = '1048576', timeoutText = '20000'] =
  process.argv.slice(2);
const payload = randomBytes(Number(bytesText));
const chunks: Buffer[] = [];
let received = 0;
const sock = connect(Number(portText), host, () => {
  sock.write(payload);
});
sock.setTimeout(Number(timeoutText), () => {
  process.stderr.write(`timeout after ${received} bytes\n`);
  process.exit(2);
});
sock.on('data', (d: Buffer) => {
  chunks.push(d);
  received += d.length;
  if (received >= payload.length) {
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    process.stdout.write(
      `${JSON.stringify({ sent: sha(payload), received: sha(Buffer.concat(chunks)), bytes: received })}\n`,
    );
    sock.destroy();
  }
});
sock.on('error', (err) => {
  process.stderr.write(`${err.message}\n`);
  process.exit(1);
});
