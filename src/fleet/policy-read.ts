/**
 * The one thing the firewall agent reads from the policy tables: each app's name and
 * categories (SPEC §4 netfilter layout, as PostgreSQL tables in the registry's database).
 * Read-only and narrow on purpose; the policy store itself lives in src/store.
 */
import type pg from 'pg';

export interface AppPolicy {
  name: string;
  categories: string[];
}

/**
 * Apps by MRENCLAVE (hex) with their categories, or undefined when the database holds no
 * netfilter-layout policy (no `categories` table): then the categories of the lease rows apply.
 */
export async function readAppCategories(pool: pg.Pool): Promise<Map<string, AppPolicy> | undefined> {
  const present = await pool.query<{ ok: boolean }>(
    `SELECT to_regclass('categories') IS NOT NULL AND to_regclass('apps') IS NOT NULL AS ok`,
  );
  if (!present.rows[0]?.ok) return undefined;
  const r = await pool.query<{ mr: string; name: string; categories: string[] }>(
    `SELECT encode(a.mr_enclave, 'hex') AS mr, a.name,
            coalesce(array_agg(DISTINCT c.name) FILTER (WHERE c.name IS NOT NULL), '{}') AS categories
       FROM apps a LEFT JOIN categories c ON c.apps_id = a.id
      GROUP BY a.id, a.mr_enclave, a.name`,
  );
  const apps = new Map<string, AppPolicy>();
  for (const row of r.rows) apps.set(row.mr, { name: row.name, categories: [...row.categories].sort() });
  return apps;
}
