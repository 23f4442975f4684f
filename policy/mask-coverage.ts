/**
 * Do the MaskingRules match the database they protect? A rule naming a column or a table that does
 * not exist masks nothing, and the real values go out in clear: the only defence a policy author
 * had was spelling. Checked against a catalog snapshot (the proxy's, per database; or `dbguard check
 * --lint`'s), with the nearest existing name as a suggestion. Pure: no I/O.
 *
 * Fail closed (the sidecar applies it, see governor.ts): a masked subject's statements that touch a
 * table whose rule names a missing column are refused. A missing table cannot be told from a table
 * not created yet, and nothing reads it: it is reported (log, metric, /readyz detail, lint), not
 * enforced.
 */
import type { CompiledPolicy } from '../api/compiled.js';
import { qkey } from './ast.js';
import type { CatalogSnapshot } from './catalog.js';

export type MaskingProblemReason = 'table_not_found' | 'column_not_found';

export interface MaskingProblem {
  reason: MaskingProblemReason;
  /** `namespace/name` of the MaskingRule */
  rule: string;
  schema: string;
  table: string;
  /** the missing column (column_not_found) */
  column?: string;
  /** the nearest existing table or column name, when one is close */
  suggestion?: string;
  /** one line for logs and the CLI */
  message: string;
}

/**
 * Edit distance counting an adjacent transposition as one edit (optimal string alignment: `nmae` is
 * one edit from `name`), with a cap: anything beyond `max` is max + 1.
 */
function distance(a: string, b: string, max: number): number {
  if (Math.abs(a.length - b.length) > max) return max + 1;
  let prev2: number[] = [];
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    let rowMin = i;
    for (let j = 1; j <= b.length; j++) {
      let v = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        v = Math.min(v, prev2[j - 2]! + 1);
      cur.push(v);
      if (v < rowMin) rowMin = v;
    }
    if (rowMin > max) return max + 1;
    prev2 = prev;
    prev = cur;
  }
  return prev[b.length]!;
}

/**
 * The existing name nearest to `name` (case-insensitive first, then by edit distance: at most 1 for
 * short names, 2 from 5 characters, 3 from 9); undefined when none is that close.
 */
export function nearestName(name: string, candidates: Iterable<string>): string | undefined {
  const max = name.length >= 9 ? 3 : name.length >= 5 ? 2 : 1;
  let best: string | undefined;
  let bestD = max + 1;
  for (const c of candidates) {
    if (c === name) return c;
    const d = c.toLowerCase() === name.toLowerCase() ? 0 : distance(name, c, max);
    if (d < bestD || (d === bestD && best !== undefined && c < best)) {
      best = c;
      bestD = d;
    }
  }
  return bestD <= max ? best : undefined;
}

const TABLE_KINDS = new Set(['r', 'p', 'v', 'm', 'f']);

/** Every masked table or column of the policy that the snapshot's database does not have. */
export function maskingProblems(policy: CompiledPolicy, snap: CatalogSnapshot): MaskingProblem[] {
  const out: MaskingProblem[] = [];
  const seen = new Set<string>();
  for (const rule of policy.masking ?? []) {
    for (const c of rule.columns) {
      const table = snap.masked.get(qkey(c.schema, c.table));
      const where = `${c.schema}.${c.table}`;
      if (!table) {
        const key = `${rule.name}\u0000${where}`;
        if (seen.has(key)) continue;
        seen.add(key);
        const rels = snap.relations.get(c.schema);
        const names = rels ? [...rels].filter(([, kind]) => TABLE_KINDS.has(kind)).map(([n]) => n) : [];
        const suggestion = nearestName(c.table, names);
        out.push({
          reason: 'table_not_found',
          rule: rule.name,
          schema: c.schema,
          table: c.table,
          ...(suggestion ? { suggestion: `${c.schema}.${suggestion}` } : {}),
          message:
            `MaskingRule ${rule.name}: table ${where} does not exist, so its rules mask nothing` +
            (suggestion ? ` (did you mean ${c.schema}.${suggestion}?)` : ''),
        });
        continue;
      }
      if (table.columns.some((col) => col.name === c.column)) continue;
      const suggestion = nearestName(
        c.column,
        table.columns.map((col) => col.name),
      );
      out.push({
        reason: 'column_not_found',
        rule: rule.name,
        schema: c.schema,
        table: c.table,
        column: c.column,
        ...(suggestion ? { suggestion } : {}),
        message:
          `MaskingRule ${rule.name}: column ${c.column} of ${where} does not exist` +
          (suggestion ? ` (did you mean ${suggestion}?)` : '') +
          '; masked subjects are refused on the table until the rule is fixed',
      });
    }
  }
  return out;
}

/**
 * The refusal for a masked subject's statement that touches a table with a missing masked column,
 * or undefined. `objects` are the statement's schema-qualified relations.
 */
export function brokenMaskRefusal(
  problems: readonly MaskingProblem[],
  objects: Iterable<string>,
): string | undefined {
  if (problems.length === 0) return undefined;
  const touched = new Set(objects);
  for (const p of problems) {
    if (p.reason !== 'column_not_found' || !touched.has(`${p.schema}.${p.table}`)) continue;
    return (
      `dbguard: MaskingRule ${p.rule} masks column ${p.column} of ${p.schema}.${p.table}, which does not exist` +
      `${p.suggestion ? ` (did you mean ${p.suggestion}?)` : ''}; the table is refused to masked subjects until the rule is fixed (fail closed)`
    );
  }
  return undefined;
}
