/**
 * Masking by rewrite for one subject: every masked table read anywhere becomes
 * `(SELECT <col>, <mask> AS "col", ... FROM [ONLY] "schema"."table") AS "alias"`, COPY table TO
 * becomes COPY (SELECT ...) TO, DML on a masked target masks its reads (mask-target.ts), and
 * everything the proxy cannot prove masked is refused with the reason. Edits are spliced into the
 * original bytes; the result is parsed again before it is used.
 */

import type { RelRef, StatementAnalysis } from './analyze.js';
import { loc, names, type PgNode, qdisplay, qkey, quoteIdent } from './ast.js';
import type { CatalogSnapshot, MaskedRelation } from './catalog.js';
import { HASH_SCHEMA, hashUnavailableMessage } from './hash-key.js';
import { maskExpression } from './mask-expr.js';
import { maskTarget, Refused } from './mask-target.js';
import { checkMaskedWrites, type MaskedUse, WriteRefused, WriteUncheckable } from './masked-writes.js';
import { classifyFunction, classifyOperator, type ResolvedRelation } from './resolve.js';
import type { Edit, Tokens } from './splice.js';
import type { EffectiveMask } from './subjects.js';

/**
 * Catalog relations that expose column values through statistics. `pg_statistic_ext` is not one: it
 * holds the definitions of extended statistics (name, columns, kinds), which psql's `\d` reads; the
 * values are in `pg_statistic_ext_data` and the `pg_stats_ext*` views.
 */
export const STATISTICS_RELATIONS = new Set([
  'pg_stats',
  'pg_stats_ext',
  'pg_stats_ext_exprs',
  'pg_statistic',
  'pg_statistic_ext_data',
  // Statement texts: other sessions' (literals of exempt users) and the rewritten texts of this one.
  'pg_stat_activity',
  'pg_stat_statements',
  'pg_prepared_statements',
  'pg_cursors',
]);

export interface MaskingInput {
  analyses: StatementAnalysis[];
  resolved: Map<RelRef, ResolvedRelation>;
  /** relation keys created earlier in the same text (known although not in the snapshot) */
  created: Set<string>;
  masking: Map<string, Map<string, EffectiveMask>>;
  catalog: CatalogSnapshot;
  database: string;
  allow: ReadonlySet<string>;
  bytes: Buffer;
  tokens: Tokens;
}

export type MaskingOutcome =
  | { ok: true; edits: Edit[]; maskedColumns: string[] }
  | {
      ok: false;
      reason: string;
      rule: string;
      refreshCatalog?: boolean;
      /** the complete client-facing message, when it is not a `cannot prove masked` one */
      message?: string;
    };

interface MaskInfo {
  rel: MaskedRelation;
  masks: Map<string, EffectiveMask>;
}

class Deny extends Error {
  constructor(
    message: string,
    readonly refreshCatalog = false,
  ) {
    super(message);
  }
}

export function maskStatements(inp: MaskingInput): MaskingOutcome {
  const firstRule = [...inp.masking.values()][0]?.values().next().value?.rule ?? 'masking';
  const m = new Masker(inp);
  try {
    for (const a of inp.analyses) m.statement(a);
    return { ok: true, edits: m.edits, maskedColumns: [...m.maskedColumns] };
  } catch (e) {
    if (e instanceof Deny) {
      return {
        ok: false,
        reason: e.message,
        rule: m.lastRule ?? firstRule,
        refreshCatalog: e.refreshCatalog,
      };
    }
    if (e instanceof Refused) return { ok: false, reason: e.message, rule: m.lastRule ?? firstRule };
    if (e instanceof WriteRefused || e instanceof WriteUncheckable) {
      return { ok: false, reason: e.message, rule: e.rule, message: e.message };
    }
    throw e;
  }
}

class Masker {
  readonly edits: Edit[] = [];
  readonly maskedColumns = new Set<string>();
  lastRule?: string;
  private readonly dangerousNames = new Set<string>();
  private readonly rvInfo = new Map<PgNode, { rel?: MaskedRelation }>();
  /** RangeVars of relations masked for this subject, for the masked-writes check */
  private readonly maskedUse = new Map<PgNode, MaskedUse>();
  /** qkey(schema, relname) of tables this statement reads as a masked subquery named `relname` */
  private readonly subqueryNames = new Map<string, string>();

  constructor(private readonly inp: MaskingInput) {
    const c = inp.catalog;
    for (const k of [...c.masked.keys(), ...c.dependents, ...c.ancestors, ...inp.masking.keys()]) {
      this.dangerousNames.add(k.split('\u0000')[1]!);
    }
    for (const n of STATISTICS_RELATIONS) this.dangerousNames.add(n);
  }

  /** Masking of a resolved relation for this subject, if any. */
  private info(res: ResolvedRelation): MaskInfo | undefined {
    const rel = this.inp.catalog.masked.get(res.key);
    if (!rel) {
      if (this.inp.masking.has(res.key) && res.known) {
        throw new Deny(`masked table ${res.display} is not in the catalog snapshot`, true);
      }
      return undefined;
    }
    const masks = this.inp.masking.get(qkey(rel.root.schema, rel.root.name));
    if (!masks) return undefined; // exempt from the rule that masks it
    this.lastRule = masks.values().next().value?.rule;
    this.needHashIfAny(res, masks);
    return { rel, masks };
  }

  /**
   * A Hash mask is computed by the database's keyed function (policy/hash-key.ts). Where the session
   * cannot rely on it, the statement is refused: never a weaker mask in its place.
   */
  private needHashIfAny(res: ResolvedRelation, masks: Map<string, EffectiveMask>): void {
    for (const m of masks.values()) {
      if (m.strategy !== 'Hash') continue;
      this.lastRule = m.rule;
      const status = this.inp.catalog.hashFunction;
      if (!status?.usable)
        // refreshCatalog: installed since the snapshot was read? The proxy re-reads it and judges again.
        throw new Deny(hashUnavailableMessage(this.inp.database, status, `${res.display}.${m.column}`), true);
      if (!m.hash?.keyId)
        throw new Deny(
          `Hash mask of ${res.display}.${m.column} has no key id (policy compiled by an older dbguard)`,
        );
    }
  }

  statement(a: StatementAnalysis): void {
    if (a.maskHazards.length) throw new Deny(a.maskHazards[0]!);
    for (const rv of a.settingsSources) {
      // the set_config name was read from pg_settings: only the catalog's proves it
      const r = a.rels.find((x) => x.rv === rv);
      const res = r && this.inp.resolved.get(r);
      if (!res || res.uncertain || res.schema !== 'pg_catalog' || res.name !== 'pg_settings')
        throw new Deny(
          'set_config with a setting name read from a relation that is not pg_catalog.pg_settings',
        );
    }
    for (const f of a.funcs) this.func(f.kind, f.names);
    for (const n of a.nameRefs) {
      if (n.role !== 'ddl' || n.name !== undefined || !n.schema) continue;
      // ALTER SCHEMA s RENAME: the masked table would move out from under its rule
      for (const k of [...this.inp.catalog.masked.keys(), ...this.inp.catalog.dependents]) {
        if (k.startsWith(n.schema + '\u0000'))
          throw new Deny(`schema ${n.schema} holds masked data; it cannot be altered`);
      }
    }
    this.subqueryNames.clear();
    for (const r of a.rels) this.relation(r);
    if (this.subqueryNames.size) this.qualifiedRefs(a.node);
    for (const d of a.dmls) {
      const r = a.rels.find((x) => x.role === 'target' && x.dml?.node === d.node);
      if (!r) continue;
      const res = this.inp.resolved.get(r)!;
      const info = this.info(res);
      if (!info) continue;
      maskTarget(
        {
          type: d.type,
          node: d.node,
          rv: r.rv,
          res,
          rel: info.rel,
          masks: info.masks,
          tokens: this.inp.tokens,
          bytes: this.inp.bytes,
          resolvedRv: this.rvInfo,
          serverVersionNum: this.inp.catalog.serverVersionNum,
        },
        this.edits,
        this.maskedColumns,
      );
    }
    if (a.dmls.length && this.maskedUse.size) {
      checkMaskedWrites(
        {
          type: a.type,
          node: a.node,
          dmls: a.dmls.map((d) => d.node),
          maskedRv: this.maskedUse,
          targets: new Map(
            a.rels.filter((r) => r.role === 'target').map((r) => [r.rv, this.inp.resolved.get(r)!.display]),
          ),
          tokens: this.inp.tokens,
          bytes: this.inp.bytes,
          serverVersionNum: this.inp.catalog.serverVersionNum,
        },
        this.edits,
        this.maskedColumns,
      );
    }
  }

  private func(kind: 'func' | 'op', parts: string[]): void {
    const cls =
      kind === 'func'
        ? classifyFunction(parts, this.inp.catalog, this.inp.allow)
        : classifyOperator(parts, this.inp.catalog, this.inp.allow);
    const name = parts.join('.');
    if (cls === 'dynamic') throw new Deny(`${name}() runs SQL or reads data the proxy cannot see`);
    if (kind === 'func' && this.inDbguardSchema(parts))
      // even when listed in functions.allow: on guesses, the keyed hash would be a dictionary oracle
      throw new Deny(`${name}() is dbguard's own (Hash): only the masking rewrite may call it`);
    if (cls === 'user-defined')
      throw new Deny(
        `user-defined ${kind === 'func' ? 'function' : 'operator'} ${name} is not in functions.allow`,
      );
    if (cls === 'unknown')
      throw new Deny(
        `${kind === 'func' ? 'function' : 'operator'} ${name} is not known to be built in`,
        true,
      );
  }

  /** A function of the schema `dbguard db install` creates, by qualified or unqualified name. */
  private inDbguardSchema(parts: string[]): boolean {
    const name = parts[parts.length - 1] ?? '';
    if (parts.length >= 2) return parts[parts.length - 2] === HASH_SCHEMA;
    return this.inp.catalog.functions.get(name)?.has(HASH_SCHEMA) ?? false;
  }

  private relation(r: RelRef): void {
    if (r.cteRef || r.role === 'alias-ref' || r.role === 'create') return;
    const res = this.inp.resolved.get(r)!;
    const cat = this.inp.catalog;
    // The Hash key table: its privileges keep everyone but its owner out; this keeps a masked subject
    // out even where they do not (a superuser login).
    if (res.schema === HASH_SCHEMA) throw new Deny(`${res.display} is dbguard's own (Hash keys)`);
    const unqualified = !r.rv.schemaname;
    if (STATISTICS_RELATIONS.has(res.name) && (res.schema === 'pg_catalog' || unqualified)) {
      // Each its true reason: the statistics views show column values, the others statement texts.
      const shows = /^pg_stat(s|istic)/.test(res.name)
        ? 'column statistics'
        : 'statement texts of other sessions';
      if (r.role !== 'ddl-safe') throw new Deny(`${res.display} exposes ${shows}`);
    }
    if (r.role === 'ddl-safe') return;
    if (!res.known && !this.inp.created.has(res.key)) {
      throw new Deny(`relation ${res.display} is not in the catalog snapshot`, true);
    }
    if (res.uncertain && this.dangerousNames.has(res.name)) {
      throw new Deny(`search_path is unknown at this point of the text, so ${res.name} cannot be resolved`);
    }
    const info = this.info(res);
    const dependent = cat.dependents.has(res.key);
    const ancestor = cat.ancestors.has(res.key) && !!r.rv.inh;
    if (info) {
      this.rvInfo.set(r.rv, { rel: info.rel });
      this.maskedUse.set(r.rv, { display: res.display, columns: info.rel.columns, masks: info.masks });
    }
    const pinIfNeeded = () => {
      if (unqualified && this.dangerousNames.has(res.name)) this.pin(r, res);
    };
    switch (r.role) {
      case 'read':
        if (dependent) throw new Deny(`${res.display} reads a masked table (view or rule)`);
        if (ancestor)
          throw new Deny(`${res.display} includes rows of a masked table (use ONLY or the child)`);
        if (info) this.readEdit(r, res, info);
        else pinIfNeeded();
        return;
      case 'copy-to':
        if (dependent) throw new Deny(`${res.display} reads a masked table (view or rule)`);
        if (info) this.copyEdit(r, res, info);
        else pinIfNeeded();
        return;
      case 'copy-from':
        if (dependent) throw new Deny(`${res.display} reads a masked table (view or rule)`);
        pinIfNeeded();
        return;
      case 'target':
        if (dependent) throw new Deny(`${res.display} reads a masked table (view or rule)`);
        if (ancestor)
          throw new Deny(`${res.display} includes rows of a masked table (use ONLY or the child)`);
        pinIfNeeded();
        return;
      default:
        if (info || dependent || cat.ancestors.has(res.key)) {
          throw new Deny(
            `this statement cannot be proved masked for ${res.display} (DDL or unsupported use)`,
          );
        }
    }
  }

  /** Token span [first, last] of a RangeVar's name, including ONLY / ONLY ( ... ) and a trailing `*`. */
  private rvSpan(r: RelRef): { first: number; last: number; nameFirst: number; nameLast: number } {
    const tk = this.inp.tokens;
    const i0 = tk.at(loc(r.rv));
    const parts = 1 + (r.rv.schemaname ? 1 : 0) + (r.rv.catalogname ? 1 : 0);
    const iEnd = i0 === undefined ? undefined : tk.nameEnd(i0, parts);
    if (i0 === undefined || iEnd === undefined) throw new Deny('cannot locate a relation name in the text');
    let first = i0;
    let last = iEnd;
    const p = tk.prev(i0);
    if (tk.text(p) === '(' && tk.lower(tk.prev(p!)) === 'only') {
      const close = tk.next(iEnd);
      if (tk.text(close) !== ')') throw new Deny('cannot locate the end of ONLY ( ... )');
      first = tk.prev(p!)!;
      last = close!;
    } else if (tk.lower(p) === 'only') {
      first = p!;
    }
    const star = tk.next(last);
    if (r.rv.inh && tk.text(star) === '*') last = star!;
    return { first, last, nameFirst: i0, nameLast: iEnd };
  }

  private checkCatalogName(r: RelRef, res: ResolvedRelation): void {
    if (r.rv.catalogname && r.rv.catalogname !== this.inp.database) {
      throw new Deny(`three-part name ${r.rv.catalogname}.${res.display} cannot be rewritten`);
    }
  }

  private subquery(res: ResolvedRelation, info: MaskInfo, only: boolean, columns?: string[]): string {
    const qual = quoteIdent(res.name);
    const byName = new Map(info.rel.columns.map((c) => [c.name, c]));
    const list = (columns ?? info.rel.columns.map((c) => c.name)).map((name) => {
      const c = byName.get(name);
      if (!c) throw new Deny(`column ${name} of ${res.display} is not in the catalog snapshot`, true);
      const ref = `${qual}.${quoteIdent(c.name)}`;
      const m = info.masks.get(c.name);
      if (!m) return ref;
      this.maskedColumns.add(`${res.display}.${c.name}`);
      return `${maskExpression(ref, c, m, this.inp.catalog.serverVersionNum)} AS ${quoteIdent(c.name)}`;
    });
    const from = `${only ? 'ONLY ' : ''}${quoteIdent(res.schema)}.${quoteIdent(res.name)}`;
    return `(SELECT ${list.join(', ')} FROM ${from})`;
  }

  private readEdit(r: RelRef, res: ResolvedRelation, info: MaskInfo): void {
    if (r.sampled) throw new Deny(`TABLESAMPLE on masked table ${res.display}`);
    this.checkCatalogName(r, res);
    const tk = this.inp.tokens;
    const { first, last } = this.rvSpan(r);
    const sub = this.subquery(res, info, !r.rv.inh);
    const before = tk.prev(first);
    if (tk.lower(before) === 'table' && !r.rv.alias) {
      this.edits.push({
        start: tk.start(before!),
        end: tk.end(last),
        text: `SELECT * FROM ${sub} AS ${quoteIdent(r.rv.relname)}`,
      });
      return;
    }
    const alias = r.rv.alias ? '' : ` AS ${quoteIdent(r.rv.relname)}`;
    this.edits.push({ start: tk.start(first), end: tk.end(last), text: sub + alias });
    if (!r.rv.alias) this.subqueryNames.set(qkey(res.schema, r.rv.relname), r.rv.relname);
  }

  /**
   * `schema.table.column` (as ORMs with a schema write it: SQLAlchemy's `mw.customers.id`) cannot
   * name a subquery, which is only `table`: such references to a table read as a masked subquery
   * lose their schema (and database) part. The meaning is the same: PostgreSQL refuses two FROM
   * items of one name in one scope, so `table` alone finds the same item.
   */
  private qualifiedRefs(n: unknown): void {
    if (n === null || typeof n !== 'object') return;
    if (Array.isArray(n)) {
      for (const x of n) this.qualifiedRefs(x);
      return;
    }
    const o = n as PgNode;
    if (o.ColumnRef && typeof o.ColumnRef === 'object') {
      const f: unknown[] = o.ColumnRef.fields ?? [];
      if (f.length < 3) return;
      const parts = names(f);
      const table = parts[f.length - 2];
      const schema = parts[f.length - 3];
      if (!table || !schema || !this.subqueryNames.has(qkey(schema, table))) return;
      const tk = this.inp.tokens;
      const i0 = tk.at(loc(o.ColumnRef));
      const iEnd = i0 === undefined ? undefined : tk.nameEnd(i0, f.length - 1);
      if (i0 === undefined || iEnd === undefined)
        throw new Deny('cannot locate a column reference in the text');
      this.edits.push({ start: tk.start(i0), end: tk.end(iEnd), text: quoteIdent(table) });
      return;
    }
    for (const v of Object.values(o)) this.qualifiedRefs(v);
  }

  private copyEdit(r: RelRef, res: ResolvedRelation, info: MaskInfo): void {
    this.checkCatalogName(r, res);
    const tk = this.inp.tokens;
    const { nameFirst, nameLast } = this.rvSpan(r);
    let last = nameLast;
    const copy = this.copyNode(r);
    const attlist: string[] | undefined = copy?.attlist?.map((x: PgNode) => String(x.String?.sval ?? ''));
    if (attlist?.length) {
      const open = tk.next(nameLast);
      const close = open === undefined ? undefined : tk.closing(open);
      if (tk.text(open) !== '(' || close === undefined) throw new Deny('cannot locate the COPY column list');
      last = close;
    }
    // COPY table TO reads only that table's own rows: ONLY keeps that meaning
    const sub = this.subquery(res, info, true, attlist?.length ? attlist : undefined);
    this.edits.push({ start: tk.start(nameFirst), end: tk.end(last), text: sub });
  }

  private copyNode(r: RelRef): PgNode | undefined {
    for (const a of this.inp.analyses) if (a.type === 'CopyStmt' && a.node.relation === r.rv) return a.node;
    return undefined;
  }

  /** Qualify an unqualified name so that the server binds it to the relation judged here. */
  private pin(r: RelRef, res: ResolvedRelation): void {
    const tk = this.inp.tokens;
    const i0 = tk.at(loc(r.rv));
    const iEnd = i0 === undefined ? undefined : tk.nameEnd(i0, 1);
    if (i0 === undefined || iEnd === undefined) throw new Deny('cannot locate a relation name in the text');
    this.edits.push({
      start: tk.start(i0),
      end: tk.end(iEnd),
      text: `${quoteIdent(res.schema)}.${quoteIdent(res.name)}`,
    });
  }
}

export { qdisplay };
