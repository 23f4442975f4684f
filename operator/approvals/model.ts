/**
 * ApprovalRequest semantics shared by the operator's API, its admission webhooks, its lifecycle
 * controller and `kubectl dbguard`: names, labels, who the requester is, and what a request's state is.
 *
 * The state a sidecar acts on is computed from what an approver cannot forge, never read from
 * `status` alone: a status writer could otherwise set `phase: Approved`. A decision counts only with
 * the stamp the admission webhook puts on it (`dbguard.io/decided-by`, `dbguard.io/decided-at`, taken
 * from the admission request's user); `status` may only make a request stricter (Denied, Expired).
 */
import { createHash, randomBytes } from 'node:crypto';
import type { ApprovalRequest, ApprovalSubject } from '../../api/types.js';

export type ApprovalPhase = 'Pending' | 'Approved' | 'Denied' | 'Expired';

/** stamped by the mutating webhook from the admission request's user; restored on every other update */
export const DECIDED_BY_ANNOTATION = 'dbguard.io/decided-by';
export const DECIDED_AT_ANNOTATION = 'dbguard.io/decided-at';
/** Reject mode: seconds an approval lets the same statement through (set by the operator at creation) */
export const VALID_FOR_ANNOTATION = 'dbguard.io/valid-for-seconds';
/** Wait or Reject: how the sidecar treats the statement (for people reading the request) */
export const MODE_ANNOTATION = 'dbguard.io/mode';
export const PROTECTED_ANNOTATIONS = [
  DECIDED_BY_ANNOTATION,
  DECIDED_AT_ANNOTATION,
  VALID_FOR_ANNOTATION,
  MODE_ANNOTATION,
] as const;

export const POLICY_LABEL = 'dbguard.io/policy';
export const RULE_LABEL = 'dbguard.io/rule';
export const SUBJECT_LABEL = 'dbguard.io/subject-hash';
export const FINGERPRINT_LABEL = 'dbguard.io/fingerprint';

/** status condition set when the client cancelled or disconnected before a decision (phase Expired) */
export const WITHDRAWN_CONDITION = 'Withdrawn';

export const API_GROUP_VERSION = 'dbguard.io/v1alpha1';
export const PLURAL = 'approvalrequests';

/** `policy-6hex`, at most 63 characters, a valid DNS label. */
export function approvalName(policy: string, random = randomBytes(3).toString('hex')): string {
  const base = policy
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, '-')
    .slice(0, 63 - random.length - 1)
    .replace(/-+$/, '');
  return `${base || 'approval'}-${random}`;
}

/**
 * The subject facts an approval is bound to. The pod is left out on purpose: an approval for a
 * ServiceAccount's statement also holds for the retry coming from another replica of that workload.
 */
export function subjectKey(s: ApprovalSubject): string {
  const canonical = JSON.stringify([
    s.serviceAccount ?? '',
    s.user ?? '',
    [...(s.groups ?? [])].sort(),
    s.databaseUser ?? '',
  ]);
  return createHash('sha256').update(canonical).digest('hex').slice(0, 32);
}

/** Label values must be at most 63 characters of [A-Za-z0-9._-]; anything else is hashed. */
export function labelValue(v: string): string {
  if (/^(?:[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$/.test(v)) return v;
  return `h-${createHash('sha256').update(v).digest('hex').slice(0, 40)}`;
}

/** Kubernetes usernames that count as the requester: they can never decide the request. */
export function requesterUsernames(s: ApprovalSubject): string[] {
  const names: string[] = [];
  const sa = /^([^/]+)\/([^/]+)$/.exec(s.serviceAccount ?? '');
  if (sa) names.push(`system:serviceaccount:${sa[1]}:${sa[2]}`);
  if (s.user) names.push(s.user);
  return names;
}

/**
 * The API server's default OIDC username prefix in Kubernetes' own examples (`--oidc-username-prefix=oidc:`).
 * `dbguard operator --oidc-username-prefix` sets the cluster's real ones.
 */
export const DEFAULT_OIDC_USERNAME_PREFIXES: readonly string[] = ['oidc:'];

/**
 * One form for a person, whether the name comes from a token a requester used at the gateway
 * (`alice@example.com`) or from the Kubernetes username of an approver (`oidc:alice@example.com`): the
 * cluster's OIDC username prefixes are removed (the longest that matches), and case is folded, since an
 * address in two cases is one person. Both only make more names equal, so they can only refuse more.
 */
export function canonicalUsername(
  name: string,
  prefixes: readonly string[] = DEFAULT_OIDC_USERNAME_PREFIXES,
): string {
  let n = name.trim();
  const match = prefixes.filter((p) => p !== '' && n.startsWith(p)).sort((a, b) => b.length - a.length)[0];
  if (match !== undefined) n = n.slice(match.length);
  return n.toLowerCase();
}

/** Is `username` (an admission request's) one of the requester's identities, in canonical form? */
export function isRequester(
  username: string,
  s: ApprovalSubject,
  prefixes: readonly string[] = DEFAULT_OIDC_USERNAME_PREFIXES,
): boolean {
  const me = canonicalUsername(username, prefixes);
  return requesterUsernames(s).some((r) => canonicalUsername(r, prefixes) === me);
}

export interface Stamp {
  decision: 'Approved' | 'Denied';
  decidedBy: string;
  decidedAt: Date;
}

/** The decision with the webhook's stamp, or undefined when there is none (or it is malformed). */
export function stampOf(ar: ApprovalRequest): Stamp | undefined {
  const decision = ar.spec?.decision;
  const by = ar.metadata?.annotations?.[DECIDED_BY_ANNOTATION];
  const at = Date.parse(ar.metadata?.annotations?.[DECIDED_AT_ANNOTATION] ?? '');
  if ((decision !== 'Approved' && decision !== 'Denied') || !by || !Number.isFinite(at)) return undefined;
  return { decision, decidedBy: by, decidedAt: new Date(at) };
}

export function isWithdrawn(ar: ApprovalRequest): boolean {
  return !!ar.status?.conditions?.some((c) => c.type === WITHDRAWN_CONDITION && c.status === 'True');
}

export function expiresAtOf(ar: ApprovalRequest): number {
  const t = Date.parse(ar.spec?.expiresAt ?? '');
  return Number.isFinite(t) ? t : 0;
}

/** The phase that counts (see the module comment). */
export function effectivePhase(ar: ApprovalRequest, now = Date.now()): ApprovalPhase {
  const st = ar.status?.phase;
  if (st === 'Expired' || st === 'Denied') return st;
  const stamp = stampOf(ar);
  if (stamp) return stamp.decidedAt.getTime() <= expiresAtOf(ar) ? stamp.decision : 'Expired';
  if (now >= expiresAtOf(ar)) return 'Expired';
  return 'Pending';
}

export function validForSeconds(ar: ApprovalRequest): number {
  const v = Number(ar.metadata?.annotations?.[VALID_FOR_ANNOTATION]);
  return Number.isFinite(v) && v > 0 ? v : 0;
}

/** Reject mode: until when an Approved request lets its statement through (0 when it does not). */
export function validUntil(ar: ApprovalRequest, now = Date.now()): number {
  if (effectivePhase(ar, now) !== 'Approved') return 0;
  const stamp = stampOf(ar)!;
  return stamp.decidedAt.getTime() + validForSeconds(ar) * 1000;
}

/** What a sidecar gets back about one request. */
export interface ApprovalView {
  namespace: string;
  name: string;
  phase: ApprovalPhase;
  withdrawn: boolean;
  expiresAt: string;
  decidedBy?: string;
  decidedAt?: string;
  reason?: string;
}

export function viewOf(ar: ApprovalRequest, now = Date.now()): ApprovalView {
  const stamp = stampOf(ar);
  const v: ApprovalView = {
    namespace: ar.metadata.namespace ?? '',
    name: ar.metadata.name,
    phase: effectivePhase(ar, now),
    withdrawn: isWithdrawn(ar),
    expiresAt: ar.spec.expiresAt,
  };
  if (stamp) {
    v.decidedBy = stamp.decidedBy;
    v.decidedAt = stamp.decidedAt.toISOString();
  }
  if (ar.spec.reason) v.reason = ar.spec.reason;
  return v;
}

/** The commands a person runs to decide, for notices, notifications and Events. */
export function approveCommand(namespace: string, name: string): string {
  return `kubectl dbguard approve ${name} -n ${namespace} --reason "..."`;
}

export function denyCommand(namespace: string, name: string): string {
  return `kubectl dbguard deny ${name} -n ${namespace} --reason "..."`;
}

/** `5m`, `1h30m`, `45s`: for people. */
export function formatSeconds(total: number): string {
  const s = Math.max(0, Math.round(total));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  return `${h ? `${h}h` : ''}${m ? `${m}m` : ''}${r || (!h && !m) ? `${r}s` : ''}`;
}
