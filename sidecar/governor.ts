/**
 * The governor: dbguard's DecisionPoint. It ties one proxy session to the policy engine, the audit
 * trail and the metrics:
 *
 * - knows who is connected (workload identity, database user, a verified token's user and groups);
 * - keeps what the engine needs to resolve names exactly as the server will: the session's effective
 *   search_path and a catalog snapshot, both read on the client's own session (no extra credentials),
 *   predicted from SET statements as they pass and re-read at the next safe point;
 * - judges every Query and Parse, with a decision cache so a prepared statement costs a lookup;
 * - fails closed: no policy, no catalog where masking needs one, or an engine error → the statement is
 *   refused with a clear message;
 * - hides error details from masked subjects (a `Failing row contains (...)` detail carries real values);
 * - writes one audit event per statement and counts it, after it completed.
 */
import type { CompiledPolicy } from '../api/compiled.js';
import type { Decision, StatementInfo } from '../policy/decision.js';
import {
  type CatalogSnapshot,
  catalogQuery,
  contextKey,
  DecisionCache,
  isMaskedSubject,
  judge,
  parseCatalog,
  parseSearchPath,
  predictSearchPath,
  type SessionContext,
  SnapshotInterner,
  searchPathQuery,
} from '../policy/engine.js';
import type { Identity } from '../policy/identity.js';
import { brokenMaskRefusal, type MaskingProblem, maskingProblems } from '../policy/mask-coverage.js';
import { guardErrorFields } from '../policy/masked-writes.js';
import { anySubjectMatches } from '../policy/subjects.js';
import { type ApprovalGate, judgeApproval } from './approvals.js';
import {
  type AuditContext,
  type AuditLog,
  authFailureEvent,
  type QueryDecision,
  queryEvent,
  sessionEndEvent,
  sessionStartEvent,
  shouldAuditQuery,
} from './audit/index.js';
import type {
  AuthFailureEvent,
  CompletedEvent,
  DecisionPoint,
  SessionHandle,
  Verdict,
} from './decision-point.js';
import { HashKeyWarning } from './hash-key-warning.js';
import { lexerRefusal } from './lexer-guard.js';
import type { SidecarMetrics } from './metrics.js';

export interface GovernorOptions {
  /** the policy in force now (swapped atomically by the policy source between statements) */
  policy: () => CompiledPolicy | undefined;
  workload?: { serviceAccount?: string; pod?: string };
  audit?: AuditLog;
  metrics?: SidecarMetrics;
  cache?: DecisionCache;
  log?: (fields: Record<string, unknown>) => void;
  /** the operator's approval API (RequireApproval rules); without it such statements are refused */
  approvals?: ApprovalGate;
  /** a catalog snapshot shows masked tables or columns that do not exist (called per snapshot read) */
  onMaskingProblems?: (database: string, policy: CompiledPolicy, problems: MaskingProblem[]) => void;
}

/** Facts an authentication layer (token auth) may put into `SessionHandle.state` before sessionReady. */
export const STATE_TOKEN_IDENTITY = 'dbguard.tokenIdentity';

interface Inflight {
  sql: string;
  decision: Decision;
  index: number;
  started: number;
  /** audit decision when an approval settled it (approved, approval_denied, ...) */
  label?: QueryDecision;
}

interface SessionState {
  identity: Identity;
  searchPath: string[];
  catalog?: CatalogSnapshot;
  /** the policy version the catalog was read for (the masked table list may change with it) */
  catalogPolicy?: string;
  pathDirty: boolean;
  catalogDirty: boolean;
  /** a SET inside the open transaction: a ROLLBACK would undo it */
  pathSetInTx: boolean;
  queries: Inflight[];
  /** recent decisions by text, for Execute of prepared statements */
  recent: Map<string, Decision>;
  startedAt: number;
  statements: number;
  auditWait?: Promise<void>;
  /** SQL-level PREPARE or DECLARE ran: their text was rewritten under the policy of that time */
  sqlPrepared: boolean;
  /** Parse texts an approval settled, for their completion events */
  approvalLabels?: Map<string, QueryDecision>;
  /** the decision-cache context key and the facts it was built from (rebuilt when one changes) */
  ctxKey?: { key: string; policy: string; searchPath: string[]; catalog?: CatalogSnapshot };
  /** masked tables and columns of the policy missing from this session's catalog snapshot */
  maskProblems?: MaskingProblem[];
}

/** Told to a session whose prepared statements or cursors a new policy would judge differently. */
export const POLICY_CHANGED_MESSAGE =
  'dbguard: the policy changed and this session holds prepared statements or cursors made under the previous one; reconnect';

const NO_POLICY =
  'dbguard: no policy is loaded, so every statement is refused (fail closed); check the policy source and /readyz';

/** The metrics' `rule` label of statements that do not parse (not a policy block: kept out of the alert). */
export const UNPARSEABLE_RULE = '(unparseable)';

/** The `rule` label of a decision's metrics: the rule, a pseudo-rule, or none (defaultAction decided). */
function metricsRule(d: Decision): string | undefined {
  return d.rule ?? (d.sqlstate === '42601' ? UNPARSEABLE_RULE : undefined);
}

/**
 * A refused statement's `reason` (contract §7) and the message the client got, for the audit event and
 * the metric; undefined when it was not refused. A parse error's detail may quote the text (a literal),
 * so its message is not kept.
 */
function refusalOf(
  label: QueryDecision,
  d: Decision,
  sqlstate: string | undefined,
): { reason: string; message: string | null } | undefined {
  if (label === 'deny') {
    const reason = d.reason ?? 'rule';
    return {
      reason,
      message: reason === 'unparseable' ? 'dbguard: statement does not parse' : (d.message ?? null),
    };
  }
  if (
    (label === 'approval_denied' || label === 'approval_expired' || label === 'approval_pending') &&
    sqlstate
  )
    return { reason: 'approval', message: null };
  return undefined;
}

/** The metrics' `rule` label of statements refused because a MaskingRule names a missing column. */
export const BROKEN_MASK_RULE = '(masking)';

/** The metrics' `rule` label of statements refused because the audit log cannot take events. */
export const AUDIT_DOWN_RULE = '(audit)';
const auditDownMessage = (why: string) =>
  `dbguard: the audit log cannot be written (${why}), so every statement is refused (fail closed); see /readyz`;

function stateOf(s: SessionHandle): SessionState {
  return s.state.get('dbguard.governor') as SessionState;
}

function remember(st: SessionState, sql: string, d: Decision): void {
  st.recent.delete(sql);
  st.recent.set(sql, d);
  if (st.recent.size > 256) st.recent.delete(st.recent.keys().next().value!);
}

/** SQL-level PREPARE or DECLARE among the statements (their text is rewritten under today's policy). */
function preparesOrDeclares(d: Decision): boolean {
  for (const x of d.statements) if (x.command === 'PREPARE' || x.command === 'DECLARE CURSOR') return true;
  return false;
}

function decisionLabel(d: Decision): 'allow' | 'mask' | 'deny' | 'approval_pending' {
  return d.kind === 'approval' ? 'approval_pending' : d.kind;
}

/**
 * The decision, or a refusal when the server would not read the text as the engine did: its lexer
 * settings are ones the parser cannot honour, or unknown (a pipeline) and the text reads differently
 * under another value. The text's part comes cached with the decision; the session's part is checked
 * here, per statement, outside the cache. See sidecar/lexer-guard.ts.
 */
function lexerChecked(sql: string, s: SessionHandle, d: Decision): Decision {
  const refusal = lexerRefusal(d.lexer, s);
  if (!refusal) return d;
  return {
    kind: 'deny',
    message: refusal.message,
    sqlstate: '42501',
    reason: 'lexer',
    // What the server would run is not known: the audit names no command or object it cannot vouch for.
    statements: [],
    sql,
    maskedColumns: [],
    enforced: d.enforced,
    effects: [],
  };
}

export class Governor implements DecisionPoint {
  readonly cache: DecisionCache;
  private readonly sessions = new Set<SessionHandle>();
  private readonly snapshots = new SnapshotInterner();
  private readonly hashWarning = new HashKeyWarning();

  constructor(private readonly opts: GovernorOptions) {
    this.cache = opts.cache ?? new DecisionCache(20_000);
  }

  private auditContext(s: SessionHandle, st: SessionState): AuditContext {
    const p = this.opts.policy();
    return {
      sessionId: s.id,
      policy: p?.policy ?? null,
      policyVersion: p?.version ?? null,
      identity: st.identity,
    };
  }

  private writeAudit(st: SessionState, event: Parameters<AuditLog['write']>[0]): void {
    const audit = this.opts.audit;
    if (!audit) return;
    // Room in the queue and nothing of this session's waiting: queued, in order, no promise needed.
    try {
      if (!st.auditWait && audit.tryWrite(event)) return;
    } catch (err) {
      // The event could not be serialised: it is refused alone, the log and its chain go on.
      this.opts.log?.({ msg: 'audit event refused', error: String((err as Error)?.message ?? err) });
      return;
    }
    const p = audit.write(event).then(
      () => {
        if (st.auditWait === p) st.auditWait = undefined;
      },
      (err: unknown) => {
        this.opts.log?.({ msg: 'audit write failed', error: String((err as Error)?.message ?? err) });
        if (st.auditWait === p) st.auditWait = undefined;
      },
    );
    st.auditWait = p;
  }

  /** Does this policy need the catalog (masking, or names to resolve for object rules)? */
  private needsCatalog(p: CompiledPolicy | undefined): boolean {
    return !!p;
  }

  private async refresh(s: SessionHandle, st: SessionState): Promise<void> {
    const p = this.opts.policy();
    if (st.pathDirty || !st.searchPath.length) {
      const r = await s.internalQuery(searchPathQuery);
      st.searchPath = parseSearchPath(r.rows[0]?.[0] ?? '[]');
      st.pathDirty = false;
    }
    if (p && this.needsCatalog(p) && (st.catalogDirty || !st.catalog || st.catalogPolicy !== p.version)) {
      const r = await s.internalQuery(catalogQuery(p));
      st.catalog = this.snapshots.intern(p.version, parseCatalog(r.rows));
      st.catalogPolicy = p.version;
      st.catalogDirty = false;
      this.hashWarning.check(p, st.catalog, s.database, (fields) => this.opts.log?.(fields));
      // a temporary schema made since the search_path was read (CREATE TEMP ...) is searched first: take
      // the path the snapshot query read with it, or unqualified names would miss temporary views
      const temp = st.catalog.tempSchema;
      if (temp && !st.searchPath.includes(temp) && st.catalog.searchPath.includes(temp))
        st.searchPath = st.catalog.searchPath;
      st.maskProblems = this.maskProblemsOf(p, st.catalog);
      if (st.maskProblems.length) this.opts.onMaskingProblems?.(s.database, p, st.maskProblems);
    }
  }

  /** Per interned snapshot (shared by the sessions of one database and policy version): computed once. */
  private readonly problemsBySnapshot = new WeakMap<CatalogSnapshot, MaskingProblem[]>();
  private maskProblemsOf(p: CompiledPolicy, snap: CatalogSnapshot): MaskingProblem[] {
    let found = this.problemsBySnapshot.get(snap);
    if (!found) {
      found = maskingProblems(p, snap);
      this.problemsBySnapshot.set(snap, found);
    }
    return found;
  }

  /**
   * Fail closed on a MaskingRule that names a missing column (mask-coverage.ts): a subject that rule
   * masks is refused every statement touching that table, where the rewrite would mask nothing.
   */
  private refuseBrokenMasks(d: Decision, st: SessionState, p: CompiledPolicy): Decision {
    if (d.kind === 'deny' || !isMaskedSubject(p, st.identity)) return d;
    const exempt = new Set(
      p.masking.filter((m) => anySubjectMatches(m.exemptSubjects, st.identity)).map((m) => m.name),
    );
    const applying = st.maskProblems!.filter((x) => !exempt.has(x.rule));
    const message = brokenMaskRefusal(
      applying,
      d.statements.flatMap((x) => x.objects),
    );
    if (!message) return d;
    return {
      ...d,
      kind: 'deny',
      rule: BROKEN_MASK_RULE,
      message,
      sqlstate: '42501',
      reason: 'masking_rule_broken',
      maskedColumns: [],
    };
  }

  async sessionReady(s: SessionHandle): Promise<void> {
    const token = s.state.get(STATE_TOKEN_IDENTITY) as { user?: string; groups?: string[] } | undefined;
    const st: SessionState = {
      identity: {
        serviceAccount: this.opts.workload?.serviceAccount,
        pod: this.opts.workload?.pod,
        user: token?.user,
        groups: token?.groups ?? [],
        // what was proven, never what the client named (docs/security.md); the claim is only recorded
        databaseUser: s.databaseUser,
        ...(s.databaseUser !== s.user ? { claimedDatabaseUser: s.user } : {}),
        applicationName: s.applicationName,
        clientAddr: s.clientAddr,
      },
      searchPath: [],
      pathDirty: true,
      catalogDirty: true,
      pathSetInTx: false,
      queries: [],
      recent: new Map(),
      startedAt: Date.now(),
      statements: 0,
      sqlPrepared: false,
    };
    s.state.set('dbguard.governor', st);
    this.sessions.add(s);
    this.opts.metrics?.connectionOpened();
    this.writeAudit(
      st,
      sessionStartEvent(this.auditContext(s, st), { database: s.database, tls: s.clientTls }),
    );
    try {
      await this.refresh(s, st);
    } catch (err) {
      // Not fatal: statements that need the catalog are refused until a refresh succeeds.
      this.opts.log?.({
        msg: 'catalog read failed at session start',
        session: s.id,
        error: String((err as Error)?.message ?? err),
      });
    }
  }

  private context(s: SessionHandle, st: SessionState): SessionContext {
    return {
      identity: st.identity,
      database: s.database,
      searchPath: st.searchPath,
      catalog: st.catalog,
      tempSchema: st.catalog?.tempSchema,
    };
  }

  private decide(sql: string, s: SessionHandle, st: SessionState, p: CompiledPolicy): Decision {
    const ctx = this.context(s, st);
    // A snapshot read under another policy version lists other masked tables while its catalog version
    // string is the same: such a decision is valid for this call only and must not enter the cache.
    const d =
      st.catalog && st.catalogPolicy !== p.version
        ? judge(sql, ctx, p)
        : this.cache.judge(sql, ctx, p, this.contextKey(st, ctx, p));
    return st.maskProblems?.length && st.catalogPolicy === p.version ? this.refuseBrokenMasks(d, st, p) : d;
  }

  /** The session's part of every decision-cache key; a JSON string built once per change, not per statement. */
  private contextKey(st: SessionState, ctx: SessionContext, p: CompiledPolicy): string {
    const k = st.ctxKey;
    if (k && k.policy === p.version && k.searchPath === st.searchPath && k.catalog === st.catalog)
      return k.key;
    st.ctxKey = {
      key: contextKey(ctx, p),
      policy: p.version,
      searchPath: st.searchPath,
      catalog: st.catalog,
    };
    return st.ctxKey.key;
  }

  private applyEffects(s: SessionHandle, st: SessionState, d: Decision): void {
    for (const e of d.effects) {
      switch (e.kind) {
        case 'search_path':
          if (e.value === 'reset') st.pathDirty = true;
          else
            st.searchPath = predictSearchPath(e.value, {
              tempSchema: st.catalog?.tempSchema,
              catalog: st.catalog,
              user: s.user,
            });
          st.pathDirty = true; // verify against the server at the next safe point
          if (s.txStatus !== 'I' || e.local) st.pathSetInTx = true;
          break;
        case 'unknown-state':
          st.pathDirty = true;
          break;
        case 'catalog-changed':
          st.catalogDirty = true;
          break;
        case 'transaction':
          if (e.op === 'rollback' || e.op === 'rollback-to' || e.op === 'commit') st.pathDirty = true;
          break;
      }
    }
  }

  /**
   * Synchronous when nothing has to be awaited (no audit backpressure, session facts current, no
   * approval to wait for): the common case then costs no promise, no microtask hop and no pause of the
   * client socket.
   */
  judge(sql: string, s: SessionHandle, via: 'query' | 'parse'): Verdict | Promise<Verdict> {
    const st = stateOf(s);
    const p = this.opts.policy();
    // Before anything that could wait on the audit log: a stalled sink must not hold the session.
    const auditDown = this.opts.audit?.health();
    if (auditDown && p?.enforcement !== 'DryRun') return this.refuseUnaudited(sql, st, auditDown, via);
    if (p && !st.auditWait && !st.pathDirty && !st.catalogDirty && st.catalogPolicy === p.version) {
      const d = lexerChecked(sql, s, this.decideOrRefuse(sql, s, st, p));
      const needsWait =
        (d.refreshCatalog && (d.kind === 'deny' || d.kind === 'approval')) ||
        (d.enforced && d.kind === 'approval' && this.opts.approvals);
      if (!needsWait) return this.settle(sql, s, st, d, via);
    }
    return this.judgeAsync(sql, s, via);
  }

  private decideOrRefuse(sql: string, s: SessionHandle, st: SessionState, p: CompiledPolicy): Decision {
    try {
      return this.decide(sql, s, st, p);
    } catch (err) {
      this.opts.log?.({
        msg: 'policy engine error; statement refused',
        session: s.id,
        error: String((err as Error)?.message ?? err),
      });
      return {
        kind: 'deny',
        message: 'dbguard: internal error while judging the statement; refused (fail closed)',
        sqlstate: 'XX000',
        reason: 'internal',
        statements: [],
        sql,
        maskedColumns: [],
        enforced: true,
        effects: [],
      };
    }
  }

  private async judgeAsync(sql: string, s: SessionHandle, via: 'query' | 'parse'): Promise<Verdict> {
    const st = stateOf(s);
    if (st.auditWait) await st.auditWait; // backpressure from a slow audit sink, never dropping events
    const p = this.opts.policy();
    if (!p) {
      const d: Decision = {
        kind: 'deny',
        message: NO_POLICY,
        sqlstate: '42501',
        reason: 'no_policy',
        statements: [],
        sql,
        maskedColumns: [],
        enforced: true,
        effects: [],
      };
      st.queries.push({ sql, decision: d, index: 0, started: Date.now() });
      return { action: 'reject', sqlstate: '42501', message: NO_POLICY };
    }
    // A new policy version, DDL or a changed search_path: bring the session facts up to date first when
    // the session is at a safe point (a simple Query always is; a Parse in a pipeline may not be).
    if (st.pathDirty || st.catalogDirty || st.catalogPolicy !== p.version) {
      try {
        await this.refresh(s, st);
      } catch {
        /* keep the prediction; a masked subject without a catalog is refused by the engine */
      }
    }
    let d = this.decideOrRefuse(sql, s, st, p);
    if (d.refreshCatalog && (d.kind === 'deny' || d.kind === 'approval')) {
      // The deny (or an approval) came from a stale snapshot (a relation the catalog did not know): re-read
      // it and judge once more.
      try {
        st.catalogDirty = true;
        await this.refresh(s, st);
        d = this.decide(sql, s, st, p);
      } catch {
        /* keep the deny */
      }
    }
    d = lexerChecked(sql, s, d);
    if (!(d.enforced && d.kind === 'approval' && this.opts.approvals)) return this.settle(sql, s, st, d, via);
    const inflight: Inflight | undefined =
      via === 'query' ? { sql, decision: d, index: 0, started: Date.now() } : undefined;
    if (inflight) st.queries.push(inflight);
    else remember(st, sql, d);
    const held = await judgeApproval({
      gate: this.opts.approvals,
      session: s,
      identity: st.identity,
      policy: p,
      decision: d,
      metrics: this.opts.metrics,
      auditContext: this.auditContext(s, st),
      writeAudit: (e) => this.writeAudit(st, e),
      log: this.opts.log,
    });
    if (inflight) inflight.label = held.label;
    else {
      st.approvalLabels ??= new Map();
      st.approvalLabels.set(sql, held.label);
      if (st.approvalLabels.size > 256) st.approvalLabels.delete(st.approvalLabels.keys().next().value!);
    }
    if (held.verdict.action === 'reject') return held.verdict;
    this.applyEffects(s, st, d);
    // an approved Parse runs maxExecutions times (default once): its later Binds carry values nobody saw (issue #18)
    return via === 'parse'
      ? { action: 'forward', sql: d.sql, executions: d.approval?.maxExecutions ?? 1 }
      : { action: 'forward', sql: d.sql };
  }

  /** The audit log cannot take events: refuse rather than run statements nobody will know of. */
  private refuseUnaudited(sql: string, st: SessionState, why: string, via: 'query' | 'parse'): Verdict {
    const message = auditDownMessage(why);
    const d: Decision = {
      kind: 'deny',
      rule: AUDIT_DOWN_RULE,
      message,
      sqlstate: '42501',
      reason: 'audit',
      statements: [],
      sql,
      maskedColumns: [],
      enforced: true,
      effects: [],
    };
    if (via === 'parse') remember(st, sql, d);
    else st.queries.push({ sql, decision: d, index: 0, started: Date.now() });
    return { action: 'reject', sqlstate: '42501', message };
  }

  /**
   * The audit log stopped taking events (AuditObserver.down). New statements are refused at judge;
   * an Execute of a statement prepared earlier is not judged again, so sessions holding prepared
   * statements or cursors end here. Returns how many.
   */
  auditDown(why: string): number {
    if (this.opts.policy()?.enforcement === 'DryRun') return 0;
    let ended = 0;
    for (const s of this.sessions) {
      const st = stateOf(s);
      if (!st || (!st.sqlPrepared && s.statements.size === 0)) continue;
      ended++;
      s.terminate('58030', `${auditDownMessage(why)}; this session held prepared statements`);
    }
    return ended;
  }

  /** The verdict for a decision that needs no waiting; records it for the audit event at completion. */
  private settle(
    sql: string,
    s: SessionHandle,
    st: SessionState,
    d: Decision,
    via: 'query' | 'parse',
  ): Verdict {
    // A Parse's decision is looked up by text when its Execute completes; a Query's travels in `queries`.
    if (via === 'parse') remember(st, sql, d);
    else st.queries.push({ sql, decision: d, index: 0, started: Date.now() });
    const enforce = d.enforced;
    if (enforce && d.kind === 'deny') {
      return {
        action: 'reject',
        sqlstate: d.sqlstate ?? '42501',
        message: d.message ?? 'dbguard: statement denied',
      };
    }
    if (enforce && d.kind === 'approval') {
      return {
        action: 'reject',
        sqlstate: '42501',
        message: d.message ?? `dbguard: statement requires approval (rule ${d.rule})`,
        hint: 'Approval requests are created by the dbguard operator; this proxy runs without one.',
      };
    }
    this.applyEffects(s, st, d);
    if (!st.sqlPrepared && preparesOrDeclares(d)) st.sqlPrepared = true;
    return { action: 'forward', sql: enforce ? d.sql : sql };
  }

  judgeFunctionCall(_oid: number, s: SessionHandle): Verdict {
    const st = stateOf(s);
    const p = this.opts.policy();
    const masked = p ? isMaskedSubject(p, st.identity) : true;
    // The FunctionCall message names a function by OID: its effects cannot be seen. Masked subjects
    // and a missing policy are refused; for others it is judged like `SELECT f(...)` of an unknown
    // function would be: allowed only when the policy's default is Allow and no rule denies `*`.
    if (!p) return { action: 'reject', sqlstate: '42501', message: NO_POLICY };
    const auditDown = this.opts.audit?.health();
    if (auditDown && p.enforcement !== 'DryRun')
      return { action: 'reject', sqlstate: '42501', message: auditDownMessage(auditDown) };
    const d = this.decide('SELECT dbguard_function_call_message()', s, st, p);
    if (masked || d.kind !== 'allow') {
      return {
        action: 'reject',
        sqlstate: '42501',
        message: 'dbguard: the FunctionCall protocol message is opaque and not allowed for this identity',
      };
    }
    return { action: 'forward', sql: '' };
  }

  /** Synchronous (no promise) unless the session facts must be re-read. */
  idle(s: SessionHandle, info: { safePoint: boolean }): Promise<void> | undefined {
    const st = stateOf(s);
    if (!st) return undefined;
    if (s.txStatus === 'I' && st.pathSetInTx) {
      st.pathSetInTx = false;
      st.pathDirty = true;
    }
    if (!info.safePoint || s.txStatus === 'E') return undefined;
    if (!st.pathDirty && !st.catalogDirty && st.catalogPolicy === this.opts.policy()?.version)
      return undefined;
    return this.refresh(s, st).catch((err: unknown) => {
      this.opts.log?.({
        msg: 'session refresh failed',
        session: s.id,
        error: String((err as Error)?.message ?? err),
      });
    });
  }

  backendNotice(fields: Map<string, string>, s: SessionHandle): Map<string, string> {
    const st = stateOf(s);
    const p = this.opts.policy();
    if (!st || !p || p.enforcement === 'DryRun' || !isMaskedSubject(p, st.identity)) return fields;
    // DETAIL carries row values (`Failing row contains (...)`, `Key (email)=(...) already exists`);
    // CONTEXT can quote them too. A masked subject gets neither.
    if (fields.has('D')) fields.set('D', 'detail hidden by dbguard: it may contain masked values');
    if (fields.has('W')) fields.delete('W');
    // a write-back of a masked form failed the rewrite's run-time guard: a policy refusal (42501)
    return guardErrorFields(fields);
  }

  completed(e: CompletedEvent): void {
    const st = stateOf(e.s);
    if (!st) return;
    let decision: Decision | undefined;
    let statement: StatementInfo | undefined;
    let batch: { index: number; count: number } | null = null;
    let started = Date.now() - e.durationMs;
    let settled: QueryDecision | undefined;
    if (e.via === 'query') {
      while (st.queries.length && st.queries[0]!.sql !== e.sql) st.queries.shift();
      const head = st.queries[0];
      if (head) {
        decision = head.decision;
        settled = head.label;
        started = head.started;
        const n = head.decision.statements.length;
        statement = head.decision.statements[Math.min(head.index, Math.max(0, n - 1))];
        if (n > 1) batch = { index: head.index, count: n };
        head.index++;
        if (e.sqlstate || e.rejected || head.index >= n) st.queries.shift();
      }
    } else {
      decision = st.recent.get(e.sql);
      settled = st.approvalLabels?.get(e.sql);
      statement = decision?.statements[0];
    }
    if (!decision) return;
    st.statements++;
    const p = this.opts.policy();
    const policyName = p?.policy ?? 'none';
    const info: StatementInfo = statement ?? {
      command: e.commandTag?.split(' ')[0] ?? 'UNKNOWN',
      objects: [],
      fingerprint: '',
      normalized: '',
      withoutWhere: false,
      opaque: false,
    };
    const label: QueryDecision = settled ?? decisionLabel(decision);
    const refusal = refusalOf(label, decision, e.sqlstate);
    this.opts.metrics?.recordQuery({
      policy: policyName,
      decision: label,
      command: info.command,
      rule: metricsRule(decision),
      ...(refusal ? { reason: refusal.reason } : {}),
      durationSeconds: (Date.now() - started) / 1000,
    });
    if (!p || !shouldAuditQuery(p.audit.statements, { decision: label, statement: info })) return;
    this.writeAudit(
      st,
      queryEvent(this.auditContext(e.s, st), {
        decision: label,
        // A pseudo-rule (`(audit)`, `(masking)`) is a metrics label; the audit event names policy rules only.
        rule: decision.rule?.startsWith('(') ? null : (decision.rule ?? null),
        statement: info,
        batch,
        maskedColumns: decision.maskedColumns,
        rowCount: e.rowCount ?? null,
        durationMs: Date.now() - started,
        sqlstate: e.sqlstate ?? null,
        enforced: decision.enforced,
        tags: decision.tags,
        reason: refusal?.reason ?? null,
        message: refusal?.message ?? null,
      }),
    );
  }

  authFailure(e: AuthFailureEvent): void {
    const token = /^token refused: (\S+)/.exec(e.message);
    const reason = token ? token[1]! : 'upstream_rejected';
    this.opts.metrics?.authFailure(reason);
    const p = this.opts.policy();
    const identity = {
      databaseUser: e.loginUser ?? e.user,
      ...(e.loginUser !== undefined && e.loginUser !== e.user ? { claimedDatabaseUser: e.user } : {}),
      applicationName: e.applicationName,
      clientAddr: e.clientAddr,
      groups: [],
    };
    const ctx: AuditContext = {
      sessionId: null,
      policy: p?.policy ?? null,
      policyVersion: p?.version ?? null,
      identity,
    };
    // Not tied to a session: no backpressure to apply, and the write is already ordered in the log.
    void this.opts.audit
      ?.write(
        authFailureEvent(ctx, { reason, method: token ? 'token' : 'upstream', message: e.sqlstate ?? null }),
      )
      .catch(() => undefined);
  }

  /**
   * A new policy is in force. Statements judged from now on use it; what a session prepared before
   * (protocol-level prepared statements, SQL PREPARE, cursors) was rewritten under the old one and is
   * executed later without a new Parse. Sessions whose prepared statements the new policy would forward
   * differently, and sessions that used SQL PREPARE or DECLARE, are ended with 57P01 so their pool
   * reconnects; the others carry on untouched.
   */
  policyChanged(p: CompiledPolicy): number {
    let ended = 0;
    for (const s of this.sessions) {
      const st = stateOf(s);
      if (!st) continue;
      let stale = st.sqlPrepared;
      for (const ps of s.statements.values()) {
        if (stale) break;
        try {
          const d = this.decide(ps.sql, s, st, p);
          const forwarded = !d.enforced ? ps.sql : d.kind === 'deny' || d.kind === 'approval' ? null : d.sql;
          stale = forwarded !== ps.forwardedSql;
        } catch {
          stale = true;
        }
      }
      if (stale) {
        ended++;
        s.terminate('57P01', POLICY_CHANGED_MESSAGE);
      }
    }
    return ended;
  }

  sessionEnd(s: SessionHandle): void {
    this.sessions.delete(s);
    const st = stateOf(s);
    if (!st) return;
    this.opts.metrics?.connectionClosed();
    this.writeAudit(
      st,
      sessionEndEvent(this.auditContext(s, st), {
        reason: 'client',
        durationMs: Date.now() - st.startedAt,
        queries: st.statements,
      }),
    );
  }
}
