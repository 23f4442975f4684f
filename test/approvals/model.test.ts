/**
 * The pure rules of approvals: which phase counts (a status write can never approve), the admission
 * decisions on each kind of write, Reject-mode validity, names, and notification bodies.
 */
import { describe, expect, it } from 'vitest';
import type { ApprovalRequest } from '../../api/types.js';
import {
  approvalName,
  DECIDED_AT_ANNOTATION,
  DECIDED_BY_ANNOTATION,
  desiredStatus,
  effectivePhase,
  mutateApproval,
  slackMessage,
  subjectKey,
  VALID_FOR_ANNOTATION,
  validateApproval,
  validUntil,
  viewOf,
} from '../../operator/approvals/index.js';

const T0 = Date.parse('2026-11-29T10:00:00Z');

function ar(
  over: {
    spec?: Partial<ApprovalRequest['spec']>;
    annotations?: Record<string, string>;
    status?: ApprovalRequest['status'];
  } = {},
): ApprovalRequest {
  return {
    apiVersion: 'dbguard.io/v1alpha1',
    kind: 'ApprovalRequest',
    metadata: {
      name: 'orders-7f3c2a',
      namespace: 'shop',
      annotations: { [VALID_FOR_ANNOTATION]: '3600', ...over.annotations },
    },
    spec: {
      policyRef: { name: 'orders' },
      rule: 'bulk-deletes',
      subject: {
        serviceAccount: 'shop/checkout',
        pod: 'checkout-1',
        user: 'carol@example.com',
        groups: ['dev'],
        databaseUser: 'app',
      },
      database: 'orders',
      statement: 'DELETE FROM orders WHERE created_at < $1',
      fingerprint: 'a1b2c3',
      expiresAt: new Date(T0 + 300_000).toISOString(),
      ...over.spec,
    },
    ...(over.status ? { status: over.status } : {}),
  };
}

const stamped = (decision: 'Approved' | 'Denied', by = 'alice', at = T0 + 1000) =>
  ar({
    spec: { decision },
    annotations: { [DECIDED_BY_ANNOTATION]: by, [DECIDED_AT_ANNOTATION]: new Date(at).toISOString() },
  });

const patchOf = (r: ReturnType<typeof mutateApproval>) =>
  r.patch ? JSON.parse(Buffer.from(r.patch, 'base64').toString()) : [];

describe('effective phase', () => {
  it('needs the stamp for a decision; status may only make it stricter', () => {
    expect(effectivePhase(ar(), T0)).toBe('Pending');
    expect(effectivePhase(ar({ spec: { decision: 'Approved' } }), T0)).toBe('Pending'); // no stamp: not approved
    expect(effectivePhase(ar({ status: { phase: 'Approved' } }), T0)).toBe('Pending'); // a status write cannot approve
    expect(effectivePhase(stamped('Approved'), T0 + 2000)).toBe('Approved');
    expect(effectivePhase({ ...stamped('Approved'), status: { phase: 'Denied' } }, T0)).toBe('Denied');
    expect(effectivePhase(stamped('Approved', 'alice', T0 + 400_000), T0 + 400_000)).toBe('Expired'); // decided too late
    expect(effectivePhase(ar(), T0 + 300_000)).toBe('Expired');
  });

  it('Reject-mode validity runs from the decision for validFor', () => {
    const a = stamped('Approved');
    expect(validUntil(a, T0 + 2000)).toBe(T0 + 1000 + 3600_000);
    expect(validUntil(stamped('Denied'), T0 + 2000)).toBe(0);
  });

  it('desired status mirrors the stamp and expiry, and is idempotent', () => {
    const s = desiredStatus(stamped('Denied'), T0 + 2000)!;
    expect(s).toMatchObject({
      phase: 'Denied',
      decidedBy: 'alice',
      decidedAt: new Date(T0 + 1000).toISOString(),
    });
    expect(desiredStatus({ ...stamped('Denied'), status: s }, T0 + 3000)).toBeUndefined();
    const e = desiredStatus(ar({ status: { phase: 'Pending' } }), T0 + 300_001)!;
    expect(e.phase).toBe('Expired');
    expect(e.conditions?.[0]).toMatchObject({ type: 'Expired', reason: 'Timeout' });
  });
});

describe('admission', () => {
  const update = (old: ApprovalRequest, obj: ApprovalRequest, username: string) => ({
    uid: 'u1',
    operation: 'UPDATE',
    userInfo: { username },
    oldObject: old,
    object: obj,
  });

  it('stamps a first decision with the admission user and time', () => {
    const now = new Date(T0 + 5000);
    const r = mutateApproval(update(ar(), ar({ spec: { decision: 'Approved' } }), 'alice'), now);
    const ops = patchOf(r);
    expect(ops).toContainEqual({
      op: 'add',
      path: '/metadata/annotations/dbguard.io~1decided-by',
      value: 'alice',
    });
    expect(ops).toContainEqual({
      op: 'add',
      path: '/metadata/annotations/dbguard.io~1decided-at',
      value: now.toISOString(),
    });
  });

  it('puts protected annotations back on other writes, and strips a stamp from a create', () => {
    const forged = ar({
      annotations: { [DECIDED_BY_ANNOTATION]: 'mallory', [VALID_FOR_ANNOTATION]: '999999' },
    });
    const ops = patchOf(mutateApproval(update(ar(), forged, 'mallory')));
    expect(ops).toContainEqual({ op: 'remove', path: '/metadata/annotations/dbguard.io~1decided-by' });
    expect(ops).toContainEqual({
      op: 'replace',
      path: '/metadata/annotations/dbguard.io~1valid-for-seconds',
      value: '3600',
    });
    const created = patchOf(mutateApproval({ uid: 'u', operation: 'CREATE', object: forged }));
    expect(created).toContainEqual({ op: 'remove', path: '/metadata/annotations/dbguard.io~1decided-by' });
  });

  it('refuses the requester, by ServiceAccount or by token user', () => {
    const now = new Date(T0 + 5000);
    for (const who of ['system:serviceaccount:shop:checkout', 'carol@example.com']) {
      const obj = stamped('Approved', who, now.getTime());
      const r = validateApproval(update(ar(), obj, who), now);
      expect(r.allowed).toBe(false);
      expect(r.status?.message).toMatch(/cannot decide its own request/);
    }
    const ok = validateApproval(update(ar(), stamped('Approved', 'alice', now.getTime()), 'alice'), now);
    expect(ok.allowed).toBe(true);
  });

  it('refuses the requester behind an OIDC username prefix or another case (issue 17)', () => {
    // The reproduction: carol asked through the gateway with her token (`carol@example.com`); the API
    // server knows her as `oidc:carol@example.com` (`--oidc-username-prefix=oidc:`).
    const now = new Date(T0 + 5000);
    const decide = (who: string, opts?: { usernamePrefixes?: string[] }, old = ar()) =>
      validateApproval(update(old, stamped('Approved', who, now.getTime()), who), now, opts);
    for (const who of ['oidc:carol@example.com', 'Carol@Example.COM', ' carol@example.com']) {
      expect(decide(who).allowed, who).toBe(false);
      expect(decide(who).status?.message).toMatch(/cannot decide its own request/);
    }
    // the cluster's own prefix, configured on the operator (`--oidc-username-prefix`)
    expect(decide('corp-sso:carol@example.com').allowed).toBe(true);
    expect(decide('corp-sso:carol@example.com', { usernamePrefixes: ['corp-sso:'] }).allowed).toBe(false);
    // the prefix on the requester's side: a token checked by TokenReview carries the Kubernetes username
    const viaReview = ar();
    viaReview.spec!.subject = { ...viaReview.spec!.subject, user: 'oidc:carol@example.com' };
    expect(decide('carol@example.com', undefined, viaReview).allowed).toBe(false);
    // somebody else is still somebody else
    expect(decide('oidc:alice@example.com').allowed).toBe(true);
  });

  it('refuses a stamp of another user, an unstamped decision, changes after a decision, expired and withdrawn requests', () => {
    const now = new Date(T0 + 5000);
    expect(
      validateApproval(update(ar(), stamped('Approved', 'bob', now.getTime()), 'alice'), now).allowed,
    ).toBe(false);
    expect(
      validateApproval(update(ar(), ar({ spec: { decision: 'Approved' } }), 'alice'), now).status?.message,
    ).toMatch(/not recorded/);
    const decided = stamped('Approved');
    const changed = { ...decided, spec: { ...decided.spec, decision: 'Denied' as const } };
    expect(validateApproval(update(decided, changed, 'bob'), now).status?.message).toMatch(
      /already approved by alice/,
    );
    const reason = { ...decided, spec: { ...decided.spec, reason: 'later' } };
    expect(validateApproval(update(decided, reason, 'alice'), now).allowed).toBe(false);
    const late = new Date(T0 + 300_001);
    expect(
      validateApproval(update(ar(), stamped('Approved', 'alice', late.getTime()), 'alice'), late).status
        ?.message,
    ).toMatch(/Expired|expired/);
    const withdrawn = ar({
      status: {
        phase: 'Expired',
        conditions: [{ type: 'Withdrawn', status: 'True', reason: 'ClientCancelled', message: '' }],
      },
    });
    expect(
      validateApproval(
        update(
          withdrawn,
          { ...stamped('Approved', 'alice', now.getTime()), status: withdrawn.status },
          'alice',
        ),
        now,
      ).status?.message,
    ).toMatch(/withdrawn/);
    const moved = ar({ spec: { statement: 'DELETE FROM orders' } });
    expect(validateApproval(update(ar(), moved, 'alice'), now).status?.message).toMatch(/spec.statement/);
  });

  it('refuses a request created already decided; lets status writes through', () => {
    expect(
      validateApproval({ uid: 'u', operation: 'CREATE', object: ar({ spec: { decision: 'Approved' } }) })
        .allowed,
    ).toBe(false);
    expect(validateApproval({ uid: 'u', operation: 'CREATE', object: ar() }).allowed).toBe(true);
    expect(
      validateApproval({
        uid: 'u',
        operation: 'UPDATE',
        subResource: 'status',
        object: ar(),
        oldObject: ar(),
      }).allowed,
    ).toBe(true);
  });
});

describe('names and notifications', () => {
  it('makes DNS-label names and pod-independent subject keys', () => {
    expect(approvalName('orders', '7f3c2a')).toBe('orders-7f3c2a');
    expect(approvalName('A'.repeat(80), 'abcdef')).toMatch(/^a{56}-abcdef$/);
    const s = { serviceAccount: 'shop/checkout', groups: ['b', 'a'], databaseUser: 'app' };
    expect(subjectKey({ ...s, pod: 'p1' })).toBe(subjectKey({ ...s, pod: 'p2', groups: ['a', 'b'] }));
    expect(subjectKey(s)).not.toBe(subjectKey({ ...s, databaseUser: 'other' }));
  });

  it('builds Slack-compatible bodies naming the request and how to decide', () => {
    const m = slackMessage('requested', ar(), viewOf(ar(), T0));
    expect(m.text).toContain('approval requested shop/orders-7f3c2a');
    expect(m.text).toContain('kubectl dbguard approve orders-7f3c2a -n shop');
    expect(m.blocks[1]!.text.text).toContain('DELETE FROM orders WHERE created_at < $1');
    const d = slackMessage('decided', stamped('Denied'), {
      ...viewOf(stamped('Denied'), T0 + 2000),
      reason: 'no',
    });
    expect(d.text).toContain('denied by alice (reason: no)');
  });
});
