/**
 * What a statement exercises, as a set of (privilege, object) pairs in PostgreSQL's privilege sense,
 * so that rules match what a statement does and not only its tag (issues 23 and 25):
 *
 * - SELECT on every relation read anywhere (FROM, JOIN, sub-selects in any clause, CTEs, set
 *   operations, `TABLE`, COPY ... TO, MERGE ... USING), and on a write's target when the write reads
 *   its columns (WHERE, SET expressions, RETURNING, ON CONFLICT's target, MERGE's ON and WHEN);
 * - INSERT/UPDATE/DELETE on every relation written, also inside CTEs, EXPLAIN ANALYZE, PREPARE, by
 *   each MERGE action, by ON CONFLICT DO UPDATE (INSERT and UPDATE), and by COPY ... FROM (INSERT);
 *   UPDATE on rows locked by SELECT ... FOR UPDATE/SHARE;
 * - EXECUTE on the user-defined functions a statement calls (those in functions.allow; others make
 *   the statement opaque);
 * - every other command tag (DDL, COPY, EXPLAIN, PREPARE, DECLARE CURSOR, TRUNCATE TABLE, LOCK, GRANT,
 *   SET, BEGIN, ...) on the objects it names, or on no object when it names none.
 *
 * A pair on a view carries the pairs of what the view reads (`via`), recursively: a read through a
 * view reads the relations under it, whoever owns the view. A write to a relation with rewrite rules
 * (`CREATE RULE ... DO ALSO ...`) carries every privilege on what those rules name. Pure: the catalog
 * snapshot brings the view and rule dependencies, judge.ts the name resolution.
 */

import type { RelRef, StatementAnalysis } from './analyze.js';
import { names, type PgNode, qdisplay, qkey, unwrap } from './ast.js';
import type { CatalogSnapshot } from './catalog.js';
import type { ResolvedRelation } from './resolve.js';

export interface Exercise {
  /** `SELECT`, `INSERT`, `UPDATE`, `DELETE`, `EXECUTE`, or a command tag (`DROP TABLE`, `COPY`, `SET` ...) */
  privilege: string;
  /** `schema.name`; null when the command names no object (`SET`, `BEGIN`, `SELECT 1`) */
  object: string | null;
  /** what exercising this pair exercises in turn: the relations a view reads (or writes through) */
  via?: Exercise[];
  /**
   * the relations behind this one cannot be seen (no catalog snapshot, or a relation the snapshot
   * does not know): it may be a view over anything. Only on a `via` entry; `object` is null.
   */
  hidden?: boolean;
  /** the statement's effects cannot be seen (DO, CALL, a function not allowed): any privilege on any object */
  opaque?: string;
  /**
   * a SELECT that reads no relation and calls no function (`SELECT 1`, a pool's health check): it
   * reads and changes nothing, so an Allow rule on reading any objects permits it
   */
  constant?: boolean;
}

/** Tags whose meaning is carried by the privilege pairs of the statement itself. */
const PRIVILEGE_TAGS = new Set(['SELECT', 'INSERT', 'UPDATE', 'DELETE']);

/** Tags that wrap another statement: they apply to every object of the statement they wrap. */
const WRAPPER_TAGS = new Set(['EXPLAIN', 'PREPARE', 'DECLARE CURSOR', 'COPY']);

/** View dependencies: the relations each view reads, from the catalog and from views created earlier in the text. */
export class ViewGraph {
  constructor(
    private readonly catalog: CatalogSnapshot | undefined,
    /** key → what a relation created earlier in this text reads: a view its relations, a table [] */
    private readonly inText: ReadonlyMap<string, ResolvedRelation[]>,
  ) {}

  relation(schema: string, name: string): ResolvedRelation {
    const relkind = this.catalog?.relations.get(schema)?.get(name);
    return {
      schema,
      name,
      key: qkey(schema, name),
      display: qdisplay(schema, name),
      known: relkind !== undefined,
      uncertain: false,
      relkind,
    };
  }

  /** The relations the rewrite rules of `r` for this write name (`CREATE RULE ... ON DELETE TO r DO ALSO ...`). */
  ruleTargetsOf(r: ResolvedRelation, privilege: string): ResolvedRelation[] {
    if (privilege === 'SELECT' || !this.catalog) return [];
    const rules = this.catalog.ruleTargets.get(r.key) ?? [];
    return rules.filter((t) => t.event === privilege).map((t) => this.relation(t.schema, t.name));
  }

  /**
   * What reading (or writing) `r` reads (or writes) in turn: a view's relations, a parent's
   * inheritance children unless `only` (`FROM ONLY t`); 'hidden' when that cannot be known.
   */
  readsOf(r: ResolvedRelation, only = false): ResolvedRelation[] | 'hidden' {
    const local = this.inText.get(r.key);
    if (local) return local;
    // system views are not expanded (the snapshot lists user views only), with or without a snapshot
    if (r.schema === 'pg_catalog' || r.schema === 'information_schema') return [];
    if (!this.catalog || !r.known) return 'hidden';
    const under = [
      ...(this.catalog.viewReads.get(r.key) ?? []),
      ...(only ? [] : (this.catalog.children.get(r.key) ?? [])),
    ];
    return under.map((u) => this.relation(u.schema, u.name));
  }
}

/** A pair on a relation, with what it exercises through views and rules (`seen` guards against cycles). */
export function relationExercise(
  privilege: string,
  r: ResolvedRelation,
  views: ViewGraph,
  seen: ReadonlySet<string> = new Set(),
  only = false,
): Exercise {
  const e: Exercise = { privilege, object: r.display };
  if (seen.has(r.key)) return e;
  const under = views.readsOf(r, only);
  if (under === 'hidden') {
    e.via = [{ privilege, object: null, hidden: true }];
    return e;
  }
  const next = new Set(seen).add(r.key);
  const via = under.map((u) => relationExercise(privilege, u, views, next));
  // a rule's actions may read or write what they name: every privilege on each (the proxy does not parse them)
  for (const t of views.ruleTargetsOf(r, privilege))
    for (const p of ['SELECT', 'INSERT', 'UPDATE', 'DELETE']) via.push(relationExercise(p, t, views, next));
  if (via.length) e.via = via;
  return e;
}

/** Does a column reference name a column of the target (unqualified, or qualified by its alias or name)? */
export function refersToTarget(n: unknown, target: { alias?: string; name: string }): boolean {
  if (n === null || typeof n !== 'object') return false;
  if (Array.isArray(n)) return n.some((x) => refersToTarget(x, target));
  const u = unwrap(n);
  if (u?.[0] === 'ColumnRef') {
    const fields = (u[1].fields ?? []) as unknown[];
    if (fields.length <= 1) return true; // `col`, or a whole-row `t`: may be the target's
    const parts = names(fields);
    const qualifier = parts[fields.length - 2];
    // PostgreSQL 18's RETURNING old.col / new.col read the target too
    return (
      qualifier === target.alias || qualifier === target.name || qualifier === 'old' || qualifier === 'new'
    );
  }
  return Object.values(n as PgNode).some((v) => refersToTarget(v, target));
}

/**
 * The privileges a DML statement exercises on its target, as PostgreSQL checks them: the write itself,
 * plus SELECT when the statement reads the target's columns (a WHERE on a constant reads none).
 */
export function targetPrivileges(type: string, b: PgNode): string[] {
  const target = {
    alias: b.relation?.alias?.aliasname as string | undefined,
    name: String(b.relation?.relname),
  };
  const reads = (...parts: unknown[]) => parts.some((p) => refersToTarget(p, target));
  // PostgreSQL 18's grammar wraps RETURNING in a ReturningClause (OLD/NEW aliases); older in a list
  const returning: unknown = b.returningClause?.exprs ?? b.returningList;
  const out = new Set<string>();
  switch (type) {
    case 'InsertStmt': {
      out.add('INSERT');
      const oc = b.onConflictClause as PgNode | undefined;
      if (oc?.action === 'ONCONFLICT_UPDATE') out.add('UPDATE');
      // the conflict target's columns are read to find the arbiter index
      if (oc?.infer || reads(returning, oc?.targetList, oc?.whereClause)) out.add('SELECT');
      break;
    }
    case 'UpdateStmt':
      out.add('UPDATE');
      if (
        reads(
          b.whereClause,
          returning,
          (b.targetList ?? []).map((t: PgNode) => unwrap(t)?.[1]?.val),
        )
      )
        out.add('SELECT');
      break;
    case 'DeleteStmt':
      out.add('DELETE');
      if (reads(b.whereClause, returning)) out.add('SELECT');
      break;
    case 'MergeStmt': {
      let read = reads(b.joinCondition, returning);
      for (const w of b.mergeWhenClauses ?? []) {
        const c = unwrap(w)?.[1];
        if (!c) continue;
        if (c.commandType === 'CMD_INSERT') out.add('INSERT');
        else if (c.commandType === 'CMD_UPDATE') out.add('UPDATE');
        else if (c.commandType === 'CMD_DELETE') out.add('DELETE');
        const vals = (c.targetList ?? []).map((t: PgNode) => unwrap(t)?.[1]?.val);
        if (reads(c.condition, c.commandType === 'CMD_UPDATE' ? vals : [])) read = true;
      }
      if (read) out.add('SELECT');
      break;
    }
  }
  return [...out];
}

/** Inputs judge.ts has for one statement. */
export interface ExerciseInput {
  analysis: StatementAnalysis;
  resolved: ReadonlyMap<RelRef, ResolvedRelation>;
  /** display names of the relations and schemas (`s.*`) named by DROP, COMMENT, GRANT ... IN SCHEMA */
  named: string[];
  /** `schema.function` of every user-defined function called (allowed ones; others are opaque) */
  executes: string[];
  /** why the statement is opaque, if it is */
  opaque?: string;
  views: ViewGraph;
}

/** Every (privilege, object) pair the statement exercises, each once. */
export function statementExercises(input: ExerciseInput): Exercise[] {
  const { analysis: a, resolved, views } = input;
  const out: Exercise[] = [];
  const seen = new Set<string>();
  const push = (e: Exercise) => {
    const k = `${e.privilege}\u0000${e.object ?? ''}`;
    if (seen.has(k)) return;
    seen.add(k);
    out.push(e);
  };
  const rel = (privilege: string, r: ResolvedRelation, only: boolean) =>
    push(relationExercise(privilege, r, views, new Set(), only));
  const all = new Set<string>();
  const targets = new Set<string>();
  const other = new Set<string>(input.named);
  for (const r of a.rels) {
    if (r.cteRef || r.role === 'alias-ref') continue;
    const res = resolved.get(r);
    if (!res) continue;
    all.add(res.display);
    // `FROM ONLY t` leaves t's inheritance children out; COPY t TO reads t alone
    const only = !r.rv.inh || r.role === 'copy-to';
    switch (r.role) {
      case 'read':
      case 'copy-to':
        rel('SELECT', res, only);
        if (r.locked) rel('UPDATE', res, only); // row locks need UPDATE privilege, as in PostgreSQL
        break;
      case 'copy-from':
        rel('INSERT', res, only);
        break;
      case 'target':
        targets.add(res.display);
        for (const p of r.dml ? targetPrivileges(r.dml.type, r.dml.node) : ['SELECT']) rel(p, res, only);
        break;
      default:
        other.add(res.display);
    }
  }
  for (const n of input.named) all.add(n);
  for (const f of input.executes) push({ privilege: 'EXECUTE', object: f });
  const tags = new Set([a.command, ...a.innerCommands]);
  // SELECT ... INTO creates a table: its own tag, so a SELECT rule does not cover it
  if (a.command === 'SELECT' && other.size) tags.add('SELECT INTO');
  for (const tag of tags) {
    if (PRIVILEGE_TAGS.has(tag)) continue;
    const objects = WRAPPER_TAGS.has(tag) ? all : tag === 'MERGE' ? targets : other;
    if (objects.size === 0) push({ privilege: tag, object: null });
    for (const o of objects) push({ privilege: tag, object: o });
  }
  if (out.length === 0) {
    const constant = a.command === 'SELECT' && !a.funcs.some((f) => f.kind === 'func');
    push({ privilege: a.command, object: null, ...(constant ? { constant } : {}) });
  }
  if (input.opaque) out.push({ privilege: '*', object: '*', opaque: input.opaque });
  return out;
}

/** For `CREATE VIEW` / `CREATE MATERIALIZED VIEW`: the relations the new view reads (its `via`). */
export function viewDefinition(
  a: StatementAnalysis,
  resolved: ReadonlyMap<RelRef, ResolvedRelation>,
): { key: string; reads: ResolvedRelation[] } | undefined {
  const isView =
    a.type === 'ViewStmt' || (a.type === 'CreateTableAsStmt' && a.node.objtype === 'OBJECT_MATVIEW');
  if (!isView) return undefined;
  const made = a.rels.find((r) => r.role === 'create');
  const key = made && resolved.get(made)?.key;
  if (!key) return undefined;
  const reads = new Map<string, ResolvedRelation>();
  for (const r of a.rels) {
    if (r.role !== 'read' || r.cteRef) continue;
    const res = resolved.get(r);
    if (res) reads.set(res.key, res);
  }
  return { key, reads: [...reads.values()] };
}

/** Flat list of the pairs, each with the view it is read through (for `dbguard check` and tests). */
export function flattenExercises(
  list: Exercise[],
  through?: string,
): { privilege: string; object: string | null; through?: string }[] {
  const out: { privilege: string; object: string | null; through?: string }[] = [];
  for (const e of list) {
    if (e.hidden) continue;
    out.push({ privilege: e.privilege, object: e.object, ...(through ? { through } : {}) });
    if (e.via) out.push(...flattenExercises(e.via, e.object ?? undefined));
  }
  return out;
}

/** Does any pair rest on relations the snapshot could not see into? */
export function hasHiddenExercises(list: Exercise[]): boolean {
  return list.some((e) => e.hidden || (e.via ? hasHiddenExercises(e.via) : false));
}
