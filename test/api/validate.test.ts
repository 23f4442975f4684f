import { describe, expect, it } from 'vitest';
import { type ValidateOptions, validateResource } from '../../api/validate.js';
import { contract, variant } from './fixtures.js';

function errorsOf(obj: unknown, opts?: ValidateOptions) {
  const r = validateResource(obj, opts);
  return r.ok ? [] : r.errors;
}

describe('validateResource: the contract examples', () => {
  it('accepts the DatabasePolicy, MaskingRule and ApprovalRequest of the contract', () => {
    const c = contract();
    for (const o of [c.policy, c.maskingRule, c.approvalRequest]) expect(errorsOf(o)).toEqual([]);
  });

  it('applies the schema defaults without touching the input', () => {
    const minimal = {
      apiVersion: 'dbguard.io/v1alpha1',
      kind: 'DatabasePolicy',
      metadata: { name: 'p' },
      spec: {
        upstream: { host: 'db' },
        rules: [{ name: 'hold', action: 'RequireApproval', approval: {} }],
      },
    };
    const before = structuredClone(minimal);
    const r = validateResource(minimal);
    expect(minimal).toEqual(before);
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    expect(r.resource.kind).toBe('DatabasePolicy');
    const spec = (r.resource as any).spec;
    expect(spec.upstream).toEqual({ host: 'db', port: 5432, sslmode: 'prefer' });
    expect(spec.defaultAction).toBe('Allow');
    expect(spec.audit).toEqual({ statements: 'All' });
    expect(spec.enforcement).toBe('Enforce');
    expect(spec.rules[0].approval).toEqual({ mode: 'Wait', timeout: '5m', validFor: '1h' });
  });
});

describe('validateResource: broken variants name the field and the problem', () => {
  const { policy, maskingRule, approvalRequest } = contract();

  const cases: { name: string; obj: unknown; path: string; message: RegExp }[] = [
    {
      name: 'duplicate rule names',
      obj: variant(policy, (p) => {
        p.spec.rules[1].name = 'no-destructive-ddl';
      }),
      path: 'spec.rules[1].name',
      message: /duplicate rule name "no-destructive-ddl" \(also rules\[0\]\)/,
    },
    {
      name: 'approval on a Deny rule',
      obj: variant(policy, (p) => {
        p.spec.rules[0].approval = { mode: 'Wait' };
      }),
      path: 'spec.rules[0].approval',
      message: /only allowed with action RequireApproval/,
    },
    {
      name: 'partial with strategy Email',
      obj: variant(maskingRule, (m) => {
        m.spec.columns[0].partial = { keepLast: 2 };
      }),
      path: 'spec.columns[0].partial',
      message: /partial is only allowed with strategy Partial/,
    },
    {
      name: 'Constant without a value',
      obj: variant(maskingRule, (m) => {
        delete m.spec.columns[6].constant;
      }),
      path: 'spec.columns[6].constant',
      message: /constant.value is required for strategy Constant/,
    },
    {
      name: 'a bad duration',
      obj: variant(policy, (p) => {
        p.spec.rules[1].approval.timeout = '5 minutes';
      }),
      path: 'spec.rules[1].approval.timeout',
      message: /must be a duration such as 30s, 5m or 1h30m \(got "5 minutes"\)/,
    },
    {
      name: 'an unknown strategy',
      obj: variant(maskingRule, (m) => {
        m.spec.columns[1].strategy = 'Scramble';
      }),
      path: 'spec.columns[1].strategy',
      message:
        /must be one of Redact, Nullify, Partial, Email, Hash, Constant, Generalize \(got "Scramble"\)/,
    },
    {
      name: 'a missing upstream.host',
      obj: variant(policy, (p) => {
        delete p.spec.upstream.host;
      }),
      path: 'spec.upstream.host',
      message: /is required/,
    },
    {
      name: 'a bad sslmode',
      obj: variant(policy, (p) => {
        p.spec.upstream.sslmode = 'verify';
      }),
      path: 'spec.upstream.sslmode',
      message: /must be one of disable, allow, prefer, require, verify-ca, verify-full \(got "verify"\)/,
    },
    {
      name: 'a namespace on a Group subject',
      obj: variant(policy, (p) => {
        p.spec.rules[0].match.subjects[0].namespace = 'shop';
      }),
      path: 'spec.rules[0].match.subjects[0].namespace',
      message: /only allowed for kind ServiceAccount/,
    },
    {
      name: 'a misspelt field (would silently widen a rule if pruned)',
      obj: variant(policy, (p) => {
        p.spec.rules[0].match.comands = p.spec.rules[0].match.commands;
        delete p.spec.rules[0].match.commands;
      }),
      path: 'spec.rules[0].match.comands',
      message: /unknown field/,
    },
    {
      name: 'a port that is a string',
      obj: variant(policy, (p) => {
        p.spec.upstream.port = '5432';
      }),
      path: 'spec.upstream.port',
      message: /must be an integer \(got string "5432"\)/,
    },
    {
      name: 'Hash without a salt',
      obj: variant(maskingRule, (m) => {
        delete m.spec.columns[5].hash;
      }),
      path: 'spec.columns[5].hash',
      message: /saltSecretRef .*required for strategy Hash/,
    },
    {
      name: 'Generalize with both unit and step',
      obj: variant(maskingRule, (m) => {
        m.spec.columns[4].generalize.step = 10;
      }),
      path: 'spec.columns[4].generalize',
      message: /exactly one of unit .* or step/,
    },
    {
      name: 'a bad Secret name',
      obj: variant(maskingRule, (m) => {
        m.spec.columns[5].hash.saltSecretRef.name = 'PII_Salt';
      }),
      path: 'spec.columns[5].hash.saltSecretRef.name',
      message: /DNS-1123 subdomain/,
    },
    {
      name: 'an unknown subject kind',
      obj: variant(maskingRule, (m) => {
        m.spec.exemptSubjects[0].kind = 'Team';
      }),
      path: 'spec.exemptSubjects[0].kind',
      message: /must be one of ServiceAccount, User, Group, DatabaseUser/,
    },
    {
      name: 'a bad expiresAt',
      obj: variant(approvalRequest, (a) => {
        a.spec.expiresAt = 'tomorrow';
      }),
      path: 'spec.expiresAt',
      message: /RFC 3339/,
    },
    {
      name: 'a wrong apiVersion',
      obj: variant(policy, (p) => {
        p.apiVersion = 'dbguard.io/v1';
      }),
      path: 'apiVersion',
      message: /must be "dbguard.io\/v1alpha1"/,
    },
  ];

  it.each(cases)('$name', ({ obj, path, message }) => {
    const errors = errorsOf(obj);
    expect(errors.length, JSON.stringify(errors)).toBeGreaterThan(0);
    const hit = errors.find((e) => e.path === path);
    expect(hit, `no error at ${path}: ${JSON.stringify(errors)}`).toBeDefined();
    expect(hit!.message).toMatch(message);
  });

  it('reports every problem, not only the first', () => {
    const bad = variant(policy, (p) => {
      p.spec.upstream.sslmode = 'verify';
      p.spec.rules[0].approval = {};
      delete p.spec.upstream.host;
    });
    expect(
      errorsOf(bad)
        .map((e) => e.path)
        .sort(),
    ).toEqual(['spec.rules[0].approval', 'spec.upstream.host', 'spec.upstream.sslmode'].sort());
  });

  it('answers non-objects and unknown kinds with an error, not a crash', () => {
    expect(errorsOf(null)[0]!.message).toMatch(/must be an object/);
    expect(errorsOf([1])[0]!.message).toMatch(/must be an object \(got a list\)/);
    expect(errorsOf({ kind: 'Deployment' })[0]).toEqual({
      path: 'kind',
      message: 'must be one of DatabasePolicy, MaskingRule, ApprovalRequest (got "Deployment")',
    });
    expect(errorsOf(variant(policy, (p) => (p.spec.rules = 'all'))).map((e) => e.path)).toEqual([
      'spec.rules',
    ]);
  });
});

describe('ApprovalRequest transition rules (update with the old object)', () => {
  const { approvalRequest } = contract();
  const undecided = variant(approvalRequest, (a) => {
    delete a.spec.decision;
    delete a.spec.reason;
  });

  it('lets decision go from unset to a value', () => {
    expect(errorsOf(approvalRequest, { oldObject: undecided })).toEqual([]);
  });

  it('refuses to change or remove a decision once set', () => {
    const flipped = variant(approvalRequest, (a) => (a.spec.decision = 'Denied'));
    expect(errorsOf(flipped, { oldObject: approvalRequest })).toEqual([
      { path: 'spec.decision', message: 'decision can be set once and then neither changed nor removed' },
    ]);
    expect(errorsOf(undecided, { oldObject: approvalRequest }).map((e) => e.path)).toEqual(['spec.decision']);
  });

  it('refuses to change what is being approved', () => {
    const swapped = variant(approvalRequest, (a) => (a.spec.statement = 'DELETE FROM orders'));
    expect(errorsOf(swapped, { oldObject: approvalRequest })).toEqual([
      { path: 'spec.statement', message: expect.stringMatching(/is immutable/) },
    ]);
  });

  it('does not apply transition rules on create', () => {
    expect(errorsOf(variant(approvalRequest, (a) => (a.spec.decision = 'Denied')))).toEqual([]);
  });
});
