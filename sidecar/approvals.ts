/**
 * The sidecar's approval client: asks the operator for an ApprovalRequest and follows its decision.
 *
 * - Wait mode: `request()` creates the request and long-polls until it is approved, denied or expired.
 *   Aborting the signal (the client cancelled or went away) withdraws the request at the operator.
 * - Reject mode: `create()` opens (or reuses) a request; `approvedRecently()` asks whether an approval
 *   for the same subject, rule and fingerprint (the exact text: approvalFingerprint) is still within
 *   its validFor.
 * - Fail closed: if the operator cannot be reached, nothing counts as approved; a wait that cannot
 *   reach the operator ends as expired shortly after the request's expiry.
 * - The projected ServiceAccount token is re-read for every call: the kubelet rotates it.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { CompiledPolicy } from '../api/compiled.js';
import type { ApprovalSubject } from '../api/types.js';
import type { Decision } from '../policy/decision.js';
import type { Identity } from '../policy/identity.js';
import {
  type AuditContext,
  type AuditEvent,
  type QueryDecision,
  queryEvent,
  shouldAuditQuery,
} from './audit/index.js';
import type { SessionHandle, Verdict } from './decision-point.js';
import type { SidecarMetrics } from './metrics.js';

export type { ApprovalSubject } from '../api/types.js';

export interface ApprovalClientOptions {
  operatorUrl: string;
  /** file with the projected ServiceAccount token (audience dbguard) */
  tokenFile?: string;
  /** a token source instead of a file (tests, other runtimes) */
  token?: () => string | Promise<string>;
  /** PEM CA that signed the operator's serving certificate */
  caFile?: string;
  caPem?: string;
  /** name to verify the operator's certificate for, when the URL's host is an address (default: the host) */
  serverName?: string;
  /** per HTTP call, except the long-poll (default 10 s) */
  requestTimeoutMs?: number;
  /** long-poll wait per call in seconds (default 60; the operator caps it at 300) */
  pollSeconds?: number;
  /** after the request's expiry, how long to keep trying an unreachable operator (default 30 s) */
  graceMs?: number;
  log?: (fields: Record<string, unknown>) => void;
}

export interface ApprovalInput {
  /** `namespace/name` of the DatabasePolicy (as in the compiled policy) */
  policy: string;
  rule: string;
  subject: ApprovalSubject;
  database: string;
  /** normalized: literals replaced by placeholders */
  statement: string;
  fingerprint: string;
  /** what the sidecar's compiled policy says; the operator applies its own copy of the rule */
  mode: 'Wait' | 'Reject';
  timeoutSeconds: number;
  validForSeconds: number;
}

/** An open request: what a notice or an error message names. */
export interface ApprovalTicket {
  namespace: string;
  name: string;
  expiresAt: string;
  /** `kubectl dbguard approve NAME -n NS --reason "..."` */
  approveCommand: string;
  denyCommand: string;
  /** Reject mode: an open request for the same statement was reused */
  reused: boolean;
}

export type ApprovalOutcome = 'approved' | 'denied' | 'expired' | 'withdrawn';

export interface ApprovalResult {
  namespace: string;
  name: string;
  outcome: ApprovalOutcome;
  decidedBy?: string;
  reason?: string;
}

/** The operator refused or could not be reached. */
export class ApprovalError extends Error {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

interface View {
  namespace: string;
  name: string;
  phase: 'Pending' | 'Approved' | 'Denied' | 'Expired';
  withdrawn: boolean;
  expiresAt: string;
  decidedBy?: string;
  reason?: string;
}

/** why a wait was aborted: `'cancel'` as the signal's reason means the client sent a CancelRequest */
export const ABORT_CANCEL = 'cancel';

function splitPolicy(policy: string): { namespace: string; name: string } {
  const m = /^([^/]+)\/([^/]+)$/.exec(policy);
  if (!m) throw new ApprovalError(`policy must be namespace/name, not ${JSON.stringify(policy)}`);
  return { namespace: m[1]!, name: m[2]! };
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

export class ApprovalClient {
  private readonly base: URL;
  private ca: string | undefined;

  constructor(private readonly o: ApprovalClientOptions) {
    this.base = new URL(o.operatorUrl);
    if (this.base.protocol !== 'http:' && this.base.protocol !== 'https:')
      throw new ApprovalError(`operator URL must be http(s), not ${o.operatorUrl}`);
    this.ca = o.caPem;
  }

  private async token(): Promise<string | undefined> {
    if (this.o.token) return this.o.token();
    if (this.o.tokenFile) return fs.readFileSync(this.o.tokenFile, 'utf8').trim();
    return undefined;
  }

  private call(
    method: 'GET' | 'POST' | 'DELETE',
    path: string,
    body: unknown,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<{ status: number; json: any }> {
    return (async () => {
      if (!this.ca && this.o.caFile) this.ca = fs.readFileSync(this.o.caFile, 'utf8');
      const token = await this.token();
      const url = new URL(
        path.replace(/^\//, ''),
        this.base.href.endsWith('/') ? this.base : `${this.base.href}/`,
      );
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const headers: Record<string, string> = { Accept: 'application/json' };
      if (token) headers.Authorization = `Bearer ${token}`;
      if (payload) {
        headers['Content-Type'] = 'application/json';
        headers['Content-Length'] = String(payload.length);
      }
      return new Promise<{ status: number; json: any }>((resolve, reject) => {
        const mod = url.protocol === 'https:' ? https : http;
        const req = mod.request(
          url,
          {
            method,
            headers,
            ...(this.ca ? { ca: this.ca } : {}),
            ...(this.o.serverName ? { servername: this.o.serverName } : {}),
            ...(signal ? { signal } : {}),
          },
          (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => {
              const text = Buffer.concat(chunks).toString('utf8');
              let json: any;
              try {
                json = text ? JSON.parse(text) : {};
              } catch {
                json = { error: text.slice(0, 200) };
              }
              resolve({ status: res.statusCode ?? 0, json });
            });
            res.on('error', reject);
          },
        );
        req.setTimeout(timeoutMs, () =>
          req.destroy(new Error(`no answer from the operator within ${timeoutMs} ms`)),
        );
        req.on('error', reject);
        req.end(payload);
      });
    })();
  }

  private get timeoutMs(): number {
    return this.o.requestTimeoutMs ?? 10_000;
  }

  /**
   * Tells the operator which MaskingRules name tables or columns this database lacks, so it marks
   * them Ready=False (ColumnNotFound / TableNotFound) with an Event. Best effort: the sidecar
   * enforces (fail closed) whatever the answer.
   */
  async reportMaskingProblems(
    policy: string,
    policyVersion: string,
    database: string,
    problems: readonly object[],
  ): Promise<void> {
    const { namespace, name } = splitPolicy(policy);
    const r = await this.call(
      'POST',
      `/v1/policies/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}/masking-problems`,
      { policyVersion, database, problems },
      this.timeoutMs,
    );
    if (r.status !== 202) throw new Error(`operator answered ${r.status}: ${r.json?.error ?? ''}`);
  }

  /** Opens a request (Reject mode: reuses an open one for the same statement and subject). */
  async create(input: ApprovalInput): Promise<ApprovalTicket> {
    const { namespace, name: policy } = splitPolicy(input.policy);
    let r: { status: number; json: any };
    try {
      r = await this.call(
        'POST',
        `/v1/approvals/${encodeURIComponent(namespace)}`,
        {
          policy,
          rule: input.rule,
          subject: input.subject,
          database: input.database,
          statement: input.statement,
          fingerprint: input.fingerprint,
        },
        this.timeoutMs,
      );
    } catch (err) {
      throw new ApprovalError(`the operator could not be reached: ${(err as Error).message}`);
    }
    if (r.status !== 200 && r.status !== 201)
      throw new ApprovalError(
        `the operator refused the approval request: ${r.json?.error ?? `HTTP ${r.status}`}`,
        r.status,
      );
    return {
      namespace: r.json.namespace,
      name: r.json.name,
      expiresAt: r.json.expiresAt,
      approveCommand: r.json.approveCommand,
      denyCommand: r.json.denyCommand,
      reused: !!r.json.reused,
    };
  }

  /** Follows a request until it is final, or withdraws it when `signal` aborts. */
  async wait(ticket: ApprovalTicket, signal: AbortSignal): Promise<ApprovalResult> {
    const path = `/v1/approvals/${encodeURIComponent(ticket.namespace)}/${encodeURIComponent(ticket.name)}`;
    const giveUpAt = (Date.parse(ticket.expiresAt) || Date.now()) + (this.o.graceMs ?? 30_000);
    const poll = Math.max(1, Math.min(this.o.pollSeconds ?? 60, 300));
    let failures = 0;
    for (;;) {
      if (signal.aborted)
        return this.withdraw(
          ticket,
          signal.reason === ABORT_CANCEL ? 'ClientCancelled' : 'ClientDisconnected',
        );
      if (Date.now() > giveUpAt) {
        this.o.log?.({
          msg: 'approval: operator unreachable past expiry; treated as expired',
          name: ticket.name,
        });
        return { namespace: ticket.namespace, name: ticket.name, outcome: 'expired' };
      }
      let v: View | undefined;
      try {
        const r = await this.call('GET', `${path}?wait=${poll}`, undefined, (poll + 30) * 1000, signal);
        if (r.status === 200) v = r.json as View;
        else if (r.status === 404)
          return { namespace: ticket.namespace, name: ticket.name, outcome: 'expired' };
        else throw new Error(r.json?.error ?? `HTTP ${r.status}`);
        failures = 0;
      } catch (err) {
        if (signal.aborted) continue;
        failures++;
        this.o.log?.({
          msg: 'approval poll failed; retrying',
          name: ticket.name,
          error: (err as Error).message,
        });
        await sleep(Math.min(5000, 250 * 2 ** Math.min(failures, 5)), signal);
        continue;
      }
      if (v.phase === 'Pending') continue;
      const outcome: ApprovalOutcome =
        v.phase === 'Approved'
          ? 'approved'
          : v.phase === 'Denied'
            ? 'denied'
            : v.withdrawn
              ? 'withdrawn'
              : 'expired';
      return {
        namespace: ticket.namespace,
        name: ticket.name,
        outcome,
        ...(v.decidedBy ? { decidedBy: v.decidedBy } : {}),
        ...(v.reason ? { reason: v.reason } : {}),
      };
    }
  }

  /** Withdraws at the operator (best effort: an unreachable operator lets it expire instead). */
  async withdraw(
    ticket: ApprovalTicket,
    reason: 'ClientCancelled' | 'ClientDisconnected',
  ): Promise<ApprovalResult> {
    const path = `/v1/approvals/${encodeURIComponent(ticket.namespace)}/${encodeURIComponent(ticket.name)}?reason=${reason}`;
    try {
      const r = await this.call('DELETE', path, undefined, this.timeoutMs);
      if (r.status !== 200) throw new Error(r.json?.error ?? `HTTP ${r.status}`);
    } catch (err) {
      this.o.log?.({
        msg: 'approval withdrawal failed; it will expire',
        name: ticket.name,
        error: (err as Error).message,
      });
    }
    return { namespace: ticket.namespace, name: ticket.name, outcome: 'withdrawn' };
  }

  /**
   * Wait mode in one call: create, tell the caller (`onCreated`, e.g. to send the client a notice),
   * then follow the decision. Throws ApprovalError when the request cannot be created.
   */
  async request(
    input: ApprovalInput,
    signal: AbortSignal,
    onCreated?: (t: ApprovalTicket) => void,
  ): Promise<ApprovalResult> {
    const ticket = await this.create(input);
    onCreated?.(ticket);
    return this.wait(ticket, signal);
  }

  /** Reject mode: an approval of this subject's statement (rule, fingerprint) still within validFor? */
  async approvedRecently(
    subject: ApprovalSubject,
    fingerprint: string,
    rule: string,
    policy: string,
  ): Promise<boolean> {
    const { namespace, name } = splitPolicy(policy);
    try {
      const r = await this.call(
        'POST',
        `/v1/approvals/${encodeURIComponent(namespace)}/-/approved`,
        { policy: name, rule, fingerprint, subject },
        this.timeoutMs,
      );
      if (r.status !== 200) throw new Error(r.json?.error ?? `HTTP ${r.status}`);
      return r.json?.approved === true;
    } catch (err) {
      // fail closed: no answer is no approval
      this.o.log?.({ msg: 'approval lookup failed; not approved', error: (err as Error).message });
      return false;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The governor's side: what a RequireApproval decision does to one statement.

/** What the governor needs from an approval client (tests may pass their own). */
export type ApprovalGate = Pick<ApprovalClient, 'create' | 'wait' | 'approvedRecently'>;

export interface ApprovalJudgeInput {
  gate: ApprovalGate;
  session: SessionHandle;
  identity: Identity;
  policy: CompiledPolicy;
  /** an enforced decision of kind `approval` */
  decision: Decision;
  metrics?: SidecarMetrics;
  auditContext: AuditContext;
  writeAudit: (e: AuditEvent) => void;
  log?: (fields: Record<string, unknown>) => void;
}

export interface ApprovalJudgement {
  /** forward: the caller sends `decision.sql` upstream (and applies its effects) */
  verdict: Verdict;
  /** the audit decision for the statement's completion event */
  label: QueryDecision;
}

const DEFAULT_APPROVAL = { mode: 'Wait' as const, timeoutSeconds: 300, validForSeconds: 3600 };

/** `5m`, `1h30m`, `45s` */
function human(total: number): string {
  const s = Math.max(0, Math.round(total));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  return `${h ? `${h}h` : ''}${m ? `${m}m` : ''}${r || (!h && !m) ? `${r}s` : ''}`;
}

/**
 * What an approval lets through: the exact text that runs (issue #18), as 32 hex digits of its SHA-256.
 * Not libpg_query's fingerprint: that is the same for `WHERE id = 1` and `WHERE id IN (1, ..., 100)`,
 * or `> 0` and `> 999999`, so an approval of one let the others through. A retry with other literals
 * is another statement and needs its own approval. (The approver sees the normalized text, without
 * literals; this hash stands for the values.) Known gap: a Parse is approved as its text with `$n`
 * placeholders, whatever values its Binds carry later.
 */
export function approvalFingerprint(d: Decision): string {
  return createHash('sha256')
    .update('dbguard approval: exact text\0')
    .update(d.sql)
    .digest('hex')
    .slice(0, 32);
}

/**
 * Reject mode: a valid approval lets the statement through; otherwise a request is opened (or the
 * open one reused) and the statement fails with 42501 naming it. Wait mode: a request is opened, the
 * client gets a NoticeResponse naming it, and the statement is held until approved (forward), denied
 * or expired (42501), or withdrawn because the client cancelled (57014) or went away.
 */
export async function judgeApproval(i: ApprovalJudgeInput): Promise<ApprovalJudgement> {
  const d = i.decision;
  const p = i.policy;
  const rule = d.rule ?? '(defaultAction)';
  const a = d.approval ?? DEFAULT_APPROVAL;
  const id = i.identity;
  const subject: ApprovalSubject = {
    ...(id.serviceAccount ? { serviceAccount: id.serviceAccount } : {}),
    ...(id.pod ? { pod: id.pod } : {}),
    ...(id.user ? { user: id.user } : {}),
    groups: [...id.groups],
    databaseUser: id.databaseUser,
  };
  const fingerprint = approvalFingerprint(d);
  const base = d.message ?? `dbguard: statement requires approval (rule ${rule})`;
  const auditAs = (decision: QueryDecision, sqlstate: string | null) => {
    const statement = d.statements[0];
    if (!statement || !shouldAuditQuery(p.audit.statements, { decision, statement })) return;
    i.writeAudit(
      queryEvent(i.auditContext, {
        decision,
        rule,
        statement,
        batch: null,
        maskedColumns: [],
        rowCount: null,
        durationMs: 0,
        sqlstate,
        enforced: true,
        tags: d.tags,
      }),
    );
  };

  if (a.mode === 'Reject' && (await i.gate.approvedRecently(subject, fingerprint, rule, p.policy))) {
    i.metrics?.approval(p.policy, 'approved');
    return { verdict: { action: 'forward', sql: d.sql }, label: 'approved' };
  }

  let ticket: ApprovalTicket;
  try {
    ticket = await i.gate.create({
      policy: p.policy,
      rule,
      subject,
      database: i.session.database,
      statement: d.statements.map((s) => s.normalized).join(';\n') || '(statement text withheld)',
      fingerprint,
      mode: a.mode,
      timeoutSeconds: a.timeoutSeconds,
      validForSeconds: a.validForSeconds,
    });
  } catch (err) {
    i.log?.({
      msg: 'approval request failed; statement refused',
      session: i.session.id,
      error: (err as Error).message,
    });
    return {
      verdict: {
        action: 'reject',
        sqlstate: '42501',
        message: base,
        detail: `dbguard could not open an approval request: ${(err as Error).message}`,
      },
      label: 'approval_pending',
    };
  }
  const ref = `${ticket.namespace}/${ticket.name}`;
  if (!ticket.reused) i.metrics?.approval(p.policy, 'pending');
  // Reject mode: the statement's own completion event (approval_pending, 42501) records it. Wait
  // mode: the hold is a state change of its own, long before the statement completes.
  if (a.mode === 'Wait') auditAs('approval_pending', null);

  if (a.mode === 'Reject') {
    return {
      verdict: {
        action: 'reject',
        sqlstate: '42501',
        message: `${base}: approval request ${ref} is pending; run the statement again once it is approved`,
        detail: `The request expires at ${ticket.expiresAt}. Once approved, this exact statement (the same text, the same values) is let through for ${human(a.validForSeconds)}; other values need another approval.`,
        hint: `an approver runs: ${ticket.approveCommand}`,
      },
      label: 'approval_pending',
    };
  }

  i.session.notice?.({
    severity: 'NOTICE',
    sqlstate: '00000',
    message: `dbguard: statement held for approval: request ${ref} (rule ${rule}); waiting up to ${human(a.timeoutSeconds)}`,
    ...(d.message ? { detail: d.message } : {}),
    hint: `an approver runs: ${ticket.approveCommand}`,
  });
  const signal = i.session.waitSignal ?? new AbortController().signal;
  const r = await i.gate.wait(ticket, signal);
  switch (r.outcome) {
    case 'approved':
      i.metrics?.approval(p.policy, 'approved');
      return { verdict: { action: 'forward', sql: d.sql }, label: 'approved' };
    case 'denied':
      i.metrics?.approval(p.policy, 'denied');
      return {
        verdict: {
          action: 'reject',
          sqlstate: '42501',
          message: `dbguard: approval request ${ref} was denied by ${r.decidedBy ?? 'an approver'}${r.reason ? ` (${r.reason})` : ''} (rule ${rule})`,
        },
        label: 'approval_denied',
      };
    case 'expired':
      i.metrics?.approval(p.policy, 'expired');
      return {
        verdict: {
          action: 'reject',
          sqlstate: '42501',
          message: `dbguard: approval request ${ref} expired undecided (rule ${rule})`,
          hint: `ask an approver to decide sooner; the rule holds a statement for ${human(a.timeoutSeconds)}`,
        },
        label: 'approval_expired',
      };
    default:
      // withdrawn: the client cancelled (it gets what PostgreSQL sends on cancel) or is gone; a gone
      // client's statement never completes, so its final audit event is written here
      if (signal.reason !== ABORT_CANCEL) auditAs('approval_expired', '08006');
      return {
        verdict: {
          action: 'reject',
          sqlstate: '57014',
          message: 'canceling statement due to user request',
          detail: `dbguard: approval request ${ref} was withdrawn`,
        },
        label: 'approval_expired',
      };
  }
}
