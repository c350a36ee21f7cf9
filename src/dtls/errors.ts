import { errorMessage } from '../util/errors.js';
import { DtlsError } from './types.js';

const HINTS: Record<string, string> = {
  EDTLS_IDENTITY: 'check that each certPem/keyPem pair is PEM, unencrypted, and belongs together',
  EDTLS_CIPHERS: 'use OpenSSL cipher names such as ECDHE-RSA-AES256-GCM-SHA384',
  EDTLS_CA: 'give the gateway certificate (PEM) to pin',
  EADDRINUSE: 'another process uses this port; pick another one or stop it',
  EADDRNOTAVAIL: 'the address is not configured on this host',
  EACCES: 'binding this port needs privileges',
};

/** A DtlsError from an error the addon threw (which carries a `code`). */
export function nativeError(err: unknown, what: string): DtlsError {
  const code = (err as { code?: unknown }).code;
  const c = typeof code === 'string' ? code : 'EDTLS_NATIVE';
  const hint = HINTS[c];
  return new DtlsError(c, `${what}: ${errorMessage(err)}`, { cause: err, ...(hint ? { hint } : {}) });
}
