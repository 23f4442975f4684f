/**
 * What `dbguard db install` puts into a database for the Hash strategy (policy/hash-key.ts): the
 * schema `dbguard`, the key table only its owner can read, and the SECURITY DEFINER function
 * `dbguard.hash(value text, key_id text)`, HMAC-SHA256 in hex.
 *
 * HMAC from PostgreSQL's core `sha256(bytea)` (11+), no pgcrypto: HMAC(k, m) = H((k ⊕ opad) ||
 * H((k ⊕ ipad) || m)). The two padded keys are derived once, here, and stored instead of the key, so
 * a call is two sha256 and two concatenations; the result equals pgcrypto's `hmac(m, k, 'sha256')` and
 * Node's `createHmac('sha256', k)` (tested), and the same SQL runs where no extension can be installed
 * (managed services, the demo's embedded PGlite).
 *
 * Keys travel to the server as COPY data (see `keyCopyText`), never in a statement's text: COPY data
 * is not in pg_stat_activity, pg_stat_statements or the statement log.
 */
import crypto from 'node:crypto';
import { HASH_FUNCTION, HASH_KEY_TABLE, HASH_SCHEMA } from '../policy/hash-key.js';

const S = HASH_SCHEMA;
const FN = `${S}.${HASH_FUNCTION}`;
const KEYS = `${S}.${HASH_KEY_TABLE}`;

/** Key ids are `namespace/secret/key`: Kubernetes names and Secret keys, nothing to escape. */
export const KEY_ID_PATTERN = /^[A-Za-z0-9._-]+\/[A-Za-z0-9._-]+\/[A-Za-z0-9._-]+$/;

/** The HMAC-SHA256 padded keys: SHA-256's block is 64 bytes; a longer key is hashed first. */
export function hmacPads(key: Buffer): { inner: Buffer; outer: Buffer } {
  const k = Buffer.alloc(64);
  (key.length > 64 ? crypto.createHash('sha256').update(key).digest() : key).copy(k);
  const inner = Buffer.alloc(64);
  const outer = Buffer.alloc(64);
  for (let i = 0; i < 64; i++) {
    inner[i] = k[i]! ^ 0x36;
    outer[i] = k[i]! ^ 0x5c;
  }
  return { inner, outer };
}

function ident(role: string): string {
  return role.toUpperCase() === 'PUBLIC' ? 'PUBLIC' : `"${role.replace(/"/g, '""')}"`;
}

/**
 * A check run first: the schema `dbguard` and whatever of ours is in it must belong to the installing
 * role itself, not merely to a role it can act as. `CREATE OR REPLACE` keeps an existing function's
 * owner, so a function another role planted (a superuser may replace it) would stay in that role's
 * hands, and the proxies would rightly refuse it. One row per object that exists.
 */
export const preflightSql = `SELECT 'schema ${S}' AS object, pg_catalog.pg_get_userbyid(n.nspowner) AS owner,
    n.nspowner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user) AS mine
  FROM pg_catalog.pg_namespace n WHERE n.nspname = '${S}'
UNION ALL SELECT 'function ' || p.oid::pg_catalog.regprocedure::text, pg_catalog.pg_get_userbyid(p.proowner),
    p.proowner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = '${S}'
UNION ALL SELECT 'table ${S}.' || c.relname, pg_catalog.pg_get_userbyid(c.relowner),
    c.relowner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '${S}'`;

/**
 * The DDL, idempotent: run in one transaction. `grantees`: who may execute the function (the roles
 * the proxies log in as); PUBLIC by default, since the function gives out pseudonyms, never the key.
 */
export function installSql(grantees: string[]): string {
  const to = (grantees.length ? grantees : ['PUBLIC']).map(ident).join(', ');
  return `CREATE SCHEMA IF NOT EXISTS ${S};
REVOKE ALL ON SCHEMA ${S} FROM PUBLIC;
GRANT USAGE ON SCHEMA ${S} TO ${to};
CREATE TABLE IF NOT EXISTS ${KEYS} (
  id text PRIMARY KEY,
  inner_pad bytea NOT NULL CHECK (length(inner_pad) = 64),
  outer_pad bytea NOT NULL CHECK (length(outer_pad) = 64),
  installed_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON ${KEYS} FROM PUBLIC;
COMMENT ON TABLE ${KEYS} IS 'dbguard Hash keys (HMAC pads). Readable by the owner only: see dbguard db install.';
CREATE OR REPLACE FUNCTION ${FN}(value text, key_id text) RETURNS text
  LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $dbguard$
DECLARE
  ip bytea;
  op bytea;
BEGIN
  SELECT k.inner_pad, k.outer_pad INTO ip, op FROM ${KEYS} k WHERE k.id = key_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'dbguard: no Hash key % in this database', key_id
      USING ERRCODE = '42704', HINT = 'A DBA installs it with: dbguard db install --key-id ' || key_id;
  END IF;
  RETURN encode(sha256(op || sha256(ip || convert_to(value, 'UTF8'))), 'hex');
END
$dbguard$;
COMMENT ON FUNCTION ${FN}(text, text) IS 'dbguard Hash strategy: hex HMAC-SHA256 of value under the key key_id.';
REVOKE ALL ON FUNCTION ${FN}(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ${FN}(text, text) TO ${to};
CREATE OR REPLACE FUNCTION ${S}.key_ids() RETURNS SETOF text
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $dbguard$ SELECT id FROM ${KEYS} ORDER BY id $dbguard$;
COMMENT ON FUNCTION ${S}.key_ids() IS 'dbguard: the ids (not the keys) of the installed Hash keys.';
REVOKE ALL ON FUNCTION ${S}.key_ids() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ${S}.key_ids() TO ${to};`;
}

/** The temporary table COPY fills, then `mergeKeysSql` moves its rows into the key table. */
export const keyLoadTableSql = `CREATE TEMP TABLE dbguard_key_load (id text, inner_pad bytea, outer_pad bytea) ON COMMIT DROP`;
export const keyCopySql = 'COPY dbguard_key_load (id, inner_pad, outer_pad) FROM STDIN';

/** COPY text-format rows for the keys (bytea in hex, its backslash doubled as COPY text requires). */
export function keyCopyText(keys: { id: string; key: Buffer }[]): string {
  return keys
    .map(({ id, key }) => {
      if (!KEY_ID_PATTERN.test(id))
        throw new Error(`key id ${JSON.stringify(id)} is not NAMESPACE/SECRET/KEY`);
      const { inner, outer } = hmacPads(key);
      return `${id}\t\\\\x${inner.toString('hex')}\t\\\\x${outer.toString('hex')}\n`;
    })
    .join('');
}

/** Upsert the loaded keys; one row per key: `(id, action)` with action installed/replaced/unchanged. */
export const mergeKeysSql = `WITH old AS (SELECT id, inner_pad FROM ${KEYS}),
up AS (
  INSERT INTO ${KEYS} AS k (id, inner_pad, outer_pad) SELECT id, inner_pad, outer_pad FROM dbguard_key_load
  ON CONFLICT (id) DO UPDATE SET inner_pad = EXCLUDED.inner_pad, outer_pad = EXCLUDED.outer_pad, installed_at = now()
    WHERE k.inner_pad IS DISTINCT FROM EXCLUDED.inner_pad OR k.outer_pad IS DISTINCT FROM EXCLUDED.outer_pad
  RETURNING k.id)
SELECT l.id, CASE WHEN up.id IS NULL THEN 'unchanged' WHEN old.id IS NULL THEN 'installed' ELSE 'replaced' END AS action
  FROM dbguard_key_load l LEFT JOIN up ON up.id = l.id LEFT JOIN old ON old.id = l.id ORDER BY l.id`;

/** Drop only what install created; the schema only when nothing else is left in it. */
export const uninstallSql = `DROP FUNCTION IF EXISTS ${FN}(text, text);
DROP FUNCTION IF EXISTS ${S}.key_ids();
DROP TABLE IF EXISTS ${KEYS};
DROP SCHEMA IF EXISTS ${S};`;

/** For `db status`: is it there, and which key ids (through key_ids(), so any grantee can ask). */
export const statusSql = `SELECT
  EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = '${S}') AS schema,
  pg_catalog.to_regprocedure('${FN}(text,text)') IS NOT NULL AS function,
  pg_catalog.to_regprocedure('${S}.key_ids()') IS NOT NULL AS key_ids,
  (SELECT pg_catalog.pg_get_userbyid(p.proowner) FROM pg_catalog.pg_proc p
     WHERE p.oid = pg_catalog.to_regprocedure('${FN}(text,text)')) AS owner,
  current_database() AS database, session_user::text AS login`;
export const keyIdsSql = `SELECT id FROM ${S}.key_ids() AS id`;
