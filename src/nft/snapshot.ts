/**
 * Snapshots of one nftables table and the transaction that puts a snapshot back
 * (`seng rules apply --confirm` rolls back with it). A snapshot is nft's own JSON listing;
 * nft accepts its objects as input again once their kernel handles are dropped.
 */
import type { NftCommand, NftDocument } from './cli.js';
import { checkTableName } from './names.js';

/** Items of `nft -j list table`: one `{ table | set | map | chain | rule | … : {…} }` each. */
export type TableListing = Record<string, unknown>[];

const RESTORABLE = ['table', 'set', 'map', 'flowtable', 'counter', 'quota', 'limit', 'chain', 'rule'];

function withoutHandle(obj: Record<string, unknown>): Record<string, unknown> {
  const { handle: _handle, ...rest } = obj;
  return rest;
}

/**
 * One transaction that makes table `family name` equal to `before` again: the table is
 * deleted and re-created from the snapshot (sets with the elements they had then), or
 * just deleted when it did not exist (`before` null).
 */
export function restoreDocument(name: string, family: string, before: TableListing | null): NftDocument {
  checkTableName(name);
  const cmds: NftCommand[] = [{ delete: { table: { family, name } } }];
  if (before) {
    // nft lists objects in dependency order (table, sets, chains, rules); keep it. A
    // verdict map's elements name chains, so they go in after the chains exist.
    const mapElements: NftCommand[] = [];
    for (const kind of RESTORABLE) {
      for (const item of before) {
        const obj = item[kind] as Record<string, unknown> | undefined;
        if (!obj) continue;
        if (kind === 'map' && Array.isArray(obj.elem)) {
          const { elem, ...rest } = withoutHandle(obj);
          cmds.push({ add: { map: rest } });
          mapElements.push({
            add: { element: { family: obj.family, table: obj.table, name: obj.name, elem } },
          });
        } else cmds.push({ add: { [kind]: withoutHandle(obj) } });
      }
    }
    cmds.push(...mapElements);
  }
  return { nftables: cmds };
}
