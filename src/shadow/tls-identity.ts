/**
 * A throwaway self-signed RSA identity for the socket blocker's TLS server, made in
 * memory at start when the admin gives no --cert/--key. Gateways never verify the
 * blocker's certificate (SPEC §6.1, §6.8), so it only has to be well-formed; it replaces
 * the mbedTLS test key the original shipped.
 */
import { generateKeyPairSync, createPublicKey } from 'node:crypto';
import { buildCertificate } from '../attestation/sim.js';
import { oid, seq, set, utf8 } from '../attestation/der.js';
import { toPem } from '../attestation/x509.js';

export interface TlsIdentity {
  certPem: string;
  keyPem: string;
}

export function selfSignedIdentity(commonName = 'seng socket blocker'): TlsIdentity {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const subject = seq(set(seq(oid('2.5.4.3'), utf8(commonName))));
  const spki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  const now = Date.now();
  const der = buildCertificate({
    issuer: subject,
    subject,
    notBefore: new Date(now - 3600_000),
    notAfter: new Date(now + 365 * 86400_000),
    spki,
    extensions: [],
    signingKey: privateKey,
  });
  return { certPem: toPem(der), keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string };
}
