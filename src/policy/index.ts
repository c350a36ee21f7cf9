/**
 * Category policies: parse/validate (parse.ts), compile (compile.ts), render to
 * nftables (nft.ts) and iptables (iptables.ts), compare with the live table (diff.ts),
 * and a reference evaluator of the kernel match semantics (evaluate.ts).
 */
import { isPostgresUrl, redactUrl } from '../pg/index.js';
import { openPolicyStore, openStore, type AppRecord } from '../store/index.js';
import { InputError } from '../util/errors.js';
import { appDirectoryFromList, emptyAppDirectory, type AppDirectory } from './apps.js';
import { compilePolicy } from './compile.js';
import { loadPolicyFile } from './parse.js';
import type { CompiledPolicy, Policy } from './types.js';

export * from './types.js';
export { PolicyError, type PolicyIssue } from './errors.js';
export { parsePolicy, loadPolicyFile } from './parse.js';
export {
  compilePolicy,
  parseSetName,
  setHolds,
  appSetName,
  categorySetName,
  hostSetName,
  ENCLAVES_SET,
} from './compile.js';
export { appDirectoryFromList, emptyAppDirectory, type AppDirectory } from './apps.js';
export { nftApplyDocument, nftText, ruleExpressions, ruleText } from './nft.js';
export { iptablesText, parseSengMatch, sengMatchesOfLine, RenderError } from './iptables.js';
export { lintPolicy } from './lint.js';
export { evaluate, ruleMatches, type Packet, type Registration, type Verdict } from './evaluate.js';

/**
 * In-memory app lists of PostgreSQL stores, by URL: a running gateway keeps its policy in
 * memory, and synchronous callers (the nft backend compiling --policy) read it from there.
 */
const appLists = new Map<string, () => AppRecord[]>();

/** Lets appDirectoryFromDb(url) read `apps`; returns the function that withdraws it. */
export function provideAppList(url: string, apps: () => AppRecord[]): () => void {
  appLists.set(url, apps);
  return () => {
    if (appLists.get(url) === apps) appLists.delete(url);
  };
}

/**
 * An app directory over the apps of a seng database (read-only), synchronously: a SQLite file,
 * or a PostgreSQL store whose policy this process holds in memory (provideAppList).
 */
export function appDirectoryFromDb(path: string): AppDirectory {
  if (isPostgresUrl(path)) {
    const apps = appLists.get(path);
    if (!apps) {
      throw new InputError(
        `the apps of ${redactUrl(path)} are not loaded in this process`,
        'load them with appDirectoryFromStore (this is a bug in seng if you see it)',
      );
    }
    return appDirectoryFromList(apps(), `database ${redactUrl(path)}`);
  }
  const store = openStore(path, { readonly: true });
  try {
    return appDirectoryFromList(store.listApps(), `database ${path}`);
  } finally {
    store.close();
  }
}

/** An app directory over the apps of a SQLite file or a PostgreSQL database (read-only). */
export async function appDirectoryFromStore(target: string): Promise<AppDirectory> {
  if (!isPostgresUrl(target) || appLists.has(target)) return appDirectoryFromDb(target);
  const store = await openPolicyStore(target, { readonly: true });
  try {
    return appDirectoryFromList(await store.listApps(), `database ${store.target}`);
  } finally {
    await store.close();
  }
}

/** Loads, validates and compiles a policy file; app names are resolved in `db` when given. */
export function loadCompiledPolicy(
  file: string,
  db?: string,
): { policy: Policy; compiled: CompiledPolicy; apps: AppDirectory } {
  const policy = loadPolicyFile(file);
  const apps = db ? appDirectoryFromDb(db) : emptyAppDirectory;
  return { policy, compiled: compilePolicy(policy, { apps }), apps };
}

/** loadCompiledPolicy for any store (a PostgreSQL one is read over the network). */
export async function loadCompiledPolicyFrom(
  file: string,
  db?: string,
): Promise<{ policy: Policy; compiled: CompiledPolicy; apps: AppDirectory }> {
  const policy = loadPolicyFile(file);
  const apps = db ? await appDirectoryFromStore(db) : emptyAppDirectory;
  return { policy, compiled: compilePolicy(policy, { apps }), apps };
}
