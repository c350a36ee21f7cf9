/**
 * Glue between the gateway's observer hooks and the audit parts: one observer that feeds
 * several, and the one that turns admissions and session ends into lease-history records.
 */
import type { GatewayObserver } from '../gateway/context.js';
import { auditIdentity } from '../gateway/enclave.js';
import type { LeaseRecorder } from './lease-store.js';

/** Calls every observer in turn; one that throws does not keep the others from their turn. */
export function fanOut(observers: readonly GatewayObserver[]): GatewayObserver {
  const each = <K extends keyof GatewayObserver>(key: K) =>
    ((...args: unknown[]) => {
      for (const o of observers) {
        try {
          (o[key] as ((...a: unknown[]) => void) | undefined)?.(...args);
        } catch {
          // Observability must never break admission or teardown.
        }
      }
    }) as NonNullable<GatewayObserver[K]>;
  return {
    rejected: each('rejected'),
    admitted: each('admitted'),
    ended: each('ended'),
    enforcement: each('enforcement'),
  };
}

/** Records a lease from the IP assignment of every admitted session to its end. */
export function leaseObserver(recorder: LeaseRecorder, gateway: string): GatewayObserver {
  return {
    admitted: (e) => {
      const id = auditIdentity(e);
      recorder.begin({
        sessionId: e.sessionId,
        gateway,
        enclaveIp: id.enclaveIp as string,
        hostIp: e.clientAddress,
        app: e.appName ?? null,
        mrEnclave: id.mrEnclave as string,
        mrSigner: id.mrSigner as string,
        startMs: e.since.getTime(),
      });
    },
    ended: (e, reason, wasActive) => {
      if (wasActive) recorder.end(e.sessionId, Date.now(), reason);
    },
  };
}
