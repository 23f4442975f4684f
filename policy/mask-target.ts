/**
 * Masking when a masked table is the TARGET of INSERT/UPDATE/DELETE/MERGE. The target cannot become
 * a subquery, so every read of a masked target column at the statement's top scope (WHERE, SET
 * right-hand sides, RETURNING, ON CONFLICT ... SET/WHERE, MERGE ON/WHEN) is replaced by the mask
 * expression over that same reference. A reference from inside a sub-select that may bind to the
 * target by correlation, or a whole-row reference to the target, is refused: the proxy cannot see
 * which relation it binds to without the server's analyser.
 */
import { loc, names, type PgNode, quoteIdent, unwrap } from './ast.js';
import type { CatalogColumn, MaskedRelation } from './catalog.js';
import { maskExpression } from './mask-expr.js';
import type { ResolvedRelation } from './resolve.js';
import type { Edit, Tokens } from './splice.js';
import type { EffectiveMask } from './subjects.js';

export interface TargetMaskInput {
  type: 'InsertStmt' | 'UpdateStmt' | 'DeleteStmt' | 'MergeStmt';
  node: PgNode;
  /** the target RangeVar */
  rv: PgNode;
  res: ResolvedRelation;
  rel: MaskedRelation;
  masks: Map<string, EffectiveMask>;
  tokens: Tokens;
  bytes: Buffer;
  /** resolution of RangeVars met in sub-selects (to know which ones have which columns) */
  resolvedRv: Map<PgNode, { rel?: MaskedRelation }>;
  /** the catalog snapshot's server_version_num, for maskExpression */
  serverVersionNum: number;
}

export class Refused extends Error {}

/** System columns: not in the catalog snapshot's column lists, and no function of the row. */
const SYSTEM_COLUMNS = new Set(['ctid', 'xmin', 'xmax', 'cmin', 'cmax', 'tableoid']);

interface Scope {
  names: Set<string>;
  cols: Set<string>;
}

export function maskTarget(inp: TargetMaskInput, edits: Edit[], masked: Set<string>): void {
  const t = new TargetMasker(inp, edits, masked);
  t.run();
}

class TargetMasker {
  private readonly refname: string;
  private readonly targetNames: Set<string>;
  private readonly colByName: Map<string, CatalogColumn>;

  constructor(
    private readonly inp: TargetMaskInput,
    private readonly edits: Edit[],
    private readonly masked: Set<string>,
  ) {
    this.refname = inp.rv.alias?.aliasname ?? inp.rv.relname;
    this.targetNames = new Set([this.refname]);
    this.colByName = new Map(inp.rel.columns.map((c) => [c.name, c]));
  }

  run(): void {
    const b = this.inp.node;
    const returning: PgNode | undefined = b.returningClause;
    if (returning?.options?.length) throw new Refused('RETURNING WITH (OLD/NEW AS ...) on a masked table');
    const exprs: unknown[] = returning?.exprs ?? b.returningList ?? [];
    switch (this.inp.type) {
      case 'UpdateStmt':
        for (const rt of b.targetList ?? []) this.top(unwrap(rt)?.[1]?.val);
        this.top(b.whereClause);
        this.nested(b.fromClause, []);
        this.returning(exprs, (b.fromClause ?? []).length > 0);
        break;
      case 'DeleteStmt':
        this.top(b.whereClause);
        this.nested(b.usingClause, []);
        this.returning(exprs, (b.usingClause ?? []).length > 0);
        break;
      case 'InsertStmt': {
        const oc = b.onConflictClause;
        if (oc) {
          for (const rt of oc.targetList ?? []) this.top(unwrap(rt)?.[1]?.val);
          this.top(oc.whereClause);
        }
        this.returning(exprs, false);
        break;
      }
      case 'MergeStmt':
        this.top(b.joinCondition);
        for (const w of b.mergeWhenClauses ?? []) {
          const wc = unwrap(w)?.[1];
          if (!wc) continue;
          this.top(wc.condition);
          for (const rt of wc.targetList ?? []) this.top(unwrap(rt)?.[1]?.val);
          this.top(wc.values);
        }
        this.nested(b.sourceRelation, []);
        this.returning(exprs, true);
        break;
    }
  }

  private span(location: number, parts: number): { start: number; end: number } {
    const tk = this.inp.tokens;
    const i0 = tk.at(location);
    const iEnd = i0 === undefined ? undefined : tk.nameEnd(i0, parts);
    if (i0 === undefined || iEnd === undefined)
      throw new Refused('cannot locate a column reference in the text');
    return { start: tk.start(i0), end: tk.end(iEnd) };
  }

  private maskRef(cr: PgNode, col: string, alias: boolean): void {
    const mask = this.inp.masks.get(col)!;
    const c = this.colByName.get(col);
    if (!c) throw new Refused(`column ${col} of ${this.inp.res.display} is not in the catalog snapshot`);
    const parts = (cr.fields ?? []).length;
    const { start, end } = this.span(loc(cr), parts);
    const original = this.inp.bytes.subarray(start, end).toString('utf8');
    const expr =
      `(${maskExpression(original, c, mask, this.inp.serverVersionNum)})` +
      (alias ? ` AS ${quoteIdent(col)}` : '');
    this.edits.push({ start, end, text: expr });
    this.masked.add(`${this.inp.res.display}.${col}`);
  }

  /** The masked column this top-scope ColumnRef reads, or undefined. Throws on whole-row refs. */
  private targetColumn(cr: PgNode): string | undefined {
    const f: unknown[] = cr.fields ?? [];
    const parts = names(f);
    const star = unwrap(f[f.length - 1])?.[0] === 'A_Star';
    if (star) {
      if (f.length === 1 || this.targetNames.has(parts[0] ?? '')) {
        throw new Refused(`whole-row reference to masked table ${this.inp.res.display}`);
      }
      return undefined;
    }
    if (f.length === 1) {
      const x = parts[0] ?? '';
      if (this.inp.masks.has(x) && this.colByName.has(x)) return x;
      if (this.targetNames.has(x) && !this.colByName.has(x)) {
        throw new Refused(`whole-row reference to masked table ${this.inp.res.display}`);
      }
      return undefined;
    }
    if (f.length === 2) {
      const [q, col] = parts as [string, string];
      if (!(this.targetNames.has(q) || q === 'old' || q === 'new')) return undefined;
      this.columnOrRefuse(col);
      return this.inp.masks.has(col) ? col : undefined;
    }
    if (f.length === 3) {
      const [s, tb, col] = parts as [string, string, string];
      if (!(s === this.inp.res.schema && tb === this.inp.res.name)) return undefined;
      this.columnOrRefuse(col);
      return this.inp.masks.has(col) ? col : undefined;
    }
    throw new Refused('column reference with more than three parts on a masked target');
  }

  /** `t.f` where f is no column of the target is the call f(t), on the real row: refused. */
  private columnOrRefuse(col: string): void {
    if (!this.colByName.has(col) && !SYSTEM_COLUMNS.has(col)) {
      throw new Refused(
        `${col} is not a column of masked table ${this.inp.res.display}: it would be a function of the whole row`,
      );
    }
  }

  private top(n: unknown): void {
    if (n === null || typeof n !== 'object') return;
    if (Array.isArray(n)) {
      for (const x of n) this.top(x);
      return;
    }
    const u = unwrap(n);
    if (!u) {
      for (const v of Object.values(n as PgNode)) this.top(v);
      return;
    }
    const [type, b] = u;
    if (type === 'ColumnRef') {
      const col = this.targetColumn(b);
      if (col) this.maskRef(b, col, false);
      return;
    }
    if (type === 'SubLink') {
      this.top(b.testexpr);
      this.nested(b.subselect, []);
      return;
    }
    if (type === 'SelectStmt') {
      this.nested(n, []);
      return;
    }
    for (const v of Object.values(b)) this.top(v);
  }

  private returning(exprs: unknown[], hasOtherFromItems: boolean): void {
    for (const e of exprs) {
      const rt = unwrap(e)?.[1];
      if (!rt) continue;
      const val = unwrap(rt.val);
      if (val?.[0] === 'ColumnRef') {
        const f: unknown[] = val[1].fields ?? [];
        const star = unwrap(f[f.length - 1])?.[0] === 'A_Star';
        if (star) {
          const q = f.length === 2 ? names(f)[0] : undefined;
          if (f.length === 1) {
            if (hasOtherFromItems) {
              throw new Refused(
                `RETURNING * with other FROM/USING items on masked table ${this.inp.res.display}`,
              );
            }
            this.expandStar(val[1], 1, quoteIdent(this.refname));
            continue;
          }
          if (f.length === 2 && q && (this.targetNames.has(q) || q === 'old' || q === 'new')) {
            this.expandStar(val[1], 2, quoteIdent(q));
            continue;
          }
          if (f.length > 2) throw new Refused('qualified * with more than two parts on a masked target');
          continue;
        }
        const col = this.targetColumn(val[1]);
        if (col) this.maskRef(val[1], col, !rt.name);
        continue;
      }
      this.top(rt.val);
    }
  }

  private expandStar(cr: PgNode, parts: number, qual: string): void {
    const { start, end } = this.span(loc(cr), parts);
    const list = this.inp.rel.columns.map((c) => {
      const ref = `${qual}.${quoteIdent(c.name)}`;
      const m = this.inp.masks.get(c.name);
      if (!m) return ref;
      this.masked.add(`${this.inp.res.display}.${c.name}`);
      return `(${maskExpression(ref, c, m, this.inp.serverVersionNum)}) AS ${quoteIdent(c.name)}`;
    });
    if (list.length === 0) throw new Refused(`no columns known for ${this.inp.res.display}`);
    this.edits.push({ start, end, text: list.join(', ') });
  }

  /** FROM items of a SelectStmt: their reference names and the columns known to exist in them. */
  private scopeOf(fromClause: unknown): Scope {
    const s: Scope = { names: new Set(), cols: new Set() };
    const add = (n: unknown): void => {
      const u = unwrap(n);
      const [type, b] = u ?? ['', n as PgNode];
      if (!b || typeof b !== 'object') return;
      if (type === 'RangeVar' || (typeof b.relname === 'string' && typeof b.relpersistence === 'string')) {
        s.names.add(b.alias?.aliasname ?? b.relname);
        const rel = this.inp.resolvedRv.get(b)?.rel;
        if (rel && !b.alias?.colnames) for (const c of rel.columns) s.cols.add(c.name);
        for (const c of names(b.alias?.colnames)) if (c) s.cols.add(c);
      } else if (type === 'JoinExpr') {
        add(b.larg);
        add(b.rarg);
        if (b.alias?.aliasname) s.names.add(b.alias.aliasname);
      } else if (type === 'RangeTableSample') {
        add(b.relation);
      } else if (b.alias?.aliasname) {
        s.names.add(b.alias.aliasname);
        for (const c of names(b.alias.colnames)) if (c) s.cols.add(c);
      } else if (type === 'RangeFunction') {
        for (const f of b.functions ?? []) {
          const fc = unwrap(unwrap(f)?.[1]?.items?.[0]);
          const fn = fc?.[0] === 'FuncCall' ? names(fc[1].funcname) : [];
          const last = fn[fn.length - 1];
          if (last) s.names.add(last);
        }
      }
    };
    for (const item of Array.isArray(fromClause) ? fromClause : []) add(item);
    return s;
  }

  private nested(n: unknown, scopes: Scope[]): void {
    if (n === null || typeof n !== 'object') return;
    if (Array.isArray(n)) {
      for (const x of n) this.nested(x, scopes);
      return;
    }
    const u = unwrap(n);
    if (!u) {
      for (const v of Object.values(n as PgNode)) this.nested(v, scopes);
      return;
    }
    const [type, b] = u;
    if (type === 'SelectStmt') {
      const inner = [...scopes, this.scopeOf(b.fromClause)];
      for (const [k, v] of Object.entries(b)) {
        if (k === 'larg' || k === 'rarg') this.nested({ SelectStmt: v }, scopes);
        else this.nested(v, inner);
      }
      return;
    }
    if (type === 'ColumnRef') {
      this.nestedRef(b, scopes);
      return;
    }
    for (const v of Object.values(b)) this.nested(v, scopes);
  }

  private nestedRef(cr: PgNode, scopes: Scope[]): void {
    const f: unknown[] = cr.fields ?? [];
    const parts = names(f);
    const star = unwrap(f[f.length - 1])?.[0] === 'A_Star';
    const shadowedName = (q: string) => scopes.some((s) => s.names.has(q));
    const boundCol = (c: string) => scopes.some((s) => s.cols.has(c));
    const refuse = (what: string) => {
      throw new Refused(
        `a sub-select may read ${what} of masked table ${this.inp.res.display} (the UPDATE/DELETE/MERGE target) by correlation`,
      );
    };
    if (star) {
      if (f.length === 2 && this.targetNames.has(parts[0] ?? '') && !shadowedName(parts[0]!))
        refuse('every column');
      return;
    }
    if (f.length === 1) {
      const x = parts[0] ?? '';
      if (this.inp.masks.has(x) && !boundCol(x)) refuse(`column ${x}`);
      if (this.targetNames.has(x) && !this.colByName.has(x) && !shadowedName(x) && !boundCol(x))
        refuse('the whole row');
      return;
    }
    const q = parts[f.length - 2] ?? '';
    const col = parts[f.length - 1] ?? '';
    if (this.targetNames.has(q) && !shadowedName(q) && this.inp.masks.has(col)) refuse(`column ${col}`);
  }
}
