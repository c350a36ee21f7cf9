/**
 * Random policies, registrations and packets for equivalence tests of the compiled
 * ruleset against the reference evaluator (src/policy/evaluate.ts). Deterministic for a
 * seed, so a failure names the seed that reproduces it.
 */
import type { Chain, Protocol } from '../../../src/policy/types.js';

export const APP_A = 'a1'.repeat(32);
export const APP_B = 'b2'.repeat(32);
export const APP_C = 'c3'.repeat(32);
export const APP_D = 'd4'.repeat(32);
/** The app directory: `multi` names two measurements. */
export const GEN_APPS = [
  { name: 'alpha', mrEnclave: APP_A },
  { name: 'beta', mrEnclave: APP_B },
  { name: 'multi', mrEnclave: APP_C },
  { name: 'multi', mrEnclave: APP_D },
];

export interface GenReg {
  ip: string;
  mrEnclave: string;
  categories: string[];
  host: string;
}

export interface GenPacket {
  id: number;
  chain: Chain;
  src: string;
  dst: string;
  protocol: Protocol;
  dport: number;
  iif: string;
}

/** A small deterministic PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function pick<T>(r: () => number, xs: readonly T[]): T {
  return xs[Math.floor(r() * xs.length)] as T;
}

const APP_REFS = [APP_A, APP_B, 'multi', 'alpha', `'!${APP_A}'`, `'!multi'`, `'!${APP_C}'`];
const CAT_REFS = ['Web', 'Mail', `'!Web'`, `'!Mail'`];
const HOST_REFS = ['10.0.0.0/8', `'!10.0.0.0/8'`, '172.16.0.0/12', `'!172.16.0.0/12'`];
export const GEN_PORTS = [7001, 7002, 7003, 7004];

/** Registered enclaves: addresses 192.168.28.2-5; .6 and 10.5.0.1 are not enclaves. */
export const GEN_REGS: GenReg[] = [
  { ip: '192.168.28.2', mrEnclave: APP_A, categories: ['Web'], host: '10.1.1.1' },
  { ip: '192.168.28.3', mrEnclave: APP_B, categories: [], host: '10.2.2.2' },
  { ip: '192.168.28.4', mrEnclave: APP_C, categories: ['Mail'], host: '172.16.5.5' },
  { ip: '192.168.28.5', mrEnclave: APP_D, categories: ['Web', 'Mail'], host: '192.0.2.7' },
];
export const GEN_ADDRS = [
  '192.168.28.2',
  '192.168.28.3',
  '192.168.28.4',
  '192.168.28.5',
  '192.168.28.6',
  '10.5.0.1',
];

/** A policy text with `n` rules on `chains`, each with a random mix of conditions. */
export function genPolicy(seed: number, n: number, table: string, chains: Chain[] = ['input']): string {
  const r = rng(seed);
  const lines = [
    'version: 1',
    `table: ${table}`,
    `defaults: { input: ${pick(r, ['accept', 'drop'])}, forward: ${pick(r, ['accept', 'drop'])} }`,
    'rules:',
  ];
  for (let i = 0; i < n; i += 1) {
    const c: string[] = [
      `name: r${i}`,
      `chain: ${pick(r, chains)}`,
      `action: ${pick(r, ['accept', 'drop', 'drop'])}`,
    ];
    if (r() < 0.5) c.push(`src-app: ${pick(r, APP_REFS)}`);
    if (r() < 0.2) c.push(`dst-app: ${pick(r, APP_REFS)}`);
    if (r() < 0.25) c.push(`src-cat: ${pick(r, CAT_REFS)}`);
    if (r() < 0.15) c.push(`dst-cat: ${pick(r, CAT_REFS)}`);
    if (r() < 0.2) c.push(`src-host: ${pick(r, HOST_REFS)}`);
    if (r() < 0.1) c.push(`dst-host: ${pick(r, HOST_REFS)}`);
    if (r() < 0.15) c.push(`src-addr: ${pick(r, ['10.5.0.0/16', `'!192.168.28.0/30'`, '192.168.28.4/31'])}`);
    if (r() < 0.6) {
      c.push('protocol: udp');
      const ports = GEN_PORTS.filter(() => r() < 0.4);
      if (ports.length)
        c.push(`dport: ${r() < 0.2 ? `{ not: [${ports.join(', ')}] }` : `[${ports.join(', ')}]`}`);
    } else if (r() < 0.1) c.push('protocol: tcp');
    if (r() < 0.08) c.push(`in-iface: ${pick(r, ['lo', `'!lo'`, `'l+'`, 'eth0'])}`);
    lines.push(`  - { ${c.join(', ')} }`);
  }
  return `${lines.join('\n')}\n`;
}

/** Every (src, dst, port) combination for a chain, UDP from interface lo. */
export function genPackets(chain: Chain = 'input', dests: string[] = GEN_ADDRS): GenPacket[] {
  const out: GenPacket[] = [];
  for (const src of GEN_ADDRS)
    for (const dst of dests)
      for (const dport of GEN_PORTS)
        out.push({ id: out.length, chain, src, dst, protocol: 'udp', dport, iif: 'lo' });
  return out;
}

/** Categories of the category generator: one with characters a chain name cannot hold. */
export const GEN_CATS = ['Web', 'Mail', 'Db', 'Ops', 'x.y-z'] as const;

/** The same enclaves as GEN_REGS, each in several categories (one in none). */
export const GEN_CAT_REGS: GenReg[] = [
  { ip: '192.168.28.2', mrEnclave: APP_A, categories: ['Web', 'Db'], host: '10.1.1.1' },
  { ip: '192.168.28.3', mrEnclave: APP_B, categories: [], host: '10.2.2.2' },
  { ip: '192.168.28.4', mrEnclave: APP_C, categories: ['Mail', 'Ops', 'x.y-z'], host: '172.16.5.5' },
  { ip: '192.168.28.5', mrEnclave: APP_D, categories: ['Web', 'Mail', 'Db'], host: '192.0.2.7' },
];

/** Category changes applied to live enclaves in turn (app → its new categories). */
export const GEN_CAT_CHANGES: { mrEnclave: string; categories: string[] }[] = [
  { mrEnclave: APP_C, categories: ['Web', 'Db'] },
  { mrEnclave: APP_A, categories: [] },
  { mrEnclave: APP_B, categories: ['x.y-z', 'Ops', 'Mail'] },
];

/**
 * A policy where most rules are `src-cat` (interleaved categories, so a category has
 * several blocks in a run), mixed with src-app, src-app + src-cat, negated src-cat and
 * src-host rules that cut or stay outside the category runs.
 */
export function genCatPolicy(seed: number, n: number, table: string, chains: Chain[] = ['input']): string {
  const r = rng(seed);
  const cat = (): string => {
    const c = pick(r, GEN_CATS);
    return c.includes('.') ? `'${c}'` : c;
  };
  const lines = [
    'version: 1',
    `table: ${table}`,
    `defaults: { input: ${pick(r, ['accept', 'drop'])}, forward: ${pick(r, ['accept', 'drop'])} }`,
    'rules:',
  ];
  for (let i = 0; i < n; i += 1) {
    const c: string[] = [
      `name: r${i}`,
      `chain: ${pick(r, chains)}`,
      `action: ${pick(r, ['accept', 'drop', 'drop'])}`,
    ];
    const kind = r();
    if (kind < 0.6) c.push(`src-cat: ${cat()}`);
    else if (kind < 0.67) c.push(`src-cat: '!${pick(r, GEN_CATS)}'`);
    else if (kind < 0.75) c.push(`src-app: ${pick(r, APP_REFS)}`);
    else if (kind < 0.8) c.push(`src-app: ${pick(r, APP_REFS)}`, `src-cat: ${cat()}`);
    else if (kind < 0.85) c.push(`src-host: ${pick(r, HOST_REFS)}`);
    if (r() < 0.1) c.push(`dst-cat: ${cat()}`);
    if (r() < 0.7) {
      c.push('protocol: udp');
      const ports = GEN_PORTS.filter(() => r() < 0.4);
      if (ports.length) c.push(`dport: [${ports.join(', ')}]`);
    }
    lines.push(`  - { ${c.join(', ')} }`);
  }
  return `${lines.join('\n')}\n`;
}
