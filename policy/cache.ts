/**
 * A bounded LRU cache of decisions. The key holds everything a decision depends on: the text, who
 * asks (the identity facts subjects match), the policy version, the database, the search_path in
 * effect and the catalog snapshot version. Prepared statements and repeated texts cost a lookup.
 *
 * Texts that differ only in numeric constants (`... WHERE id = 17`, `... WHERE id = 18`: the simple
 * protocol with values inlined) share one decision through a second, *template* key, for texts that
 * cannot hold any other kind of constant: a scan for plain DML (plainNumberTemplate), PostgreSQL's own
 * normalizer (constants become `$n`) for the rest. See numericTemplate() for why such texts always get
 * the same decision.
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
    ctx.catalog?.serverVersionNum ?? 0,
  ]);
}

const EXACT = '\u0000';
const TEMPLATE = '\u0001';

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
  const plain = plainNumberTemplate(sql);
  if (plain !== null) return plain;
  return normalizedTemplate(sql);
}

/** The normalizer's template of a text numericTemplate() accepts (`normalized`: its normalized form). */
function normalizedTemplate(sql: string, normalized = normalizeStatement(sql)): string | undefined {
  // No constant replaced: the exact key covers it. An error text (or nothing) is never a template.
  if (!normalized || normalized === sql || PARSER_ERROR.test(normalized)) return undefined;
  // Cannot happen for text PostgreSQL accepts; keeps the two kinds of template apart regardless.
  if (normalized.charCodeAt(0) === PLAIN_TEMPLATE) return undefined;
  return normalized;
}

/** Starts a template made by plainNumberTemplate. */
const PLAIN_TEMPLATE = 0x02;
/**
 * Stand for a number inside one: an integer that fits in 32 bits, or any other number. The scanner
 * makes these two kinds of token (ICONST, FCONST) and the grammar takes some places only the first
 * (`varchar(20)`, not `varchar(2.5)` or `varchar(2147483648)`), so texts share a template only when
 * their tokens are of the same kinds.
 */
const INTEGER_MARK = '\u0003';
const OTHER_NUMBER_MARK = '\u0004';

/** Whether a run of digits is an ICONST to PostgreSQL's scanner: its value fits in an int32. */
function fitsInt32(digits: string): boolean {
  let i = 0;
  while (i < digits.length - 1 && digits.charCodeAt(i) === 0x30) i++;
  const len = digits.length - i;
  return len < 10 || (len === 10 && digits.slice(i) <= '2147483647');
}

/**
 * Whether the texts of a plain template all have one normalized form, judged from the normalized
 * form of one of them: true when the normalizer turned every number the template replaced into a
 * `$n`. It keeps some, on purpose (`ORDER BY 2` names an output column); such a template would join
 * texts whose audit forms and fingerprints differ, so its texts are keyed by the normalized template
 * instead. A property of the text's shape, so it holds for every text of the template. Checked once
 * per template, on a miss.
 */
function plainTemplateExact(normalized: string): boolean {
  return !!normalized && !PARSER_ERROR.test(normalized) && plainNumberTemplate(normalized) === undefined;
}

const isDigit = (c: number) => c >= 0x30 && c <= 0x39;
/** Characters an unquoted identifier (or a `$n` parameter) continues with. */
const isIdentChar = (c: number) =>
  (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || isDigit(c) || c === 0x5f || c === 0x24;

/**
 * Statements whose every number is a constant expression (A_Const), the numbers the normalizer
 * replaces. Elsewhere a number can be part of the statement itself (`FETCH 5`, `START 5` of a
 * sequence, EXPLAIN options): the normalizer keeps those, and so must the template.
 */
const DML_START = /^\s*(?:select|insert|update|delete|with|values)\b/i;

/**
 * The template of the commonest texts, made without the parser: DML in printable ASCII, no double
 * quote, where every number is a plain decimal (`12`, `1.5`, `2e-3`) standing on its own. Each such
 * number is a numeric constant to PostgreSQL's scanner and a constant expression to its grammar, so
 * two texts with the same template differ in the constants the normalizer would replace, and in
 * nothing else. Anything unusual (another statement, a quoted identifier, a digit run that goes on
 * into letters, `_` or `.` such as `0x1F`, `1_000`, `a.1`) returns null and is left to the
 * normalizer; undefined means there is no number at all. Normalizing cost 5 to 9 µs per statement;
 * this costs well under one.
 */
function plainNumberTemplate(sql: string): string | undefined | null {
  // Every statement of the text must be DML. Splitting at `;` is exact here: the caller has ruled
  // out quotes, dollar quotes and comments, and a double quote returns null below.
  for (const part of sql.split(';')) if (part.trim() !== '' && !DML_START.test(part)) return null;
  let out = String.fromCharCode(PLAIN_TEMPLATE);
  let from = 0;
  let found = false;
  const n = sql.length;
  for (let i = 0; i < n; ) {
    const c = sql.charCodeAt(i);
    if (c > 0x7e || (c < 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) || c === 0x22) return null;
    if (!isDigit(c)) {
      i++;
      continue;
    }
    const prev = i > 0 ? sql.charCodeAt(i - 1) : 0x20;
    if (isIdentChar(prev)) {
      // part of a name (t1) or a parameter ($1): skip the whole run
      while (i < n && isDigit(sql.charCodeAt(i))) i++;
      continue;
    }
    if (prev === 0x2e) return null; // `.5`, `a.1`: leave to the normalizer
    const start = i;
    while (i < n && isDigit(sql.charCodeAt(i))) i++;
    let integer = true;
    if (sql.charCodeAt(i) === 0x2e) {
      integer = false;
      i++;
      while (i < n && isDigit(sql.charCodeAt(i))) i++;
    }
    const e = sql.charCodeAt(i);
    if (e === 0x65 || e === 0x45) {
      let j = i + 1;
      const sign = sql.charCodeAt(j);
      if (sign === 0x2b || sign === 0x2d) j++;
      if (isDigit(sql.charCodeAt(j))) {
        while (j < n && isDigit(sql.charCodeAt(j))) j++;
        i = j;
        integer = false;
      }
    }
    const next = i < n ? sql.charCodeAt(i) : 0x20;
    if (isIdentChar(next) || next === 0x2e) return null;
    const mark = integer && fitsInt32(sql.slice(start, i)) ? INTEGER_MARK : OTHER_NUMBER_MARK;
    out += sql.slice(from, start) + mark;
    from = i;
    found = true;
  }
  return found ? out + sql.slice(from) : undefined;
}

/**
 * Decisions another text of the same template may take as they are (with its own text): the text is
 * forwarded unchanged or refused by a rule. Rewrites (masking), approvals (the request shows the text),
 * parse errors (the message quotes the text) and stale-catalog denials are judged text by text.
 */
function templateReusable(d: Decision, sql: string): boolean {
  if (d.sql !== sql || d.statements.length === 0 || d.refreshCatalog || d.approval) return false;
  // `SET standard_conforming_strings = 0` and `= 1` share a template but not a verdict (lexer-safety.ts).
  if (d.lexer?.restoresSettings) return false;
  if (d.kind === 'allow') return true;
  if (d.kind === 'mask') return d.maskedColumns.length === 0;
  return d.kind === 'deny' && d.sqlstate === '42501';
}

export class DecisionCache {
  private readonly map = new Map<string, Decision>();
  /** plain templates the normalizer does not follow: their texts use the normalized template */
  private readonly inexact = new Set<string>();
  /**
   * contextKey → a short id that stands for it in the keys of `map`. A context key is a few hundred
   * characters (policy version, subject, search_path, catalog version); keyed by it, every lookup
   * copied and hashed it again in front of the text, and every entry held a copy. Ids are never
   * reused, so dropping this table (too many contexts) only makes older entries unreachable until the
   * LRU evicts them.
   */
  private readonly contexts = new Map<string, string>();
  private nextContext = 0;
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
    this.contexts.clear();
  }

  private contextId(ctxKey: string): string {
    let id = this.contexts.get(ctxKey);
    if (id === undefined) {
      if (this.contexts.size >= this.maxEntries) this.contexts.clear();
      id = String(this.nextContext++);
      this.contexts.set(ctxKey, id);
    }
    return id;
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
    const context = this.contextId(ctxKey);
    const exactKey = context + EXACT + sql;
    const hit = this.get(exactKey);
    if (hit) {
      this.hits++;
      return hit;
    }
    let template = numericTemplate(sql);
    // A plain template the normalizer would not follow (see plainTemplateExact): fall back to the normalizer's.
    if (template !== undefined && this.inexact.has(template)) template = normalizedTemplate(sql);
    const templateKey = template === undefined ? undefined : context + TEMPLATE + template;
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
    if (templateKey !== undefined && templateReusable(d, sql)) {
      // One normalizer call serves both the exactness check and the fallback template.
      const normalized = template!.charCodeAt(0) === PLAIN_TEMPLATE ? normalizeStatement(sql) : undefined;
      if (normalized === undefined || plainTemplateExact(normalized)) {
        this.set(templateKey, d);
      } else {
        if (this.inexact.size >= this.maxEntries) this.inexact.clear();
        this.inexact.add(template!);
        const fallback = normalizedTemplate(sql, normalized);
        if (fallback !== undefined) this.set(context + TEMPLATE + fallback, d);
      }
    }
    return d;
  }
}

/**
 * A shared decision for another text of its template: only `sql` differs. `approval` and
 * `refreshCatalog` are not copied: decisions that carry them are never shared (templateReusable).
 * test/policy/cache.test.ts fails when a field is added to Decision and not copied here.
 */
export function withText(d: Decision, sql: string): Decision {
  return {
    kind: d.kind,
    rule: d.rule,
    message: d.message,
    sqlstate: d.sqlstate,
    reason: d.reason,
    uncovered: d.uncovered,
    statements: d.statements,
    sql,
    maskedColumns: d.maskedColumns,
    enforced: d.enforced,
    effects: d.effects,
    tags: d.tags,
    // Texts of one template differ in numbers only: no quote, backslash or other character that
    // changes any lexer fact (numericTemplate), so the facts carry over.
    lexer: d.lexer,
  };
}
