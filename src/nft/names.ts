/**
 * Names that reach nft (tables, chains, sets). nft parses its command line and its
 * text input as one script, so a name like `seng; delete table inet other` would run a
 * second command. Every name is checked here before it is put into a command, whether
 * the name came from a flag, a policy file or a caller of the library.
 */
import { InputError } from '../util/errors.js';

/** Table names seng owns: a letter, then letters, digits or `_`; at most 32 characters. */
export const NFT_TABLE_NAME = /^[A-Za-z][A-Za-z0-9_]{0,31}$/;
/** Chain and set names: the same alphabet, at most 128 characters (nft allows 256). */
export const NFT_OBJECT_NAME = /^[A-Za-z][A-Za-z0-9_]{0,127}$/;

export type NftNameKind = 'table' | 'chain' | 'set';

/** Why a name cannot be given to nft, or undefined when it can. */
export function nftNameProblem(kind: NftNameKind, name: string): string | undefined {
  const re = kind === 'table' ? NFT_TABLE_NAME : NFT_OBJECT_NAME;
  if (re.test(name)) return undefined;
  const max = kind === 'table' ? 32 : 128;
  return `${kind} name ${JSON.stringify(name)} is not allowed: it must be a letter followed by letters, digits or _ (at most ${max} characters)`;
}

/** Returns the name, or throws an InputError when nft must not see it. */
export function checkNftName(kind: NftNameKind, name: string): string {
  const problem = nftNameProblem(kind, name);
  if (problem) throw new InputError(problem, `pick a ${kind} name like "seng"`);
  return name;
}

/** Shorthand for the most common check (`--table`, `--nft-table`, a policy's `table:`). */
export function checkTableName(name: string): string {
  return checkNftName('table', name);
}
