/**
 * Small helpers over libpg-query's JSON parse tree. Fields typed `Node *` in PostgreSQL are wrapped
 * (`{ RangeVar: {...} }`); fields typed as a concrete struct are not (`UpdateStmt.relation`).
 * Zero and false fields are omitted by the JSON output, so every read defaults.
 */
export type PgNode = Record<string, any>;

/** `{ Type: body }` → [Type, body]; anything else → undefined. */
export function unwrap(n: unknown): [string, PgNode] | undefined {
  if (!n || typeof n !== 'object' || Array.isArray(n)) return undefined;
  const keys = Object.keys(n);
  if (keys.length !== 1) return undefined;
  const k = keys[0]!;
  const c = k.charCodeAt(0);
  if (c < 65 || c > 90) return undefined;
  const body = (n as PgNode)[k];
  if (!body || typeof body !== 'object' || Array.isArray(body)) return undefined;
  return [k, body];
}

/** An unwrapped RangeVar (fields typed `RangeVar *` are not wrapped). */
export function isRangeVarBody(o: unknown): o is PgNode {
  return (
    !!o &&
    typeof o === 'object' &&
    typeof (o as PgNode).relname === 'string' &&
    typeof (o as PgNode).relpersistence === 'string'
  );
}

/** `String` nodes of a name list → strings; other nodes → undefined entries dropped as `null`. */
export function names(list: unknown): (string | null)[] {
  if (!Array.isArray(list)) return [];
  return list.map((n) => {
    const u = unwrap(n);
    if (u && u[0] === 'String') return String(u[1].sval ?? '');
    return null;
  });
}

export function stringConst(n: unknown): string | undefined {
  const u = unwrap(n);
  if (!u) return undefined;
  if (u[0] === 'A_Const' && u[1].sval) return String(u[1].sval.sval ?? '');
  if (u[0] === 'String') return String(u[1].sval ?? '');
  if (u[0] === 'TypeCast') return stringConst(u[1].arg);
  return undefined;
}

export function boolConst(n: unknown): boolean | undefined {
  const u = unwrap(n);
  if (u?.[0] !== 'A_Const') return undefined;
  if (u[1].boolval) return !!u[1].boolval.boolval;
  if (u[1].sval) {
    const v = String(u[1].sval.sval ?? '').toLowerCase();
    if (['t', 'true', 'on', 'yes', '1'].includes(v)) return true;
    if (['f', 'false', 'off', 'no', '0'].includes(v)) return false;
  }
  return undefined;
}

export function loc(n: PgNode | undefined): number {
  return typeof n?.location === 'number' ? n.location : 0;
}

/** Double-quote an identifier for SQL text. */
export function quoteIdent(s: string): string {
  return '"' + s.replace(/"/g, '""') + '"';
}

export function quoteLiteral(s: string): string {
  return "'" + s.replace(/'/g, "''") + "'";
}

/** Internal key of a qualified name: NUL cannot occur in identifiers, so no two names collide. */
export function qkey(schema: string, name: string): string {
  return schema + '\u0000' + name;
}

export function qdisplay(schema: string, name: string): string {
  return schema + '.' + name;
}
