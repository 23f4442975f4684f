/**
 * Audit events (contract §5): plain objects built here, serialized by the writer. Every event has
 * `time`, `event`, `sessionId`, `policy`, `policyVersion` and `identity` with all seven identity
 * fields present (null when unknown), so consumers never test for missing keys. The writer adds
 * `seq` and `prev`. Statements enter an event only as scrubbed normalized text (statement.ts).
 */
import type { StatementInfo } from '../../policy/decision.js';
import type { Identity } from '../../policy/identity.js';
import { scrubNormalized } from './statement.js';

export type AuditEventName = 'session.start' | 'session.end' | 'auth.failure' | 'policy.loaded' | 'query';

export const AUDIT_EVENT_NAMES: readonly AuditEventName[] = [
  'session.start',
  'session.end',
  'auth.failure',
  'policy.loaded',
  'query',
];

export type QueryDecision =
  | 'allow'
  | 'mask'
  | 'deny'
  | 'approval_pending'
  | 'approved'
  | 'approval_denied'
  | 'approval_expired';

export const QUERY_DECISIONS: readonly QueryDecision[] = [
  'allow',
  'mask',
  'deny',
  'approval_pending',
  'approved',
  'approval_denied',
  'approval_expired',
];

export interface AuditIdentity {
  serviceAccount: string | null;
  pod: string | null;
  user: string | null;
  groups: string[];
  databaseUser: string | null;
  /** only when the client's startup user is not the proven one (credentials or token mode) */
  claimedDatabaseUser?: string;
  applicationName: string | null;
  clientAddr: string | null;
}

/** What every event of one session (or of the sidecar, for policy.loaded) shares. */
export interface AuditContext {
  sessionId: string | null;
  /** `namespace/name`, null before any policy is loaded */
  policy: string | null;
  policyVersion: string | null;
  identity?: Partial<Identity>;
}

export interface AuditEventBase {
  /** RFC 3339 UTC with milliseconds */
  time: string;
  event: AuditEventName;
  sessionId: string | null;
  policy: string | null;
  policyVersion: string | null;
  identity: AuditIdentity;
}

export interface SessionStartEvent extends AuditEventBase {
  event: 'session.start';
  database: string | null;
  tls: boolean;
}

export type SessionEndReason = 'client' | 'upstream' | 'error' | 'shutdown' | 'auth';

export interface SessionEndEvent extends AuditEventBase {
  event: 'session.end';
  reason: SessionEndReason;
  durationMs: number;
  queries: number;
}

export interface AuthFailureEvent extends AuditEventBase {
  event: 'auth.failure';
  /** an AuthFailureReason from identity/, or `no_token`, `upstream_rejected`, ... */
  reason: string;
  method: string;
  /** a short description without the credential */
  message: string | null;
}

export interface PolicyLoadedEvent extends AuditEventBase {
  event: 'policy.loaded';
  source: 'file' | 'operator' | 'cache';
  previousVersion: string | null;
  rules: number;
  maskedColumns: number;
  enforcement: 'Enforce' | 'DryRun';
}

export interface AuditStatement {
  command: string;
  objects: string[];
  fingerprint: string;
  normalized: string;
}

/** sqlcommenter tags: what the client declared; nothing here was verified by dbguard. */
export interface DeclaredTags {
  declared: true;
  values: Record<string, string>;
}

export interface QueryEvent extends AuditEventBase {
  event: 'query';
  decision: QueryDecision;
  /** the rule that decided; null when the policy's defaultAction did */
  rule: string | null;
  statement: AuditStatement;
  /** present when one Query message held several statements: one event per statement */
  batch: { index: number; count: number } | null;
  maskedColumns: string[];
  /** rows returned or affected; null when the statement did not run */
  rowCount: number | null;
  durationMs: number;
  /** null when the statement succeeded */
  sqlstate: string | null;
  /** false under DryRun: the decision was recorded, not applied */
  enforced: boolean;
  tags: DeclaredTags | null;
  /** on a refusal: why, as a stable code (`rule`, `cannot_prove_masked`, `unparseable`, ...); else null */
  reason: string | null;
  /** on a refusal: what the client was told (dbguard's own words, no values); else null */
  message: string | null;
}

export type AuditEvent =
  | SessionStartEvent
  | SessionEndEvent
  | AuthFailureEvent
  | PolicyLoadedEvent
  | QueryEvent;

/**
 * Sub-objects of events are shared and frozen: one per identity object, statement and masked-column
 * list, not a copy per event. The hot path builds one query event per statement; sharing them saves
 * the copies and lets the writer serialize each one once (serialize.ts caches by object).
 * The sources (a session's identity, the engine's cached decisions) are never changed in place.
 */
const identities = new WeakMap<object, AuditIdentity>();
const statementForms = new WeakMap<object, AuditStatement>();
const columnLists = new WeakMap<readonly string[], readonly string[]>();
const NO_COLUMNS: string[] = Object.freeze([]) as unknown as string[];

function auditIdentity(id: Partial<Identity> | undefined): AuditIdentity {
  const known = id && identities.get(id);
  if (known) return known;
  const form: AuditIdentity = Object.freeze({
    serviceAccount: id?.serviceAccount ?? null,
    pod: id?.pod ?? null,
    user: id?.user ?? null,
    groups: Object.freeze([...(id?.groups ?? [])]) as string[],
    databaseUser: id?.databaseUser ?? null,
    ...(id?.claimedDatabaseUser !== undefined ? { claimedDatabaseUser: id.claimedDatabaseUser } : {}),
    applicationName: id?.applicationName ?? null,
    clientAddr: id?.clientAddr ?? null,
  });
  if (id) identities.set(id, form);
  return form;
}

function columnList(cols: readonly string[] | undefined): string[] {
  if (!cols || cols.length === 0) return NO_COLUMNS;
  let list = columnLists.get(cols);
  if (!list) {
    list = Object.freeze([...cols]);
    columnLists.set(cols, list);
  }
  return list as string[];
}

let isoMs = -1;
let isoText = '';

/** RFC 3339 time of `now`, or of this millisecond: one Date per millisecond, not one per event. */
function isoTime(now: Date | undefined): string {
  if (now) return now.toISOString();
  const t = Date.now();
  if (t !== isoMs) {
    isoMs = t;
    isoText = new Date(t).toISOString();
  }
  return isoText;
}

function base<E extends AuditEventName>(event: E, ctx: AuditContext, now: Date | undefined) {
  return {
    time: isoTime(now),
    event,
    sessionId: ctx.sessionId,
    policy: ctx.policy,
    policyVersion: ctx.policyVersion,
    identity: auditIdentity(ctx.identity),
  };
}

/** Milliseconds with microsecond resolution: enough for a proxy, short in the log. */
function ms(value: number): number {
  return Number.isFinite(value) && value >= 0 ? Math.round(value * 1000) / 1000 : 0;
}

export function sessionStartEvent(
  ctx: AuditContext,
  f: { database?: string | null; tls?: boolean } = {},
  now?: Date,
): SessionStartEvent {
  return { ...base('session.start', ctx, now), database: f.database ?? null, tls: f.tls ?? false };
}

export function sessionEndEvent(
  ctx: AuditContext,
  f: { reason: SessionEndReason; durationMs: number; queries: number },
  now?: Date,
): SessionEndEvent {
  return {
    ...base('session.end', ctx, now),
    reason: f.reason,
    durationMs: ms(f.durationMs),
    queries: f.queries,
  };
}

export function authFailureEvent(
  ctx: AuditContext,
  f: { reason: string; method: string; message?: string | null },
  now?: Date,
): AuthFailureEvent {
  return {
    ...base('auth.failure', ctx, now),
    reason: f.reason,
    method: f.method,
    message: f.message ?? null,
  };
}

export function policyLoadedEvent(
  ctx: { policy: string; policyVersion: string },
  f: {
    source: PolicyLoadedEvent['source'];
    previousVersion?: string | null;
    rules: number;
    maskedColumns: number;
    enforcement: PolicyLoadedEvent['enforcement'];
  },
  now?: Date,
): PolicyLoadedEvent {
  return {
    ...base('policy.loaded', { sessionId: null, ...ctx }, now),
    source: f.source,
    previousVersion: f.previousVersion ?? null,
    rules: f.rules,
    maskedColumns: f.maskedColumns,
    enforcement: f.enforcement,
  };
}

/** Bounds on client-declared tags, so a client cannot blow up the log through a comment. */
const MAX_TAGS = 16;
const MAX_TAG_KEY = 64;
const MAX_TAG_VALUE = 256;

function declaredTags(tags: Record<string, string> | undefined): DeclaredTags | null {
  if (!tags) return null;
  const values: Record<string, string> = {};
  let n = 0;
  for (const [k, v] of Object.entries(tags)) {
    if (n++ >= MAX_TAGS) break;
    values[k.slice(0, MAX_TAG_KEY)] = String(v).slice(0, MAX_TAG_VALUE);
  }
  return n === 0 ? null : { declared: true, values };
}

/**
 * The audit form of one statement. `normalized` is scrubbed again (idempotent on clean text), so a
 * literal the engine's normalizer left behind still never reaches the log. Shared and frozen per
 * statement object: a prepared statement's executions all refer to one form.
 */
export function auditStatementInfo(
  s: Pick<StatementInfo, 'command' | 'objects' | 'fingerprint' | 'normalized'>,
): AuditStatement {
  let form = statementForms.get(s);
  if (!form) {
    form = Object.freeze({
      command: s.command,
      objects: Object.freeze([...s.objects]) as string[],
      // A fingerprint is hex; anything else (libpg-query returns error text there) is dropped.
      fingerprint: /^[0-9a-f]{1,64}$/.test(s.fingerprint) ? s.fingerprint : '',
      normalized: scrubNormalized(s.normalized),
    });
    statementForms.set(s, form);
  }
  return form;
}

export interface QueryEventFields {
  decision: QueryDecision;
  rule?: string | null;
  statement: Pick<StatementInfo, 'command' | 'objects' | 'fingerprint' | 'normalized'>;
  batch?: { index: number; count: number } | null;
  maskedColumns?: string[];
  rowCount?: number | null;
  durationMs: number;
  sqlstate?: string | null;
  enforced: boolean;
  /** `Decision.tags` as the engine parsed them from a sqlcommenter comment */
  tags?: Record<string, string>;
  reason?: string | null;
  message?: string | null;
}

/**
 * A query event as queryEvent() builds it. A class only so that serialize.ts can tell its fixed
 * shape from a hand-made object cheaply (a WeakSet of built events cost more than the fast path
 * saved: its entries are ephemerons the garbage collector must clear). Fields are assigned in the
 * order of the QueryEvent interface, which is the order JSON.stringify writes them in.
 */
export class BuiltQueryEvent implements QueryEvent {
  declare time: string;
  declare event: 'query';
  declare sessionId: string | null;
  declare policy: string | null;
  declare policyVersion: string | null;
  declare identity: AuditIdentity;
  declare decision: QueryDecision;
  declare rule: string | null;
  declare statement: AuditStatement;
  declare batch: { index: number; count: number } | null;
  declare maskedColumns: string[];
  declare rowCount: number | null;
  declare durationMs: number;
  declare sqlstate: string | null;
  declare enforced: boolean;
  declare tags: DeclaredTags | null;
  declare reason: string | null;
  declare message: string | null;

  constructor(ctx: AuditContext, f: QueryEventFields, now: Date | undefined) {
    // Written out instead of `...base()`: the hot path builds one per statement, and V8 turns a
    // spread followed by more properties into a slow dictionary-mode object (measured 25 µs against 2).
    this.time = isoTime(now);
    this.event = 'query';
    this.sessionId = ctx.sessionId;
    this.policy = ctx.policy;
    this.policyVersion = ctx.policyVersion;
    this.identity = auditIdentity(ctx.identity);
    this.decision = f.decision;
    this.rule = f.rule ?? null;
    this.statement = auditStatementInfo(f.statement);
    this.batch = f.batch ?? null;
    this.maskedColumns = columnList(f.maskedColumns);
    this.rowCount = f.rowCount ?? null;
    this.durationMs = ms(f.durationMs);
    this.sqlstate = f.sqlstate ?? null;
    this.enforced = f.enforced;
    this.tags = declaredTags(f.tags);
    this.reason = f.reason ?? null;
    this.message = f.message ?? null;
  }
}

export function queryEvent(ctx: AuditContext, f: QueryEventFields, now?: Date): QueryEvent {
  return new BuiltQueryEvent(ctx, f, now);
}
