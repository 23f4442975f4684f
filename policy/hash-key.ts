/**
 * The Hash strategy's keyed function. The key never travels in SQL text: `dbguard db install` (run by
 * a DBA) creates `dbguard.hash(value text, key_id text)` in the database, a SECURITY DEFINER
 * HMAC-SHA256 over a key table that only the function's owner can read, and the rewrite calls it by
 * key id. A key id names the Secret the key comes from (`namespace/secret/key`) and is not secret.
 *
 * The catalog snapshot says whether the function is there and whether this session can trust it: a
 * session that can alter the function (owner, member of the owner, schema owner, CREATE on the
 * schema, superuser) or read the key table would turn pseudonyms back into values, so Hash is refused
 * there as if nothing were installed. Pure: names, SQL text and messages only.
 */
import { quoteLiteral } from './ast.js';

/** The schema `dbguard db install` creates. Masked subjects may neither read from it nor call into it. */
export const HASH_SCHEMA = 'dbguard';
export const HASH_FUNCTION = 'hash';
/** The key table: one row per key id, holding the HMAC pads derived from the key. */
export const HASH_KEY_TABLE = 'hash_keys';

/** The key id of a Hash column: the Secret key its key comes from, qualified by the policy's namespace. */
export function hashKeyId(namespace: string, ref: { name: string; key: string }): string {
  return `${namespace}/${ref.name}/${ref.key}`;
}

/** The hex HMAC-SHA256 of `value` (an SQL expression of any type) under the key `keyId`. */
export function hashCall(value: string, keyId: string): string {
  // Both arguments cast to pg_catalog.text: only dbguard.hash(text, text) matches exactly, whatever
  // overloads exist, and no `text` type or domain earlier on the search_path takes part.
  return `${HASH_SCHEMA}.${HASH_FUNCTION}(CAST(${value} AS pg_catalog.text), CAST(${quoteLiteral(keyId)} AS pg_catalog.text))`;
}

/** What the catalog snapshot knows about dbguard.hash for this session. */
export interface HashFunctionStatus {
  /** the session may rely on it */
  usable: boolean;
  /** why not, when not usable */
  why?: string;
}

/**
 * Catalog snapshot rows `('hashfn', <verdict>)`: none when dbguard.hash(text, text) does not exist,
 * else 'ok' or the reason the session cannot rely on it. Judged for every role the session's login
 * role can become (SET ROLE reaches only roles it is a member of; a superuser is a member of all):
 * none of them may replace the function or read a table of its schema. Reads only catalogs and
 * privilege functions that every role may use.
 */
export const hashFunctionCatalogRows = `SELECT 'hashfn', CASE
    WHEN NOT p.prosecdef THEN 'dbguard.hash is not SECURITY DEFINER'
    WHEN NOT pg_catalog.has_function_privilege(p.oid, 'EXECUTE') THEN 'this role may not execute dbguard.hash'
    WHEN pg_catalog.pg_has_role(session_user, p.proowner, 'MEMBER')
      THEN 'the login role owns dbguard.hash (or is a superuser or a member of its owner) and could replace it'
    WHEN pg_catalog.pg_has_role(session_user, n.nspowner, 'MEMBER')
      THEN 'the login role owns the schema dbguard and could replace dbguard.hash'
    WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE pg_catalog.pg_has_role(session_user, r.oid, 'MEMBER')
                 AND pg_catalog.has_schema_privilege(r.oid, n.oid, 'CREATE'))
      THEN 'the login role may create objects in the schema dbguard'
    WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_class c, pg_catalog.pg_roles r
                 WHERE c.relnamespace = n.oid AND pg_catalog.pg_has_role(session_user, r.oid, 'MEMBER')
                   AND pg_catalog.has_any_column_privilege(r.oid, c.oid, 'SELECT'))
      THEN 'the login role can read a table of the schema dbguard (the key table)'
    ELSE 'ok' END, NULL, NULL, NULL, NULL, NULL, NULL
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
  WHERE n.nspname = '${HASH_SCHEMA}' AND p.proname = '${HASH_FUNCTION}'
    AND p.proargtypes = '25 25'::pg_catalog.oidvector AND p.prorettype = 25`;

/** The status from the snapshot's 'hashfn' verdict (undefined: the row was absent). */
export function hashFunctionStatus(verdict: string | undefined): HashFunctionStatus {
  if (verdict === undefined) return { usable: false, why: 'dbguard.hash is not installed' };
  return verdict === 'ok' ? { usable: true } : { usable: false, why: verdict };
}

/** The refusal a masked subject gets when a statement needs a Hash mask the database cannot compute. */
export function hashUnavailableMessage(
  database: string,
  status: HashFunctionStatus | undefined,
  column: string,
): string {
  const why = status?.why ?? 'the catalog snapshot does not say whether dbguard.hash is installed';
  return `Hash masking of ${column} needs \`dbguard db install\` in database ${database} (${why})`;
}

/** The key ids of the policy's Hash columns (what `dbguard db install` must have installed). */
export function hashKeyIds(policy: { masking?: { columns: { hash?: { keyId?: string } }[] }[] }): string[] {
  const ids = new Set<string>();
  for (const rule of policy.masking ?? [])
    for (const c of rule.columns) if (c.hash?.keyId) ids.add(c.hash.keyId);
  return [...ids].sort();
}
