/**
 * judge(): one statement text (a Query message's whole string, or one Parse) → Decision.
 * Parse → analyse each statement → resolve names with the search_path as it evolves through the
 * text → match rules → for a masked subject, prove masking and rewrite → combine (deny > approval >
 * mask/allow: if any statement is denied, the whole text is).
 */
import type { CompiledPolicy, CompiledRule } from '../api/compiled.js';
import { analyzeStatement, type RelRef, type StatementAnalysis } from './analyze.js';
import { qdisplay } from './ast.js';
import type { Decision, SessionEffect, StatementInfo } from './decision.js';
import { type Exercise, statementExercises, ViewGraph, viewDefinition } from './exercises.js';
import { combineLexerFacts, lexerFacts } from './lexer-safety.js';
import {
  fingerprintStatement,
  normalizeStatement,
  type ParsedText,
  ParseError,
  parseText,
  type ScanToken,
  scanText,
} from './parser.js';
import {
  classifyFunction,
  classifyOperator,
  functionsAllowSet,
  predictSearchPath,
  type ResolvedRelation,
  resolveRelation,
  type SessionContext,
} from './resolve.js';
import { maskStatements } from './rewrite.js';
import { describeUncovered, statementVerdict, type Uncovered } from './rule-verdict.js';
import { applyEdits, Tokens } from './splice.js';
import { sqlcommenterTags } from './sqlcommenter.js';
import { effectiveMasking } from './subjects.js';

export const DEFAULT_DENY_MESSAGE = 'statement denied by policy';
/** name shown in `(rule ...)` when defaultAction Deny decided */
export const DEFAULT_RULE_NAME = 'default';

function denyMessage(message: string | undefined, rule: string): string {
  return `dbguard: ${message || DEFAULT_DENY_MESSAGE} (rule ${rule})`;
}

/** Normalized statement without comments (comments may carry anything, including values). */
function normalizedWithoutComments(stmtText: string): string {
  const norm = normalizeStatement(stmtText);
  if (!norm.includes('/*') && !norm.includes('--')) return norm.trim();
  let tokens: ScanToken[];
  try {
    tokens = scanText(norm);
  } catch {
    return norm.trim();
  }
  const bytes = Buffer.from(norm, 'utf8');
  const parts: Buffer[] = [];
  let pos = 0;
  for (const t of tokens) {
    if (t.tokenName !== 'C_COMMENT' && t.tokenName !== 'SQL_COMMENT') continue;
    parts.push(bytes.subarray(pos, t.start));
    pos = t.end;
  }
  parts.push(bytes.subarray(pos));
  return Buffer.concat(parts).toString('utf8').replace(/\s+/g, ' ').trim();
}

interface StatementState {
  analysis: StatementAnalysis;
  exercises: Exercise[];
  info: StatementInfo;
  effects: SessionEffect[];
}

/** The decision for a text PostgreSQL would not parse (42601), refused as a whole. */
function unparseable(sql: string, why: string, enforced: boolean): Decision {
  return {
    kind: 'deny',
    message: `dbguard: statement does not parse: ${why}`,
    sqlstate: '42601',
    reason: 'unparseable',
    statements: [],
    sql,
    maskedColumns: [],
    enforced,
    effects: [],
  };
}

function safeScan(sql: string): ScanToken[] | undefined {
  try {
    return scanText(sql);
  } catch {
    return undefined;
  }
}

export function judge(sql: string, ctx: SessionContext, policy: CompiledPolicy): Decision {
  const enforced = policy.enforcement !== 'DryRun';
  if (sql.includes('\0')) {
    // The server stops reading a statement at NUL; the parser would see only the prefix. Never judge
    // less than what could run: refuse the text as a whole.
    return unparseable(sql, 'it contains a NUL byte', enforced);
  }
  let parsed: ParsedText;
  try {
    parsed = parseText(sql);
  } catch (e) {
    if (!(e instanceof ParseError)) throw e;
    return unparseable(sql, e.message, enforced);
  }
  let tokenList: ScanToken[] = [];
  try {
    tokenList = scanText(sql);
  } catch {
    tokenList = [];
  }
  const catalog = ctx.catalog;
  const tempSchema = ctx.tempSchema ?? catalog?.tempSchema;
  const allow = functionsAllowSet(policy);
  const startPath = ctx.searchPath.length
    ? ctx.searchPath
    : (catalog?.searchPath ?? ['pg_catalog', 'public']);
  let path: string[] | null = startPath;
  let pathChangedInText = false;
  const resolved = new Map<RelRef, ResolvedRelation>();
  const created = new Set<string>();
  /** relations created earlier in this text, by name: later unqualified references may mean them */
  const createdByName = new Map<string, ResolvedRelation>();
  const states: StatementState[] = [];
  /** what relations created earlier in the text read: a view its relations, a table nothing */
  const inText = new Map<string, ResolvedRelation[]>();
  const views = new ViewGraph(catalog, inText);

  parsed.statements.forEach((raw, index) => {
    const a = analyzeStatement(index, raw.stmt, raw.start, raw.end);
    const objects = new Set<string>();
    for (const r of a.rels) {
      if (r.cteRef || r.role === 'alias-ref') continue;
      let res = resolveRelation(
        r.rv.schemaname,
        r.rv.relname,
        path,
        startPath,
        catalog,
        tempSchema,
        r.role === 'create' && r.rv.relpersistence === 't',
      );
      const earlier = r.rv.schemaname ? undefined : createdByName.get(r.rv.relname);
      // a temp relation created earlier in the text comes first in the path; another one counts
      // when the catalog knows no relation of that name
      if (earlier && r.role !== 'create' && (earlier.schema === (tempSchema ?? 'pg_temp') || !res.known)) {
        res = earlier;
      }
      resolved.set(r, res);
      if (r.role === 'create') {
        created.add(res.key);
        createdByName.set(r.rv.relname, res);
      }
      objects.add(res.display);
    }
    const named: string[] = [];
    for (const n of a.nameRefs) {
      if (n.name === undefined) {
        if (n.schema) named.push(qdisplay(n.schema, '*'));
        continue;
      }
      named.push(resolveRelation(n.schema, n.name, path, startPath, catalog, tempSchema).display);
    }
    for (const n of named) objects.add(n);
    const opaqueReasons = [...a.opaqueReasons];
    const executes = new Set<string>();
    for (const f of a.funcs) {
      const cls =
        f.kind === 'func'
          ? classifyFunction(f.names, catalog, allow)
          : classifyOperator(f.names, catalog, allow);
      if (cls === 'user-defined' || cls === 'unknown' || cls === 'dynamic') {
        opaqueReasons.push(`${f.kind === 'func' ? 'function' : 'operator'} ${f.names.join('.')}`);
      } else if (cls === 'allowed' && f.kind === 'func') {
        for (const name of executedFunctions(f.names, catalog)) executes.add(name);
      }
    }
    const exercises = statementExercises({
      analysis: a,
      resolved,
      named,
      executes: [...executes],
      opaque: opaqueReasons[0],
      views,
    });
    const view = viewDefinition(a, resolved);
    for (const r of a.rels) {
      const res = r.role === 'create' ? resolved.get(r) : undefined;
      if (res) inText.set(res.key, view?.key === res.key ? view.reads : []);
    }
    const effects = [...a.effects];
    if (opaqueReasons.length && !effects.some((e) => e.kind === 'unknown-state')) {
      effects.push({ kind: 'unknown-state' });
    }
    if (opaqueReasons.length && !effects.some((e) => e.kind === 'catalog-changed')) {
      effects.push({ kind: 'catalog-changed' });
    }
    // the search_path the next statement of this text will see
    for (const e of effects) {
      if (e.kind === 'search_path') {
        pathChangedInText = true;
        path =
          e.value === 'reset'
            ? null
            : predictSearchPath(e.value, {
                tempSchema,
                catalog,
                user: catalog?.currentUser ?? ctx.identity.databaseUser,
              });
      } else if (e.kind === 'unknown-state') {
        path = null;
      } else if (e.kind === 'transaction' && pathChangedInText && e.op !== 'begin' && e.op !== 'savepoint') {
        path = null; // a rollback or commit may undo or keep the SET: the proxy does not guess which
      }
    }
    const stmtText = parsed.bytes.subarray(raw.start, raw.end).toString('utf8');
    const info: StatementInfo = {
      command: a.command,
      objects: [...objects],
      fingerprint: fingerprintStatement(stmtText),
      normalized: normalizedWithoutComments(stmtText),
      withoutWhere: a.withoutWhere,
      opaque: opaqueReasons.length > 0,
      exercises,
    };
    if (a.innerCommands.length) info.innerCommands = [...new Set(a.innerCommands)];
    states.push({ analysis: a, exercises, info, effects });
  });

  const statements = states.map((s) => s.info);
  const effects = states.flatMap((s) => s.effects);
  const tags = sqlcommenterTags(tokenList);
  const lexer = lexerFacts(sql, tokenList, parsed.statements);
  const base = { statements, enforced, effects, lexer, ...(tags ? { tags } : {}) };

  // rules: per statement, each (privilege, object) pair it exercises is decided by the first rule that
  // matches it (rule-verdict.ts); across statements the most restrictive outcome
  let denied: { rule?: CompiledRule; uncovered: Uncovered[]; hidden: boolean } | undefined;
  let approval: CompiledRule | undefined;
  /** that approval rests only on a relation the snapshot does not know (created since): re-read it first */
  let approvalHidden = false;
  /** the first named rule that allowed a statement: the audit names it (absent when defaultAction did) */
  let allowedBy: string | undefined;
  for (const s of states) {
    const v = statementVerdict(
      policy,
      s.exercises,
      { withoutWhere: s.info.withoutWhere, opaque: s.info.opaque },
      ctx.identity,
    );
    if (v.action === 'Deny' && !denied)
      denied = { rule: v.rule, uncovered: v.uncovered, hidden: v.hiddenOnly };
    if (v.action === 'RequireApproval' && !approval) {
      approval = v.rule;
      approvalHidden = v.hiddenOnly;
    }
    if (v.allowedBy && !allowedBy) allowedBy = v.allowedBy.name;
  }
  if (denied) {
    const name = denied.rule?.name ?? DEFAULT_RULE_NAME;
    // an allow-list refusal says which pairs no rule permits (names only, never values)
    const why = denied.uncovered.some((u) => u.object !== null || u.opaque)
      ? `${DEFAULT_DENY_MESSAGE}: no rule allows ${describeUncovered(denied.uncovered)}`
      : undefined;
    // the rule matched only what a relation might hide: say so rather than claim the rule's reason
    const hidden = denied.hidden
      ? `${DEFAULT_DENY_MESSAGE}: ${catalog ? 'a relation the catalog snapshot does not know' : 'without a catalog snapshot a relation'} may be a view over what this rule denies`
      : undefined;
    return {
      ...base,
      kind: 'deny',
      ...(denied.rule ? { rule: denied.rule.name } : {}),
      message: denyMessage(hidden ?? denied.rule?.message ?? why, name),
      sqlstate: '42501',
      reason: 'rule',
      sql,
      maskedColumns: [],
      ...(denied.uncovered.length ? { uncovered: denied.uncovered } : {}),
      ...(denied.hidden && catalog ? { refreshCatalog: true } : {}),
    };
  }

  // masking
  let outSql = sql;
  let maskedColumns: string[] = [];
  const masking = effectiveMasking(policy, ctx.identity);
  if (masking.size > 0 && states.length > 0) {
    const firstRule = [...masking.values()][0]!.values().next().value!.rule;
    const deny = (reason: string, rule: string, refreshCatalog = false): Decision => ({
      ...base,
      kind: 'deny',
      rule,
      message: denyMessage(`cannot prove masked: ${reason}`, rule),
      sqlstate: '42501',
      reason: 'cannot_prove_masked',
      sql,
      maskedColumns: [],
      ...(refreshCatalog ? { refreshCatalog } : {}),
    });
    if (!catalog) {
      const needsCatalog = states.some(
        (s) =>
          s.analysis.rels.some((r) => !r.cteRef && r.role !== 'alias-ref') ||
          s.analysis.nameRefs.length > 0 ||
          s.analysis.maskHazards.length > 0 ||
          s.info.opaque,
      );
      if (needsCatalog) return deny('no catalog snapshot of this database is available', firstRule, true);
    } else {
      const outcome = maskStatements({
        analyses: states.map((s) => s.analysis),
        resolved,
        created,
        masking,
        catalog,
        database: ctx.database,
        allow,
        bytes: parsed.bytes,
        tokens: new Tokens(tokenList),
      });
      if (!outcome.ok) {
        const d = deny(outcome.reason, outcome.rule, outcome.refreshCatalog);
        // a message of its own: the statement would store a masked value (masked-writes.ts)
        return outcome.message ? { ...d, message: outcome.message, reason: 'masked_write' } : d;
      }
      if (outcome.edits.length) {
        try {
          outSql = applyEdits(parsed.bytes, outcome.edits);
          const again = parseText(outSql);
          if (again.statements.length !== parsed.statements.length)
            throw new Error('statement count changed');
        } catch (e) {
          return deny(`the masking rewrite failed (${(e as Error).message})`, firstRule);
        }
      }
      maskedColumns = outcome.maskedColumns;
    }
  }

  const sqlOut = enforced ? outSql : sql;
  // The rewrite is what the server reads: it must read the same under other settings as well.
  if (sqlOut !== sql) base.lexer = combineLexerFacts(lexer, lexerFacts(sqlOut, safeScan(sqlOut), []));
  if (approval) {
    return {
      ...base,
      kind: 'approval',
      rule: approval.name,
      message: `dbguard: ${approval.message || 'statement requires approval'} (rule ${approval.name})`,
      ...(approval.approval ? { approval: approval.approval } : {}),
      ...(approvalHidden && catalog ? { refreshCatalog: true } : {}),
      sql: sqlOut,
      maskedColumns,
    };
  }
  return {
    ...base,
    kind: maskedColumns.length ? 'mask' : 'allow',
    ...(allowedBy ? { rule: allowedBy } : {}),
    sql: sqlOut,
    maskedColumns,
  };
}

/**
 * The functions a call to an allowed user-defined function may run: the qualified one, or for an
 * unqualified name every schema that defines a user function of that name (no overload resolution).
 */
function executedFunctions(parts: string[], catalog: SessionContext['catalog']): string[] {
  const name = parts[parts.length - 1] ?? '';
  if (parts.length >= 2) return [`${parts[parts.length - 2]}.${name}`];
  return [...(catalog?.functions.get(name) ?? [])].map((schema) => `${schema}.${name}`);
}
