// For each invalid inner-packet form (test/helpers/packet-forms.ts) opens one enclave session
// (no TUN) and, as raw DTLS records: pings the gateway's enclave-subnet address until it
// answers (the session is active), sends the form, then one more ping (the marker), waits for
// the marker's reply and closes. Every echo request the gateway writes to its TUN device gets
// one reply, so `replies` is what a correct gateway counts as `packetsIn`.
// node raw-records.js GATEWAY PORT CERT KEY GWCERT → one {"form","reason","ip","sent","replies"} line per form.
import { readFileSync } from 'node:fs';
import { SimEnclave } from '../../../src/sim/enclave.js';
import { parseIpv4 } from '../../../src/util/ipv4.js';
import { echoReplySeq, echoRequest, invalidForms } from '../packet-forms.js';

const [gateway = '127.0.0.1', port = '12345', cert = '', key = '', gwCert = ''] = process.argv.slice(2);
const opts = {
  gateway,
  port: Number(port),
  certPem: readFileSync(cert, 'utf8'),
  keyPem: readFileSync(key, 'utf8'),
  gatewayCertPem: readFileSync(gwCert, 'utf8'),
};

/** Resolves true when the reply with sequence `seq` has arrived, false after `ms`. */
function replyTo(answered: Set<number>, sim: SimEnclave, seq: number, ms: number): Promise<boolean> {
  if (answered.has(seq)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const onPacket = () => {
      if (!answered.has(seq)) return;
      clearTimeout(timer);
      sim.off('packet', onPacket);
      resolve(true);
    };
    const timer = setTimeout(() => {
      sim.off('packet', onPacket);
      resolve(false);
    }, ms);
    sim.on('packet', onPacket);
  });
}

for (let i = 0; i < invalidForms(0).length; i++) {
  const sim = new SimEnclave(opts);
  const answered = new Set<number>();
  sim.on('packet', (p: Buffer) => {
    const seq = echoReplySeq(p);
    if (seq !== undefined) answered.add(seq);
  });
  const a = await sim.connect();
  const ip = parseIpv4(a.ip);
  const gw = parseIpv4(a.gateway);
  let seq = 0;
  // Records sent before the gateway finished admitting the enclave are ignored: probe first.
  while (!(await replyTo(answered, sim, seq - 1, 200))) {
    if (seq === 100) throw new Error(`the gateway never answered a ping from ${a.ip}`);
    sim.recv!.send(echoRequest(ip, gw, seq++));
  }
  const form = invalidForms(ip)[i]!;
  const sent = sim.recv!.send(form.packet);
  const marker = seq++;
  sim.recv!.send(echoRequest(ip, gw, marker));
  if (!(await replyTo(answered, sim, marker, 5000))) throw new Error(`no reply to the marker from ${a.ip}`);
  const replies = answered.size;
  process.stdout.write(
    `${JSON.stringify({ form: form.name, reason: form.reason, ip: a.ip, sent, replies })}\n`,
  );
  await sim.close('done');
}
