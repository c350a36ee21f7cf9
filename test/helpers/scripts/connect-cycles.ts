// Opens and closes N enclave sessions in a row (no TUN), as SENG clients would:
// node connect-cycles.js GATEWAY PORT CERT KEY GWCERT N. Prints {"ok":n,"failed":m,"ips":[...distinct]}.
import { readFileSync } from 'node:fs';
import { SimEnclave } from '../../../src/sim/enclave.js';

const [gateway = '127.0.0.1', port = '12345', cert = '', key = '', gwCert = '', nText = '10'] =
  process.argv.slice(2);
const opts = {
  gateway,
  port: Number(port),
  certPem: readFileSync(cert, 'utf8'),
  keyPem: readFileSync(key, 'utf8'),
  gatewayCertPem: readFileSync(gwCert, 'utf8'),
};
let ok = 0;
let failed = 0;
const ips = new Set<string>();
for (let i = 0; i < Number(nText); i++) {
  const sim = new SimEnclave(opts);
  const started = performance.now();
  try {
    const a = await sim.connect();
    ips.add(a.ip);
    ok++;
  } catch (err) {
    failed++;
    const ms = Math.round(performance.now() - started);
    process.stderr.write(`cycle ${i}, after ${ms} ms: ${(err as Error).message}\n`);
  }
  await sim.close();
}
process.stdout.write(`${JSON.stringify({ ok, failed, ips: [...ips] })}\n`);
