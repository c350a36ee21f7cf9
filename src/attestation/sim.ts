/**
 * Test attestation authority (simulation only; never production trust).
 *
 * `createSimCa` makes a test IAS root with a report-signing key, and a test SGX root with a
 * PCK CA, one PCK certificate (with Intel's SGX extension, marked critical like Intel's) and a
 * TCB-signing certificate. `createSimCertificate` then makes RA-TLS certificates laid out like
 * real clients' (SPEC §2): EPID with an IAS report signed by the test IAS key, or DCAP with a
 * v3 quote whose QE report is signed by the test PCK key, plus signed TCB info and QE identity.
 * The verifier accepts these only when pointed at the test roots.
 */
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  sign as cryptoSign,
  type KeyObject,
} from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import {
  bitString,
  boolean,
  explicit,
  integer,
  nullValue,
  octets,
  oid,
  seq,
  set,
  time,
  tlv,
  utf8,
  TAG,
} from './der.js';
import { SimAuthorityError } from './errors.js';
import { OID } from './evidence.js';
import { OID_SGX_EXTENSIONS } from './collateral.js';
import { DCAP_TCB_STATUSES, EPID_QUOTE_STATUSES } from './policy.js';
import {
  ATTRIBUTE_DEBUG,
  ATTRIBUTE_INIT,
  ATTRIBUTE_MODE64BIT,
  INTEL_QE_VENDOR_ID,
  QUOTE_BODY_SIZE,
  REPORT_BODY_SIZE,
} from './quote.js';
import { parseCertificate, pemCertificates, toPem } from './x509.js';

export const SIM_CA_FILES = {
  manifest: 'manifest.json',
  iasRoot: 'ias-root.pem',
  iasRootKey: 'ias-root.key.pem',
  iasSigning: 'ias-signing.pem',
  iasSigningKey: 'ias-signing.key.pem',
  sgxRoot: 'sgx-root.pem',
  sgxRootKey: 'sgx-root.key.pem',
  pckCa: 'sgx-pck-ca.pem',
  pckCaKey: 'sgx-pck-ca.key.pem',
  pck: 'sgx-pck.pem',
  pckKey: 'sgx-pck.key.pem',
  tcbSigning: 'sgx-tcb-signing.pem',
  tcbSigningKey: 'sgx-tcb-signing.key.pem',
} as const;

const MANIFEST_FORMAT = 'seng-sim-ca/1';

interface CertAndKey {
  der: Buffer;
  pem: string;
  key?: KeyObject;
}

export interface SimCa {
  dir: string | undefined;
  iasRoot: Required<CertAndKey>;
  iasSigning: Required<CertAndKey>;
  sgxRoot: Required<CertAndKey>;
  pckCa: Required<CertAndKey>;
  pck: Required<CertAndKey>;
  tcbSigning: Required<CertAndKey>;
  platform: { fmspc: string; pceId: string; tcbComponents: number[]; pceSvn: number; cpuSvn: string };
  qe: { mrEnclave: string; mrSigner: string; isvProdId: number; isvSvn: number };
}

// ----------------------------------------------------------------------------- certificates

type NameSpec = [attr: 'C' | 'O' | 'OU' | 'CN', value: string][];
const ATTR_OIDS = { C: '2.5.4.6', O: '2.5.4.10', OU: '2.5.4.11', CN: '2.5.4.3' };

function name(spec: NameSpec): Buffer {
  return seq(
    ...spec.map(([a, v]) =>
      set(seq(oid(ATTR_OIDS[a]), a === 'C' ? tlv(TAG.PRINTABLE_STRING, Buffer.from(v)) : utf8(v))),
    ),
  );
}

const TEST_ORG = 'SENG TEST attestation authority - NOT FOR PRODUCTION';

export interface ExtensionSpec {
  oid: string;
  critical: boolean;
  value: Buffer;
  /** Encode `critical FALSE` explicitly (some libraries do; DER omits the default). */
  explicitNonCritical?: boolean;
}

function encodeExtension(e: ExtensionSpec): Buffer {
  const crit = e.critical ? boolean(true) : e.explicitNonCritical ? boolean(false) : Buffer.alloc(0);
  return seq(oid(e.oid), crit, octets(e.value));
}

function keyUsage(bits: number[]): Buffer {
  let v = 0;
  for (const b of bits) v |= 0x80 >> b;
  let unused = 0;
  while (unused < 7 && (v & (1 << unused)) === 0) unused++;
  return tlv(TAG.BIT_STRING, Buffer.from([unused, v]));
}

function signatureAlgorithm(key: KeyObject): { alg: Buffer } {
  if (key.asymmetricKeyType === 'rsa') return { alg: seq(oid('1.2.840.113549.1.1.11'), nullValue()) };
  if (key.asymmetricKeyType === 'ec') return { alg: seq(oid('1.2.840.10045.4.3.2')) };
  throw new SimAuthorityError(`unsupported signing key type ${key.asymmetricKeyType}`);
}

export interface CertificateSpec {
  serial?: Buffer;
  issuer: Buffer;
  subject: Buffer;
  notBefore: Date;
  notAfter: Date;
  /** DER SubjectPublicKeyInfo. */
  spki: Buffer;
  extensions: ExtensionSpec[];
  signingKey: KeyObject;
}

/** Builds and signs an X.509 v3 certificate (sha256WithRSA or ecdsa-with-SHA256 by key type). */
export function buildCertificate(spec: CertificateSpec): Buffer {
  const { alg } = signatureAlgorithm(spec.signingKey);
  const serial = spec.serial ?? randomBytes(16);
  serial[0] = (serial[0]! & 0x7f) | 0x01;
  const tbs = seq(
    explicit(0, integer(2)),
    integer(serial),
    alg,
    spec.issuer,
    seq(time(spec.notBefore), time(spec.notAfter)),
    spec.subject,
    spec.spki,
    ...(spec.extensions.length ? [explicit(3, seq(...spec.extensions.map(encodeExtension)))] : []),
  );
  const signature = cryptoSign('sha256', tbs, spec.signingKey);
  return seq(tbs, alg, bitString(signature));
}

function spkiOf(key: KeyObject): Buffer {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  return pub.export({ type: 'spki', format: 'der' });
}

function keyId(spki: Buffer): Buffer {
  return createHash('sha1').update(spkiBits(spki)).digest();
}

function caExtensions(spki: Buffer, issuerSpki: Buffer, pathLen?: number): ExtensionSpec[] {
  return [
    {
      oid: '2.5.29.19',
      critical: true,
      value: seq(boolean(true), ...(pathLen === undefined ? [] : [integer(pathLen)])),
    },
    { oid: '2.5.29.15', critical: true, value: keyUsage([5, 6]) },
    { oid: '2.5.29.14', critical: false, value: octets(keyId(spki)) },
    { oid: '2.5.29.35', critical: false, value: seq(tlv(0x80, keyId(issuerSpki))) },
  ];
}

function leafExtensions(spki: Buffer, issuerSpki: Buffer): ExtensionSpec[] {
  return [
    { oid: '2.5.29.19', critical: true, value: seq() },
    { oid: '2.5.29.15', critical: true, value: keyUsage([0, 1]) },
    { oid: '2.5.29.14', critical: false, value: octets(keyId(spki)) },
    { oid: '2.5.29.35', critical: false, value: seq(tlv(0x80, keyId(issuerSpki))) },
  ];
}

function sgxExtension(p: SimCa['platform']): Buffer {
  const item = (n: string, v: Buffer) => seq(oid(`${OID_SGX_EXTENSIONS}.${n}`), v);
  const tcb = seq(
    ...p.tcbComponents.map((svn, i) => item(`2.${i + 1}`, integer(svn))),
    item('2.17', integer(p.pceSvn)),
    item('2.18', octets(Buffer.from(p.cpuSvn, 'hex'))),
  );
  return seq(
    item('1', octets(createHash('sha256').update('seng-sim-ppid').digest().subarray(0, 16))),
    item('2', tcb),
    item('3', octets(Buffer.from(p.pceId, 'hex'))),
    item('4', octets(Buffer.from(p.fmspc, 'hex'))),
    item('5', tlv(TAG.ENUMERATED, Buffer.from([0]))),
  );
}

const CA_NOT_BEFORE = new Date('2016-01-01T00:00:00Z');

function issue(
  subjectCn: string,
  key: KeyObject,
  issuer: { name: Buffer; key: KeyObject; spki: Buffer } | 'self',
  extensions: (spki: Buffer, issuerSpki: Buffer) => ExtensionSpec[],
  years: number,
): CertAndKey & { name: Buffer; spki: Buffer } {
  const subject = name([
    ['C', 'XX'],
    ['O', TEST_ORG],
    ['CN', subjectCn],
  ]);
  const spki = spkiOf(key);
  const iss = issuer === 'self' ? { name: subject, key, spki } : issuer;
  const notAfter = new Date(Date.now() + years * 365 * 86400_000);
  const der = buildCertificate({
    issuer: iss.name,
    subject,
    notBefore: CA_NOT_BEFORE,
    notAfter,
    spki,
    extensions: extensions(spki, iss.spki),
    signingKey: iss.key,
  });
  return { der, pem: toPem(der), name: subject, spki };
}

function keyPem(key: KeyObject): string {
  return key.export({ type: 'pkcs8', format: 'pem' }) as string;
}

/** Creates a new test authority; writes it to `dir` when given (refuses to overwrite one unless `force`). */
export function createSimCa(dir?: string, options: { force?: boolean } = {}): SimCa {
  if (dir && existsSync(join(dir, SIM_CA_FILES.manifest)) && !options.force) {
    throw new SimAuthorityError(
      `${dir} already holds a test authority`,
      'Use another directory, or --force to replace it.',
    );
  }
  // Before generating keys: a bad directory should fail at once.
  if (dir) prepareCaDirectory(dir);
  const rsa = (bits: number) => generateKeyPairSync('rsa', { modulusLength: bits }).privateKey;
  const ec = () => generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;

  const iasRootKey = rsa(3072);
  const iasRoot = issue(
    'SENG TEST IAS Report Signing CA',
    iasRootKey,
    'self',
    (s, i) => caExtensions(s, i),
    30,
  );
  const iasSigningKey = rsa(2048);
  const iasSigning = issue(
    'SENG TEST IAS Report Signing',
    iasSigningKey,
    { name: iasRoot.name, key: iasRootKey, spki: iasRoot.spki },
    leafExtensions,
    30,
  );

  const rootKey = ec();
  const sgxRoot = issue('SENG TEST SGX Root CA', rootKey, 'self', (s, i) => caExtensions(s, i, 1), 30);
  const rootIssuer = { name: sgxRoot.name, key: rootKey, spki: sgxRoot.spki };
  const pckCaKey = ec();
  const pckCa = issue(
    'SENG TEST SGX PCK Processor CA',
    pckCaKey,
    rootIssuer,
    (s, i) => caExtensions(s, i, 0),
    30,
  );
  const platform: SimCa['platform'] = {
    fmspc: '00906ea10000',
    pceId: '0000',
    tcbComponents: [4, 4, 3, 3, 255, 255, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    pceSvn: 11,
    cpuSvn: '0404030300ffff000000000000000000'.slice(0, 32),
  };
  const pckKey = ec();
  const pck = issue(
    'SENG TEST SGX PCK Certificate',
    pckKey,
    { name: pckCa.name, key: pckCaKey, spki: pckCa.spki },
    (s, i) => [
      ...leafExtensions(s, i),
      { oid: OID_SGX_EXTENSIONS, critical: true, value: sgxExtension(platform) },
    ],
    30,
  );
  const tcbKey = ec();
  const tcbSigning = issue('SENG TEST SGX TCB Signing', tcbKey, rootIssuer, leafExtensions, 30);

  const ca: SimCa = {
    dir,
    iasRoot: { der: iasRoot.der, pem: iasRoot.pem, key: iasRootKey },
    iasSigning: { der: iasSigning.der, pem: iasSigning.pem, key: iasSigningKey },
    sgxRoot: { der: sgxRoot.der, pem: sgxRoot.pem, key: rootKey },
    pckCa: { der: pckCa.der, pem: pckCa.pem, key: pckCaKey },
    pck: { der: pck.der, pem: pck.pem, key: pckKey },
    tcbSigning: { der: tcbSigning.der, pem: tcbSigning.pem, key: tcbKey },
    platform,
    qe: {
      mrEnclave: createHash('sha256').update('seng-sim-quoting-enclave').digest('hex'),
      mrSigner: createHash('sha256').update('seng-sim-quoting-enclave-signer').digest('hex'),
      isvProdId: 1,
      isvSvn: 8,
    },
  };
  if (dir) writeSimCa(ca, dir);
  return ca;
}

/**
 * Makes `dir` (only its last component: a recursive mkdir under /proc or /sys never ends) or
 * checks that an existing `dir` is a directory.
 */
function prepareCaDirectory(dir: string): void {
  const parent = dirname(resolve(dir));
  const hint = 'Give --out a new or empty directory whose parent exists and is writable.';
  let st;
  try {
    st = statSync(parent);
  } catch (e) {
    throw new SimAuthorityError(
      `cannot create ${dir}: its parent directory ${parent} does not exist (${(e as NodeJS.ErrnoException).code ?? ''})`,
      `Create ${parent} first, or ${hint.charAt(0).toLowerCase()}${hint.slice(1)}`,
      e,
    );
  }
  if (!st.isDirectory())
    throw new SimAuthorityError(`cannot create ${dir}: ${parent} is not a directory`, hint);
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EEXIST')
      throw new SimAuthorityError(
        `cannot create the directory ${dir}: ${code ?? (e as Error).message}`,
        hint,
        e,
      );
    if (!statSync(dir).isDirectory())
      throw new SimAuthorityError(`${dir} exists and is not a directory`, hint);
  }
}

function writeSimCa(ca: SimCa, dir: string): void {
  try {
    const w = (file: string, text: string, mode = 0o644) => writeFileSync(join(dir, file), text, { mode });
    w(SIM_CA_FILES.iasRoot, ca.iasRoot.pem);
    w(SIM_CA_FILES.iasRootKey, keyPem(ca.iasRoot.key), 0o600);
    w(SIM_CA_FILES.iasSigning, ca.iasSigning.pem);
    w(SIM_CA_FILES.iasSigningKey, keyPem(ca.iasSigning.key), 0o600);
    w(SIM_CA_FILES.sgxRoot, ca.sgxRoot.pem);
    w(SIM_CA_FILES.sgxRootKey, keyPem(ca.sgxRoot.key), 0o600);
    w(SIM_CA_FILES.pckCa, ca.pckCa.pem);
    w(SIM_CA_FILES.pckCaKey, keyPem(ca.pckCa.key), 0o600);
    w(SIM_CA_FILES.pck, ca.pck.pem);
    w(SIM_CA_FILES.pckKey, keyPem(ca.pck.key), 0o600);
    w(SIM_CA_FILES.tcbSigning, ca.tcbSigning.pem);
    w(SIM_CA_FILES.tcbSigningKey, keyPem(ca.tcbSigning.key), 0o600);
    const manifest = {
      format: MANIFEST_FORMAT,
      warning:
        'TEST attestation authority for simulation only. Never configure these roots on a production gateway.',
      created: new Date().toISOString(),
      files: SIM_CA_FILES,
      trustAnchors: { ias: SIM_CA_FILES.iasRoot, sgx: SIM_CA_FILES.sgxRoot },
      platform: ca.platform,
      qe: ca.qe,
    };
    w(SIM_CA_FILES.manifest, `${JSON.stringify(manifest, null, 2)}\n`);
  } catch (e) {
    throw new SimAuthorityError(
      `cannot write the test authority to ${dir}: ${(e as Error).message}`,
      undefined,
      e,
    );
  }
}

/** Loads a test authority written by `createSimCa`. */
export function loadSimCa(dir: string): SimCa {
  const read = (file: string) => {
    try {
      return readFileSync(join(dir, file), 'utf8');
    } catch (e) {
      throw new SimAuthorityError(
        `${join(dir, file)} is missing or unreadable (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
        'Create a test authority with `seng sim ca --out DIR`.',
        e,
      );
    }
  };
  let manifest: { format?: unknown; platform?: SimCa['platform']; qe?: SimCa['qe'] };
  try {
    manifest = JSON.parse(read(SIM_CA_FILES.manifest)) as typeof manifest;
  } catch (e) {
    if (e instanceof SimAuthorityError) throw e;
    throw new SimAuthorityError(`${join(dir, SIM_CA_FILES.manifest)} is not valid JSON`, undefined, e);
  }
  if (manifest.format !== MANIFEST_FORMAT || !manifest.platform || !manifest.qe) {
    throw new SimAuthorityError(
      `${dir} is not a seng test authority (manifest format ${String(manifest.format)})`,
    );
  }
  const cert = (file: string): CertAndKey => {
    const pem = read(file);
    const der = pemCertificates(pem)[0];
    if (!der) throw new SimAuthorityError(`${join(dir, file)} holds no certificate`);
    try {
      parseCertificate(der);
    } catch (e) {
      throw new SimAuthorityError(`${join(dir, file)} is not a valid certificate`, undefined, e);
    }
    return { der, pem };
  };
  const key = (file: string): KeyObject => {
    try {
      return createPrivateKey(read(file));
    } catch (e) {
      if (e instanceof SimAuthorityError) throw e;
      throw new SimAuthorityError(`${join(dir, file)} is not a valid private key`, undefined, e);
    }
  };
  return {
    dir,
    iasRoot: { ...cert(SIM_CA_FILES.iasRoot), key: key(SIM_CA_FILES.iasRootKey) },
    iasSigning: { ...cert(SIM_CA_FILES.iasSigning), key: key(SIM_CA_FILES.iasSigningKey) },
    sgxRoot: { ...cert(SIM_CA_FILES.sgxRoot), key: key(SIM_CA_FILES.sgxRootKey) },
    pckCa: { ...cert(SIM_CA_FILES.pckCa), key: key(SIM_CA_FILES.pckCaKey) },
    pck: { ...cert(SIM_CA_FILES.pck), key: key(SIM_CA_FILES.pckKey) },
    tcbSigning: { ...cert(SIM_CA_FILES.tcbSigning), key: key(SIM_CA_FILES.tcbSigningKey) },
    platform: manifest.platform,
    qe: manifest.qe,
  };
}

// ----------------------------------------------------------------------------- RA-TLS certificates

export type SimKeyType = 'rsa3072' | 'p256';

export interface SimCertificateOptions {
  kind: 'epid' | 'dcap';
  mrEnclave: Buffer | string;
  mrSigner: Buffer | string;
  debug?: boolean;
  isvProdId?: number;
  isvSvn?: number;
  /** EPID: the IAS quote status (default OK). DCAP: the TCB status of the platform's TCB level (default UpToDate). */
  status?: string;
  keyType?: SimKeyType;
  /** Reuse this key instead of generating one (RSA key generation is slow). */
  privateKey?: KeyObject;
  /** EPID extension value form: bytes as-is (sgx-ra-tls, default) or base64 (Go-era clients). */
  encoding?: 'raw' | 'base64';
  /** EPID: the IAS report timestamp (default: now). */
  reportTimestamp?: Date;
  /** EPID: also carry the full quote in extension .6. */
  includeQuote?: boolean;
  /** DCAP: also carry the PCK certificate and its chain in extensions .7/.8, as sgx-ra-tls does (default true). */
  pckExtensions?: boolean;
  /** DCAP: include a root CA CRL (.12) and a PCK CRL (.13), both revoking nothing (default true). */
  crls?: boolean;
  /** DCAP: include TCB info, its signing chain and QE identity (default true). */
  collateral?: boolean;
  /** Encode the extensions' criticality FALSE explicitly instead of omitting it. */
  explicitNonCritical?: boolean;
  /** Certificate subject CN (default "SENG simulated enclave"). */
  commonName?: string;
}

export interface SimCertificate {
  certDer: Buffer;
  certPem: string;
  keyPem: string;
  privateKey: KeyObject;
  /** The extension values placed in the certificate, in order. */
  extensions: ExtensionSpec[];
}

function measurement(v: Buffer | string, what: string): Buffer {
  const b = Buffer.isBuffer(v) ? v : /^[0-9a-fA-F]{64}$/.test(v) ? Buffer.from(v, 'hex') : undefined;
  if (!b || b.length !== 32)
    throw new SimAuthorityError(
      `${what} must be 32 bytes (64 hex digits), got ${Buffer.isBuffer(v) ? `${v.length} bytes` : `"${v}"`}`,
      `Give ${what} as 64 hex digits, e.g. $(openssl rand -hex 32).`,
    );
  return b;
}

function u16(v: number | undefined, what: string, dflt: number): number {
  const n = v ?? dflt;
  if (!Number.isInteger(n) || n < 0 || n > 0xffff)
    throw new SimAuthorityError(`${what} must be 0…65535, got ${String(v)}`);
  return n;
}

/** SHA-256 of the subjectPublicKey BIT STRING contents of a private key's public half. */
export function publicKeyBindingHash(key: KeyObject): Buffer {
  const spki = spkiOf(key);
  // The public key is the SPKI's trailing BIT STRING; its contents (after the unused-bits byte) are hashed.
  const cert = spkiBits(spki);
  return createHash('sha256').update(cert).digest();
}

function spkiBits(spki: Buffer): Buffer {
  // SEQUENCE { AlgorithmIdentifier, BIT STRING }: walk the DER.
  const hdr = (off: number) => {
    const l = spki[off + 1]!;
    if (l < 0x80) return { len: l, size: 2 };
    const n = l & 0x7f;
    let len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + spki[off + 2 + i]!;
    return { len, size: 2 + n };
  };
  const outer = hdr(0);
  let off = outer.size;
  const alg = hdr(off);
  off += alg.size + alg.len;
  const bits = hdr(off);
  return spki.subarray(off + bits.size + 1, off + bits.size + bits.len);
}

function reportBody(opts: {
  cpuSvn: Buffer;
  flags: bigint;
  xfrm: bigint;
  mrEnclave: Buffer;
  mrSigner: Buffer;
  isvProdId: number;
  isvSvn: number;
  reportData: Buffer;
}): Buffer {
  const b = Buffer.alloc(REPORT_BODY_SIZE);
  opts.cpuSvn.copy(b, 0, 0, 16);
  b.writeBigUInt64LE(opts.flags, 48);
  b.writeBigUInt64LE(opts.xfrm, 56);
  opts.mrEnclave.copy(b, 64);
  opts.mrSigner.copy(b, 128);
  b.writeUInt16LE(opts.isvProdId, 256);
  b.writeUInt16LE(opts.isvSvn, 258);
  opts.reportData.copy(b, 320, 0, 64);
  return b;
}

function iasTimestamp(d: Date): string {
  return `${d.toISOString().slice(0, 23)}000`;
}

function generateKey(type: SimKeyType): KeyObject {
  if (type === 'rsa3072') return generateKeyPairSync('rsa', { modulusLength: 3072 }).privateKey;
  return generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
}

/** Makes an RA-TLS certificate whose evidence is signed by the test authority `ca`. */
export function createSimCertificate(ca: SimCa, options: SimCertificateOptions): SimCertificate {
  const mrEnclave = measurement(options.mrEnclave, 'MRENCLAVE');
  const mrSigner = measurement(options.mrSigner, 'MRSIGNER');
  const isvProdId = u16(options.isvProdId, 'ISV product id', 0);
  const isvSvn = u16(options.isvSvn, 'ISV SVN', 1);
  const privateKey = options.privateKey ?? generateKey(options.keyType ?? 'p256');
  if (privateKey.type !== 'private') throw new SimAuthorityError('privateKey must be a private key');
  const reportData = Buffer.alloc(64);
  publicKeyBindingHash(privateKey).copy(reportData);
  const flags = ATTRIBUTE_INIT | ATTRIBUTE_MODE64BIT | (options.debug ? ATTRIBUTE_DEBUG : 0n);
  const body = reportBody({
    cpuSvn: Buffer.from(ca.platform.cpuSvn, 'hex'),
    flags,
    xfrm: 0x7n,
    mrEnclave,
    mrSigner,
    isvProdId,
    isvSvn,
    reportData,
  });
  const ext: ExtensionSpec[] =
    options.kind === 'epid'
      ? epidExtensions(ca, body, options)
      : options.kind === 'dcap'
        ? dcapExtensions(ca, body, options)
        : (() => {
            throw new SimAuthorityError(`unknown attestation kind ${String(options.kind)}`);
          })();
  if (options.explicitNonCritical) for (const e of ext) e.explicitNonCritical = true;
  const certDer = buildRaTlsCertificate(privateKey, ext, options.commonName);
  return { certDer, certPem: toPem(certDer), keyPem: keyPem(privateKey), privateKey, extensions: ext };
}

/**
 * A self-signed RA-TLS certificate carrying `extensions`, signed by `privateKey` (the layout of
 * sgx-ra-tls certificates). Tests use it to re-wrap modified evidence under a valid signature.
 */
export function buildRaTlsCertificate(
  privateKey: KeyObject,
  extensions: ExtensionSpec[],
  commonName?: string,
): Buffer {
  const subject = name([
    ['O', TEST_ORG],
    ['CN', commonName ?? 'SENG simulated enclave'],
  ]);
  const now = Date.now();
  return buildCertificate({
    issuer: subject,
    subject,
    notBefore: new Date(now - 3600_000),
    notAfter: new Date(now + 365 * 86400_000),
    spki: spkiOf(privateKey),
    extensions,
    signingKey: privateKey,
  });
}

function epidQuoteBody(ca: SimCa, body: Buffer): Buffer {
  const q = Buffer.alloc(QUOTE_BODY_SIZE);
  q.writeUInt16LE(2, 0); // version
  q.writeUInt16LE(1, 2); // linkable
  q.writeUInt32LE(0x00000c4e, 4); // EPID group id
  q.writeUInt16LE(11, 8); // QE SVN
  q.writeUInt16LE(ca.platform.pceSvn, 10);
  createHash('sha256').update('seng-sim-basename').digest().copy(q, 16);
  body.copy(q, 48);
  return q;
}

function epidExtensions(ca: SimCa, body: Buffer, o: SimCertificateOptions): ExtensionSpec[] {
  const status = o.status ?? 'OK';
  if (!(EPID_QUOTE_STATUSES as readonly string[]).includes(status)) {
    throw new SimAuthorityError(
      `unknown EPID quote status ${status}`,
      `Use one of ${EPID_QUOTE_STATUSES.join(', ')}.`,
    );
  }
  const quoteBody = epidQuoteBody(ca, body);
  const ts = o.reportTimestamp ?? new Date();
  const report: Record<string, unknown> = {
    id: BigInt(`0x${randomBytes(12).toString('hex')}`).toString(),
    timestamp: iasTimestamp(ts),
    version: 4,
  };
  if (status !== 'OK') {
    report.advisoryURL = 'https://security-center.intel.com';
    report.advisoryIDs = ['INTEL-SA-00334', 'INTEL-SA-00615'];
  }
  report.isvEnclaveQuoteStatus = status;
  if (status !== 'OK') report.platformInfoBlob = `1502006504000f00000c0c02020101${'0'.repeat(176)}`;
  report.isvEnclaveQuoteBody = quoteBody.toString('base64');
  report.epidPseudonym = createHash('sha512').update(quoteBody.subarray(0, 48)).digest('base64');
  const reportBytes = Buffer.from(JSON.stringify(report), 'utf8');
  const signature = cryptoSign('sha256', reportBytes, ca.iasSigning.key);
  const b64 = o.encoding === 'base64';
  const ext: ExtensionSpec[] = [
    {
      oid: OID.iasReport,
      critical: false,
      value: b64 ? Buffer.from(reportBytes.toString('base64')) : reportBytes,
    },
    {
      oid: OID.iasSigningCa,
      critical: false,
      value: b64 ? Buffer.from(ca.iasRoot.der.toString('base64')) : Buffer.from(ca.iasRoot.pem),
    },
    {
      oid: OID.iasSigningCert,
      critical: false,
      value: b64 ? Buffer.from(ca.iasSigning.der.toString('base64')) : Buffer.from(ca.iasSigning.pem),
    },
    {
      oid: OID.iasSignature,
      critical: false,
      value: b64 ? Buffer.from(signature.toString('base64')) : signature,
    },
  ];
  if (o.includeQuote) {
    // A full EPID quote: the body, then a signature blob (opaque to the gateway, checked by IAS).
    const sig = createHash('sha512').update(quoteBody).digest();
    const len = Buffer.alloc(4);
    len.writeUInt32LE(sig.length);
    ext.push({ oid: OID.quote, critical: false, value: Buffer.concat([quoteBody, len, sig]) });
  }
  return ext;
}

function rawXY(key: KeyObject): Buffer {
  const jwk = createPublicKey(key).export({ format: 'jwk' });
  return Buffer.concat([Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')]);
}

function p1363(data: Buffer, key: KeyObject): Buffer {
  return cryptoSign('sha256', data, { key, dsaEncoding: 'ieee-p1363' });
}

function signedJson(member: string, body: Record<string, unknown>, key: KeyObject): string {
  const text = JSON.stringify(body);
  const sig = p1363(Buffer.from(text, 'utf8'), key).toString('hex');
  return `{"${member}":${text},"signature":"${sig}"}`;
}

function dcapExtensions(ca: SimCa, body: Buffer, o: SimCertificateOptions): ExtensionSpec[] {
  const status = o.status ?? 'UpToDate';
  if (!(DCAP_TCB_STATUSES as readonly string[]).includes(status)) {
    throw new SimAuthorityError(
      `unknown DCAP TCB status ${status}`,
      `Use one of ${DCAP_TCB_STATUSES.join(', ')}.`,
    );
  }
  const header = Buffer.alloc(48);
  header.writeUInt16LE(3, 0);
  header.writeUInt16LE(2, 2);
  header.writeUInt16LE(ca.qe.isvSvn, 8);
  header.writeUInt16LE(ca.platform.pceSvn, 10);
  INTEL_QE_VENDOR_ID.copy(header, 12);
  const signedPart = Buffer.concat([header, body]);

  const attKey = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
  const attPub = rawXY(attKey);
  const isvSig = p1363(signedPart, attKey);
  const authData = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
  const qeReportData = Buffer.alloc(64);
  createHash('sha256').update(attPub).update(authData).digest().copy(qeReportData);
  const qeReport = reportBody({
    cpuSvn: Buffer.from(ca.platform.cpuSvn, 'hex'),
    flags: 0x11n,
    xfrm: 0n,
    mrEnclave: Buffer.from(ca.qe.mrEnclave, 'hex'),
    mrSigner: Buffer.from(ca.qe.mrSigner, 'hex'),
    isvProdId: ca.qe.isvProdId,
    isvSvn: ca.qe.isvSvn,
    reportData: qeReportData,
  });
  const qeSig = p1363(qeReport, ca.pck.key);
  const certData = Buffer.from(ca.pck.pem + ca.pckCa.pem + ca.sgxRoot.pem, 'latin1');
  const authLen = Buffer.alloc(2);
  authLen.writeUInt16LE(authData.length);
  const certHdr = Buffer.alloc(6);
  certHdr.writeUInt16LE(5, 0);
  certHdr.writeUInt32LE(certData.length, 2);
  const sigData = Buffer.concat([isvSig, attPub, qeReport, qeSig, authLen, authData, certHdr, certData]);
  const sigLen = Buffer.alloc(4);
  sigLen.writeUInt32LE(sigData.length);
  const quote = Buffer.concat([signedPart, sigLen, sigData]);

  const ext: ExtensionSpec[] = [{ oid: OID.quote, critical: false, value: quote }];
  if (o.pckExtensions !== false) {
    ext.push(
      { oid: OID.pckCert, critical: false, value: Buffer.from(ca.pck.pem) },
      { oid: OID.pckChain, critical: false, value: Buffer.from(ca.pckCa.pem + ca.sgxRoot.pem) },
    );
  }
  if (o.collateral !== false) {
    const now = new Date();
    const issueDate = new Date(now.getTime() - 3600_000).toISOString().replace(/\.\d+Z$/, 'Z');
    const nextUpdate = new Date(now.getTime() + 30 * 86400_000).toISOString().replace(/\.\d+Z$/, 'Z');
    const tcbDate = '2024-03-13T00:00:00Z';
    const comps = (svns: number[]) =>
      Object.fromEntries(svns.map((s, i) => [`sgxtcbcomp${String(i + 1).padStart(2, '0')}svn`, s]));
    const tcbInfo = signedJson(
      'tcbInfo',
      {
        version: 2,
        issueDate,
        nextUpdate,
        fmspc: ca.platform.fmspc.toUpperCase(),
        pceId: ca.platform.pceId,
        tcbType: 0,
        tcbEvaluationDataNumber: 16,
        tcbLevels: [
          {
            tcb: { ...comps(ca.platform.tcbComponents), pcesvn: ca.platform.pceSvn },
            tcbDate,
            tcbStatus: status,
          },
          {
            tcb: { ...comps(new Array<number>(16).fill(0)), pcesvn: 0 },
            tcbDate: '2018-01-04T00:00:00Z',
            tcbStatus: 'OutOfDate',
          },
        ],
      },
      ca.tcbSigning.key,
    );
    const qeIdentity = signedJson(
      'enclaveIdentity',
      {
        id: 'QE',
        version: 2,
        issueDate,
        nextUpdate,
        tcbEvaluationDataNumber: 16,
        miscselect: '00000000',
        miscselectMask: 'FFFFFFFF',
        attributes: '11000000000000000000000000000000',
        attributesMask: 'FBFFFFFFFFFFFFFF0000000000000000',
        mrsigner: ca.qe.mrSigner.toUpperCase(),
        isvprodid: ca.qe.isvProdId,
        tcbLevels: [
          { tcb: { isvsvn: ca.qe.isvSvn }, tcbDate, tcbStatus: 'UpToDate' },
          { tcb: { isvsvn: 0 }, tcbDate: '2018-01-04T00:00:00Z', tcbStatus: 'OutOfDate' },
        ],
      },
      ca.tcbSigning.key,
    );
    ext.push(
      { oid: OID.tcbInfo, critical: false, value: Buffer.from(tcbInfo) },
      { oid: OID.tcbSigningChain, critical: false, value: Buffer.from(ca.tcbSigning.pem + ca.sgxRoot.pem) },
      { oid: OID.qeIdentity, critical: false, value: Buffer.from(qeIdentity) },
    );
  }
  if (o.crls !== false) {
    ext.push(
      { oid: OID.rootCaCrl, critical: false, value: createSimCrl(ca, 'root') },
      { oid: OID.pckCrl, critical: false, value: createSimCrl(ca, 'pck') },
    );
  }
  return ext;
}

/**
 * A CRL of the test SGX root ('root': revokes intermediate CAs) or of the test PCK CA ('pck':
 * revokes PCK certificates), DER. `revoked` are serial numbers in hex.
 */
export function createSimCrl(
  ca: SimCa,
  which: 'root' | 'pck',
  options: { revoked?: string[]; thisUpdate?: Date; nextUpdate?: Date } = {},
): Buffer {
  const issuer = which === 'root' ? ca.sgxRoot : ca.pckCa;
  const issuerName = parseCertificate(issuer.der).subjectRaw;
  const { alg } = signatureAlgorithm(issuer.key);
  const now = Date.now();
  const thisUpdate = options.thisUpdate ?? new Date(now - 3600_000);
  const nextUpdate = options.nextUpdate ?? new Date(now + 30 * 86400_000);
  const revoked = options.revoked ?? [];
  const tbs = seq(
    integer(1),
    alg,
    issuerName,
    time(thisUpdate),
    time(nextUpdate),
    ...(revoked.length
      ? [seq(...revoked.map((h) => seq(integer(Buffer.from(h, 'hex')), time(thisUpdate))))]
      : []),
  );
  return seq(tbs, alg, bitString(cryptoSign('sha256', tbs, issuer.key)));
}
