/**
 * Per-statement analysis over the parse tree: the command tag, every relation reference with the
 * role it plays (read, DML target, COPY, DDL ...), every function and operator called, UPDATE/DELETE
 * without WHERE, opaque parts (DO, CALL) and session effects. Pure: name resolution and policy come
 * later (judge.ts), so one analysis serves rules, masking and audit.
 */
import { boolConst, loc, names, type PgNode, stringConst, unwrap } from './ast.js';
import { commandTag } from './command-tag.js';
import type { SessionEffect } from './decision.js';
import { unboundedWrite } from './unbounded-write.js';

/**
 * How a statement uses a relation. `read`: a FROM item (its rows are read); `target`: the relation an
 * INSERT/UPDATE/DELETE/MERGE writes; `copy-to`/`copy-from`: COPY table TO/FROM; `ddl-safe`: DROP,
 * TRUNCATE, LOCK, GRANT/REVOKE, COMMENT, VACUUM/ANALYZE (no values leave the server); `create`: a
 * relation the statement creates; `alias-ref`: a FROM alias named again (FOR UPDATE OF x); `ddl`: any
 * other place, including ones this analysis does not know (default: the strictest handling).
 */
export type RelRole =
  | 'read'
  | 'target'
  | 'copy-to'
  | 'copy-from'
  | 'ddl-safe'
  | 'ddl'
  | 'create'
  | 'alias-ref';

export interface RelRef {
  /** the RangeVar body: schemaname?, relname, catalogname?, inh, alias?, location, relpersistence */
  rv: PgNode;
  role: RelRole;
  /** names a CTE in scope, not a relation */
  cteRef: boolean;
  /** written as `TABLE name` (the SELECT * shorthand) */
  tableCmd: boolean;
  /** under TABLESAMPLE */
  sampled: boolean;
  /** for `target`: the DML statement body and its type */
  dml?: { type: string; node: PgNode };
  /** for `read`: rows locked by FOR UPDATE/SHARE (PostgreSQL asks UPDATE privilege for that) */
  locked?: boolean;
}

/** A relation or schema named by a plain name list (DROP, COMMENT, GRANT ... IN SCHEMA, ALTER SCHEMA). */
export interface NameRef {
  schema?: string;
  /** undefined: the whole schema */
  name?: string;
  role: 'ddl-safe' | 'ddl';
}

export interface FuncRef {
  kind: 'func' | 'op';
  names: string[];
  node: PgNode;
}

export interface DmlRef {
  type: 'InsertStmt' | 'UpdateStmt' | 'DeleteStmt' | 'MergeStmt';
  node: PgNode;
}

export interface StatementAnalysis {
  index: number;
  type: string;
  node: PgNode;
  command: string;
  /** tags of statements nested in this one (data-modifying CTEs, EXPLAIN/PREPARE/DECLARE/COPY bodies) */
  innerCommands: string[];
  start: number;
  end: number;
  rels: RelRef[];
  nameRefs: NameRef[];
  funcs: FuncRef[];
  dmls: DmlRef[];
  withoutWhere: boolean;
  /** DO, CALL: effects not visible in the text (functions are judged later, with the catalog) */
  opaqueReasons: string[];
  /** reasons a masked subject may not run this statement whatever it touches */
  maskHazards: string[];
  /**
   * `set_config(name, ...) FROM pg_settings WHERE name = 'x'` (pg_dump's first query): the FROM items
   * that must resolve to pg_catalog.pg_settings for the setting name to be the literal `x`; the masking
   * analysis refuses the statement when one does not.
   */
  settingsSources: PgNode[];
  /** effects visible in the text (search_path, transaction, catalog); function effects are added later */
  effects: SessionEffect[];
  /** `set_config('search_path', ...)` and friends, applied after the statement */
  catalogChanged: boolean;
}

/** Statement types that leave relations, functions, rules and inheritance unchanged. */
const NON_CATALOG = new Set([
  'SelectStmt',
  'InsertStmt',
  'UpdateStmt',
  'DeleteStmt',
  'MergeStmt',
  'TransactionStmt',
  'VariableSetStmt',
  'VariableShowStmt',
  'NotifyStmt',
  'ListenStmt',
  'UnlistenStmt',
  'PrepareStmt',
  'ExecuteStmt',
  'DeallocateStmt',
  'DeclareCursorStmt',
  'FetchStmt',
  'ClosePortalStmt',
  'ExplainStmt',
  'CopyStmt',
  'LockStmt',
  'VacuumStmt',
  'CheckPointStmt',
  'ConstraintsSetStmt',
  'GrantStmt',
  'GrantRoleStmt',
  'CommentStmt',
  'SecLabelStmt',
  'TruncateStmt',
  'ClusterStmt',
  'ReindexStmt',
  'RefreshMatViewStmt',
  'AlterSystemStmt',
  'CreateRoleStmt',
  'AlterRoleStmt',
  'AlterRoleSetStmt',
  'DropRoleStmt',
  'AlterDatabaseSetStmt',
  'CreatedbStmt',
  'DropdbStmt',
  'AlterDatabaseStmt',
  'AlterDefaultPrivilegesStmt',
]);

/** DDL that defines code the server will run later (or loads code): never for a masked subject. */
const EXECUTABLE_DDL: Record<string, string> = {
  CreateFunctionStmt: 'CREATE FUNCTION/PROCEDURE defines executable code',
  AlterFunctionStmt: 'ALTER FUNCTION/PROCEDURE changes executable code',
  CreateTrigStmt: 'CREATE TRIGGER defines executable code',
  RuleStmt: 'CREATE RULE defines a rewrite rule',
  CreateEventTrigStmt: 'CREATE EVENT TRIGGER defines executable code',
  AlterEventTrigStmt: 'ALTER EVENT TRIGGER changes executable code',
  CreatePolicyStmt: 'CREATE POLICY defines row-security expressions',
  AlterPolicyStmt: 'ALTER POLICY changes row-security expressions',
  CreateCastStmt: 'CREATE CAST defines executable code',
  CreateTransformStmt: 'CREATE TRANSFORM defines executable code',
  CreateExtensionStmt: 'CREATE EXTENSION installs executable code',
  AlterExtensionStmt: 'ALTER EXTENSION changes executable code',
  AlterExtensionContentsStmt: 'ALTER EXTENSION changes executable code',
  CreatePLangStmt: 'CREATE LANGUAGE installs executable code',
  CreateConversionStmt: 'CREATE CONVERSION defines executable code',
  CreateOpClassStmt: 'CREATE OPERATOR CLASS defines executable code',
  CreateOpFamilyStmt: 'CREATE OPERATOR FAMILY defines executable code',
  AlterOpFamilyStmt: 'ALTER OPERATOR FAMILY changes executable code',
  AlterOperatorStmt: 'ALTER OPERATOR changes executable code',
  CreateAmStmt: 'CREATE ACCESS METHOD installs executable code',
  CreateFdwStmt: 'CREATE FOREIGN DATA WRAPPER installs executable code',
  LoadStmt: 'LOAD loads executable code',
};

const DEFINE_EXECUTABLE = new Set(['OBJECT_AGGREGATE', 'OBJECT_OPERATOR', 'OBJECT_TYPE']);

/** DROP object types whose names are relations. */
const DROP_RELATION_TYPES = new Set([
  'OBJECT_TABLE',
  'OBJECT_VIEW',
  'OBJECT_MATVIEW',
  'OBJECT_INDEX',
  'OBJECT_SEQUENCE',
  'OBJECT_FOREIGN_TABLE',
]);

const COMMENT_RELATION_TYPES = new Set([...DROP_RELATION_TYPES, 'OBJECT_COLUMN']);

interface Ctx {
  /** CTE names visible here */
  ctes: ReadonlySet<string>;
  /** role of a RangeVar met by the generic walk */
  role: RelRole;
}

function qualifiedName(list: (string | null)[]): NameRef | undefined {
  const parts = list.filter((p): p is string => p !== null);
  if (parts.length === 0) return undefined;
  const name = parts[parts.length - 1]!;
  const schema = parts.length >= 2 ? parts[parts.length - 2] : undefined;
  return { schema, name, role: 'ddl-safe' };
}

class Walker {
  constructor(readonly a: StatementAnalysis) {}

  visit(n: unknown, ctx: Ctx): void {
    if (n === null || typeof n !== 'object') return;
    if (Array.isArray(n)) {
      for (const x of n) this.visit(x, ctx);
      return;
    }
    const u = unwrap(n);
    if (u) {
      this.node(u[0], u[1], ctx);
      return;
    }
    const o = n as PgNode;
    if (typeof o.relname === 'string' && typeof o.relpersistence === 'string') {
      this.rangeVar(o, ctx.role, ctx);
      return;
    }
    for (const v of Object.values(o)) this.visit(v, ctx);
  }

  /** Visit every field of a node except the named ones. */
  rest(body: PgNode, ctx: Ctx, skip: string[]): void {
    for (const [k, v] of Object.entries(body)) if (!skip.includes(k)) this.visit(v, ctx);
  }

  rangeVar(rv: PgNode, role: RelRole, ctx: Ctx, extra: Partial<RelRef> = {}): void {
    const cteRef = role === 'read' && !rv.schemaname && !rv.catalogname && ctx.ctes.has(rv.relname);
    this.a.rels.push({ rv, role, cteRef, tableCmd: false, sampled: false, ...extra });
  }

  /** Scope of a WITH clause: visits the CTE bodies, returns the context of the main query. */
  withClause(w: PgNode | undefined, ctx: Ctx): Ctx {
    if (!w) return ctx;
    const ctes = (w.ctes ?? []).map((c: unknown) => unwrap(c)?.[1]).filter(Boolean) as PgNode[];
    const all = new Set(ctx.ctes);
    for (const c of ctes) all.add(c.ctename);
    if (w.recursive) {
      for (const c of ctes) this.cte(c, { ctes: all, role: 'read' });
    } else {
      let acc = new Set(ctx.ctes);
      for (const c of ctes) {
        this.cte(c, { ctes: acc, role: 'read' });
        acc = new Set(acc);
        acc.add(c.ctename);
      }
    }
    return { ctes: all, role: ctx.role };
  }

  cte(c: PgNode, ctx: Ctx): void {
    this.visit(c.ctequery, ctx);
    this.rest(c, ctx, ['ctequery', 'ctename', 'aliascolnames']);
  }

  fromItems(list: unknown, ctx: Ctx): void {
    this.visit(list, { ...ctx, role: 'read' });
  }

  /** the setting name proven by the SELECT being walked (see settingsName) */
  private provenSetting?: { name: string; rv: PgNode };

  select(b: PgNode, outer: Ctx): void {
    const proven = settingsName(b);
    const saved = this.provenSetting;
    this.provenSetting = proven;
    try {
      this.selectBody(b, outer);
    } finally {
      this.provenSetting = saved;
    }
  }

  private selectBody(b: PgNode, outer: Ctx): void {
    const ctx = this.withClause(b.withClause, outer);
    if (b.intoClause?.rel) {
      this.rangeVar(b.intoClause.rel, 'create', ctx);
      this.a.catalogChanged = true;
    }
    const fromStart = this.a.rels.length;
    this.fromItems(b.fromClause, ctx);
    const from = this.a.rels.slice(fromStart);
    for (const lc of b.lockingClause ?? []) {
      const l = unwrap(lc)?.[1];
      const named = new Set<string>();
      for (const r of l?.lockedRels ?? []) {
        const rv = unwrap(r)?.[1];
        if (rv) {
          this.rangeVar(rv, 'alias-ref', ctx);
          named.add(rv.relname);
        }
      }
      // FOR UPDATE/SHARE [OF names]: the relations of the named FROM items, or of all of them
      // (sub-selects included, as PostgreSQL locks them)
      const locked = new Set(rangeVarsIn(named.size ? fromItemsNamed(b.fromClause, named) : b.fromClause));
      for (const r of from) if (r.role === 'read' && locked.has(r.rv)) r.locked = true;
    }
    const exprCtx: Ctx = { ...ctx, role: 'ddl' };
    this.rest(b, exprCtx, ['withClause', 'intoClause', 'fromClause', 'lockingClause', 'larg', 'rarg']);
    if (b.larg) this.select(b.larg, ctx);
    if (b.rarg) this.select(b.rarg, ctx);
  }

  dml(type: DmlRef['type'], b: PgNode, outer: Ctx, nested: boolean): void {
    const ctx = this.withClause(b.withClause, outer);
    const exprCtx: Ctx = { ...ctx, role: 'ddl' };
    if (nested) this.a.innerCommands.push(commandTag(type, b));
    this.a.dmls.push({ type, node: b });
    if (b.relation) this.rangeVar(b.relation, 'target', ctx, { dml: { type, node: b } });
    if (unboundedWrite(type, b)) this.a.withoutWhere = true;
    switch (type) {
      case 'InsertStmt':
        if (b.selectStmt) this.visit(b.selectStmt, ctx);
        this.rest(b, exprCtx, ['withClause', 'relation', 'selectStmt', 'cols']);
        break;
      case 'UpdateStmt':
        this.fromItems(b.fromClause, ctx);
        this.rest(b, exprCtx, ['withClause', 'relation', 'fromClause']);
        break;
      case 'DeleteStmt':
        this.fromItems(b.usingClause, ctx);
        this.rest(b, exprCtx, ['withClause', 'relation', 'usingClause']);
        break;
      case 'MergeStmt':
        this.fromItems(b.sourceRelation, ctx);
        this.rest(b, exprCtx, ['withClause', 'relation', 'sourceRelation']);
        break;
    }
  }

  /** A statement nested in another (EXPLAIN, PREPARE, DECLARE, COPY (query), CREATE TABLE AS). */
  inner(q: unknown, ctx: Ctx): void {
    const u = unwrap(q);
    if (!u) return;
    if (u[0] === 'SelectStmt') {
      this.a.innerCommands.push('SELECT');
      this.select(u[1], { ...ctx, role: 'read' });
      return;
    }
    if (u[0] === 'InsertStmt' || u[0] === 'UpdateStmt' || u[0] === 'DeleteStmt' || u[0] === 'MergeStmt') {
      this.dml(u[0], u[1], ctx, true);
      return;
    }
    this.a.innerCommands.push(commandTag(u[0], u[1]));
    this.node(u[0], u[1], ctx);
  }

  funcCall(b: PgNode, ctx: Ctx): void {
    const fn = names(b.funcname).filter((x): x is string => x !== null);
    this.a.funcs.push({ kind: 'func', names: fn, node: b });
    const last = fn[fn.length - 1];
    if (last === 'set_config' && (fn.length === 1 || fn[0] === 'pg_catalog')) this.setConfig(b);
    this.rest(b, ctx, ['funcname']);
  }

  setConfig(b: PgNode): void {
    const args = b.args ?? [];
    let name = stringConst(args[0]);
    if (name === undefined && this.provenSetting && isColumn(args[0], 'name')) {
      // pg_dump: set_config(name, ...) FROM pg_settings WHERE name = 'x' sets exactly `x`, provided
      // pg_settings is the catalog's (checked once names are resolved)
      name = this.provenSetting.name;
      this.a.settingsSources.push(this.provenSetting.rv);
    }
    if (name === undefined) {
      this.a.effects.push({ kind: 'unknown-state' });
      this.a.maskHazards.push('set_config with a setting name that is not a literal');
      return;
    }
    const setting = name.trim().toLowerCase();
    // like SET ROLE: "$user" in search_path and the temporary schema may change
    if (setting === 'role' || setting === 'session_authorization') {
      this.a.effects.push({ kind: 'unknown-state' });
      return;
    }
    if (setting !== 'search_path') return;
    const value = stringConst(args[1]);
    const local = boolConst(args[2]);
    if (value === undefined || local === undefined) {
      this.a.effects.push({ kind: 'unknown-state' });
      this.a.maskHazards.push("set_config('search_path', ...) with a value that is not a literal");
      return;
    }
    this.a.effects.push({ kind: 'search_path', value: splitSearchPath(value), local });
  }

  node(type: string, b: PgNode, ctx: Ctx): void {
    if (type.endsWith('Stmt') && !NON_CATALOG.has(type)) this.a.catalogChanged = true;
    const hazard = EXECUTABLE_DDL[type];
    if (hazard) this.a.maskHazards.push(hazard);
    switch (type) {
      case 'RangeVar':
        this.rangeVar(b, ctx.role, ctx);
        return;
      case 'SelectStmt':
        this.select(b, { ...ctx, role: 'read' });
        return;
      case 'InsertStmt':
      case 'UpdateStmt':
      case 'DeleteStmt':
      case 'MergeStmt':
        this.dml(type, b, ctx, true);
        return;
      case 'FuncCall':
        this.funcCall(b, ctx);
        return;
      case 'A_Expr': {
        const op = names(b.name).filter((x): x is string => x !== null);
        // BETWEEN's "name" is the keyword; it is evaluated with the type's own <= and >=
        if (op.length && !String(b.kind).startsWith('AEXPR_BETWEEN'))
          this.a.funcs.push({ kind: 'op', names: op, node: b });
        this.rest(b, ctx, ['name']);
        return;
      }
      case 'RangeTableSample': {
        const rv = unwrap(b.relation);
        if (rv?.[0] === 'RangeVar') this.rangeVar(rv[1], 'read', ctx, { sampled: true });
        else this.visit(b.relation, { ...ctx, role: 'read' });
        this.rest(b, { ...ctx, role: 'ddl' }, ['relation']);
        return;
      }
      case 'JoinExpr':
        this.visit(b.larg, { ...ctx, role: 'read' });
        this.visit(b.rarg, { ...ctx, role: 'read' });
        this.rest(b, { ...ctx, role: 'ddl' }, ['larg', 'rarg']);
        return;
      case 'RangeSubselect':
        this.visit(b.subquery, ctx);
        return;
      case 'CopyStmt':
        if (b.relation) this.rangeVar(b.relation, b.is_from ? 'copy-from' : 'copy-to', ctx);
        if (b.query) this.inner(b.query, ctx);
        this.rest(b, { ...ctx, role: 'ddl' }, ['relation', 'query']);
        return;
      case 'ExplainStmt':
        // VERBOSE prints every output expression of the rewritten plan: the masking expressions, and
        // through them what the proxy added. Refused for masked subjects whatever its argument.
        if ((b.options ?? []).some((o: unknown) => unwrap(o)?.[1].defname === 'verbose'))
          this.a.maskHazards.push('EXPLAIN VERBOSE shows the masking rewrite');
        this.inner(b.query, ctx);
        this.rest(b, { ...ctx, role: 'ddl' }, ['query']);
        return;
      case 'DeclareCursorStmt':
        this.inner(b.query, ctx);
        this.rest(b, { ...ctx, role: 'ddl' }, ['query']);
        return;
      case 'PrepareStmt':
        this.inner(b.query, ctx);
        return;
      case 'CreateTableAsStmt':
        if (b.into?.rel) this.rangeVar(b.into.rel, 'create', ctx);
        this.inner(b.query, ctx);
        return;
      case 'ViewStmt':
        if (b.view) this.rangeVar(b.view, 'create', ctx);
        this.inner(b.query, ctx);
        return;
      case 'CreateStmt':
        if (b.relation) this.rangeVar(b.relation, 'create', ctx);
        this.rest(b, { ...ctx, role: 'ddl' }, ['relation']);
        return;
      case 'DropStmt':
        this.drop(b);
        return;
      case 'TruncateStmt':
      case 'LockStmt':
        this.visit(b.relations, { ...ctx, role: 'ddl-safe' });
        return;
      case 'VacuumStmt':
        this.visit(b.rels, { ...ctx, role: 'ddl-safe' });
        return;
      case 'GrantStmt':
        if (b.targtype === 'ACL_TARGET_ALL_IN_SCHEMA') {
          for (const s of names(b.objects)) if (s) this.a.nameRefs.push({ schema: s, role: 'ddl-safe' });
        } else {
          this.visit(b.objects, { ...ctx, role: 'ddl-safe' });
        }
        return;
      case 'CommentStmt':
      case 'SecLabelStmt':
        if (COMMENT_RELATION_TYPES.has(b.objtype)) {
          const parts = names(unwrap(b.object)?.[1]?.items);
          const ref = qualifiedName(b.objtype === 'OBJECT_COLUMN' ? parts.slice(0, -1) : parts);
          if (ref) this.a.nameRefs.push(ref);
        }
        return;
      case 'RenameStmt':
        if (b.renameType === 'OBJECT_SCHEMA' && b.subname) {
          this.a.nameRefs.push({ schema: b.subname, role: 'ddl' });
        }
        this.rest(b, { ...ctx, role: 'ddl' }, []);
        return;
      case 'DoStmt':
        this.a.opaqueReasons.push('DO block');
        this.a.maskHazards.push('a DO block runs code the proxy cannot see');
        this.a.effects.push({ kind: 'unknown-state' });
        return;
      case 'CallStmt':
        this.a.opaqueReasons.push('CALL');
        this.a.maskHazards.push('CALL runs a procedure the proxy cannot see');
        this.a.effects.push({ kind: 'unknown-state' });
        this.visit(b.funccall, { ...ctx, role: 'ddl' });
        return;
      case 'DefineStmt':
        if (DEFINE_EXECUTABLE.has(b.kind))
          this.a.maskHazards.push('CREATE AGGREGATE/OPERATOR/TYPE defines code');
        this.rest(b, { ...ctx, role: 'ddl' }, []);
        return;
      case 'VariableSetStmt':
        this.variableSet(b);
        this.rest(b, { ...ctx, role: 'ddl' }, []);
        return;
      case 'TransactionStmt':
        this.transaction(b);
        return;
      case 'DiscardStmt':
        if (b.target === 'DISCARD_ALL') this.a.effects.push({ kind: 'unknown-state' });
        if (b.target === 'DISCARD_ALL' || b.target === 'DISCARD_TEMP') this.a.catalogChanged = true;
        return;
      default:
        this.rest(b, ctx, []);
    }
  }

  drop(b: PgNode): void {
    if (b.removeType === 'OBJECT_SCHEMA') {
      for (const s of names(b.objects)) if (s) this.a.nameRefs.push({ schema: s, role: 'ddl-safe' });
      return;
    }
    if (!DROP_RELATION_TYPES.has(b.removeType)) return;
    for (const o of b.objects ?? []) {
      const ref = qualifiedName(names(unwrap(o)?.[1]?.items));
      if (ref) this.a.nameRefs.push(ref);
    }
  }

  variableSet(b: PgNode): void {
    const name = String(b.name ?? '').toLowerCase();
    const local = !!b.is_local;
    if (b.kind === 'VAR_RESET_ALL') {
      this.a.effects.push({ kind: 'search_path', value: 'reset', local });
      this.a.effects.push({ kind: 'unknown-state' });
      return;
    }
    if (name === 'search_path') {
      if (b.kind === 'VAR_SET_VALUE') {
        const values = (b.args ?? []).map((x: unknown) => stringConst(x));
        if (values.some((v: string | undefined) => v === undefined)) {
          this.a.effects.push({ kind: 'unknown-state' });
        } else {
          this.a.effects.push({ kind: 'search_path', value: values as string[], local });
        }
      } else if (b.kind === 'VAR_SET_DEFAULT' || b.kind === 'VAR_RESET') {
        this.a.effects.push({ kind: 'search_path', value: 'reset', local });
      }
      return;
    }
    // a different role changes what "$user" in search_path means and which temp schema is ours
    // (SET TRANSACTION ..., SET TRANSACTION SNAPSHOT and SET SESSION CHARACTERISTICS are VAR_SET_MULTI too,
    // and change neither: re-reading the session's facts after them would run a query inside the
    // transaction before its SET TRANSACTION SNAPSHOT, which pg_dump -j's workers send next)
    const transactionOnly =
      name === 'transaction' || name === 'transaction snapshot' || name === 'session characteristics';
    if (
      name === 'role' ||
      name === 'session_authorization' ||
      (b.kind === 'VAR_SET_MULTI' && !transactionOnly)
    ) {
      this.a.effects.push({ kind: 'unknown-state' });
    }
  }

  transaction(b: PgNode): void {
    const op: Record<string, 'begin' | 'commit' | 'rollback' | 'savepoint' | 'rollback-to' | 'release'> = {
      TRANS_STMT_BEGIN: 'begin',
      TRANS_STMT_START: 'begin',
      TRANS_STMT_COMMIT: 'commit',
      TRANS_STMT_ROLLBACK: 'rollback',
      TRANS_STMT_SAVEPOINT: 'savepoint',
      TRANS_STMT_RELEASE: 'release',
      TRANS_STMT_ROLLBACK_TO: 'rollback-to',
      TRANS_STMT_PREPARE: 'commit',
    };
    const o = op[b.kind];
    if (!o) return;
    this.a.effects.push({ kind: 'transaction', op: o });
    if (b.chain && (o === 'commit' || o === 'rollback'))
      this.a.effects.push({ kind: 'transaction', op: 'begin' });
  }
}

/** Every RangeVar body in a subtree. */
function rangeVarsIn(n: unknown, out: PgNode[] = []): PgNode[] {
  if (n === null || typeof n !== 'object') return out;
  if (Array.isArray(n)) {
    for (const x of n) rangeVarsIn(x, out);
    return out;
  }
  const o = n as PgNode;
  if (typeof o.relname === 'string' && typeof o.relpersistence === 'string') out.push(o);
  for (const v of Object.values(o)) rangeVarsIn(v, out);
  return out;
}

/** The FROM items (through joins) whose name (alias, or a table's own name) is in `names`. */
function fromItemsNamed(list: unknown, names: ReadonlySet<string>, out: unknown[] = []): unknown[] {
  for (const item of Array.isArray(list) ? list : [list]) {
    const u = unwrap(item);
    if (!u) continue;
    const [t, b] = u;
    const name = t === 'RangeVar' ? (b.alias?.aliasname ?? b.relname) : b.alias?.aliasname;
    if (name !== undefined && names.has(name)) out.push(item);
    else if (t === 'JoinExpr') fromItemsNamed([b.larg, b.rarg], names, out);
    else if (t === 'RangeTableSample') fromItemsNamed(b.relation, names, out);
  }
  return out;
}

function isColumn(n: unknown, column: string): boolean {
  const c = unwrap(n);
  if (c?.[0] !== 'ColumnRef') return false;
  const f = names(c[1].fields);
  return f.length === 1 && f[0] === column;
}

/**
 * For `SELECT ... FROM pg_settings WHERE name = 'x'` (one FROM item, `pg_settings` or
 * `pg_catalog.pg_settings`, and a WHERE that is exactly that equality): the setting name `x` and the
 * RangeVar, else undefined.
 */
function settingsName(b: PgNode): { name: string; rv: PgNode } | undefined {
  const from = b.fromClause ?? [];
  if (from.length !== 1) return undefined;
  const rv = unwrap(from[0]);
  if (rv?.[0] !== 'RangeVar' || rv[1].relname !== 'pg_settings' || rv[1].catalogname) return undefined;
  if (rv[1].schemaname !== undefined && rv[1].schemaname !== 'pg_catalog') return undefined;
  const w = unwrap(b.whereClause);
  if (w?.[0] !== 'A_Expr' || w[1].kind !== 'AEXPR_OP') return undefined;
  const op = names(w[1].name);
  if (op.length !== 1 || op[0] !== '=') return undefined;
  const [col, lit] = isColumn(w[1].lexpr, 'name') ? [w[1].lexpr, w[1].rexpr] : [w[1].rexpr, w[1].lexpr];
  if (!isColumn(col, 'name')) return undefined;
  const name = stringConst(lit);
  return name === undefined ? undefined : { name, rv: rv[1] };
}

/** Split a search_path string value (`a, "B", $user`) into names as PostgreSQL does. */
export function splitSearchPath(value: string): string[] {
  const out: string[] = [];
  let i = 0;
  const s = value;
  while (i < s.length) {
    while (i < s.length && /[\s,]/.test(s[i]!)) i++;
    if (i >= s.length) break;
    let item = '';
    if (s[i] === '"') {
      i++;
      while (i < s.length) {
        if (s[i] === '"') {
          if (s[i + 1] === '"') {
            item += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        item += s[i++];
      }
    } else {
      while (i < s.length && s[i] !== ',') item += s[i++];
      item = item.trim().toLowerCase();
    }
    out.push(item);
    while (i < s.length && s[i] !== ',') i++;
  }
  return out;
}

export function analyzeStatement(index: number, stmt: PgNode, start: number, end: number): StatementAnalysis {
  const u = unwrap(stmt);
  const type = u?.[0] ?? 'Unknown';
  const node = u?.[1] ?? {};
  const a: StatementAnalysis = {
    index,
    type,
    node,
    command: commandTag(type, node),
    innerCommands: [],
    start,
    end,
    rels: [],
    nameRefs: [],
    funcs: [],
    dmls: [],
    withoutWhere: false,
    opaqueReasons: [],
    maskHazards: [],
    effects: [],
    catalogChanged: false,
    settingsSources: [],
  };
  const w = new Walker(a);
  const ctx: Ctx = { ctes: new Set(), role: 'ddl' };
  if (type === 'InsertStmt' || type === 'UpdateStmt' || type === 'DeleteStmt' || type === 'MergeStmt') {
    w.dml(type, node, ctx, false);
  } else if (type === 'SelectStmt') {
    w.select(node, { ...ctx, role: 'read' });
  } else {
    w.node(type, node, ctx);
  }
  if (a.command === 'SELECT' && node.intoClause) a.catalogChanged = true;
  if (a.catalogChanged) a.effects.push({ kind: 'catalog-changed' });
  return a;
}

export { loc };
