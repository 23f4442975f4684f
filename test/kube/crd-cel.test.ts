/**
 * The generated CRDs (crds/) on a real kube-apiserver: every `x-kubernetes-validations` CEL rule is
 * exercised with a resource that violates it and one that passes, and the API server's own answer (422,
 * the cause's field, reason and message) is checked. The fake API in test/support/kube-api evaluates no
 * CEL, so this is the only place these rules are tested as Kubernetes runs them.
 *
 * The last test reads every rule from the CRD files and fails when one has no case here.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyCrds, crdsFromFiles, type KubeTestenv, startKubeTestenv } from '../support/kube-testenv.js';

const NS = 'cel';
const GV = 'dbguard.io/v1alpha1';

interface FoundRule {
  kind: string;
  path: string;
  rule: string;
}

/** Every rule of every version's schema, with the schema path it sits on (`[]` for array items). */
function rulesOf(crds: Record<string, any>[]): FoundRule[] {
  const out: FoundRule[] = [];
  const walk = (s: any, p: string, kind: string) => {
    if (!s || typeof s !== 'object') return;
    for (const v of s['x-kubernetes-validations'] ?? []) out.push({ kind, path: p, rule: v.rule });
    for (const [k, c] of Object.entries(s.properties ?? {})) walk(c, `${p}.${k}`, kind);
    if (s.items) walk(s.items, `${p}[]`, kind);
  };
  for (const c of crds)
    for (const v of c.spec.versions) walk(v.schema.openAPIV3Schema, '', c.spec.names.kind);
  return out;
}

const policy = (name: string, rules: unknown[]) => ({
  apiVersion: GV,
  kind: 'DatabasePolicy',
  metadata: { name, namespace: NS },
  spec: { upstream: { host: 'db.cel.svc' }, defaultAction: 'Allow', rules },
});
const masking = (name: string, spec: Record<string, unknown>) => ({
  apiVersion: GV,
  kind: 'MaskingRule',
  metadata: { name, namespace: NS },
  spec: { policyRef: { name: 'orders' }, ...spec },
});
const column = (c: Record<string, unknown>) => ({ table: 'customers', column: 'ssn', ...c });
const approval = (name: string) => ({
  apiVersion: GV,
  kind: 'ApprovalRequest',
  metadata: { name, namespace: NS },
  spec: {
    policyRef: { name: 'orders' },
    rule: 'approve-deletes',
    subject: { serviceAccount: 'cel:app', databaseUser: 'app' },
    database: 'orders',
    statement: 'DELETE FROM orders',
    fingerprint: 'abc123',
    expiresAt: '2030-01-01T00:00:00Z',
  },
});

/** A create case: `bad` is refused with `field`/`reason`, `good` (the same shape, fixed) is accepted. */
interface CreateCase {
  kind: string;
  path: string;
  rule: string;
  bad: Record<string, any>;
  good: Record<string, any>;
  field: string;
  reason: string;
  message: string;
}
/** An update case (transition rules, `oldSelf`): `change` is applied to a created ApprovalRequest. */
interface UpdateCase {
  kind: string;
  path: string;
  rule: string;
  /** set before the change (e.g. a decision already made) */
  before?: (spec: any) => void;
  bad: (spec: any) => void;
  good: (spec: any) => void;
  field: string;
  reason: string;
  message: string;
}

const SA_ONLY = "self.kind == 'ServiceAccount' || !has(self.namespace)";
const NS_MSG = 'namespace is only allowed for kind ServiceAccount';
const IMMUTABLE = 'is immutable: an approval is for exactly the request that was made';

const createCases: CreateCase[] = [
  {
    kind: 'DatabasePolicy',
    path: '.spec.rules',
    rule: 'self.all(r, self.exists_one(s, s.name == r.name))',
    bad: policy('dup', [
      { name: 'a', action: 'Deny', match: { commands: ['DROP *'] } },
      { name: 'a', action: 'Allow', match: { commands: ['SELECT'] } },
    ]),
    good: policy('dup', [
      { name: 'a', action: 'Deny', match: { commands: ['DROP *'] } },
      { name: 'b', action: 'Allow', match: { commands: ['SELECT'] } },
    ]),
    field: 'spec.rules',
    reason: 'FieldValueInvalid',
    message: 'rule names must be unique within a policy',
  },
  {
    kind: 'DatabasePolicy',
    path: '.spec.rules[]',
    rule: "self.action == 'RequireApproval' || !has(self.approval)",
    bad: policy('appr', [
      { name: 'a', action: 'Deny', match: { commands: ['DELETE'] }, approval: { mode: 'Wait' } },
    ]),
    good: policy('appr', [
      { name: 'a', action: 'RequireApproval', match: { commands: ['DELETE'] }, approval: { mode: 'Wait' } },
    ]),
    field: 'spec.rules[0].approval',
    reason: 'FieldValueForbidden',
    message: 'approval is only allowed with action RequireApproval',
  },
  {
    kind: 'DatabasePolicy',
    path: '.spec.rules[].match.subjects[]',
    rule: SA_ONLY,
    bad: policy('subj', [
      { name: 'a', action: 'Deny', match: { subjects: [{ kind: 'User', name: 'bob', namespace: 'cel' }] } },
    ]),
    good: policy('subj', [
      {
        name: 'a',
        action: 'Deny',
        match: { subjects: [{ kind: 'ServiceAccount', name: 'bob', namespace: 'cel' }] },
      },
    ]),
    field: 'spec.rules[0].match.subjects[0].namespace',
    reason: 'FieldValueForbidden',
    message: NS_MSG,
  },
  ...(
    [
      ['Partial', { partial: { keepLast: 4 } }, 'partial'],
      ['Hash', { hash: { saltSecretRef: { name: 'salt', key: 'k' } } }, 'hash'],
      ['Constant', { constant: { value: 'x' } }, 'constant'],
      ['Generalize', { generalize: { step: 10 } }, 'generalize'],
    ] as const
  ).map(
    ([strategy, extra, field]): CreateCase => ({
      kind: 'MaskingRule',
      path: '.spec.columns[]',
      rule: `self.strategy == '${strategy}' || !has(self.${field})`,
      bad: masking(`only-${field}`, { columns: [column({ strategy: 'Redact', ...extra })] }),
      good: masking(`only-${field}`, { columns: [column({ strategy, ...extra })] }),
      field: `spec.columns[0].${field}`,
      reason: 'FieldValueForbidden',
      message: `${field} is only allowed with strategy ${strategy}`,
    }),
  ),
  ...(
    [
      [
        'Constant',
        { constant: { value: 'x' } },
        'constant',
        'constant.value is required for strategy Constant',
      ],
      [
        'Hash',
        { hash: { saltSecretRef: { name: 'salt', key: 'k' } } },
        'hash',
        'hash.saltSecretRef is required for strategy Hash',
      ],
      [
        'Generalize',
        { generalize: { unit: 'year' } },
        'generalize',
        'generalize.unit or generalize.step is required for strategy Generalize',
      ],
    ] as const
  ).map(
    ([strategy, extra, field, message]): CreateCase => ({
      kind: 'MaskingRule',
      path: '.spec.columns[]',
      rule: `self.strategy != '${strategy}' || has(self.${field})`,
      bad: masking(`needs-${field}`, { columns: [column({ strategy })] }),
      good: masking(`needs-${field}`, { columns: [column({ strategy, ...extra })] }),
      field: `spec.columns[0].${field}`,
      reason: 'FieldValueRequired',
      message,
    }),
  ),
  {
    kind: 'MaskingRule',
    path: '.spec.columns[].generalize',
    rule: 'has(self.unit) != has(self.step)',
    bad: masking('gen', {
      columns: [column({ strategy: 'Generalize', generalize: { unit: 'year', step: 5 } })],
    }),
    good: masking('gen', { columns: [column({ strategy: 'Generalize', generalize: { step: 5 } })] }),
    field: 'spec.columns[0].generalize',
    reason: 'FieldValueInvalid',
    message: 'give exactly one of unit (for dates and timestamps) or step (for numbers)',
  },
  {
    kind: 'MaskingRule',
    path: '.spec.exemptSubjects[]',
    rule: SA_ONLY,
    bad: masking('exempt', {
      columns: [column({ strategy: 'Redact' })],
      exemptSubjects: [{ kind: 'Group', name: 'dba', namespace: 'cel' }],
    }),
    good: masking('exempt', {
      columns: [column({ strategy: 'Redact' })],
      exemptSubjects: [{ kind: 'Group', name: 'dba' }],
    }),
    field: 'spec.exemptSubjects[0].namespace',
    reason: 'FieldValueForbidden',
    message: NS_MSG,
  },
];

const immutable = (field: string, change: (spec: any) => void): UpdateCase => ({
  kind: 'ApprovalRequest',
  path: `.spec.${field}`,
  rule: 'self == oldSelf',
  bad: change,
  // the same value again, with a decision made in the same write: allowed
  good: (s) => {
    s.decision = 'Approved';
  },
  field: `spec.${field}`,
  reason: 'FieldValueInvalid',
  message: IMMUTABLE,
});

const updateCases: UpdateCase[] = [
  {
    kind: 'ApprovalRequest',
    path: '.spec',
    rule: '!has(oldSelf.decision) || (has(self.decision) && self.decision == oldSelf.decision)',
    before: (s) => {
      s.decision = 'Denied';
    },
    bad: (s) => {
      s.decision = 'Approved';
    },
    good: (s) => {
      s.reason = 'still denied, with a reason';
    },
    field: 'spec.decision',
    reason: 'FieldValueForbidden',
    message: 'decision can be set once and then neither changed nor removed',
  },
  immutable('policyRef', (s) => {
    s.policyRef.name = 'other';
  }),
  immutable('rule', (s) => {
    s.rule = 'other-rule';
  }),
  immutable('subject', (s) => {
    s.subject.databaseUser = 'admin';
  }),
  immutable('database', (s) => {
    s.database = 'other';
  }),
  immutable('statement', (s) => {
    s.statement = 'DELETE FROM customers';
  }),
  immutable('fingerprint', (s) => {
    s.fingerprint = 'def456';
  }),
  immutable('expiresAt', (s) => {
    s.expiresAt = '2031-01-01T00:00:00Z';
  }),
];

/** The 422 Status's cause for `field`, failing with the whole answer when it is not one. */
function causeFor(res: { status: number; body: any }, field: string) {
  expect(res.status, JSON.stringify(res.body)).toBe(422);
  expect(res.body.reason).toBe('Invalid');
  const cause = (res.body.details?.causes ?? []).find((c: any) => c.field === field);
  expect(cause, JSON.stringify(res.body.details)).toBeDefined();
  return cause;
}

describe('CRD CEL validation on a real kube-apiserver', () => {
  let env: KubeTestenv;

  beforeAll(async () => {
    env = await startKubeTestenv();
    await applyCrds(env);
    await env.apply([{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } }]);
  }, 180_000);

  afterAll(async () => {
    await env?.close();
  });

  const create = (o: Record<string, any>) =>
    env.request('POST', env.pathOf(o.apiVersion, o.kind, o.metadata.namespace), o);

  for (const c of createCases) {
    it(`${c.kind} ${c.path}: ${c.rule}`, async () => {
      const bad = await create(c.bad);
      const cause = causeFor(bad, c.field);
      expect(cause.reason).toBe(c.reason);
      expect(cause.message).toContain(c.message);
      expect(bad.body.message).toContain(c.message);
      const good = await create(c.good);
      expect(good.status, JSON.stringify(good.body)).toBe(201);
    });
  }

  let n = 0;
  for (const c of updateCases) {
    it(`${c.kind} ${c.path}: ${c.rule} (update)`, async () => {
      const name = `req-${++n}`;
      const created = await create(approval(name));
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      const p = env.pathOf(GV, 'ApprovalRequest', NS, name);
      let current = created.body;
      if (c.before) {
        c.before(current.spec);
        const r = await env.request('PUT', p, current);
        expect(r.status, JSON.stringify(r.body)).toBe(200);
        current = r.body;
      }
      const bad = structuredClone(current);
      c.bad(bad.spec);
      const refused = await env.request('PUT', p, bad);
      const cause = causeFor(refused, c.field);
      expect(cause.reason).toBe(c.reason);
      expect(cause.message).toContain(c.message);
      const good = structuredClone(current);
      c.good(good.spec);
      const accepted = await env.request('PUT', p, good);
      expect(accepted.status, JSON.stringify(accepted.body)).toBe(200);
    });
  }

  it('has a violating and a passing case for every x-kubernetes-validations rule in crds/', () => {
    const key = (r: { kind: string; path: string; rule: string }) => `${r.kind} ${r.path} ${r.rule}`;
    const covered = new Set([...createCases, ...updateCases].map(key));
    const found = rulesOf(crdsFromFiles()).map(key);
    expect(found.length).toBeGreaterThan(0);
    expect(found.filter((k) => !covered.has(k))).toEqual([]);
    expect([...covered].filter((k) => !found.includes(k))).toEqual([]);
  });
});
