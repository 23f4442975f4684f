/**
 * Name resolution the way the server does it: relations through pg_temp then the effective
 * search_path (current_schemas(true) order), functions through the user-defined function list of the
 * catalog snapshot. Where the proxy cannot know for sure, answers lean to the stricter side.
 */
import type { CompiledPolicy } from '../api/compiled.js';
import { qdisplay, qkey } from './ast.js';
import { BUILTIN_FUNCTIONS, BUILTIN_OPERATORS, isDynamicBuiltin } from './builtin-functions.js';
import type { CatalogSnapshot } from './catalog.js';
import type { Identity } from './identity.js';

/** What the proxy knows about the session a statement runs in. */
export interface SessionContext {
  identity: Identity;
  database: string;
  /** effective schemas in order, as current_schemas(true) reports (may include pg_temp_N, pg_catalog) */
  searchPath: string[];
  catalog?: CatalogSnapshot;
  /** this session's temp schema (pg_temp_N), if it exists; defaults to the catalog's */
  tempSchema?: string;
}

export interface ResolvedRelation {
  schema: string;
  name: string;
  key: string;
  display: string;
  /** the catalog snapshot has this relation */
  known: boolean;
  /** the search_path was not predictable when this unqualified name was resolved */
  uncertain: boolean;
  relkind?: string;
}

/** The effective path a `SET search_path` produces, as current_schemas(true) would report it. */
export function predictSearchPath(
  values: string[],
  ctx: { tempSchema?: string; catalog?: CatalogSnapshot; user?: string },
): string[] {
  const out: string[] = [];
  const exists = (s: string) => !ctx.catalog || ctx.catalog.schemas.has(s);
  let tempListed = false;
  let catalogListed = false;
  for (const raw of values) {
    let s = raw;
    if (s === '$user') {
      if (!ctx.user) continue;
      s = ctx.user;
    }
    if (s === 'pg_temp') {
      tempListed = true;
      if (ctx.tempSchema) out.push(ctx.tempSchema);
      continue;
    }
    if (s === 'pg_catalog') catalogListed = true;
    if (exists(s) && !out.includes(s)) out.push(s);
  }
  if (!catalogListed) out.unshift('pg_catalog');
  if (!tempListed && ctx.tempSchema) out.unshift(ctx.tempSchema);
  return out;
}

function creationSchema(path: string[], tempSchema?: string): string {
  for (const s of path) {
    if (s === 'pg_catalog' || s === tempSchema || /^pg_temp_\d+$/.test(s)) continue;
    return s;
  }
  return path[0] ?? 'public';
}

/**
 * Resolve a relation name. `path` null: the search_path is unknown at this point of a
 * multi-statement text (after RESET or an opaque statement); `fallbackPath` is then used for display.
 */
export function resolveRelation(
  schemaname: string | undefined,
  relname: string,
  path: string[] | null,
  fallbackPath: string[],
  catalog: CatalogSnapshot | undefined,
  tempSchema: string | undefined,
  temporary = false,
): ResolvedRelation {
  const make = (schema: string, uncertain: boolean): ResolvedRelation => {
    const relkind = catalog?.relations.get(schema)?.get(relname);
    return {
      schema,
      name: relname,
      key: qkey(schema, relname),
      display: qdisplay(schema, relname),
      known: relkind !== undefined,
      uncertain,
      relkind,
    };
  };
  if (schemaname) {
    const s = schemaname === 'pg_temp' ? (tempSchema ?? 'pg_temp') : schemaname;
    return make(s, false);
  }
  if (temporary) return make(tempSchema ?? 'pg_temp', false);
  const p = path ?? fallbackPath;
  if (catalog) {
    for (const s of p) if (catalog.relations.get(s)?.has(relname)) return make(s, path === null);
  }
  return make(creationSchema(p, tempSchema), path === null);
}

export type FunctionClass = 'builtin' | 'allowed' | 'user-defined' | 'dynamic' | 'unknown';

/**
 * Classify a function call by name. Overload resolution needs argument types the proxy does not
 * have, so an unqualified name counts as user-defined when ANY schema defines a user function of
 * that name (and is allowed only when every such function is in functions.allow).
 */
export function classifyFunction(
  parts: string[],
  catalog: CatalogSnapshot | undefined,
  allow: ReadonlySet<string>,
): FunctionClass {
  const name = parts[parts.length - 1] ?? '';
  const schema = parts.length >= 2 ? parts[parts.length - 2] : undefined;
  if (parts.length > 2) return 'unknown';
  const builtinName = BUILTIN_FUNCTIONS.has(name);
  if (isDynamicBuiltin(name) && (schema === undefined || schema === 'pg_catalog')) return 'dynamic';
  const udf = catalog?.functions.get(name);
  if (schema !== undefined) {
    if (udf?.has(schema)) return allow.has(`${schema}.${name}`) ? 'allowed' : 'user-defined';
    if ((schema === 'pg_catalog' || schema === 'information_schema') && builtinName) return 'builtin';
    return allow.has(`${schema}.${name}`) ? 'allowed' : 'unknown';
  }
  if (udf && udf.size > 0) {
    for (const s of udf) if (!allow.has(`${s}.${name}`)) return 'user-defined';
    return 'allowed';
  }
  return builtinName ? 'builtin' : 'unknown';
}

/**
 * Operators: a user-defined operator whose symbol no built-in operator has is treated like a
 * user-defined function. Extensions that overload built-in symbols (citext `=`) are accepted: the
 * symbol alone cannot tell them apart (documented limit).
 */
export function classifyOperator(
  parts: string[],
  catalog: CatalogSnapshot | undefined,
  allow: ReadonlySet<string>,
): FunctionClass {
  const name = parts[parts.length - 1] ?? '';
  const schema = parts.length >= 2 ? parts[parts.length - 2] : undefined;
  const udf = catalog?.operators.get(name);
  if (schema !== undefined && schema !== 'pg_catalog') {
    if (allow.has(`${schema}.${name}`)) return 'allowed';
    return udf?.has(schema) ? 'user-defined' : 'unknown';
  }
  if (BUILTIN_OPERATORS.has(name)) return 'builtin';
  if (udf && udf.size > 0) {
    for (const s of udf) if (!allow.has(`${s}.${name}`)) return 'user-defined';
    return 'allowed';
  }
  return 'unknown';
}

export function functionsAllowSet(policy: CompiledPolicy): ReadonlySet<string> {
  return new Set(policy.functionsAllow ?? []);
}
