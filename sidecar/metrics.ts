/**
 * Sidecar metrics (contract §6) on a Registry of their own, so tests and several proxies in one
 * process never share counters, plus the HTTP endpoints Kubernetes probes and Prometheus scrapes.
 *
 * Labels come only from bounded sets: the policy (one per sidecar), its rule names, the decision
 * and outcome enums, auth failure reasons, and command tags mapped onto KNOWN_COMMANDS (else
 * `OTHER`), so a client can never create series by sending odd statements.
 */

import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { parseListen as parseListenAddress } from '../api/listen.js';
import type { AuditEvent, QueryDecision } from './audit/events.js';
import type { AuditObserver } from './audit/writer.js';
import { AUTH_FAILURE_REASONS } from './identity/token.js';
import { type HistogramSeries, SeriesHistogram } from './series-histogram.js';

/** PostgreSQL command tags (src/include/tcop/cmdtaglist.h) that get their own label value. */
export const KNOWN_COMMANDS: ReadonlySet<string> = new Set([
  'SELECT',
  'INSERT',
  'UPDATE',
  'DELETE',
  'MERGE',
  'COPY',
  'COPY FROM',
  'TRUNCATE TABLE',
  'BEGIN',
  'START TRANSACTION',
  'COMMIT',
  'ROLLBACK',
  'SAVEPOINT',
  'RELEASE',
  'PREPARE TRANSACTION',
  'COMMIT PREPARED',
  'ROLLBACK PREPARED',
  'SET',
  'RESET',
  'SHOW',
  'DISCARD ALL',
  'DISCARD PLANS',
  'DISCARD SEQUENCES',
  'DISCARD TEMP',
  'PREPARE',
  'EXECUTE',
  'DEALLOCATE',
  'DEALLOCATE ALL',
  'DECLARE CURSOR',
  'FETCH',
  'MOVE',
  'CLOSE CURSOR',
  'CLOSE CURSOR ALL',
  'EXPLAIN',
  'ANALYZE',
  'VACUUM',
  'CLUSTER',
  'REINDEX',
  'CHECKPOINT',
  'LOCK TABLE',
  'LISTEN',
  'NOTIFY',
  'UNLISTEN',
  'DO',
  'CALL',
  'GRANT',
  'REVOKE',
  'GRANT ROLE',
  'REVOKE ROLE',
  'COMMENT',
  'SECURITY LABEL',
  'REFRESH MATERIALIZED VIEW',
  'SELECT INTO',
  'CREATE TABLE AS',
  'CREATE TABLE',
  'ALTER TABLE',
  'DROP TABLE',
  'CREATE INDEX',
  'ALTER INDEX',
  'DROP INDEX',
  'CREATE VIEW',
  'ALTER VIEW',
  'DROP VIEW',
  'CREATE MATERIALIZED VIEW',
  'ALTER MATERIALIZED VIEW',
  'DROP MATERIALIZED VIEW',
  'CREATE SEQUENCE',
  'ALTER SEQUENCE',
  'DROP SEQUENCE',
  'CREATE SCHEMA',
  'ALTER SCHEMA',
  'DROP SCHEMA',
  'CREATE FUNCTION',
  'ALTER FUNCTION',
  'DROP FUNCTION',
  'CREATE PROCEDURE',
  'ALTER PROCEDURE',
  'DROP PROCEDURE',
  'CREATE TRIGGER',
  'ALTER TRIGGER',
  'DROP TRIGGER',
  'CREATE TYPE',
  'ALTER TYPE',
  'DROP TYPE',
  'CREATE DOMAIN',
  'ALTER DOMAIN',
  'DROP DOMAIN',
  'CREATE EXTENSION',
  'ALTER EXTENSION',
  'DROP EXTENSION',
  'CREATE ROLE',
  'ALTER ROLE',
  'DROP ROLE',
  'CREATE DATABASE',
  'ALTER DATABASE',
  'DROP DATABASE',
  'CREATE POLICY',
  'ALTER POLICY',
  'DROP POLICY',
  'CREATE PUBLICATION',
  'ALTER PUBLICATION',
  'DROP PUBLICATION',
  'CREATE SUBSCRIPTION',
  'ALTER SUBSCRIPTION',
  'DROP SUBSCRIPTION',
  'CREATE FOREIGN TABLE',
  'DROP FOREIGN TABLE',
  'CREATE SERVER',
  'DROP SERVER',
  'CREATE USER MAPPING',
  'DROP USER MAPPING',
  'IMPORT FOREIGN SCHEMA',
  'CREATE RULE',
  'DROP RULE',
  'CREATE TABLESPACE',
  'DROP TABLESPACE',
  'ALTER SYSTEM',
  'ALTER DEFAULT PRIVILEGES',
  'ALTER LARGE OBJECT',
  'REASSIGN OWNED',
  'DROP OWNED',
  'CREATE AGGREGATE',
  'DROP AGGREGATE',
  'CREATE OPERATOR',
  'DROP OPERATOR',
  'CREATE CAST',
  'DROP CAST',
  'CREATE COLLATION',
  'DROP COLLATION',
  'CREATE STATISTICS',
  'DROP STATISTICS',
  'CREATE EVENT TRIGGER',
  'DROP EVENT TRIGGER',
  'LOAD',
]);

export const OTHER_COMMAND = 'OTHER';

export function commandLabel(command: string): string {
  const tag = command.trim().toUpperCase();
  return KNOWN_COMMANDS.has(tag) ? tag : OTHER_COMMAND;
}

/** `rule` label when the policy's defaultAction decided rather than a named rule. */
export const DEFAULT_ACTION_RULE = '(defaultAction)';

export type ApprovalOutcome = 'pending' | 'approved' | 'denied' | 'expired';

export interface QueryObservation {
  policy: string;
  decision: QueryDecision;
  command: string;
  /** rule that decided; absent when defaultAction did */
  rule?: string | null;
  /** for a denial: why, as a stable code (Decision.reason); `rule` when absent */
  reason?: string;
  durationSeconds: number;
}

/** 0.5 ms to 10 s: a proxy hop is sub-millisecond, a bad query takes seconds. */
export const QUERY_DURATION_BUCKETS = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

/** One label set of dbguard_queries_total, counted in a plain number on the hot path. */
interface QueryCell {
  readonly labels: { policy: string; decision: QueryDecision; command: string };
  /** its dbguard_query_duration_seconds series (policy, decision), looked up once */
  readonly duration: HistogramSeries;
  /** statements not yet added to the prom-client counters */
  pending: number;
}

export class SidecarMetrics {
  readonly registry: Registry;
  /**
   * policy → decision → command tag as the client sent it → cell. prom-client hashes and validates
   * the labels of every inc(); at one statement per call that was a microsecond per statement. The
   * counts are handed to the counters when they are read (their collect()), so a scrape sees them all.
   */
  private readonly queryCells = new Map<string, Map<string, Map<string, QueryCell>>>();
  private readonly queries: Counter<'policy' | 'decision' | 'command'>;
  private readonly denied: Counter<'policy' | 'rule' | 'reason'>;
  private readonly masked: Counter<'policy'>;
  private readonly duration: SeriesHistogram<'policy' | 'decision'>;
  private readonly connectionsActive: Gauge;
  private readonly connectionsTotal: Counter;
  private readonly policyInfo: Gauge<'policy' | 'version'>;
  private readonly policyLastSync: Gauge;
  private readonly policySyncErrors: Counter;
  private readonly approvals: Counter<'policy' | 'outcome'>;
  private readonly auditEvents: Counter<'event'>;
  private readonly auditWait: Histogram;
  private readonly auditErrors: Counter;
  private readonly authFailures: Counter<'reason'>;
  private readonly maskingProblemsGauge: Gauge<'policy' | 'rule' | 'reason'>;

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    this.registry = new Registry();
    const registers = [this.registry];
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
    this.queries = new Counter({
      name: 'dbguard_queries_total',
      help: 'Statements judged, by policy, decision and command tag (OTHER for tags outside the known set).',
      labelNames: ['policy', 'decision', 'command'],
      registers,
      collect: () => this.flushQueryCells(),
    });
    this.denied = new Counter({
      name: 'dbguard_denied_queries_total',
      help: `Statements denied, by the rule that denied them (${DEFAULT_ACTION_RULE} for defaultAction Deny) and why (reason: rule, cannot_prove_masked, masked_write, unparseable, no_policy, lexer, audit, masking_rule_broken, internal).`,
      labelNames: ['policy', 'rule', 'reason'],
      registers,
    });
    this.masked = new Counter({
      name: 'dbguard_masked_queries_total',
      help: 'Statements rewritten to mask columns.',
      labelNames: ['policy'],
      registers,
      collect: () => this.flushQueryCells(),
    });
    this.duration = new SeriesHistogram(
      'dbguard_query_duration_seconds',
      'Time from a statement reaching the proxy to its completion, by decision.',
      ['policy', 'decision'],
      QUERY_DURATION_BUCKETS,
      registers,
    );
    this.connectionsActive = new Gauge({
      name: 'dbguard_connections_active',
      help: 'Client connections open now.',
      registers,
    });
    this.connectionsTotal = new Counter({
      name: 'dbguard_connections_total',
      help: 'Client connections accepted since start.',
      registers,
    });
    this.policyInfo = new Gauge({
      name: 'dbguard_policy_info',
      help: 'The policy being enforced: 1 for its current version, no series for older ones.',
      labelNames: ['policy', 'version'],
      registers,
    });
    this.policyLastSync = new Gauge({
      name: 'dbguard_policy_last_sync_timestamp_seconds',
      help: 'Unix time of the last successful policy load or check (file read or operator poll).',
      registers,
    });
    this.policySyncErrors = new Counter({
      name: 'dbguard_policy_sync_errors_total',
      help: 'Failed policy loads or operator polls (the last-known-good policy stays in force).',
      registers,
    });
    this.approvals = new Counter({
      name: 'dbguard_approvals_total',
      help: 'Approval requests by outcome: pending (requested), approved, denied, expired.',
      labelNames: ['policy', 'outcome'],
      registers,
    });
    this.auditEvents = new Counter({
      name: 'dbguard_audit_events_total',
      help: 'Audit events written to the audit log, by event.',
      labelNames: ['event'],
      registers,
    });
    this.auditWait = new Histogram({
      name: 'dbguard_audit_write_wait_seconds',
      help: 'Time a session waited for room in the audit queue (backpressure from a slow audit sink).',
      buckets: [0.0001, 0.001, 0.01, 0.1, 1, 10],
      registers,
    });
    this.auditErrors = new Counter({
      name: 'dbguard_audit_write_errors_total',
      help: 'Audit sink write errors (file sinks are retried; events are kept), and events refused because they cannot be serialised.',
      registers,
    });
    this.maskingProblemsGauge = new Gauge({
      name: 'dbguard_masking_rule_problems',
      help: 'Masked tables (reason table_not_found) and columns (column_not_found) a MaskingRule names that the database does not have, as the catalog snapshots of the current policy version show.',
      labelNames: ['policy', 'rule', 'reason'],
      registers,
    });
    this.authFailures = new Counter({
      name: 'dbguard_auth_failures_total',
      help: 'Client authentications refused by the proxy, by reason.',
      labelNames: ['reason'],
      registers,
    });
  }

  /** One statement judged and (unless denied) run. */
  recordQuery(q: QueryObservation): void {
    const cell = this.queryCell(q.policy, q.decision, q.command);
    cell.pending++;
    if (q.decision === 'deny')
      this.denied.inc({ policy: q.policy, rule: q.rule || DEFAULT_ACTION_RULE, reason: q.reason ?? 'rule' });
    cell.duration.observe(Math.max(0, q.durationSeconds)); // observe() counts a non-finite value as 0
  }

  private queryCell(policy: string, decision: QueryDecision, command: string): QueryCell {
    let byDecision = this.queryCells.get(policy);
    if (!byDecision) {
      byDecision = new Map();
      this.queryCells.set(policy, byDecision);
    }
    let byCommand = byDecision.get(decision);
    if (!byCommand) {
      byCommand = new Map();
      byDecision.set(decision, byCommand);
    }
    // Statement kinds are a bounded set; should a caller pass free text, the map still stays small.
    if (byCommand.size >= 512 && !byCommand.has(command)) command = commandLabel(command);
    let cell = byCommand.get(command);
    if (!cell) {
      // Keyed by the raw tag, labelled by its bounded form: at most a few hundred raw tags exist.
      cell = {
        labels: { policy, decision, command: commandLabel(command) },
        duration: this.duration.series({ policy, decision }),
        pending: 0,
      };
      byCommand.set(command, cell);
    }
    return cell;
  }

  private flushQueryCells(): void {
    for (const byDecision of this.queryCells.values())
      for (const byCommand of byDecision.values())
        for (const cell of byCommand.values()) {
          if (cell.pending === 0) continue;
          this.queries.inc(cell.labels, cell.pending);
          if (cell.labels.decision === 'mask') this.masked.inc({ policy: cell.labels.policy }, cell.pending);
          cell.pending = 0;
        }
  }

  connectionOpened(): void {
    this.connectionsTotal.inc();
    this.connectionsActive.inc();
  }

  connectionClosed(): void {
    this.connectionsActive.dec();
  }

  /** A policy version is now enforced: the info gauge shows it alone. Also counts as a sync. */
  policyLoaded(policy: string, version: string, at: Date = new Date()): void {
    this.policyInfo.reset();
    this.policyInfo.set({ policy, version }, 1);
    this.policySynced(at);
  }

  /** The policy source was reached and is current (e.g. an operator poll answered 304). */
  policySynced(at: Date = new Date()): void {
    this.policyLastSync.set(at.getTime() / 1000);
  }

  policySyncFailed(): void {
    this.policySyncErrors.inc();
  }

  approval(policy: string, outcome: ApprovalOutcome): void {
    this.approvals.inc({ policy, outcome });
  }

  /** The masking problems seen under the current policy version (replaces the previous counts). */
  maskingProblems(policy: string, problems: readonly { rule: string; reason: string }[]): void {
    this.maskingProblemsGauge.reset();
    for (const p of problems) this.maskingProblemsGauge.inc({ policy, rule: p.rule, reason: p.reason });
  }

  /** `reason` should be an AuthFailureReason (bounded); anything else is counted as `other`. */
  authFailure(reason: string): void {
    this.authFailures.inc({ reason: AUTH_REASON_LABELS.has(reason) ? reason : 'other' });
  }

  /** Hooks for openAuditLog({observer}). */
  auditObserver(): AuditObserver {
    return {
      written: (events: readonly AuditEvent[]) => {
        // Query events, nearly all of a batch, take one inc per batch; the rare others one each.
        let queries = 0;
        for (const e of events) {
          if (e.event === 'query') queries++;
          else this.auditEvents.inc({ event: e.event });
        }
        if (queries > 0) this.auditEvents.inc({ event: 'query' }, queries);
      },
      waited: (seconds) => this.auditWait.observe(seconds),
      error: () => this.auditErrors.inc(),
    };
  }

  /** Prometheus text exposition. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

/** Reasons besides the verifiers' own: the client sent no token, or the upstream refused the login. */
const AUTH_REASON_LABELS: ReadonlySet<string> = new Set([
  ...AUTH_FAILURE_REASONS,
  'no_token',
  'upstream_rejected',
]);

export interface Readiness {
  ok: boolean;
  reasons: string[];
  /** problems that do not make the sidecar unready but need a person (a MaskingRule naming a missing column) */
  details?: string[];
}

export interface HealthServer {
  /** `http://host:port` */
  url: string;
  port: number;
  close(): Promise<void>;
}

export interface HealthServerOptions {
  metrics: SidecarMetrics;
  ready: () => Promise<Readiness>;
  /** a ready() that takes longer than this counts as not ready; default 2 s */
  readyTimeoutMs?: number;
}

/** `host:port`, `:port` or `port`; IPv6 as `[::1]:9090` (api/listen.ts). */
export function parseListen(listen: string): { host: string; port: number } {
  return parseListenAddress(listen, { defaultHost: '0.0.0.0', barePort: true });
}

async function readiness(opts: HealthServerOptions): Promise<Readiness> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<Readiness>((resolve) => {
    timer = setTimeout(
      () => resolve({ ok: false, reasons: ['readiness check timed out'] }),
      opts.readyTimeoutMs ?? 2000,
    );
  });
  try {
    return await Promise.race([
      opts.ready().catch((err: unknown) => ({
        ok: false,
        reasons: [`readiness check failed: ${err instanceof Error ? err.message : String(err)}`],
      })),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

async function handle(opts: HealthServerOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n');
    return;
  }
  switch (path) {
    case '/metrics':
      send(res, 200, opts.metrics.contentType, await opts.metrics.text());
      return;
    case '/healthz':
      send(res, 200, 'text/plain; charset=utf-8', 'ok\n');
      return;
    case '/readyz': {
      const r = await readiness(opts);
      send(
        res,
        r.ok ? 200 : 503,
        'application/json',
        `${JSON.stringify({ ok: r.ok, reasons: r.reasons, ...(r.details?.length ? { details: r.details } : {}) })}\n`,
      );
      return;
    }
    default:
      send(res, 404, 'text/plain; charset=utf-8', 'not found: try /metrics, /healthz, /readyz\n');
  }
}

/** Serve /metrics, /healthz (alive: always 200) and /readyz (200 when ready().ok, else 503 + reasons). */
export async function startHealthServer(listen: string, opts: HealthServerOptions): Promise<HealthServer> {
  const { host, port } = parseListen(listen);
  const server = createServer((req, res) => {
    handle(opts, req, res).catch((err: unknown) => {
      if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', `error: ${(err as Error).message}\n`);
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = (server.address() as AddressInfo).port;
  const urlHost = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host;
  return {
    url: `http://${urlHost}:${bound}`,
    port: bound,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
