/**
 * `withoutWhere` (issue 23): does an UPDATE, DELETE or MERGE bound the rows it changes? A condition
 * bounds them only when it reads a column of the target: `WHERE true`, `WHERE 1 = 1`,
 * `WHERE 'a' = 'a'`, `WHERE NOT false`, `MERGE ... ON true` bound nothing, and an OR bounds only when
 * every branch does (`id = 5 OR true` does not). Decided from names alone, never from the values of
 * constants, so texts that differ only in numbers get the same answer (the decision cache relies on it).
 */
import { type PgNode, unwrap } from './ast.js';
import { refersToTarget } from './exercises.js';

type Target = { alias?: string; name: string };

function bounds(cond: unknown, target: Target): boolean {
  const u = unwrap(cond);
  if (!u) return false;
  if (u[0] === 'CurrentOfExpr') return true; // WHERE CURRENT OF cursor: one row
  if (u[0] === 'BoolExpr' && u[1].boolop === 'OR_EXPR')
    return (u[1].args ?? []).every((a: unknown) => bounds(a, target));
  if (u[0] === 'BoolExpr' && u[1].boolop === 'AND_EXPR')
    return (u[1].args ?? []).some((a: unknown) => bounds(a, target));
  return refersToTarget(cond, target);
}

/** An UPDATE/DELETE whose WHERE bounds nothing, or a MERGE with an UPDATE/DELETE action no condition bounds. */
export function unboundedWrite(type: string, b: PgNode): boolean {
  const target: Target = { alias: b.relation?.alias?.aliasname, name: String(b.relation?.relname) };
  if (type === 'UpdateStmt' || type === 'DeleteStmt') return !bounds(b.whereClause, target);
  if (type !== 'MergeStmt') return false;
  for (const w of b.mergeWhenClauses ?? []) {
    const c = unwrap(w)?.[1];
    if (!c || (c.commandType !== 'CMD_UPDATE' && c.commandType !== 'CMD_DELETE')) continue;
    if (bounds(c.condition, target)) continue;
    // WHEN NOT MATCHED BY SOURCE acts on target rows that no source row matched: ON does not bound them
    if (c.matchKind === 'MERGE_WHEN_NOT_MATCHED_BY_SOURCE' || !bounds(b.joinCondition, target)) return true;
  }
  return false;
}
