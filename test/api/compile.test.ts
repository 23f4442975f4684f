import { describe, expect, it } from 'vitest';
import type { DatabasePolicy, MaskingRule, PolicyFileResource } from '../../api/types.js';
import { canonicalJson, policyVersion } from '../../api/version.js';
import { compilePolicy, type SecretLookup, selectPolicy } from '../../policy/compile.js';
import { parsePolicyDocuments } from '../../policy/load.js';
import { CONTRACT_YAML, contract, contractYamlWith, variant } from './fixtures.js';

const CA = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
const SECRETS: Record<string, Record<string, string>> = {
  'pii-salt': { salt: 's3cret-salt' },
  'orders-db-ca': { 'ca.crt': CA },
  'orders-db-app': { username: 'app', password: 'app-password' },
};
const lookup: SecretLookup = (name, key) => SECRETS[name]?.[key];

function compiled(policy: DatabasePolicy, rules: MaskingRule[], secrets: SecretLookup = lookup) {
  const r = compilePolicy(policy, rules, secrets);
  if (!r.ok) throw new Error(`expected to compile: ${JSON.stringify(r.errors, null, 2)}`);
  return r.compiled;
}

function errors(policy: DatabasePolicy, rules: MaskingRule[], secrets: SecretLookup = lookup) {
  const r = compilePolicy(policy, rules, secrets);
  if (r.ok) throw new Error('expected errors');
  return r.errors;
}

describe('compilePolicy: the contract examples', () => {
  const { policy, maskingRule } = contract();

  it('compiles to the expected policy', () => {
    const c = compiled(policy, [maskingRule]);
    expect(c.version).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect({ ...c, version: undefined }).toEqual({
      format: 'dbguard.io/compiled-policy/v2',
      policy: 'shop/orders',
      version: undefined,
      upstream: {
        host: 'orders-db.shop.svc.cluster.local',
        port: 5432,
        sslmode: 'prefer',
        caPem: CA,
        // the Secret's name only: the lookup knows the password, the compiled policy never carries it
        credentialsSecret: 'orders-db-app',
      },
      defaultAction: 'Allow',
      rules: [
        {
          name: 'no-destructive-ddl',
          action: 'Deny',
          match: {
            commands: ['DROP *', 'TRUNCATE TABLE', 'ALTER *'],
            objects: ['public.*'],
            withoutWhere: true,
            subjects: [{ kind: 'Group', name: 'developers' }],
          },
          message: 'Schema changes go through migrations.',
        },
        {
          name: 'bulk-deletes',
          action: 'RequireApproval',
          match: {
            commands: ['DELETE'],
            subjects: [{ kind: 'ServiceAccount', name: 'checkout', namespace: 'shop' }],
          },
          approval: { mode: 'Wait', timeoutSeconds: 300, validForSeconds: 3600 },
        },
      ],
      functionsAllow: ['public.order_total'],
      audit: { statements: 'All' },
      enforcement: 'Enforce',
      masking: [
        {
          name: 'shop/customer-pii',
          exemptSubjects: [{ kind: 'Group', name: 'pii-readers' }],
          columns: [
            {
              schema: 'public',
              table: 'customers',
              column: 'birth_date',
              strategy: 'Generalize',
              generalize: { unit: 'year' },
            },
            {
              schema: 'public',
              table: 'customers',
              column: 'card_number',
              strategy: 'Partial',
              partial: { keepFirst: 0, keepLast: 4, maskChar: '*' },
            },
            {
              schema: 'public',
              table: 'customers',
              column: 'country',
              strategy: 'Constant',
              constant: { value: 'XX' },
            },
            {
              schema: 'public',
              table: 'customers',
              column: 'customer_ref',
              strategy: 'Hash',
              // the key's id, never the key: the key is installed in the database (dbguard db install)
              hash: { keyId: 'shop/pii-salt/salt' },
            },
            { schema: 'public', table: 'customers', column: 'email', strategy: 'Email' },
            { schema: 'public', table: 'customers', column: 'salary', strategy: 'Nullify' },
            { schema: 'public', table: 'customers', column: 'ssn', strategy: 'Redact' },
          ],
        },
      ],
    });
  });

  it('carries the version of its own canonical form', () => {
    const c = compiled(policy, [maskingRule]);
    expect(policyVersion(c)).toBe(c.version);
  });

  it('ignores MaskingRules of other policies and namespaces', () => {
    const other = variant(maskingRule, (m) => (m.spec.policyRef.name = 'billing'));
    const elsewhere = variant(maskingRule, (m) => (m.metadata.namespace = 'staging'));
    expect(compiled(policy, [maskingRule, other, elsewhere]).masking.map((m) => m.name)).toEqual([
      'shop/customer-pii',
    ]);
  });

  it('applies defaults to a minimal policy and leaves out credentials it cannot see (operator mode)', () => {
    const minimal = {
      apiVersion: 'dbguard.io/v1alpha1',
      kind: 'DatabasePolicy',
      metadata: { name: 'p' },
      spec: {
        upstream: { host: 'db', credentialsSecretRef: { name: 'creds' } },
        rules: [{ name: 'hold', action: 'RequireApproval' }],
      },
    } as DatabasePolicy;
    const c = compiled(minimal, [], () => undefined);
    expect(c.policy).toBe('default/p');
    expect(c.upstream).toEqual({ host: 'db', port: 5432, sslmode: 'prefer', credentialsSecret: 'creds' });
    expect(c.rules[0]!.approval).toEqual({ mode: 'Wait', timeoutSeconds: 300, validForSeconds: 3600 });
    expect([c.defaultAction, c.audit.statements, c.enforcement]).toEqual(['Allow', 'All', 'Enforce']);
  });

  it('normalizes names: schema public, lower case unless quoted, upper-case commands', () => {
    const p = variant(policy, (x) => {
      x.spec.rules[0].match.objects = ['Orders', '"Sales"."Q1"', '*', '*.Audit_Log'];
      x.spec.rules[0].match.commands = ['drop *', 'select'];
      x.spec.functions.allow = ['Order_Total', 'util."Fmt"', 'public.order_total'];
    });
    const m = variant(maskingRule, (x) => {
      x.spec.columns = [{ table: '"CRM"."People"', column: '"EMail"', strategy: 'Email' }];
    });
    const c = compiled(p, [m]);
    expect(c.rules[0]!.match.objects).toEqual(['public.orders', 'Sales.Q1', '*.*', '*.audit_log']);
    expect(c.rules[0]!.match.commands).toEqual(['DROP *', 'SELECT']);
    expect(c.functionsAllow).toEqual(['public.order_total', 'util.Fmt']);
    expect(c.masking[0]!.columns[0]).toMatchObject({ schema: 'CRM', table: 'People', column: 'EMail' });
  });

  it('turns durations into seconds', () => {
    const p = variant(
      policy,
      (x) => (x.spec.rules[1].approval = { mode: 'Reject', timeout: '1h30m', validFor: '90s' }),
    );
    expect(compiled(p, []).rules[1]!.approval).toEqual({
      mode: 'Reject',
      timeoutSeconds: 5400,
      validForSeconds: 90,
    });
  });

  it('keeps approval.maxExecutions only when given (older policies keep their version)', () => {
    const p = variant(policy, (x) => (x.spec.rules[1].approval = { mode: 'Wait', maxExecutions: 3 }));
    expect(compiled(p, []).rules[1]!.approval).toEqual({
      mode: 'Wait',
      timeoutSeconds: 300,
      validForSeconds: 3600,
      maxExecutions: 3,
    });
  });
});

describe('compilePolicy: errors name the resource, the field and the problem', () => {
  const { policy, maskingRule } = contract();

  it('a missing salt Secret or key', () => {
    expect(errors(policy, [maskingRule], (n, k) => (n === 'pii-salt' ? undefined : lookup(n, k)))).toEqual([
      {
        resource: 'MaskingRule shop/customer-pii',
        path: 'spec.columns[5].hash.saltSecretRef',
        message: 'Secret shop/pii-salt with key "salt" not found',
      },
    ]);
  });

  it('a missing CA, and a CA that is not PEM', () => {
    const noCa: SecretLookup = (n, k) => (n === 'orders-db-ca' ? undefined : lookup(n, k));
    expect(errors(policy, [], noCa)).toEqual([
      {
        resource: 'DatabasePolicy shop/orders',
        path: 'spec.upstream.caSecretRef',
        message: 'Secret shop/orders-db-ca with key "ca.crt" not found',
      },
    ]);
    const notPem: SecretLookup = (n, k) => (n === 'orders-db-ca' ? 'hello' : lookup(n, k));
    expect(errors(policy, [], notPem)[0]!.message).toMatch(/does not hold a PEM certificate/);
  });

  it('never compiles credentials in, even from a Secret that also holds the CA and a salt', () => {
    // The reproduction of issue 17: one Secret for everything, so the lookup returns the password.
    const shared: SecretLookup = (_n, k) =>
      ({ username: 'svc_orders', password: 'pw-Zq81', 'ca.crt': CA, salt: 's3cret-salt' })[k];
    const onePolicy = variant(policy, (p) => {
      p.spec.upstream.caSecretRef = { name: 'orders-db-app', key: 'ca.crt' };
    });
    const text = JSON.stringify(compiled(onePolicy, [maskingRule], shared));
    expect(text).not.toContain('pw-Zq81');
    expect(text).not.toContain('svc_orders');
  });

  it('two MaskingRules masking one column differently, naming both', () => {
    const other = variant(maskingRule, (m) => {
      m.metadata.name = 'more-pii';
      m.spec.columns = [{ table: 'Customers', column: 'EMAIL', strategy: 'Redact' }];
    });
    expect(errors(policy, [maskingRule, other])).toEqual([
      {
        resource: 'MaskingRule shop/more-pii',
        path: 'spec.columns[0]',
        message:
          'column public.customers.email is masked with Redact here but differently by MaskingRule ' +
          'shop/customer-pii (spec.columns[0]) (Email); a column can be masked only one way',
      },
    ]);
  });

  it('allows two MaskingRules that mask one column the same way (each with its own exemptions)', () => {
    const other = variant(maskingRule, (m) => {
      m.metadata.name = 'more-pii';
      m.spec.columns = [{ table: 'customers', column: 'email', strategy: 'Email' }];
      m.spec.exemptSubjects = [{ kind: 'Group', name: 'support' }];
    });
    expect(compiled(policy, [maskingRule, other]).masking.map((x) => x.name)).toEqual([
      'shop/customer-pii',
      'shop/more-pii',
    ]);
  });

  it('one column listed twice in one rule', () => {
    const twice = variant(maskingRule, (m) =>
      m.spec.columns.push({ table: 'public.customers', column: 'ssn', strategy: 'Redact' }),
    );
    expect(errors(policy, [twice])[0]).toMatchObject({
      path: 'spec.columns[7]',
      message: expect.stringMatching(/listed twice in this rule \(also spec.columns\[1\]\)/),
    });
  });

  it('schema errors of the policy and of bound MaskingRules, together', () => {
    const p = variant(policy, (x) => (x.spec.rules[0].approval = { mode: 'Wait' }));
    const m = variant(maskingRule, (x) => (x.spec.columns[0].partial = {}));
    expect(errors(p, [m]).map((e) => `${e.resource} ${e.path}`)).toEqual([
      'DatabasePolicy shop/orders spec.rules[0].approval',
      'MaskingRule shop/customer-pii spec.columns[0].partial',
    ]);
  });

  it('a zero duration and a wildcard function', () => {
    const p = variant(policy, (x) => {
      x.spec.rules[1].approval.timeout = '0s';
      x.spec.functions.allow = ['public.*'];
    });
    expect(errors(p, []).map((e) => [e.path, e.message])).toEqual([
      ['spec.functions.allow[0]', expect.stringMatching(/must be a name such as public.customers/)],
    ]);
    const q = variant(policy, (x) => (x.spec.rules[1].approval.timeout = '0s'));
    expect(errors(q, [])).toEqual([
      {
        resource: 'DatabasePolicy shop/orders',
        path: 'spec.rules[1].approval.timeout',
        message: '"0s" must be longer than zero',
      },
    ]);
  });
});

describe('policy version', () => {
  const { policy, maskingRule } = contract();
  const base = compiled(policy, [maskingRule]).version;

  it('does not depend on key order, list order of unordered things, or formatting', () => {
    const shuffled = variant(maskingRule, (m) => m.spec.columns.reverse());
    const keysReversed = (o: any): any =>
      Array.isArray(o)
        ? o.map(keysReversed)
        : o && typeof o === 'object'
          ? Object.fromEntries(
              Object.entries(o)
                .reverse()
                .map(([k, v]) => [k, keysReversed(v)]),
            )
          : o;
    expect(compiled(policy, [shuffled]).version).toBe(base);
    expect(compiled(keysReversed(policy), [keysReversed(maskingRule)]).version).toBe(base);
    expect(canonicalJson({ b: 1, a: [{ d: 2, c: undefined }] })).toBe('{"a":[{"d":2}],"b":1}');
  });

  it('changes when anything relevant changes', () => {
    const changes: [string, DatabasePolicy, MaskingRule[], SecretLookup?][] = [
      ['rule order', variant(policy, (p) => p.spec.rules.reverse()), [maskingRule]],
      ['a command', variant(policy, (p) => p.spec.rules[0].match.commands.push('GRANT')), [maskingRule]],
      ['enforcement', variant(policy, (p) => (p.spec.enforcement = 'DryRun')), [maskingRule]],
      ['a timeout', variant(policy, (p) => (p.spec.rules[1].approval.timeout = '6m')), [maskingRule]],
      ['the upstream port', variant(policy, (p) => (p.spec.upstream.port = 6543)), [maskingRule]],
      ['a masking strategy', policy, [variant(maskingRule, (m) => (m.spec.columns[1].strategy = 'Nullify'))]],
      ['an exemption', policy, [variant(maskingRule, (m) => (m.spec.exemptSubjects = []))]],
      ['no masking rule', policy, []],
      [
        'the salt Secret',
        policy,
        [variant(maskingRule, (m) => (m.spec.columns[5].hash.saltSecretRef.name = 'other-salt'))],
        (n, k) => lookup(n === 'other-salt' ? 'pii-salt' : n, k),
      ],
    ];
    const versions = new Set([base]);
    for (const [what, p, m, s] of changes) {
      const v = compiled(p, m, s).version;
      expect(versions.has(v), what).toBe(false);
      versions.add(v);
    }
  });

  it('does not carry the Hash key: a rotated key changes neither the policy nor its version', () => {
    const rotated = compiled(policy, [maskingRule], (n, k) => (n === 'pii-salt' ? 'rotated' : lookup(n, k)));
    expect(rotated.version).toBe(base);
    expect(JSON.stringify(rotated)).not.toContain('rotated');
    expect(JSON.stringify(compiled(policy, [maskingRule]))).not.toContain('s3cret-salt');
  });
});

describe('selectPolicy', () => {
  function resources(yaml: string): PolicyFileResource[] {
    const r = parsePolicyDocuments([{ name: 'p.yaml', text: yaml }]);
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    return r.resources;
  }
  const all = resources(CONTRACT_YAML);
  const second = `---
apiVersion: dbguard.io/v1alpha1
kind: DatabasePolicy
metadata: {name: billing, namespace: shop}
spec: {upstream: {host: billing-db}}
`;

  it('compiles the only policy, with its MaskingRules and the Secrets of the files', () => {
    const r = selectPolicy(all, undefined);
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    expect(r.compiled.policy).toBe('shop/orders');
    expect(r.credentials).toEqual({ username: 'app', password: 'app-password' });
    expect(JSON.stringify(r.compiled)).not.toContain('app-password');
    expect(r.compiled.masking[0]!.columns.find((c) => c.column === 'customer_ref')!.hash).toEqual({
      keyId: 'shop/pii-salt/salt',
    });
    // the key itself is nowhere in the compiled policy
    expect(JSON.stringify(r.compiled)).not.toContain('s3cret-salt');
    expect(r.maskingRules.map((m) => m.metadata.name)).toEqual(['customer-pii']);
    expect(selectPolicy(all, 'shop/orders')).toMatchObject({ ok: true });
  });

  it('credentials with a username but no password', () => {
    const half = resources(CONTRACT_YAML.replace(', password: YXBwLXBhc3N3b3Jk', ''));
    const r = selectPolicy(half, undefined);
    expect(r.ok).toBe(false);
    expect(r.ok ? [] : r.errors).toContainEqual(
      expect.objectContaining({
        path: 'spec.upstream.credentialsSecretRef',
        message: expect.stringMatching(/missing "password"/),
      }),
    );
  });

  it('needs a name when there are several, and names what exists', () => {
    const both = resources(CONTRACT_YAML + second);
    expect(selectPolicy(both, undefined)).toEqual({
      ok: false,
      errors: [
        {
          path: '',
          message:
            '2 DatabasePolicies found (shop/orders, shop/billing): name one with --policy NAMESPACE/NAME',
        },
      ],
    });
    expect(selectPolicy(both, 'shop/billing')).toMatchObject({
      ok: true,
      compiled: { policy: 'shop/billing' },
    });
  });

  it('says when the named policy is not there', () => {
    expect(selectPolicy(all, 'shop/order')).toEqual({
      ok: false,
      errors: [{ path: '', message: 'DatabasePolicy shop/order not found (available: shop/orders)' }],
    });
    expect(selectPolicy(all, 'orders')).toMatchObject({
      ok: false,
      errors: [{ message: expect.stringMatching(/NAMESPACE\/NAME/) }],
    });
    expect(selectPolicy([], undefined)).toMatchObject({
      ok: false,
      errors: [{ message: 'no DatabasePolicy found in the policy files' }],
    });
  });

  it('refuses a MaskingRule that points to a missing policy', () => {
    const typo = resources(contractYamlWith((docs) => (docs[1].spec.policyRef.name = 'ordrs')));
    expect(selectPolicy(typo, 'shop/orders')).toEqual({
      ok: false,
      errors: [
        {
          resource: 'MaskingRule shop/customer-pii',
          path: 'spec.policyRef.name',
          message: 'DatabasePolicy shop/ordrs not found',
        },
      ],
    });
  });
});
