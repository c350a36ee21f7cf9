/**
 * Child process of SimShadowProcess (src/sim/shadow.ts), started inside the simulated
 * enclave's network namespace: `node shadow-runner.js GATEWAY ENCLAVE_IP PORT...`. Prints
 * one JSON ShadowEvent line per port; on SIGTERM/SIGINT closes every granted listener
 * (close notify first) and exits.
 */
import { ShadowedListener, type ShadowEvent } from './shadow.js';

async function main(): Promise<void> {
  const [gateway, enclaveIp, ...ports] = process.argv.slice(2);
  if (!gateway || !enclaveIp || ports.length === 0) {
    process.stderr.write('usage: shadow-runner GATEWAY ENCLAVE_IP PORT...\n');
    process.exit(2);
  }
  const granted: ShadowedListener[] = [];
  let stopping = false;
  const stop = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    await Promise.all(granted.map((l) => l.close()));
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
  for (const p of ports) {
    const port = Number(p);
    const listener = new ShadowedListener({ gateway, enclaveIp, port });
    const outcome = await listener.listen();
    if (outcome.granted) granted.push(listener);
    const e: ShadowEvent = {
      event: 'shadow',
      port,
      granted: outcome.granted,
      ...(outcome.granted ? {} : { reason: outcome.reason }),
    };
    process.stdout.write(`${JSON.stringify(e)}\n`);
  }
  // Keep serving until signalled.
  setInterval(() => undefined, 1 << 30);
}

void main();
