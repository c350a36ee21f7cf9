/**
 * The enclave registry's tables (docs/fleet.md), next to the policy tables in the same
 * PostgreSQL database:
 *
 * - `seng_gateways`: one row per running gateway, with its heartbeat and its own lease TTL
 *   (so whoever reclaims judges each gateway by the TTL that gateway promised).
 * - `seng_leases`: the LIVE leases. `ip` is the PRIMARY KEY: two gateways can never hold the
 *   same enclave IP at the same time — the database refuses the second INSERT, whatever the
 *   gateways believe. IPs are host-order numbers (0 … 2^32-1, hence bigint). Every lease
 *   belongs to a registered gateway (foreign key), so none can outlive its gateway's row
 *   unseen by the reclaim.
 * - `seng_lease_history`: ended leases (moved there in the same statement that deletes the
 *   live row), indexed for "who held IP X at time T".
 *
 * Every insert/delete/update of a live lease is announced on channel `seng_leases` by a row
 * trigger in the same transaction (so psql edits are seen too). The payload is the lease as
 * JSON, or only {op, ip, session} when that would not fit NOTIFY's 8000-byte limit (the
 * follower then reads the row).
 *
 * All times are the database server's clock (clock_timestamp()), never a gateway's, so hosts
 * with skewed clocks still agree on who is expired.
 */
import type pg from 'pg';
import { inTransaction } from '../pg/index.js';

/** NOTIFY channel of live-lease changes. */
export const LEASES_CHANNEL = 'seng_leases';

/** Key of the advisory lock that serialises schema creation (two gateways starting at once). */
const SCHEMA_LOCK_KEY = 0x5e6e_f1ee;

export const REGISTRY_DDL = `
CREATE TABLE IF NOT EXISTS seng_gateways(
  id text PRIMARY KEY,
  address text NOT NULL,
  pid integer NOT NULL,
  lease_ttl_ms integer NOT NULL CHECK (lease_ttl_ms > 0),
  started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  heartbeat_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS seng_leases(
  ip bigint PRIMARY KEY CHECK (ip BETWEEN 0 AND 4294967295),
  subnet text NOT NULL,
  session_id text NOT NULL UNIQUE,
  gateway_id text NOT NULL REFERENCES seng_gateways(id),
  app text,
  mr_enclave text NOT NULL,
  mr_signer text NOT NULL,
  host_ip text NOT NULL,
  categories text[] NOT NULL DEFAULT '{}',
  started_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS seng_leases_by_gateway ON seng_leases(gateway_id);
CREATE TABLE IF NOT EXISTS seng_lease_history(
  session_id text PRIMARY KEY,
  ip bigint NOT NULL,
  subnet text NOT NULL,
  gateway_id text NOT NULL,
  app text,
  mr_enclave text NOT NULL,
  mr_signer text NOT NULL,
  host_ip text NOT NULL,
  categories text[] NOT NULL DEFAULT '{}',
  started_at timestamptz NOT NULL,
  ended_at timestamptz NOT NULL,
  end_reason text NOT NULL
);
CREATE INDEX IF NOT EXISTS seng_lease_history_by_ip ON seng_lease_history(ip, started_at);
CREATE INDEX IF NOT EXISTS seng_lease_history_by_app ON seng_lease_history(app, started_at);
CREATE INDEX IF NOT EXISTS seng_lease_history_by_end ON seng_lease_history(ended_at);
CREATE OR REPLACE FUNCTION seng_lease_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  r seng_leases;
  payload text;
BEGIN
  IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
  payload := json_build_object(
    'op', CASE TG_OP WHEN 'INSERT' THEN 'add' WHEN 'DELETE' THEN 'del' ELSE 'upd' END,
    'ip', r.ip, 'session', r.session_id, 'gateway', r.gateway_id, 'app', r.app,
    'mrEnclave', r.mr_enclave, 'mrSigner', r.mr_signer, 'hostIp', r.host_ip,
    'categories', r.categories)::text;
  IF octet_length(payload) > 7900 THEN
    payload := json_build_object(
      'op', CASE TG_OP WHEN 'INSERT' THEN 'add' WHEN 'DELETE' THEN 'del' ELSE 'upd' END,
      'ip', r.ip, 'session', r.session_id, 'partial', true)::text;
  END IF;
  PERFORM pg_notify('${LEASES_CHANNEL}', payload);
  RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS seng_leases_changed ON seng_leases;
CREATE TRIGGER seng_leases_changed AFTER INSERT OR UPDATE OR DELETE ON seng_leases
  FOR EACH ROW EXECUTE FUNCTION seng_lease_changed();
`;

/**
 * Creates the registry's tables if missing, in one transaction under an advisory lock, so
 * any number of gateways and agents may start at the same moment.
 */
export async function ensureRegistrySchema(pool: pg.Pool): Promise<void> {
  await inTransaction(pool, async (client) => {
    await client.query('SELECT pg_advisory_xact_lock($1)', [SCHEMA_LOCK_KEY]);
    // Already there (the common case): do not take the trigger's table lock again.
    const present = await client.query<{ ok: boolean }>(
      `SELECT to_regclass('seng_leases') IS NOT NULL
          AND to_regclass('seng_lease_history_by_end') IS NOT NULL
          AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'seng_leases_changed') AS ok`,
    );
    if (!present.rows[0]?.ok) await client.query(REGISTRY_DDL);
  });
}

/** Whether the registry's tables exist (read-only check; creates nothing). */
export async function registrySchemaPresent(pool: pg.Pool): Promise<boolean> {
  const r = await pool.query<{ ok: boolean }>(
    `SELECT to_regclass('seng_leases') IS NOT NULL AND to_regclass('seng_lease_history') IS NOT NULL
        AND to_regclass('seng_gateways') IS NOT NULL AS ok`,
  );
  return r.rows[0]?.ok === true;
}
