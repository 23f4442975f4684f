/**
 * Admission for ApprovalRequests: separation of duties, enforced by the API server on every write.
 *
 * Mutating (`/approvals/mutate`, CREATE and UPDATE): stamps who decided. When an update sets
 * `spec.decision` for the first time, `dbguard.io/decided-by` becomes the admission request's user and
 * `dbguard.io/decided-at` the time; on every other write these annotations (and the operator's own
 * ones) are put back to what they were, so nobody can write them by hand.
 *
 * Validating (`/approvals/validate`, CREATE and UPDATE) refuses:
 * - a decision by the requester (its ServiceAccount or its token user, compared in canonical form: the
 *   cluster's OIDC username prefixes removed, case folded; model.ts canonicalUsername);
 * - any change of the decision or reason once decided, and changes of the fields the operator set;
 * - a decision on a request that is expired, withdrawn or otherwise no longer Pending;
 * - a decision without the stamp (the mutating webhook did not run) or with a stamp of another user;
 * - a request created with a decision or a stamp already in it.
 * Who may decide at all is RBAC (`update`/`patch` on `approvalrequests`); this only adds what RBAC cannot say.
 */
import { isDeepStrictEqual } from 'node:util';
import express from 'express';
import type { ApprovalRequest } from '../../api/types.js';
import {
  DECIDED_AT_ANNOTATION,
  DECIDED_BY_ANNOTATION,
  DEFAULT_OIDC_USERNAME_PREFIXES,
  effectivePhase,
  expiresAtOf,
  isRequester,
  isWithdrawn,
  PROTECTED_ANNOTATIONS,
} from './model.js';

export const APPROVAL_MUTATE_PATH = '/approvals/mutate';
export const APPROVAL_VALIDATE_PATH = '/approvals/validate';

/** a stamp must be this fresh when it is checked (the mutating webhook wrote it moments ago) */
const STAMP_SKEW_MS = 5 * 60_000;

export interface ApprovalAdmissionRequest {
  uid: string;
  operation?: string;
  subResource?: string;
  userInfo?: { username?: string; groups?: string[] };
  object?: ApprovalRequest | null;
  oldObject?: ApprovalRequest | null;
  dryRun?: boolean;
}

export interface ApprovalAdmissionResponse {
  uid: string;
  allowed: boolean;
  status?: { code: number; reason: string; message: string };
  patchType?: 'JSONPatch';
  patch?: string;
}

const IMMUTABLE_SPEC = [
  'policyRef',
  'rule',
  'subject',
  'database',
  'statement',
  'fingerprint',
  'expiresAt',
] as const;

function deny(uid: string, message: string, code = 403): ApprovalAdmissionResponse {
  return {
    uid,
    allowed: false,
    status: { code, reason: code === 403 ? 'Forbidden' : 'Invalid', message: `dbguard: ${message}` },
  };
}

function protectedOf(ar: ApprovalRequest | null | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of PROTECTED_ANNOTATIONS) {
    const v = ar?.metadata?.annotations?.[k];
    if (v !== undefined) out[k] = v;
  }
  return out;
}

function escapePointer(s: string): string {
  return s.replace(/~/g, '~0').replace(/\//g, '~1');
}

/** The protected annotations the stored object must carry after this write. */
function wantedAnnotations(r: ApprovalAdmissionRequest, now: Date): Record<string, string> | undefined {
  const obj = r.object;
  const old = r.oldObject;
  if (r.operation === 'CREATE') {
    // the operator sets mode and valid-for when it creates; a stamp never comes with a create
    const keep = protectedOf(obj);
    delete keep[DECIDED_BY_ANNOTATION];
    delete keep[DECIDED_AT_ANNOTATION];
    return keep;
  }
  if (r.operation !== 'UPDATE' || !old) return undefined;
  const want = protectedOf(old);
  if (!old.spec?.decision && obj?.spec?.decision) {
    want[DECIDED_BY_ANNOTATION] = r.userInfo?.username ?? '';
    want[DECIDED_AT_ANNOTATION] = now.toISOString();
  }
  return want;
}

/** Mutating: a JSONPatch that makes the protected annotations exactly `wantedAnnotations`. */
export function mutateApproval(r: ApprovalAdmissionRequest, now = new Date()): ApprovalAdmissionResponse {
  const uid = r.uid;
  if (r.subResource || !r.object) return { uid, allowed: true };
  const want = wantedAnnotations(r, now);
  if (!want) return { uid, allowed: true };
  const have = r.object.metadata?.annotations;
  const ops: unknown[] = [];
  if (!have) {
    if (Object.keys(want).length) ops.push({ op: 'add', path: '/metadata/annotations', value: want });
  } else {
    for (const k of PROTECTED_ANNOTATIONS) {
      const path = `/metadata/annotations/${escapePointer(k)}`;
      if (k in want && have[k] !== want[k])
        ops.push({ op: k in have ? 'replace' : 'add', path, value: want[k] });
      if (!(k in want) && k in have) ops.push({ op: 'remove', path });
    }
  }
  if (!ops.length) return { uid, allowed: true };
  return {
    uid,
    allowed: true,
    patchType: 'JSONPatch',
    patch: Buffer.from(JSON.stringify(ops)).toString('base64'),
  };
}

/** Validating: the rules in the module comment. */
export interface ApprovalAdmissionOptions {
  /** the cluster's OIDC username prefixes, for the requester comparison (model.ts canonicalUsername) */
  usernamePrefixes?: readonly string[];
}

export function validateApproval(
  r: ApprovalAdmissionRequest,
  now = new Date(),
  opts: ApprovalAdmissionOptions = {},
): ApprovalAdmissionResponse {
  const uid = r.uid;
  // status is the operator's (and a status write can never approve: see model.ts effectivePhase)
  if (r.subResource) return { uid, allowed: true };
  const obj = r.object;
  const user = r.userInfo?.username ?? '';
  if (r.operation === 'CREATE') {
    if (!obj) return { uid, allowed: true };
    if (obj.spec?.decision) return deny(uid, 'an approval request cannot be created already decided');
    if (
      obj.metadata?.annotations?.[DECIDED_BY_ANNOTATION] ||
      obj.metadata?.annotations?.[DECIDED_AT_ANNOTATION]
    )
      return deny(
        uid,
        `${DECIDED_BY_ANNOTATION} and ${DECIDED_AT_ANNOTATION} are recorded by dbguard, not set by hand`,
      );
    return { uid, allowed: true };
  }
  if (r.operation !== 'UPDATE' || !obj || !r.oldObject) return { uid, allowed: true };
  const old = r.oldObject;
  const name = `${old.metadata?.namespace}/${old.metadata?.name}`;
  for (const f of IMMUTABLE_SPEC) {
    if (!isDeepStrictEqual(old.spec?.[f], obj.spec?.[f]))
      return deny(uid, `spec.${f} of ${name} cannot be changed`, 422);
  }
  const oldDecision = old.spec?.decision;
  const newDecision = obj.spec?.decision;
  if (oldDecision) {
    if (newDecision !== oldDecision || (obj.spec?.reason ?? '') !== (old.spec?.reason ?? ''))
      return deny(
        uid,
        `${name} was already ${oldDecision.toLowerCase()} by ${old.metadata?.annotations?.[DECIDED_BY_ANNOTATION] ?? 'someone'}; a decision is final`,
      );
  }
  const wantProtected = protectedOf(old);
  if (!oldDecision && newDecision) {
    if (isRequester(user, old.spec?.subject ?? {}, opts.usernamePrefixes ?? DEFAULT_OIDC_USERNAME_PREFIXES))
      return deny(uid, `${user} asked for ${name} and cannot decide its own request (separation of duties)`);
    if (isWithdrawn(old)) return deny(uid, `${name} was withdrawn: the client cancelled or disconnected`);
    const phase = effectivePhase(old, now.getTime());
    if (phase !== 'Pending') return deny(uid, `${name} is ${phase}, no longer open for a decision`);
    if (now.getTime() >= expiresAtOf(old)) return deny(uid, `${name} expired at ${old.spec?.expiresAt}`);
    const by = obj.metadata?.annotations?.[DECIDED_BY_ANNOTATION];
    const at = Date.parse(obj.metadata?.annotations?.[DECIDED_AT_ANNOTATION] ?? '');
    if (!by || !Number.isFinite(at))
      return deny(
        uid,
        `the decision on ${name} was not recorded (is dbguard's mutating webhook for approvalrequests installed?)`,
      );
    if (by !== user || Math.abs(at - now.getTime()) > STAMP_SKEW_MS)
      return deny(uid, `${DECIDED_BY_ANNOTATION} must be the deciding user, recorded by dbguard`);
    wantProtected[DECIDED_BY_ANNOTATION] = by;
    wantProtected[DECIDED_AT_ANNOTATION] = obj.metadata!.annotations![DECIDED_AT_ANNOTATION]!;
  }
  if (!isDeepStrictEqual(protectedOf(obj), wantProtected))
    return deny(uid, `the annotations ${PROTECTED_ANNOTATIONS.join(', ')} are managed by dbguard`);
  return { uid, allowed: true };
}

/** Express router with both webhooks. */
export function approvalWebhookRouter(
  log?: (f: Record<string, unknown>) => void,
  opts: ApprovalAdmissionOptions = {},
): express.Router {
  const router = express.Router();
  const serve =
    (fn: (r: ApprovalAdmissionRequest) => ApprovalAdmissionResponse) =>
    (req: express.Request, res: express.Response) => {
      const review = req.body as
        | { apiVersion?: string; kind?: string; request?: ApprovalAdmissionRequest }
        | undefined;
      if (review?.kind !== 'AdmissionReview' || !review.request || typeof review.request.uid !== 'string') {
        res.status(400).json({ error: 'expected an AdmissionReview (admission.k8s.io/v1) with request.uid' });
        return;
      }
      let response: ApprovalAdmissionResponse;
      try {
        response = fn(review.request);
      } catch (err) {
        log?.({ msg: 'approval admission failed', error: String((err as Error)?.stack ?? err) });
        response = deny(review.request.uid, `internal error: ${(err as Error)?.message ?? err}`, 500);
      }
      if (!response.allowed)
        log?.({
          msg: 'approval write refused',
          user: review.request.userInfo?.username,
          reason: response.status?.message,
        });
      res.json({ apiVersion: review.apiVersion ?? 'admission.k8s.io/v1', kind: 'AdmissionReview', response });
    };
  router.post(
    APPROVAL_MUTATE_PATH,
    express.json({ limit: '4mb' }),
    serve((r) => mutateApproval(r)),
  );
  router.post(
    APPROVAL_VALIDATE_PATH,
    express.json({ limit: '4mb' }),
    serve((r) => validateApproval(r, new Date(), opts)),
  );
  return router;
}
