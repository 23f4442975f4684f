/**
 * The catalog snapshot: the facts about the connected database that judging needs (which relations
 * exist where, the column lists of masked tables and their descendants, views that read masked
 * tables, user-defined functions and operators, the effective search_path). The proxy reads it with
 * ONE query on the client's own session (`catalogQuery`), so it sees exactly what that session sees;
 * everything here only reads catalogs that every role may read (PostgreSQL 13-18).
 */
import type { CompiledPolicy } from '../api/compiled.js';
import { qkey, quoteLiteral } from './ast.js';
import { type HashFunctionStatus, hashFunctionCatalogRows, hashFunctionStatus } from './hash-key.js';

export interface CatalogColumn {
  name: string;
  /** `format_type(atttypid, atttypmod)`, e.g. `character varying(100)`, `numeric(10,2)` */
  type: string;
  attnum: number;
  /** pg_type.typcategory of the column's base type: S string, N numeric, D date/time, A array ... */
  category: string;
}

/** A masked table, or an inheritance/partition descendant of one (masked by the root's column names). */
export interface MaskedRelation {
  schema: string;
  name: string;
  columns: CatalogColumn[];
  /** the table named in the MaskingRule whose rules apply */
  root: { schema: string; name: string };
}

export interface CatalogSnapshot {
  /** changes whenever relations, functions, operators, rules or inheritance change */
  version: string;
  /**
   * The server's `server_version_num` (150004 for 15.4); 0 when the snapshot does not say. Mask
   * expressions use cheaper built-ins where the server has them.
   */
  serverVersionNum: number;
  /** current_schemas(true) at the time of the snapshot */
  searchPath: string[];
  currentUser?: string;
  /** this session's temporary schema (`pg_temp_3`), once it exists */
  tempSchema?: string;
  schemas: Set<string>;
  /** schema → relation name → relkind */
  relations: Map<string, Map<string, string>>;
  /** qkey(schema, name) → masked table or descendant */
  masked: Map<string, MaskedRelation>;
  /** views, materialized views and relations with rewrite rules that read a masked table (transitively) */
  dependents: Set<string>;
  /**
   * qkey(view) → the relations a user view or materialized view reads directly (from its rewrite
   * rule's dependencies); a read through a view exercises these too (rules, not masking)
   */
  viewReads: Map<string, { schema: string; name: string }[]>;
  /**
   * qkey(table) → its direct inheritance or partition children: reading or writing a parent without
   * ONLY reads or writes their rows (rules, not masking, which has its own descendants)
   */
  children: Map<string, { schema: string; name: string }[]>;
  /**
   * qkey(relation) → its non-SELECT rewrite rules (`CREATE RULE ... ON INSERT|UPDATE|DELETE ... DO
   * ALSO|INSTEAD ...`): the event (INSERT, UPDATE, DELETE) and each relation the rule's actions name
   */
  ruleTargets: Map<string, { event: string; schema: string; name: string }[]>;
  /** inheritance/partition ancestors of masked tables: reading them (without ONLY) reads masked rows */
  ancestors: Set<string>;
  /** user-defined function/procedure/aggregate name → schemas defining one */
  functions: Map<string, Set<string>>;
  /** user-defined operator name → schemas defining one */
  operators: Map<string, Set<string>>;
  /** the Hash strategy's keyed function `dbguard.hash` (policy/hash-key.ts); absent: not known */
  hashFunction?: HashFunctionStatus;
}

/** Every (schema, table) a MaskingRule of the policy names. */
export function maskedTablesOf(policy: CompiledPolicy): { schema: string; table: string }[] {
  const seen = new Map<string, { schema: string; table: string }>();
  for (const rule of policy.masking ?? []) {
    for (const c of rule.columns) seen.set(qkey(c.schema, c.table), { schema: c.schema, table: c.table });
  }
  return [...seen.values()];
}

/** One row, one column: a cheap string that changes when anything the snapshot depends on changes. */
export const catalogVersionQuery =
  "SELECT (SELECT count(*)::text || '.' || coalesce(max(xmin::text::bigint), 0)::text FROM pg_catalog.pg_class)" +
  " || ':' || (SELECT count(*)::text || '.' || coalesce(max(xmin::text::bigint), 0)::text FROM pg_catalog.pg_proc)" +
  " || ':' || (SELECT count(*)::text || '.' || coalesce(max(xmin::text::bigint), 0)::text FROM pg_catalog.pg_operator)" +
  " || ':' || (SELECT count(*)::text || '.' || coalesce(max(xmin::text::bigint), 0)::text FROM pg_catalog.pg_rewrite)" +
  " || ':' || (SELECT count(*)::text || '.' || coalesce(max(xmin::text::bigint), 0)::text FROM pg_catalog.pg_inherits)" +
  " || ':' || (SELECT count(*)::text || '.' || coalesce(max(xmin::text::bigint), 0)::text FROM pg_catalog.pg_namespace)" +
  " || ':' || pg_catalog.pg_my_temp_schema()::oid::text AS catalog_version";

/**
 * The snapshot query: one row per fact, `(kind, a, b, c, d, e, f, g)`, all text. Run it with the
 * simple protocol on the client's session and hand the rows to `parseCatalog`.
 */
export function catalogQuery(policy: CompiledPolicy): string {
  const tables = maskedTablesOf(policy);
  const masked = tables.length
    ? `VALUES ${tables.map((t) => `(${quoteLiteral(t.schema)}, ${quoteLiteral(t.table)})`).join(', ')}`
    : 'SELECT NULL::text, NULL::text WHERE false';
  const version = catalogVersionQuery.replace(/^SELECT /, '').replace(/ AS catalog_version$/, '');
  return `WITH RECURSIVE
masked(nsp, rel) AS (${masked}),
roots AS (
  SELECT c.oid FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN masked m ON m.nsp = n.nspname AND m.rel = c.relname),
down(oid, root) AS (
  SELECT oid, oid FROM roots
  UNION SELECT i.inhrelid, d.root FROM pg_catalog.pg_inherits i JOIN down d ON i.inhparent = d.oid),
up(oid) AS (
  SELECT i.inhparent FROM pg_catalog.pg_inherits i JOIN roots r ON i.inhrelid = r.oid
  UNION SELECT i.inhparent FROM pg_catalog.pg_inherits i JOIN up u ON i.inhrelid = u.oid),
dep(oid) AS (
  SELECT oid FROM down
  UNION SELECT r.ev_class FROM pg_catalog.pg_depend d
  JOIN pg_catalog.pg_rewrite r ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
  JOIN dep ON d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid = dep.oid
  WHERE r.ev_class <> dep.oid),
rel AS (
  SELECT c.oid, n.nspname::text AS nsp, c.relname::text AS name, c.relkind::text AS kind
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p', 'S', 'i', 'I')
    AND (NOT pg_catalog.starts_with(n.nspname, 'pg_') OR n.nspname = 'pg_catalog' OR n.oid = pg_catalog.pg_my_temp_schema())
    AND NOT (n.nspname IN ('pg_catalog', 'information_schema') AND c.relkind IN ('i', 'I', 'S')))
SELECT 'path', s::text, o::text, NULL, NULL, NULL, NULL, NULL
  FROM unnest(pg_catalog.current_schemas(true)) WITH ORDINALITY AS u(s, o)
UNION ALL SELECT 'user', current_user::text, NULL, NULL, NULL, NULL, NULL, NULL
UNION ALL SELECT 'temp', nspname::text, NULL, NULL, NULL, NULL, NULL, NULL
  FROM pg_catalog.pg_namespace WHERE oid = pg_catalog.pg_my_temp_schema()
UNION ALL SELECT 'schema', nspname::text, NULL, NULL, NULL, NULL, NULL, NULL FROM pg_catalog.pg_namespace
  WHERE NOT pg_catalog.starts_with(nspname, 'pg_') OR nspname = 'pg_catalog' OR oid = pg_catalog.pg_my_temp_schema()
UNION ALL SELECT 'rel', nsp, name, kind, NULL, NULL, NULL, NULL FROM rel
UNION ALL SELECT 'col', n.nspname::text, c.relname::text, a.attname::text,
    pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnum::text,
    (SELECT bt.typcategory::text FROM pg_catalog.pg_type t
       JOIN pg_catalog.pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
      WHERE t.oid = a.atttypid),
    rn.nspname::text || '.' || r.relname::text
  FROM down d
  JOIN pg_catalog.pg_class c ON c.oid = d.oid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_class r ON r.oid = d.root
  JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL SELECT 'root', n.nspname::text, c.relname::text, rn.nspname::text, r.relname::text, NULL, NULL, NULL
  FROM down d
  JOIN pg_catalog.pg_class c ON c.oid = d.oid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_class r ON r.oid = d.root
  JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace
UNION ALL SELECT 'dep', n.nspname::text, c.relname::text, NULL, NULL, NULL, NULL, NULL
  FROM dep JOIN pg_catalog.pg_class c ON c.oid = dep.oid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE dep.oid NOT IN (SELECT oid FROM down)
UNION ALL SELECT 'anc', n.nspname::text, c.relname::text, NULL, NULL, NULL, NULL, NULL
  FROM up JOIN pg_catalog.pg_class c ON c.oid = up.oid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE up.oid NOT IN (SELECT oid FROM down)
UNION ALL SELECT DISTINCT 'func', n.nspname::text, p.proname::text, NULL, NULL, NULL, NULL, NULL
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE p.oid >= 16384
UNION ALL SELECT DISTINCT 'op', n.nspname::text, o.oprname::text, NULL, NULL, NULL, NULL, NULL
  FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace WHERE o.oid >= 16384
UNION ALL SELECT DISTINCT 'vrel', vn.nspname::text, v.relname::text, tn.nspname::text, t.relname::text,
    NULL, NULL, NULL
  FROM pg_catalog.pg_rewrite r
  JOIN pg_catalog.pg_class v ON v.oid = r.ev_class AND v.relkind IN ('v', 'm') AND v.oid >= 16384
  JOIN pg_catalog.pg_namespace vn ON vn.oid = v.relnamespace
  JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
    AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> r.ev_class
  JOIN pg_catalog.pg_class t ON t.oid = d.refobjid AND t.relkind IN ('r', 'v', 'm', 'f', 'p')
  JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
  WHERE r.ev_type = '1'
UNION ALL SELECT 'inh', pn.nspname::text, p.relname::text, cn.nspname::text, c.relname::text, NULL, NULL, NULL
  FROM pg_catalog.pg_inherits i
  JOIN pg_catalog.pg_class p ON p.oid = i.inhparent AND p.oid >= 16384
  JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace
  JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid AND c.relkind IN ('r', 'p', 'f')
  JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace
UNION ALL SELECT DISTINCT 'rrel', vn.nspname::text, v.relname::text, tn.nspname::text, t.relname::text,
    CASE r.ev_type WHEN '2' THEN 'UPDATE' WHEN '3' THEN 'INSERT' ELSE 'DELETE' END, NULL, NULL
  FROM pg_catalog.pg_rewrite r
  JOIN pg_catalog.pg_class v ON v.oid = r.ev_class AND v.oid >= 16384
  JOIN pg_catalog.pg_namespace vn ON vn.oid = v.relnamespace
  JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
    AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> r.ev_class
  JOIN pg_catalog.pg_class t ON t.oid = d.refobjid AND t.relkind IN ('r', 'v', 'm', 'f', 'p')
  JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
  WHERE r.ev_type IN ('2', '3', '4')
UNION ALL SELECT 'server', pg_catalog.current_setting('server_version_num'), NULL, NULL, NULL, NULL, NULL, NULL
UNION ALL ${hashFunctionCatalogRows}
UNION ALL SELECT 'version', ${version}, NULL, NULL, NULL, NULL, NULL, NULL`;
}

function need(row: (string | null)[], i: number, kind: string): string {
  const v = row[i];
  if (typeof v !== 'string') throw new Error(`dbguard: catalog row '${kind}' lacks column ${i}`);
  return v;
}

/** Build a snapshot from the rows of `catalogQuery` (each row: 8 text-or-null columns). */
export function parseCatalog(rows: (string | null)[][]): CatalogSnapshot {
  if (!Array.isArray(rows)) throw new Error('dbguard: catalog rows must be an array of rows');
  const snap: CatalogSnapshot = {
    version: '',
    serverVersionNum: 0,
    searchPath: [],
    schemas: new Set(),
    relations: new Map(),
    masked: new Map(),
    dependents: new Set(),
    viewReads: new Map(),
    ruleTargets: new Map(),
    children: new Map(),
    ancestors: new Set(),
    functions: new Map(),
    operators: new Map(),
  };
  const path: [number, string][] = [];
  let hashVerdict: string | undefined;
  const roots = new Map<string, { schema: string; name: string; rootKey: string }>();
  const cols = new Map<string, CatalogColumn[]>();
  const add = (m: Map<string, Set<string>>, name: string, schema: string) => {
    let s = m.get(name);
    if (!s) {
      s = new Set();
      m.set(name, s);
    }
    s.add(schema);
  };
  for (const row of rows) {
    if (!Array.isArray(row) || row.length < 2) throw new Error('dbguard: malformed catalog row');
    const kind = row[0];
    switch (kind) {
      case 'path':
        path.push([Number(need(row, 2, kind)), need(row, 1, kind)]);
        break;
      case 'user':
        snap.currentUser = need(row, 1, kind);
        break;
      case 'temp':
        snap.tempSchema = need(row, 1, kind);
        break;
      case 'schema':
        snap.schemas.add(need(row, 1, kind));
        break;
      case 'rel': {
        const schema = need(row, 1, kind);
        let m = snap.relations.get(schema);
        if (!m) {
          m = new Map();
          snap.relations.set(schema, m);
        }
        m.set(need(row, 2, kind), need(row, 3, kind));
        break;
      }
      case 'col': {
        const key = qkey(need(row, 1, kind), need(row, 2, kind));
        let list = cols.get(key);
        if (!list) {
          list = [];
          cols.set(key, list);
        }
        list.push({
          name: need(row, 3, kind),
          type: need(row, 4, kind),
          attnum: Number(need(row, 5, kind)),
          category: row[6] ?? 'U',
        });
        break;
      }
      case 'root': {
        const schema = need(row, 1, kind);
        const name = need(row, 2, kind);
        roots.set(qkey(schema, name), {
          schema,
          name,
          rootKey: qkey(need(row, 3, kind), need(row, 4, kind)),
        });
        break;
      }
      case 'dep':
        snap.dependents.add(qkey(need(row, 1, kind), need(row, 2, kind)));
        break;
      case 'vrel': {
        const key = qkey(need(row, 1, kind), need(row, 2, kind));
        let list = snap.viewReads.get(key);
        if (!list) {
          list = [];
          snap.viewReads.set(key, list);
        }
        list.push({ schema: need(row, 3, kind), name: need(row, 4, kind) });
        break;
      }
      case 'inh': {
        const key = qkey(need(row, 1, kind), need(row, 2, kind));
        let list = snap.children.get(key);
        if (!list) {
          list = [];
          snap.children.set(key, list);
        }
        list.push({ schema: need(row, 3, kind), name: need(row, 4, kind) });
        break;
      }
      case 'rrel': {
        const key = qkey(need(row, 1, kind), need(row, 2, kind));
        let list = snap.ruleTargets.get(key);
        if (!list) {
          list = [];
          snap.ruleTargets.set(key, list);
        }
        list.push({ event: need(row, 5, kind), schema: need(row, 3, kind), name: need(row, 4, kind) });
        break;
      }
      case 'anc':
        snap.ancestors.add(qkey(need(row, 1, kind), need(row, 2, kind)));
        break;
      case 'func':
        add(snap.functions, need(row, 2, kind), need(row, 1, kind));
        break;
      case 'op':
        add(snap.operators, need(row, 2, kind), need(row, 1, kind));
        break;
      case 'version':
        snap.version = need(row, 1, kind);
        break;
      case 'hashfn':
        hashVerdict = need(row, 1, kind);
        break;
      case 'server': {
        const n = Number(need(row, 1, kind));
        snap.serverVersionNum = Number.isSafeInteger(n) && n > 0 ? n : 0;
        break;
      }
      default:
        break; // a newer query's extra facts: ignore
    }
  }
  snap.searchPath = path.sort((a, b) => a[0] - b[0]).map((p) => p[1]);
  snap.hashFunction = hashFunctionStatus(hashVerdict);
  for (const [key, r] of roots) {
    const [rs, rn] = r.rootKey.split('\u0000') as [string, string];
    snap.masked.set(key, {
      schema: r.schema,
      name: r.name,
      columns: (cols.get(key) ?? []).sort((a, b) => a.attnum - b.attnum),
      root: { schema: rs, name: rn },
    });
  }
  return snap;
}

/** Query for the session's effective search_path, as a JSON array (see `parseSearchPath`). */
export const searchPathQuery = 'SELECT pg_catalog.array_to_json(pg_catalog.current_schemas(true))::text';

/** Parse the value of `searchPathQuery` (a JSON array) or a PostgreSQL array literal `{a,"b c"}`. */
export function parseSearchPath(value: string): string[] {
  const v = value.trim();
  if (v.startsWith('[')) {
    const a = JSON.parse(v);
    if (!Array.isArray(a) || !a.every((x) => typeof x === 'string'))
      throw new Error('dbguard: search_path value is not an array of names');
    return a;
  }
  if (!v.startsWith('{') || !v.endsWith('}')) throw new Error(`dbguard: cannot parse search_path value ${v}`);
  const out: string[] = [];
  const body = v.slice(1, -1);
  let i = 0;
  while (i < body.length) {
    let item = '';
    if (body[i] === '"') {
      i++;
      while (i < body.length && body[i] !== '"') {
        if (body[i] === '\\') i++;
        item += body[i++] ?? '';
      }
      i++;
    } else {
      while (i < body.length && body[i] !== ',') item += body[i++];
    }
    out.push(item);
    if (body[i] === ',') i++;
  }
  return out;
}

/**
 * One snapshot object for every session that read the same catalog under the same policy with the
 * same search_path, user and temp schema (a pool's connections, usually all of them). A snapshot lists
 * every relation of the database, so a per-session copy costs tens of KiB per connection; shared, it
 * costs one. Snapshots are never mutated after parseCatalog, which is what makes sharing safe.
 */
export class SnapshotInterner {
  private readonly byKey = new Map<string, CatalogSnapshot>();

  constructor(private readonly maxEntries = 64) {}

  intern(policyVersion: string, snap: CatalogSnapshot): CatalogSnapshot {
    const key = JSON.stringify([
      policyVersion,
      snap.version,
      snap.serverVersionNum,
      snap.searchPath,
      snap.currentUser ?? null,
      snap.tempSchema ?? null,
      // judged for the login role (session_user), which current_user does not name after SET ROLE
      snap.hashFunction?.why ?? null,
    ]);
    const known = this.byKey.get(key);
    if (known) return known;
    this.byKey.set(key, snap);
    if (this.byKey.size > this.maxEntries) this.byKey.delete(this.byKey.keys().next().value!);
    return snap;
  }

  get size(): number {
    return this.byKey.size;
  }
}
