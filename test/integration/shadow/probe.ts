// ShadowServer probe for namespace tests:
//   node probe.js HOST PORT LOCAL_ADDRESS|- HEX_PAYLOAD [TIMEOUT_MS]
// Connects (from LOCAL_ADDRESS), writes the payload, and prints
// {"received":"<hex>","closedByPeer":bool} once the peer closes or the timeout passes.
import { connect } from 'node:net';

const [host = '', port = '2409', local = '-', payload = '', timeoutText = '10000'] = process.argv.slice(2);
const chunks: Buffer[] = [];
let done = false;
const finish = (closedByPeer: boolean): void => {
  if (done) return;
  done = true;
  process.stdout.write(
    `${JSON.stringify({ received: Buffer.concat(chunks).toString('hex'), closedByPeer })}\n`,
  );
  process.exit(0);
};
const sock = connect({ host, port: Number(port), ...(local === '-' ? {} : { localAddress: local }) }, () => {
  if (payload) sock.write(Buffer.from(payload, 'hex'));
});
sock.on('data', (d: Buffer) => chunks.push(d));
sock.on('end', () => finish(true));
sock.on('close', () => finish(true));
sock.on('error', () => finish(true));
setTimeout(() => finish(false), Number(timeoutText));
