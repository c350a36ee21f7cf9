/**
 * `seng rules diff`: what applying a policy would change in the live table.
 *
 * Both sides are printed by nft itself so that formatting never causes false
 * differences: the live table with `nft -t -s list table` (no set elements, no counter
 * values), and the desired one by loading the apply document into a throw-away network
 * namespace (`unshare -n`) and listing it there. Nothing in the real namespace changes.
 */
import { NftCli, NftCommandError, withDocumentFile } from '../nft/cli.js';
import { checkTableName } from '../nft/names.js';
import { nftApplyDocument } from './nft.js';
import { CHAINS, type CompiledPolicy } from './types.js';

export interface DiffLine {
  op: '+' | '-' | ' ';
  line: string;
}

/** Canonical lines of an `nft -t -s list table` output: sorted sets, then chains in hook order. */
export function normalizeTableText(text: string | null): string[] {
  if (!text) return [];
  const sets: string[] = [];
  const chains = new Map<string, string[]>();
  let chain: string | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    let m = /^set (\S+) \{$/.exec(line);
    if (m) {
      sets.push(`set ${m[1]}`);
      chain = undefined;
      continue;
    }
    m = /^chain (\S+) \{$/.exec(line);
    if (m) {
      chain = m[1] as string;
      chains.set(chain, []);
      continue;
    }
    if (line === '}' || line === '' || line.startsWith('table ')) {
      if (line === '}') chain = undefined;
      continue;
    }
    if (chain) chains.get(chain)?.push(`chain ${chain}: ${line}`);
  }
  const order = (n: string): number => {
    const i = (CHAINS as readonly string[]).indexOf(n);
    return i < 0 ? CHAINS.length : i;
  };
  const names = [...chains.keys()].sort((a, b) => order(a) - order(b) || a.localeCompare(b));
  return [...sets.sort(), ...names.flatMap((n) => chains.get(n) ?? [])];
}

/** Line diff (longest common subsequence). */
export function diffLines(a: string[], b: string[]): DiffLine[] {
  const n = a.length;
  const m = b.length;
  const lcs: number[][] = Array.from({ length: n + 1 }, () => new Array<number>(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i -= 1) {
    for (let j = m - 1; j >= 0; j -= 1) {
      const row = lcs[i] as number[];
      row[j] =
        a[i] === b[j] ? (lcs[i + 1]?.[j + 1] ?? 0) + 1 : Math.max(lcs[i + 1]?.[j] ?? 0, row[j + 1] ?? 0);
    }
  }
  const out: DiffLine[] = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) {
      out.push({ op: ' ', line: a[i] as string });
      i += 1;
      j += 1;
    } else if ((lcs[i + 1]?.[j] ?? 0) >= (lcs[i]?.[j + 1] ?? 0)) {
      out.push({ op: '-', line: a[i] as string });
      i += 1;
    } else {
      out.push({ op: '+', line: b[j] as string });
      j += 1;
    }
  }
  while (i < n) out.push({ op: '-', line: a[i++] as string });
  while (j < m) out.push({ op: '+', line: b[j++] as string });
  return out;
}

/** The desired table as nft prints it, built in a throw-away network namespace. */
export async function desiredTableText(p: CompiledPolicy): Promise<string> {
  // nftApplyDocument checks every name; the table name is checked again because the
  // listing below is nft text (nft has no JSON input that prints text).
  const doc = nftApplyDocument(p);
  checkTableName(p.table);
  const r = await withDocumentFile(doc, (path) =>
    new NftCli([
      'unshare',
      '-n',
      'sh',
      '-c',
      'nft -j -f "$1" && nft -t -s list table ip "$0"',
      p.table,
      path,
    ]).exec([]),
  );
  if (r.code !== 0) {
    throw new NftCommandError(
      `cannot build the desired table for comparison: ${r.stderr.trim()}`,
      'seng rules diff needs root (unshare, nft)',
    );
  }
  return r.stdout;
}

export interface PolicyDiff {
  table: string;
  exists: boolean;
  changed: boolean;
  lines: DiffLine[];
}

export async function diffPolicy(p: CompiledPolicy, nft = new NftCli()): Promise<PolicyDiff> {
  checkTableName(p.table);
  const [live, desired] = await Promise.all([nft.listTableText(p.table), desiredTableText(p)]);
  const lines = diffLines(normalizeTableText(live), normalizeTableText(desired));
  return { table: p.table, exists: live !== null, changed: lines.some((l) => l.op !== ' '), lines };
}
