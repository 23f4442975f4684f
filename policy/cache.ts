/**
 * A bounded LRU cache of decisions. The key holds everything a decision depends on: the text, who
 * asks (the identity facts subjects match), the policy version, the database, the search_path in
 * effect and the catalog snapshot version. Prepared statements and repeated texts cost a lookup.
 *
 * Texts that differ only in numeric constants (`... WHERE id = 17`, `... WHERE id = 18`: the simple
 * protocol with values inlined) share one decision through a second, *template* key: PostgreSQL's own
 * normalizer (constants become `$n`) applied to texts that cannot hold any other kind of constant.
 * See numericTemplate() for why such texts always get the same decision.
 */
import type { CompiledPolicy } from '../api/compiled.js';
import type { Decision } from './decision.js';
import type { Identity } from './identity.js';
import { judge } from './judge.js';
import { normalizeStatement } from './parser.js';
import type { SessionContext } from './resolve.js';

export function subjectKey(id: Identity): string {
  return JSON.stringify([
    id.serviceAccount ?? '',
    id.user ?? '',
    [...(id.groups ?? [])].sort(),
    id.databaseUser,
  ]);
}

/**
 * Everything but the text. A JSON array, so it delimits itself: `contextKey + separator + text` is
 * unambiguous. A session computes it once per change of its facts, not once per statement.
 */
export function contextKey(ctx: SessionContext, policy: CompiledPolicy): string {
  return JSON.stringify([
    policy.version,
    subjectKey(ctx.identity),
    ctx.database,
    ctx.searchPath,
    ctx.tempSchema ?? ctx.catalog?.tempSchema ?? '',
    ctx.catalog?.version ?? '-',
  ]);
}

const EXACT = '\u0000';
const TEMPLATE = '\u0001';

export function decisionKey(sql: string, ctx: SessionContext, policy: CompiledPolicy): string {
  return contextKey(ctx, policy) + EXACT + sql;
}

/**
 * Characters that can open a constant other than a number, or hide text from a plain reading: quotes
 * (every string, bit, hex, escape and Unicode constant has one), dollar quotes and `$name`, comments
 * (they carry sqlcommenter tags, which end up in decisions), backslashes and NUL. `$` is allowed only
 * as a parameter reference (`$1`).
 */
const NOT_NUMERIC_ONLY = /['\\\0]|--|\/\*|\$(?!\d)/;

/** What libpg-query's normalizer returns instead of throwing on a scanner error (see audit/statement). */
const PARSER_ERROR = / at or near ".*"$|at end of input$/s;

/**
 * The template of a text whose only constants are numbers, or undefined. Such a text and every text
 * with the same template differ in numeric constants alone, and a decision never depends on one: rules
 * match command tags, relations, a missing WHERE and subjects; relations and functions are names, never
 * numbers; session effects (search_path) are strings or keywords. Positional `ORDER BY 2` and `GROUP BY
 * 2` name output columns, which matters only to a masking rewrite, and rewritten decisions are not
 * shared (templateReusable).
 */
export function numericTemplate(sql: string): string | undefined {
  if (NOT_NUMERIC_ONLY.test(sql)) return undefined;
  const normalized = normalizeStatement(sql);
  // No constant replaced: the exact key covers it. An error text (or nothing) is never a template.
  if (!normalized || normalized === sql || PARSER_ERROR.test(normalized)) return undefined;
  return normalized;
}

/**
 * Decisions another text of the same template may take as they are (with its own text): the text is
 * forwarded unchanged or refused by a rule. Rewrites (masking), approvals (the request shows the text),
 * parse errors (the message quotes the text) and stale-catalog denials are judged text by text.
 */
function templateReusable(d: Decision, sql: string): boolean {
  if (d.sql !== sql || d.statements.length === 0 || d.refreshCatalog || d.approval) return false;
  if (d.kind === 'allow') return true;
  if (d.kind === 'mask') return d.maskedColumns.length === 0;
  return d.kind === 'deny' && d.sqlstate === '42501';
}

export class DecisionCache {
  private readonly map = new Map<string, Decision>();
  hits = 0;
  /** hits through a numeric template (counted in `hits` too) */
  templateHits = 0;
  misses = 0;

  constructor(readonly maxEntries = 10_000) {
    if (!Number.isInteger(maxEntries) || maxEntries < 1)
      throw new Error('DecisionCache: maxEntries must be >= 1');
  }

  get size(): number {
    return this.map.size;
  }

  get(key: string): Decision | undefined {
    const d = this.map.get(key);
    if (d === undefined) return undefined;
    this.map.delete(key);
    this.map.set(key, d);
    return d;
  }

  set(key: string, d: Decision): void {
    this.map.delete(key);
    this.map.set(key, d);
    while (this.map.size > this.maxEntries) this.map.delete(this.map.keys().next().value!);
  }

  clear(): void {
    this.map.clear();
  }

  /**
   * judge() through the cache: the exact text, then its numeric template, then the engine.
   * `ctxKey` is contextKey(ctx, policy), passed in by callers that keep it per session. Decisions are
   * shared: treat them as read-only.
   */
  judge(
    sql: string,
    ctx: SessionContext,
    policy: CompiledPolicy,
    ctxKey = contextKey(ctx, policy),
  ): Decision {
    const exactKey = ctxKey + EXACT + sql;
    const hit = this.get(exactKey);
    if (hit) {
      this.hits++;
      return hit;
    }
    const template = numericTemplate(sql);
    const templateKey = template === undefined ? undefined : ctxKey + TEMPLATE + template;
    if (templateKey !== undefined) {
      const shared = this.get(templateKey);
      if (shared) {
        this.hits++;
        this.templateHits++;
        return withText(shared, sql);
      }
    }
    this.misses++;
    const d = judge(sql, ctx, policy);
    // a deny that asks for a fresh catalog must not outlive that catalog: the key holds its version
    this.set(exactKey, d);
    if (templateKey !== undefined && templateReusable(d, sql)) this.set(templateKey, d);
    return d;
  }
}

/** A shared decision for another text of its template: only `sql` differs. */
function withText(d: Decision, sql: string): Decision {
  return {
    kind: d.kind,
    rule: d.rule,
    message: d.message,
    sqlstate: d.sqlstate,
    statements: d.statements,
    sql,
    maskedColumns: d.maskedColumns,
    enforced: d.enforced,
    effects: d.effects,
    tags: d.tags,
  };
}
