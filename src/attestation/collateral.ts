/**
 * DCAP collateral: Intel's SGX extensions in PCK certificates, TCB info and QE identity
 * (JSON, signed over the exact bytes of their inner object with the TCB signing key).
 * Nothing here throws on malformed input: problems come back as strings.
 */
import { verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { children, decodeOid, decodeSmallInt, parseDer, TAG, type DerNode } from './der.js';
import type { ParsedCertificate } from './x509.js';

export const OID_SGX_EXTENSIONS = '1.2.840.113741.1.13.1';

export interface PckSgxInfo {
  /** sgxtcbcomp01svn … sgxtcbcomp16svn. */
  tcbComponents: number[];
  pceSvn: number;
  cpuSvn: Buffer | undefined;
  pceId: string;
  fmspc: string;
}

/** Reads Intel's SGX extension (1.2.840.113741.1.13.1) of a PCK certificate. */
export function pckSgxInfo(cert: ParsedCertificate): PckSgxInfo | string {
  const ext = cert.extensions.find((e) => e.oid === OID_SGX_EXTENSIONS);
  if (!ext) return 'the PCK certificate has no SGX extension (1.2.840.113741.1.13.1)';
  try {
    const items = new Map<string, DerNode>();
    for (const item of children(parseDer(ext.value))) {
      const [id, value] = children(item);
      if (id && value) items.set(decodeOid(id), value);
    }
    const tcb = items.get(`${OID_SGX_EXTENSIONS}.2`);
    const pceId = items.get(`${OID_SGX_EXTENSIONS}.3`);
    const fmspc = items.get(`${OID_SGX_EXTENSIONS}.4`);
    if (!tcb || !pceId || !fmspc) return 'the PCK certificate SGX extension lacks TCB, PCE-ID or FMSPC';
    const comps = new Map<string, DerNode>();
    for (const item of children(tcb)) {
      const [id, value] = children(item);
      if (id && value) comps.set(decodeOid(id), value);
    }
    const tcbComponents: number[] = [];
    for (let i = 1; i <= 16; i++) {
      const n = comps.get(`${OID_SGX_EXTENSIONS}.2.${i}`);
      if (!n) return `the PCK certificate TCB lacks component ${i}`;
      tcbComponents.push(decodeSmallInt(n));
    }
    const pce = comps.get(`${OID_SGX_EXTENSIONS}.2.17`);
    if (!pce) return 'the PCK certificate TCB lacks the PCE SVN';
    const cpu = comps.get(`${OID_SGX_EXTENSIONS}.2.18`);
    if (pceId.tag !== TAG.OCTET_STRING || fmspc.tag !== TAG.OCTET_STRING)
      return 'PCE-ID/FMSPC are not OCTET STRINGs';
    return {
      tcbComponents,
      pceSvn: decodeSmallInt(pce),
      cpuSvn: cpu?.value,
      pceId: pceId.value.toString('hex'),
      fmspc: fmspc.value.toString('hex'),
    };
  } catch (e) {
    return `the PCK certificate SGX extension is malformed: ${(e as Error).message}`;
  }
}

/** Index just past the JSON value starting at `i` (after whitespace), or -1 if malformed. */
function skipValue(s: string, i: number): number {
  i = skipWs(s, i);
  const c = s[i];
  if (c === '"') return skipString(s, i);
  if (c === '{' || c === '[') {
    let depth = 0;
    for (; i < s.length; i++) {
      const ch = s[i];
      if (ch === '"') {
        i = skipString(s, i);
        if (i < 0) return -1;
        i--;
      } else if (ch === '{' || ch === '[') depth++;
      else if (ch === '}' || ch === ']') {
        depth--;
        if (depth === 0) return i + 1;
      }
    }
    return -1;
  }
  const m = /^[^,}\]\s]+/.exec(s.slice(i, i + 64));
  return m ? i + m[0].length : -1;
}

function skipWs(s: string, i: number): number {
  while (i < s.length && /\s/.test(s[i]!)) i++;
  return i;
}

function skipString(s: string, i: number): number {
  for (i++; i < s.length; i++) {
    if (s[i] === '\\') i++;
    else if (s[i] === '"') return i + 1;
  }
  return -1;
}

/**
 * The exact source text of a top-level member's value in a JSON object text (what Intel signs),
 * or undefined when the text is not an object or lacks the member.
 */
export function rawJsonMember(text: string, key: string): string | undefined {
  let i = skipWs(text, 0);
  if (text[i] !== '{') return undefined;
  i++;
  for (;;) {
    i = skipWs(text, i);
    if (text[i] !== '"') return undefined;
    const end = skipString(text, i);
    if (end < 0) return undefined;
    let name: unknown;
    try {
      name = JSON.parse(text.slice(i, end));
    } catch {
      return undefined;
    }
    i = skipWs(text, end);
    if (text[i] !== ':') return undefined;
    const start = skipWs(text, i + 1);
    const vend = skipValue(text, start);
    if (vend < 0) return undefined;
    if (name === key) return text.slice(start, vend);
    i = skipWs(text, vend);
    if (text[i] === ',') i++;
    else return undefined;
  }
}

export interface SignedJson {
  /** Name of the signed member ("tcbInfo", "qeIdentity" or "enclaveIdentity"). */
  member: string;
  body: Record<string, unknown>;
  signedBytes: Buffer;
  signature: Buffer;
}

/** Splits an Intel collateral document into the signed member and its signature. */
export function parseSignedJson(text: string, members: string[]): SignedJson | string {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    return `not valid JSON (${(e as Error).message})`;
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return 'not a JSON object';
  const o = doc as Record<string, unknown>;
  const member = members.find((m) => m in o);
  if (!member) return `lacks a "${members.join('"/"')}" member`;
  const body = o[member];
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return `"${member}" is not an object`;
  const sigHex = o.signature;
  if (typeof sigHex !== 'string' || !/^[0-9a-fA-F]{128}$/.test(sigHex))
    return 'signature is not 64 bytes of hex';
  const raw = rawJsonMember(text, member);
  if (raw === undefined) return `cannot locate the signed "${member}" text`;
  return {
    member,
    body: body as Record<string, unknown>,
    signedBytes: Buffer.from(raw, 'utf8'),
    signature: Buffer.from(sigHex, 'hex'),
  };
}

/** ECDSA P-256 / SHA-256 over `data` with a raw r ‖ s signature. */
export function verifyP1363(data: Buffer, signature: Buffer, key: KeyObject): boolean {
  try {
    return cryptoVerify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, signature);
  } catch {
    return false;
  }
}

export function parseIsoDate(v: unknown): Date | undefined {
  if (typeof v !== 'string' || !/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/.test(v)) return undefined;
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? undefined : d;
}

/** issueDate ≤ at ≤ nextUpdate, or the problem. */
export function freshnessProblem(body: Record<string, unknown>, at: Date, what: string): string | null {
  const issue = parseIsoDate(body.issueDate);
  const next = parseIsoDate(body.nextUpdate);
  if (!issue || !next) return `${what} lacks a valid issueDate/nextUpdate`;
  if (at < issue) return `${what} was issued at ${issue.toISOString()}, after ${at.toISOString()}`;
  if (at > next) return `${what} expired: nextUpdate ${next.toISOString()} is before ${at.toISOString()}`;
  return null;
}

export interface TcbLevelMatch {
  status: string;
  tcbDate: string | undefined;
  index: number;
}

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 ? v : undefined;
}

/** The first TCB level of `tcbInfo` that the platform's PCK TCB meets (Intel's matching rule). */
export function matchTcbLevel(tcbInfo: Record<string, unknown>, pck: PckSgxInfo): TcbLevelMatch | string {
  const levels = tcbInfo.tcbLevels;
  if (!Array.isArray(levels) || levels.length === 0) return 'TCB info has no tcbLevels';
  for (let idx = 0; idx < levels.length; idx++) {
    const level = levels[idx] as Record<string, unknown> | null;
    const tcb = level?.tcb as Record<string, unknown> | undefined;
    if (!level || typeof tcb !== 'object' || tcb === null) return `TCB level ${idx} is malformed`;
    const comps: (number | undefined)[] = [];
    if (Array.isArray(tcb.sgxtcbcomponents)) {
      for (let i = 0; i < 16; i++)
        comps.push(num((tcb.sgxtcbcomponents[i] as { svn?: unknown } | undefined)?.svn));
    } else {
      for (let i = 1; i <= 16; i++) comps.push(num(tcb[`sgxtcbcomp${String(i).padStart(2, '0')}svn`]));
    }
    const pcesvn = num(tcb.pcesvn);
    if (comps.some((c) => c === undefined) || pcesvn === undefined) return `TCB level ${idx} is malformed`;
    const status = level.tcbStatus ?? level.status;
    if (typeof status !== 'string') return `TCB level ${idx} has no status`;
    const meets = comps.every((c, i) => pck.tcbComponents[i]! >= c!) && pck.pceSvn >= pcesvn;
    if (meets)
      return { status, tcbDate: typeof level.tcbDate === 'string' ? level.tcbDate : undefined, index: idx };
  }
  return 'the platform TCB is below every TCB level in the TCB info (unsupported TCB)';
}

/** Masked comparison of hex fields of a QE identity against the QE report. */
export function maskedEqual(actual: Buffer, expectedHex: unknown, maskHex: unknown): boolean | string {
  if (typeof expectedHex !== 'string' || typeof maskHex !== 'string') return 'field missing';
  if (!/^[0-9a-fA-F]*$/.test(expectedHex) || !/^[0-9a-fA-F]*$/.test(maskHex)) return 'not hex';
  const expected = Buffer.from(expectedHex, 'hex');
  const mask = Buffer.from(maskHex, 'hex');
  if (expected.length !== actual.length || mask.length !== actual.length)
    return `length is not ${actual.length} bytes`;
  for (let i = 0; i < actual.length; i++)
    if ((actual[i]! & mask[i]!) !== (expected[i]! & mask[i]!)) return false;
  return true;
}
