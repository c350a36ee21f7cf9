/**
 * Category policies: parse/validate (parse.ts), compile (compile.ts), render to
 * nftables (nft.ts) and iptables (iptables.ts), compare with the live table (diff.ts),
 * and a reference evaluator of the kernel match semantics (evaluate.ts).
 */
import { openStore } from '../store/index.js';
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

/** An app directory over the apps of a seng database (read-only). */
export function appDirectoryFromDb(path: string): AppDirectory {
  const store = openStore(path, { readonly: true });
  try {
    return appDirectoryFromList(store.listApps(), `database ${path}`);
  } finally {
    store.close();
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
