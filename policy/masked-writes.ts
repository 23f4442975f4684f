/**
 * Masked subjects never store masked values (issue 24). Masking works by rewriting reads, so a value
 * a masked subject reads from a masked column IS the mask: `UPDATE customers SET email = email`
 * would store `a***@example.org` for everyone, and the real value would be gone.
 *
 * Two checks, both for a subject that sees masked values:
 *
 * 1. At judge time, a statement that would STORE a value computed from a masked column is refused:
 *    SET right-hand sides (UPDATE, ON CONFLICT DO UPDATE, MERGE), INSERT values and INSERT ... SELECT
 *    output columns, MERGE INSERT values, in the statement itself and in data-modifying CTEs, whether
 *    the masked column is the target row's own or comes from a masked source (a FROM item, a
 *    sub-select, a CTE, the RETURNING of a data-modifying CTE). The column lineage is followed
 *    through derived tables, CTEs, set operations and `*`; where it cannot be followed (a relation
 *    whose columns the snapshot does not list, a recursive CTE) it is over-approximated: every
 *    column of a source that may carry a masked value counts as masked. Predicates (WHERE, JOIN ON,
 *    MERGE ON/WHEN conditions) are not stored and stay allowed (they see masked values, as before).
 *
 * 2. At run time, a literal or parameter that is exactly the masked form of the row's current value
 *    (what an ORM writes back after loading the row through the proxy) fails the statement: each SET
 *    item that writes a masked column of a masked target becomes
 *    `CASE WHEN (v) = (mask(col)) THEN <error> ELSE (v) END`. The comparison runs on the server with
 *    the row's real value, so only the value this client was shown for this row is refused, and the
 *    client learns nothing it could not read already. The error is raised by a failing cast whose
 *    text is the dbguard message; `guardErrorFields` turns it back into 42501 for the client.
 */
import { loc, names, type PgNode, quoteIdent, quoteLiteral, unwrap } from './ast.js';
import type { CatalogColumn } from './catalog.js';
import { maskExpression } from './mask-expr.js';
import type { Edit, Tokens } from './splice.js';
import type { EffectiveMask } from './subjects.js';

/** A masked relation as one RangeVar of the statement sees it (for this subject). */
export interface MaskedUse {
  /** `schema.table` as shown to users */
  display: string;
  columns: CatalogColumn[];
  masks: Map<string, EffectiveMask>;
}

export interface WriteCheckInput {
  /** the statement's root node (unwrapped) and its type */
  type: string;
  node: PgNode;
  /** every DML node of the statement (analysis.dmls): each one must be checked */
  dmls: PgNode[];
  /** RangeVars (read or DML target) of relations masked for this subject */
  maskedRv: Map<PgNode, MaskedUse>;
  /** every DML target RangeVar → its resolved `schema.table` */
  targets: Map<PgNode, string>;
  tokens: Tokens;
  bytes: Buffer;
  serverVersionNum: number;
}

/** The statement would store a value read from a masked column. */
export class WriteRefused extends Error {
  constructor(
    readonly column: string,
    readonly rule: string,
    detail = '',
  ) {
    super(`dbguard: cannot write ${column} from a masked value${detail} (rule ${rule})`);
  }
}

/** The write cannot be checked (a shape the guard does not handle): refused, fail closed. */
export class WriteUncheckable extends Error {
  constructor(
    reason: string,
    readonly rule: string,
  ) {
    super(`dbguard: cannot check a write of masked data: ${reason} (rule ${rule})`);
  }
}

/** masked column display (`schema.table.column`) → the MaskingRule that masks it */
type Taint = Map<string, string>;

interface Col {
  name?: string;
  taint: Taint;
}

/** What a FROM item or a query yields: its columns when known, else only what any column may carry. */
interface Shape {
  cols?: Col[];
  any: Taint;
}

interface Item {
  names: string[];
  shape: Shape;
}

type Level = Item[];
type Env = Map<string, Shape>;

const EMPTY: Taint = new Map();

function union(...ts: Taint[]): Taint {
  const out: Taint = new Map();
  for (const t of ts) for (const [k, v] of t) if (!out.has(k)) out.set(k, v);
  return out;
}

function whole(s: Shape): Taint {
  return union(s.any, ...(s.cols ?? []).map((c) => c.taint));
}

function first(t: Taint): [string, string] | undefined {
  return t.entries().next().value as [string, string] | undefined;
}

function renamed(s: Shape, colnames: unknown): Shape {
  const n = names(colnames);
  if (!n.length || !s.cols) return s;
  return {
    any: s.any,
    cols: s.cols.map((c, i) => (i < n.length ? { name: n[i] ?? c.name, taint: c.taint } : c)),
  };
}

/** Byte offsets in the statement text. The parse tree has no ends: tokens give them (`exprEnd`). */
interface Span {
  start: number;
  end: number;
}

export function checkMaskedWrites(inp: WriteCheckInput, edits: Edit[], masked: Set<string>): void {
  new WriteChecker(inp, edits, masked).run();
}

class WriteChecker {
  private readonly checked = new Set<PgNode>();

  constructor(
    private readonly inp: WriteCheckInput,
    private readonly edits: Edit[],
    private readonly masked: Set<string>,
  ) {}

  run(): void {
    this.statement(this.inp.type, this.inp.node, new Map());
    for (const d of this.inp.dmls) {
      if (!this.checked.has(d)) {
        throw new WriteUncheckable(
          'a data-modifying statement in a place the check does not follow',
          this.anyRule(),
        );
      }
    }
  }

  private anyRule(): string {
    for (const u of this.inp.maskedRv.values()) for (const m of u.masks.values()) return m.rule;
    return 'masking';
  }

  private statement(type: string, b: PgNode, env: Env): void {
    switch (type) {
      case 'SelectStmt':
        this.select(b, [], env);
        return;
      case 'InsertStmt':
      case 'UpdateStmt':
      case 'DeleteStmt':
      case 'MergeStmt':
        this.dml(type, b, env);
        return;
      case 'ExplainStmt':
      case 'PrepareStmt':
      case 'DeclareCursorStmt':
      case 'CopyStmt':
      case 'CreateTableAsStmt':
      case 'ViewStmt': {
        const u = unwrap(b.query);
        if (u) this.statement(u[0], u[1], env);
        return;
      }
      default:
    }
  }

  // ---- lineage ----------------------------------------------------------------------------------

  private withEnv(w: PgNode | undefined, outer: Level[], env: Env): Env {
    if (!w) return env;
    const ctes = (w.ctes ?? []).map((c: unknown) => unwrap(c)?.[1]).filter(Boolean) as PgNode[];
    const out = new Map(env);
    if (!w.recursive) {
      for (const c of ctes) out.set(c.ctename, renamed(this.query(c.ctequery, outer, out), c.aliascolnames));
      return out;
    }
    // WITH RECURSIVE: grow every CTE's taints to a fixpoint, column by column while the column lists
    // agree (they do in any valid recursive CTE), else as one taint for every column.
    for (const c of ctes) out.set(c.ctename, { any: EMPTY });
    const size = (sh: Shape) => sh.any.size + (sh.cols ?? []).reduce((n, x) => n + x.taint.size, 0);
    for (let round = 0; round < 8; round++) {
      let grew = false;
      for (const c of ctes) {
        const prev = out.get(c.ctename)!;
        const next = renamed(this.query(c.ctequery, outer, out, round > 0), c.aliascolnames);
        const merged: Shape =
          next.cols && (!prev.cols || prev.cols.length === next.cols.length) && round < 7
            ? {
                any: union(prev.any, next.any),
                cols: next.cols.map((x, i) => ({
                  name: x.name,
                  taint: union(x.taint, prev.cols?.[i]?.taint ?? EMPTY),
                })),
              }
            : { any: union(whole(prev), whole(next)) };
        out.set(c.ctename, merged);
        if (size(merged) > size(prev) || (round === 0 && merged.cols)) grew = true;
      }
      if (!grew) return out;
    }
    throw new WriteUncheckable('a recursive CTE whose lineage does not settle', this.anyRule());
  }

  /** The shape of a query node (wrapped); data-modifying ones are checked on the way. */
  private query(n: unknown, outer: Level[], env: Env, again = false): Shape {
    const u = unwrap(n);
    if (!u) return { any: EMPTY };
    const [type, b] = u;
    if (type === 'SelectStmt') return this.select(b, outer, env).shape;
    if (type === 'InsertStmt' || type === 'UpdateStmt' || type === 'DeleteStmt' || type === 'MergeStmt') {
      if (again) return this.returningShape(b, env);
      return this.dml(type, b, env);
    }
    return { any: this.expr(b, outer, env) };
  }

  private select(b: PgNode, outer: Level[], env0: Env): { shape: Shape; all: Taint } {
    const env = this.withEnv(b.withClause, outer, env0);
    if (b.larg || b.rarg) {
      const l = this.select(b.larg ?? {}, outer, env);
      const r = this.select(b.rarg ?? {}, outer, env);
      const all = union(l.all, r.all);
      const lc = l.shape.cols;
      const rc = r.shape.cols;
      if (lc && rc && lc.length === rc.length) {
        return {
          shape: {
            any: union(l.shape.any, r.shape.any),
            cols: lc.map((c, i) => ({ name: c.name, taint: union(c.taint, rc[i]!.taint) })),
          },
          all,
        };
      }
      return { shape: { any: union(whole(l.shape), whole(r.shape)) }, all };
    }
    if (b.valuesLists) {
      const cols: Col[] = [];
      for (const row of b.valuesLists as unknown[]) {
        const items: unknown[] = unwrap(row)?.[1]?.items ?? [];
        items.forEach((e, i) => {
          const t = this.expr(e, outer, env);
          cols[i] = { name: `column${i + 1}`, taint: union(cols[i]?.taint ?? EMPTY, t) };
        });
      }
      return { shape: { any: EMPTY, cols }, all: union(...cols.map((c) => c.taint)) };
    }
    const from = this.fromItems(b.fromClause, outer, env);
    const scopes = [from.level, ...outer];
    let cols: Col[] | undefined = [];
    let any: Taint = EMPTY;
    for (const t of b.targetList ?? []) {
      const rt = unwrap(t)?.[1];
      if (!rt) continue;
      const star = this.starOf(rt.val, from.level, scopes);
      if (star) {
        if (star.cols && cols) cols.push(...star.cols);
        else {
          any = union(any, star.cols ? union(...star.cols.map((c) => c.taint)) : EMPTY, star.any);
          if (cols) any = union(any, ...cols.map((c) => c.taint));
          cols = undefined;
        }
        continue;
      }
      const taint = this.expr(rt.val, scopes, env);
      if (cols) cols.push({ name: rt.name ?? lastName(rt.val), taint });
      else any = union(any, taint);
    }
    const clauses = [
      b.whereClause,
      b.havingClause,
      b.groupClause,
      b.sortClause,
      b.windowClause,
      b.distinctClause,
      b.limitOffset,
      b.limitCount,
    ];
    const shape: Shape = cols ? { any, cols } : { any };
    return { shape, all: union(whole(shape), from.all, this.expr(clauses, scopes, env)) };
  }

  /** `*` or `q.*` in a target list: the columns it expands to (undefined when it is not a star). */
  private starOf(val: unknown, level: Level, scopes: Level[]): Shape | undefined {
    const u = unwrap(val);
    if (u?.[0] !== 'ColumnRef') return undefined;
    const f: unknown[] = u[1].fields ?? [];
    if (unwrap(f[f.length - 1])?.[0] !== 'A_Star') return undefined;
    if (f.length === 1) {
      const cols: Col[] = [];
      let any: Taint = EMPTY;
      let known = true;
      for (const it of level) {
        if (it.names.length === 0) continue; // a join's flattened parts are listed on their own
        if (it.shape.cols) cols.push(...it.shape.cols);
        else known = false;
        any = union(any, it.shape.any);
      }
      return known ? { any, cols } : { any: union(any, ...cols.map((c) => c.taint)) };
    }
    const q = names(f)[f.length - 2] ?? '';
    const it = this.findItem(q, scopes);
    return it ? it.shape : { any: this.columnTaint(q, scopes) };
  }

  private fromItems(list: unknown, outer: Level[], env: Env): { level: Level; all: Taint } {
    const level: Level = [];
    let all: Taint = EMPTY;
    const add = (n: unknown): Shape => {
      const u = unwrap(n);
      const [type, b] = u ?? ['RangeVar', n as PgNode];
      if (!b || typeof b !== 'object') return { any: EMPTY };
      const scopes = [level, ...outer];
      switch (type) {
        case 'RangeVar': {
          const shape = this.rangeVar(b, env);
          level.push({ names: [b.alias?.aliasname ?? b.relname], shape });
          return shape;
        }
        case 'RangeSubselect': {
          const q = this.select(unwrap(b.subquery)?.[1] ?? {}, scopes, env);
          all = union(all, q.all);
          const shape = renamed(q.shape, b.alias?.colnames);
          level.push({ names: b.alias?.aliasname ? [b.alias.aliasname] : [], shape });
          return shape;
        }
        case 'JoinExpr': {
          const l = add(b.larg);
          const r = add(b.rarg);
          const shape: Shape =
            l.cols && r.cols
              ? { any: union(l.any, r.any), cols: [...l.cols, ...r.cols] }
              : { any: union(whole(l), whole(r)) };
          if (b.alias?.aliasname)
            level.push({ names: [b.alias.aliasname], shape: renamed(shape, b.alias.colnames) });
          return shape;
        }
        case 'RangeTableSample':
          return add(b.relation);
        default: {
          // functions, XMLTABLE, JSON_TABLE: whatever their arguments read may come out of any column
          const shape: Shape = { any: this.expr(b, scopes, env) };
          let name: string | undefined = b.alias?.aliasname;
          if (!name && type === 'RangeFunction') {
            const fc = unwrap(unwrap(b.functions?.[0])?.[1]?.items?.[0]);
            const fn = fc?.[0] === 'FuncCall' ? names(fc[1].funcname) : [];
            name = fn[fn.length - 1] ?? undefined;
          }
          level.push({ names: name ? [name] : [], shape });
          return shape;
        }
      }
    };
    for (const item of Array.isArray(list) ? list : list ? [list] : []) add(item);
    return { level, all };
  }

  private rangeVar(rv: PgNode, env: Env): Shape {
    if (!rv.schemaname && !rv.catalogname && env.has(rv.relname))
      return renamed(env.get(rv.relname)!, rv.alias?.colnames);
    const use = this.inp.maskedRv.get(rv);
    return use ? renamed(shapeOf(use), rv.alias?.colnames) : { any: EMPTY };
  }

  private findItem(q: string, scopes: Level[]): Item | undefined {
    for (const level of scopes) for (const it of level) if (it.names.includes(q)) return it;
    return undefined;
  }

  /** Taint of an unqualified name: the innermost level that surely has it, and every one that may. */
  private columnTaint(x: string, scopes: Level[]): Taint {
    let t: Taint = EMPTY;
    for (const level of scopes) {
      let definite = false;
      for (const it of level) {
        if (it.names.includes(x)) t = union(t, whole(it.shape)); // whole-row reference
        if (it.shape.cols) {
          for (const c of it.shape.cols) {
            if (c.name === x) {
              t = union(t, c.taint);
              definite = true;
            }
          }
        } else {
          t = union(t, it.shape.any);
        }
      }
      if (definite) break;
    }
    return t;
  }

  private refTaint(cr: PgNode, scopes: Level[]): Taint {
    const f: unknown[] = cr.fields ?? [];
    const parts = names(f);
    const star = unwrap(f[f.length - 1])?.[0] === 'A_Star';
    if (f.length === 1) {
      if (star) return union(...(scopes[0] ?? []).map((it) => whole(it.shape)));
      return this.columnTaint(parts[0] ?? '', scopes);
    }
    const q = parts[f.length - 2] ?? '';
    const col = parts[f.length - 1] ?? '';
    const it = this.findItem(q, scopes);
    if (!it) return this.columnTaint(parts[0] ?? '', scopes); // a composite column's field
    if (star) return whole(it.shape);
    if (!it.shape.cols) return it.shape.any;
    const cols = it.shape.cols.filter((c) => c.name === col);
    // not a column: PostgreSQL reads `t.f` as the function call f(t), on the whole row
    if (!cols.length) return SYSTEM_COLUMNS.has(col) ? EMPTY : whole(it.shape);
    return union(it.shape.any, ...cols.map((c) => c.taint));
  }

  /** Every masked column an expression (and any sub-select in it, anywhere in it) may read. */
  private expr(n: unknown, scopes: Level[], env: Env): Taint {
    if (n === null || typeof n !== 'object') return EMPTY;
    if (Array.isArray(n)) return union(...n.map((x) => this.expr(x, scopes, env)));
    const u = unwrap(n);
    if (!u) return union(...Object.values(n as PgNode).map((v) => this.expr(v, scopes, env)));
    const [type, b] = u;
    if (type === 'ColumnRef') return this.refTaint(b, scopes);
    if (type === 'SelectStmt') return this.select(b, scopes, env).all;
    if (type === 'SubLink') {
      return union(
        this.expr(b.testexpr, scopes, env),
        this.select(unwrap(b.subselect)?.[1] ?? {}, scopes, env).all,
      );
    }
    return union(...Object.values(b).map((v) => this.expr(v, scopes, env)));
  }

  // ---- the writes ------------------------------------------------------------------------------

  private target(b: PgNode): { item: Item; use?: MaskedUse; display: string } {
    const rv = b.relation;
    const use = this.inp.maskedRv.get(rv);
    const display =
      use?.display ?? this.inp.targets.get(rv) ?? [rv.schemaname, rv.relname].filter(Boolean).join('.');
    const shape = use ? shapeOf(use) : { any: EMPTY };
    return { item: { names: [rv.alias?.aliasname ?? rv.relname], shape }, use, display };
  }

  private refuse(display: string, column: string | undefined, taint: Taint): never {
    const [, rule] = first(taint)!;
    throw new WriteRefused(column ? `${display}.${column}` : display, rule);
  }

  private refuseAt(display: string, names: (string | undefined)[], i: number, taint: Taint): never {
    const [, rule] = first(taint)!;
    throw new WriteRefused(names[i] ? `${display}.${names[i]}` : `${display} (column ${i + 1})`, rule);
  }

  /** Checks one data-modifying statement; returns the shape of its RETURNING list. */
  private dml(type: string, b: PgNode, env0: Env): Shape {
    // checked (and guarded) once: a second visit would add the same edits again
    if (this.checked.has(b)) return this.returningShape(b, this.withEnv(b.withClause, [], env0));
    this.checked.add(b);
    const env = this.withEnv(b.withClause, [], env0);
    const t = this.target(b);
    let level: Level = [t.item];
    const setList = (list: unknown[], lvl: Level) => {
      const scopes = [lvl];
      for (const x of list) {
        const rt = unwrap(x)?.[1];
        if (!rt) continue;
        const v = unwrap(rt.val);
        let taint: Taint;
        if (v?.[0] === 'MultiAssignRef') {
          const src = unwrap(v[1].source);
          taint =
            src?.[0] === 'RowExpr'
              ? this.expr(src[1].args?.[(v[1].colno ?? 1) - 1], scopes, env)
              : this.expr(v[1].source, scopes, env);
        } else {
          taint = this.expr(rt.val, scopes, env);
        }
        if (taint.size) this.refuse(t.display, rt.name, taint);
      }
      this.guardSetList(list, t);
    };
    const positional = (shape: Shape, cols: unknown[] | undefined) => {
      const colNames: (string | undefined)[] = (cols ?? []).length
        ? (cols ?? []).map((c) => unwrap(c)?.[1]?.name)
        : (t.use?.columns.map((c) => c.name) ?? []);
      if (!shape.cols) {
        if (shape.any.size) this.refuseAt(t.display, colNames, 0, shape.any);
        return;
      }
      shape.cols.forEach((c, i) => {
        const taint = union(c.taint, shape.any);
        if (taint.size) this.refuseAt(t.display, colNames, i, taint);
      });
    };
    switch (type) {
      case 'UpdateStmt': {
        const from = this.fromItems(b.fromClause, [], env);
        level = [t.item, ...from.level];
        setList(b.targetList ?? [], level);
        break;
      }
      case 'DeleteStmt':
        level = [t.item, ...this.fromItems(b.usingClause, [], env).level];
        break;
      case 'InsertStmt': {
        if (b.selectStmt) positional(this.query(b.selectStmt, [], env), b.cols);
        const oc = b.onConflictClause;
        if (oc?.targetList?.length) {
          // EXCLUDED holds the proposed row: its values were checked above
          setList(oc.targetList, [t.item, { names: ['excluded'], shape: { any: EMPTY } }]);
        }
        break;
      }
      case 'MergeStmt': {
        const src = this.fromItems([b.sourceRelation], [], env);
        level = [t.item, ...src.level];
        for (const w of b.mergeWhenClauses ?? []) {
          const wc = unwrap(w)?.[1];
          if (!wc) continue;
          if (wc.commandType === 'CMD_UPDATE') setList(wc.targetList ?? [], level);
          if (wc.commandType === 'CMD_INSERT' && wc.values) {
            const cols = wc.values.map((e: unknown, i: number) => ({
              name: `v${i}`,
              taint: this.expr(e, [src.level], env),
            }));
            positional({ any: EMPTY, cols }, wc.targetList);
          }
        }
        break;
      }
    }
    return this.returningShape(b, env, level);
  }

  private returningShape(b: PgNode, env: Env, level?: Level): Shape {
    const exprs: unknown[] = b.returningClause?.exprs ?? b.returningList ?? [];
    if (!exprs.length) return { any: EMPTY, cols: [] };
    const lvl = level ?? [this.target(b).item];
    const t = lvl[0]!;
    const scopes = [[{ names: [...t.names, 'old', 'new'], shape: t.shape }, ...lvl.slice(1)]];
    const cols: Col[] = [];
    let any: Taint = EMPTY;
    let known = true;
    for (const e of exprs) {
      const rt = unwrap(e)?.[1];
      if (!rt) continue;
      const star = this.starOf(rt.val, scopes[0]!, scopes);
      if (star) {
        if (star.cols) cols.push(...star.cols);
        else known = false;
        any = union(any, star.any);
        continue;
      }
      cols.push({ name: rt.name ?? lastName(rt.val), taint: this.expr(rt.val, scopes, env) });
    }
    return known ? { any, cols } : { any: union(any, ...cols.map((c) => c.taint)) };
  }

  // ---- run-time guard against writing back a masked form ------------------------------------------

  private guardSetList(list: unknown[], t: { item: Item; use?: MaskedUse; display: string }): void {
    const use = t.use;
    if (!use) return;
    const ref = t.item.names[0]!;
    const rows = new Map<number, { row: PgNode; cols: Map<number, string> }>();
    for (const x of list) {
      const rt = unwrap(x)?.[1];
      if (!rt?.name || !use.masks.has(rt.name)) continue;
      const mask = use.masks.get(rt.name)!;
      if ((rt.indirection ?? []).length) {
        throw new WriteUncheckable(
          `an assignment to part of masked column ${use.display}.${rt.name}`,
          mask.rule,
        );
      }
      const v = unwrap(rt.val);
      if (v?.[0] === 'SetToDefault') continue;
      if (v?.[0] === 'MultiAssignRef') {
        const src = unwrap(v[1].source);
        if (src?.[0] !== 'RowExpr') {
          throw new WriteUncheckable(
            `a multiple-column assignment from a sub-select to masked column ${use.display}.${rt.name}; assign it on its own`,
            mask.rule,
          );
        }
        const at = loc(src[1]);
        let r = rows.get(at);
        if (!r) {
          r = { row: src[1], cols: new Map() };
          rows.set(at, r);
        }
        r.cols.set((v[1].colno ?? 1) - 1, rt.name);
        continue;
      }
      this.guard(this.valueSpan(rt), rt.val, rt.name, ref, use);
    }
    for (const { row, cols } of rows.values()) {
      const spans = this.rowSpans(row);
      for (const [i, col] of cols) {
        const arg = unwrap(row.args?.[i]);
        if (arg?.[0] === 'SetToDefault') continue;
        const s = spans[i];
        if (!s) throw new WriteUncheckable('cannot locate a value in the text', use.masks.get(col)!.rule);
        this.guard(s, row.args?.[i], col, ref, use);
      }
    }
  }

  private guard(span: Span, value: unknown, col: string, ref: string, use: MaskedUse): void {
    const c = use.columns.find((x) => x.name === col);
    const m = use.masks.get(col)!;
    if (!c)
      throw new WriteUncheckable(`column ${col} of ${use.display} is not in the catalog snapshot`, m.rule);
    const effect = sideEffect(value);
    if (effect) {
      throw new WriteUncheckable(
        `the new value of ${use.display}.${col} calls ${effect}(), which the check would run twice; compute it in a statement of its own`,
        m.rule,
      );
    }
    const text = this.absorb(span);
    const real = `${quoteIdent(ref)}.${quoteIdent(col)}`;
    const shown = maskExpression(real, c, m, this.inp.serverVersionNum);
    // A mask that is NULL whatever the value (Nullify, Redact of a non-text type) makes NULL its
    // masked form; every other mask is NULL only for NULL, and writing NULL over NULL loses nothing.
    const alwaysNull = shown === `CAST(NULL AS ${c.type})`;
    // The new value is compared in the column's type (explicitly cast, so any value an assignment
    // accepts compares; a varchar(n) cast that cuts it only matters to the comparison). The value
    // stored is the one in ELSE, assigned as before.
    const typed = `CAST((${text}) AS ${c.type})`;
    const same = alwaysNull ? `${typed} IS NOT DISTINCT FROM (${shown})` : `${typed} = (${shown})`;
    const message = quoteLiteral(
      `dbguard: cannot write ${use.display}.${col} from a masked value: the new value is this row's masked value (rule ${m.rule})`,
    );
    // The failing cast must not be folded at plan time (it would fail every statement): the CASE on
    // the column keeps it an expression of the row. Its text is the message and nothing else. It is
    // a condition, so the CASE's type is the value's own, assigned to the column as before: a string
    // literal or NULL (no type of its own) takes the column's type from the never-taken branch, any
    // other value is repeated there (a parameter gets its type from the comparison).
    const fail = `CAST(CAST(CASE WHEN ${real} IS NULL THEN ${message} ELSE ${message} END AS integer) AS boolean)`;
    const never = untypedLiteral(value) ? `CAST(NULL AS ${c.type})` : `(${text})`;
    this.edits.push({
      start: span.start,
      end: span.end,
      text: `CASE WHEN ${same} THEN CASE WHEN ${fail} THEN ${never} END ELSE (${text}) END`,
    });
    this.masked.add(`${use.display}.${col}`);
  }

  /** The text of a span with the edits already made inside it applied (and taken off the list). */
  private absorb(span: Span): string {
    const inside: Edit[] = [];
    for (let i = this.edits.length - 1; i >= 0; i--) {
      const e = this.edits[i]!;
      if (e.start >= span.start && e.end <= span.end) {
        inside.push(e);
        this.edits.splice(i, 1);
      } else if (e.start < span.end && e.end > span.start) {
        throw new WriteUncheckable('overlapping rewrites of one value', this.anyRule());
      }
    }
    inside.sort((a, b) => a.start - b.start);
    const parts: Buffer[] = [];
    let pos = span.start;
    for (const e of inside) {
      parts.push(this.inp.bytes.subarray(pos, e.start), Buffer.from(e.text, 'utf8'));
      pos = e.end;
    }
    parts.push(this.inp.bytes.subarray(pos, span.end));
    return Buffer.concat(parts).toString('utf8');
  }

  /** `SET col = <value>`: the value's tokens, from after `=` to the end of the expression. */
  private valueSpan(rt: PgNode): Span {
    const tk = this.inp.tokens;
    let i = tk.at(loc(rt));
    while (i !== undefined && tk.text(i) !== '=') i = tk.next(i);
    const from = i === undefined ? undefined : tk.next(i);
    if (from === undefined) throw new WriteUncheckable('cannot locate a value in the text', this.anyRule());
    return this.exprEnd(from, maxLocation(rt.val));
  }

  /** `SET (a, b) = (v1, v2)` / `= ROW(v1, v2)`: each element's span. */
  private rowSpans(row: PgNode): Span[] {
    const tk = this.inp.tokens;
    let open = tk.at(loc(row));
    if (open !== undefined && tk.text(open) !== '(') open = tk.next(open); // ROW (
    if (open === undefined || tk.text(open) !== '(') return [];
    const close = tk.closing(open);
    if (close === undefined) return [];
    const spans: Span[] = [];
    let depth = 0;
    let startTok = tk.next(open);
    let lastTok: number | undefined;
    for (let j = tk.next(open); j !== undefined && j <= close; j = tk.next(j)) {
      const s = tk.text(j);
      if ((s === ',' && depth === 0) || j === close) {
        if (startTok === undefined || lastTok === undefined) return [];
        spans.push({ start: tk.start(startTok), end: tk.end(lastTok) });
        startTok = tk.next(j);
        lastTok = undefined;
        continue;
      }
      if (s === '(' || s === '[') depth++;
      else if (s === ')' || s === ']') depth--;
      lastTok = j;
    }
    return spans;
  }

  /**
   * From token `from`, the span of one expression: it ends before a `,` or a closing bracket at its
   * own depth, or before a clause keyword (FROM, WHERE, RETURNING, WHEN) met after every location
   * inside the expression (so `a IS DISTINCT FROM b` and `CASE WHEN` are not ends), or at `;`.
   */
  private exprEnd(from: number, maxLoc: number): Span {
    const tk = this.inp.tokens;
    let depth = 0;
    let last: number | undefined;
    for (let j: number | undefined = from; j !== undefined; j = tk.next(j)) {
      const s = tk.lower(j);
      if (depth === 0) {
        if (s === ',' || s === ')' || s === ']' || s === ';') break;
        if ((s === 'from' || s === 'where' || s === 'returning' || s === 'when') && tk.start(j) > maxLoc)
          break;
      }
      if (s === '(' || s === '[') depth++;
      else if (s === ')' || s === ']') depth--;
      last = j;
    }
    if (last === undefined) throw new WriteUncheckable('cannot locate a value in the text', this.anyRule());
    return { start: tk.start(from), end: tk.end(last) };
  }
}

/** A masked relation's columns, each carrying its own mask's taint. */
function shapeOf(use: MaskedUse): Shape {
  const cols = use.columns.map((c) => {
    const m = use.masks.get(c.name);
    return { name: c.name, taint: m ? new Map([[`${use.display}.${c.name}`, m.rule]]) : EMPTY };
  });
  return { any: EMPTY, cols };
}

/** System columns are no function of the row (`t.xmin`, an ORM's concurrency token). */
const SYSTEM_COLUMNS = new Set(['ctid', 'xmin', 'xmax', 'cmin', 'cmax', 'tableoid']);

/**
 * Built-ins whose second run is not the same as the first: the guard writes the new value twice
 * (once in the comparison), so these are refused there rather than run twice.
 */
const SIDE_EFFECTS = new Set([
  'nextval',
  'setval',
  'set_config',
  'pg_notify',
  'txid_current',
  'pg_current_xact_id',
  'lo_import',
  'lo_export',
  'lo_create',
  'lo_creat',
  'lo_unlink',
  'lo_from_bytea',
  'lo_put',
]);

/** The first side-effecting built-in an expression calls (advisory locks included), if any. */
function sideEffect(n: unknown): string | undefined {
  if (n === null || typeof n !== 'object') return undefined;
  if (Array.isArray(n)) {
    for (const x of n) {
      const f = sideEffect(x);
      if (f) return f;
    }
    return undefined;
  }
  const u = unwrap(n);
  if (u?.[0] === 'FuncCall') {
    const fn = names(u[1].funcname);
    const last = fn[fn.length - 1] ?? '';
    if (SIDE_EFFECTS.has(last) || /^pg_(try_)?advisory_/.test(last)) return last;
  }
  for (const v of Object.values(u ? u[1] : (n as PgNode))) {
    const f = sideEffect(v);
    if (f) return f;
  }
  return undefined;
}

/** A string literal or NULL: PostgreSQL gives it the type of what it is assigned or compared to. */
function untypedLiteral(n: unknown): boolean {
  const u = unwrap(n);
  return u?.[0] === 'A_Const' && (u[1].sval !== undefined || !!u[1].isnull);
}

function lastName(val: unknown): string | undefined {
  const u = unwrap(val);
  if (u?.[0] === 'ColumnRef') {
    const n = names(u[1].fields);
    return n[n.length - 1] ?? undefined;
  }
  if (u?.[0] === 'TypeCast') return lastName(u[1].arg);
  return undefined;
}

function maxLocation(n: unknown): number {
  if (n === null || typeof n !== 'object') return -1;
  let m = -1;
  if (Array.isArray(n)) {
    for (const x of n) m = Math.max(m, maxLocation(x));
    return m;
  }
  for (const [k, v] of Object.entries(n as PgNode)) {
    if (k === 'location' && typeof v === 'number') m = Math.max(m, v);
    else m = Math.max(m, maxLocation(v));
  }
  return m;
}

/**
 * The server's answer to a failed run-time guard is a cast error whose input is the dbguard message
 * (`invalid input syntax for type integer: "dbguard: cannot write ..."`, 22P02). For the client it
 * becomes what it is: a policy refusal, 42501, with the message alone. Other errors are unchanged.
 */
export function guardErrorFields(fields: Map<string, string>): Map<string, string> {
  if (fields.get('C') !== '22P02') return fields;
  const m = /^[^"]*"(dbguard: cannot write [^"]* from a masked value: [^"]*\(rule [^"]*\))"$/.exec(
    fields.get('M') ?? '',
  );
  if (!m) return fields;
  fields.set('C', '42501');
  fields.set('M', m[1]!);
  for (const k of ['D', 'H', 'P', 'W', 'q', 'p']) fields.delete(k);
  return fields;
}
