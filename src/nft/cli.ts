/**
 * Running the `nft` command: whole-ruleset transactions (JSON documents in a private
 * file, `nft -j -f FILE`, committed by the kernel as one transaction), check mode (`-c`),
 * and reading the live table back.
 *
 * This is the lowest layer that talks to nft; it knows nothing about policies. Names
 * are checked (src/nft/names.ts) before they reach nft, and commands go through nft's
 * JSON API wherever nft offers one (only the text listing that `seng rules diff`
 * compares has no JSON form).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EnvironmentError, SengError } from '../util/errors.js';
import { checkTableName } from './names.js';

/** One command of nft's JSON API (`{ add: { table: … } }`, …). */
export type NftCommand = Record<string, unknown>;
export interface NftDocument {
  nftables: NftCommand[];
}

export class NftCommandError extends SengError {
  constructor(message: string, hint?: string, cause?: unknown) {
    super('ENFT', message, { ...(hint === undefined ? {} : { hint }), cause });
  }
}

export interface NftResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface LiveSet {
  name: string;
  /** Elements as nft prints them (dotted IPv4). */
  elements: string[];
}

export interface LiveTable {
  sets: LiveSet[];
  /** Maps (seng's dispatch maps): name, keys (dotted IPv4) and each key's `goto` chain. */
  maps: (LiveSet & { gotos: (string | undefined)[] })[];
  chains: { name: string; hook?: string; policy?: string }[];
  rules: { chain: string; comment?: string; handle: number; counter?: { packets: number; bytes: number } }[];
}

/** Runs `nft` with arguments (and optional stdin). Prefix lets tests run it inside a netns. */
export class NftCli {
  constructor(
    private readonly command: string[] = ['nft'],
    private readonly timeoutMs = 15_000,
  ) {}

  exec(args: string[], input?: string): Promise<NftResult> {
    const [cmd, ...pre] = this.command;
    return new Promise((resolve, reject) => {
      const child = spawn(cmd as string, [...pre, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      const timer = setTimeout(() => child.kill('SIGKILL'), this.timeoutMs);
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.on('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(
          e.code === 'ENOENT'
            ? new EnvironmentError('ENONFT', `${cmd} not found`, 'install nftables (the nft command)', e)
            : e,
        );
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
      });
      child.stdin.on('error', () => undefined);
      child.stdin.end(input ?? '');
    });
  }

  /** Commits a JSON document as one transaction (or only checks it with `check`). */
  async run(doc: NftDocument, opts: { check?: boolean } = {}): Promise<void> {
    const r = await withDocumentFile(doc, (path) =>
      this.exec([...(opts.check ? ['-c'] : []), '-j', '-f', path]),
    );
    if (r.code !== 0) {
      throw new NftCommandError(
        `nft ${opts.check ? 'rejected (check mode)' : 'rejected'} the ruleset; ${opts.check ? 'nothing would change' : 'the previous ruleset is unchanged'}: ${r.stderr.trim().split('\n')[0] ?? ''}`,
        r.stderr.includes('Operation not permitted') ? 'run as root (CAP_NET_ADMIN)' : r.stderr.trim(),
      );
    }
  }

  /** The live table as nft's JSON, or null if it does not exist. */
  async listTableJson(table: string, family = 'ip'): Promise<Record<string, unknown>[] | null> {
    checkTableName(table);
    checkFamily(family);
    const doc: NftDocument = { nftables: [{ list: { table: { family, name: table } } }] };
    const r = await withDocumentFile(doc, (path) => this.exec(['-j', '-f', path]));
    if (r.code !== 0) {
      if (/No such file or directory/.test(r.stderr)) return null;
      throw new NftCommandError(
        `nft list table ${family} ${table} failed: ${r.stderr.trim()}`,
        permissionHint(r.stderr),
      );
    }
    const parsed = JSON.parse(r.stdout) as { nftables?: Record<string, unknown>[] };
    return parsed.nftables ?? [];
  }

  async listTable(table: string, family = 'ip'): Promise<LiveTable | null> {
    const items = await this.listTableJson(table, family);
    if (!items) return null;
    const t: LiveTable = { sets: [], maps: [], chains: [], rules: [] };
    for (const it of items) {
      if (it.set) {
        const s = it.set as { name: string; elem?: unknown[] };
        t.sets.push({
          name: s.name,
          elements: (s.elem ?? []).map((e) => (typeof e === 'string' ? e : JSON.stringify(e))),
        });
      } else if (it.map) {
        const m = it.map as { name: string; elem?: unknown[] };
        const pairs = (m.elem ?? []).map(
          (e) => (Array.isArray(e) ? e : [e, undefined]) as [unknown, unknown],
        );
        t.maps.push({
          name: m.name,
          elements: pairs.map(([key]) => (typeof key === 'string' ? key : JSON.stringify(key))),
          gotos: pairs.map(([, data]) => {
            const target = (data as { goto?: { target?: unknown } } | undefined)?.goto?.target;
            return typeof target === 'string' ? target : undefined;
          }),
        });
      } else if (it.chain) {
        const c = it.chain as { name: string; hook?: string; policy?: string };
        t.chains.push({
          name: c.name,
          ...(c.hook && { hook: c.hook }),
          ...(c.policy && { policy: c.policy }),
        });
      } else if (it.rule) {
        const r = it.rule as {
          chain: string;
          comment?: string;
          handle: number;
          expr?: Record<string, unknown>[];
        };
        const counter = r.expr?.find((e) => e.counter)?.counter as
          { packets: number; bytes: number } | undefined;
        t.rules.push({
          chain: r.chain,
          handle: r.handle,
          ...(r.comment && { comment: r.comment }),
          ...(counter && { counter }),
        });
      }
    }
    return t;
  }

  /** `nft -t -s list table` (no set elements, no counter values): the rules as nft prints them. */
  async listTableText(table: string, family = 'ip'): Promise<string | null> {
    // nft has no JSON input that prints text: the checked name is safe on the command line.
    checkTableName(table);
    checkFamily(family);
    const r = await this.exec(['-t', '-s', 'list', 'table', family, table]);
    if (r.code !== 0) {
      if (/No such file or directory/.test(r.stderr)) return null;
      throw new NftCommandError(
        `nft list table ${family} ${table} failed: ${r.stderr.trim()}`,
        permissionHint(r.stderr),
      );
    }
    return r.stdout;
  }
}

/**
 * Writes a document to a private temporary file for `nft -f FILE` (nft cannot read
 * `-f -` from a socket, which is what node gives a child as stdin) and removes it after.
 */
export async function withDocumentFile<T>(doc: NftDocument, fn: (path: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'seng-nft-'));
  const path = join(dir, 'ruleset.json');
  try {
    writeFileSync(path, JSON.stringify(doc), { mode: 0o600 });
    return await fn(path);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const FAMILIES = ['ip', 'ip6', 'inet', 'arp', 'bridge', 'netdev'];

function checkFamily(family: string): void {
  if (!FAMILIES.includes(family))
    throw new NftCommandError(`unknown nftables family ${JSON.stringify(family)}`);
}

function permissionHint(stderr: string): string | undefined {
  return /Operation not permitted|Permission denied/.test(stderr) ? 'run as root (CAP_NET_ADMIN)' : undefined;
}
