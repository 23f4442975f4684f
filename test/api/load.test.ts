import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { formatPolicyError } from '../../policy/compile.js';
import { loadPolicyFiles, parsePolicyDocuments } from '../../policy/load.js';
import { CONTRACT_YAML, contractYamlWith } from './fixtures.js';

function errorsOf(text: string, name = 'policy.yaml') {
  const r = parsePolicyDocuments([{ name, text }]);
  if (r.ok) throw new Error('expected errors');
  return r.errors;
}

const POLICY = `apiVersion: dbguard.io/v1alpha1
kind: DatabasePolicy
metadata: {name: orders, namespace: shop}
spec:
  upstream: {host: db}
`;

describe('parsePolicyDocuments', () => {
  it('reads every document of the contract examples, defaults applied', () => {
    const r = parsePolicyDocuments([{ name: 'contract.yaml', text: CONTRACT_YAML }]);
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    expect(r.resources.map((x) => `${x.kind} ${x.metadata.namespace}/${x.metadata.name}`)).toEqual([
      'DatabasePolicy shop/orders',
      'MaskingRule shop/customer-pii',
      'ApprovalRequest shop/orders-7f3c2a',
      'Secret shop/pii-salt',
      'Secret shop/orders-db-app',
      'Secret shop/orders-db-ca',
    ]);
    expect(r.origins['Secret shop/orders-db-app']).toEqual({ file: 'contract.yaml', document: 5 });
  });

  it('defaults the namespace, skips empty documents, unpacks a v1 List, reads several files', () => {
    const list = `apiVersion: v1\nkind: List\nitems:\n  - {apiVersion: v1, kind: Secret, metadata: {name: s}, stringData: {k: v}}\n`;
    const r = parsePolicyDocuments([
      { name: 'a.yaml', text: `# only a comment\n---\n${POLICY.replace('namespace: shop', '')}---\n` },
      { name: 'b.yaml', text: list },
    ]);
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    expect(r.resources.map((x) => `${x.kind} ${x.metadata.namespace}/${x.metadata.name}`)).toEqual([
      'DatabasePolicy default/orders',
      'Secret default/s',
    ]);
    expect((r.resources[0] as any).spec.upstream.port).toBe(5432);
  });

  it('names file, document, resource, field and problem', () => {
    const text = `${POLICY}---\n${POLICY.replace('orders', 'billing').replace('host: db', 'host: db, sslmode: verify')}`;
    const errors = errorsOf(text);
    expect(errors).toEqual([
      {
        file: 'policy.yaml',
        document: 2,
        resource: 'DatabasePolicy shop/billing',
        path: 'spec.upstream.sslmode',
        message: 'must be one of disable, allow, prefer, require, verify-ca, verify-full (got "verify")',
      },
    ]);
    expect(formatPolicyError(errors[0]!)).toBe(
      'policy.yaml: document 2 (DatabasePolicy shop/billing): spec.upstream.sslmode: must be one of disable, allow, prefer, require, verify-ca, verify-full (got "verify")',
    );
  });

  it('refuses unknown kinds, naming them', () => {
    const errors = errorsOf(`${POLICY}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n`);
    expect(errors).toEqual([
      {
        file: 'policy.yaml',
        document: 2,
        resource: 'Deployment default/web',
        path: 'kind',
        message:
          'unknown kind "Deployment" (apps/v1): policy files hold DatabasePolicy, MaskingRule, ApprovalRequest and v1 Secret',
      },
    ]);
    expect(errorsOf('apiVersion: v1\nmetadata: {name: x}\n')[0]).toMatchObject({
      path: 'kind',
      message: 'is required',
    });
  });

  it('refuses a wrong apiVersion for a known kind', () => {
    expect(errorsOf(POLICY.replace('v1alpha1', 'v1'))[0]).toMatchObject({
      path: 'apiVersion',
      message: 'must be dbguard.io/v1alpha1 for DatabasePolicy (got "dbguard.io/v1")',
    });
  });

  it('reports YAML syntax errors and non-objects with the document', () => {
    const bad = errorsOf(`${POLICY}---\nspec: {upstream: [unclosed\n`);
    expect(bad[0]).toMatchObject({
      file: 'policy.yaml',
      document: 2,
      path: '',
      message: expect.stringMatching(/^YAML: /),
    });
    expect(errorsOf('- a\n- b\n')[0]).toMatchObject({
      document: 1,
      message: expect.stringMatching(/not a list/),
    });
    expect(errorsOf(`${POLICY}  upstream: {host: x}\n`)[0]!.message).toMatch(
      /YAML: .*[Mm]ap keys must be unique/,
    );
  });

  it('checks Secret documents: base64 data, string values, known fields', () => {
    const secret = (body: string) => `apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n${body}`;
    expect(errorsOf(secret('data: {salt: "not base64!"}\n'))[0]).toMatchObject({
      resource: 'Secret default/s',
      path: 'data.salt',
      message: 'must be base64 (use stringData for plain text)',
    });
    expect(errorsOf(secret('stringData: {port: 5432}\n'))[0]).toMatchObject({ path: 'stringData.port' });
    expect(errorsOf(secret('strngData: {a: b}\n'))[0]).toMatchObject({
      path: 'strngData',
      message: 'unknown field',
    });
    expect(errorsOf('apiVersion: v2\nkind: Secret\nmetadata: {name: s}\n')[0]).toMatchObject({
      path: 'apiVersion',
    });
  });

  it('refuses a resource defined twice', () => {
    const r = parsePolicyDocuments([
      { name: 'a.yaml', text: POLICY },
      { name: 'b.yaml', text: POLICY },
    ]);
    expect(r).toMatchObject({
      ok: false,
      errors: [
        {
          file: 'b.yaml',
          document: 1,
          path: 'metadata.name',
          message: 'DatabasePolicy shop/orders is defined twice (also a.yaml document 1)',
        },
      ],
    });
  });
});

describe('loadPolicyFiles', () => {
  it('gives the compiled policy of the files', () => {
    const r = loadPolicyFiles([{ name: 'contract.yaml', text: CONTRACT_YAML }], 'shop/orders');
    expect(r).toMatchObject({
      ok: true,
      compiled: { policy: 'shop/orders', version: expect.stringMatching(/^sha256:/) },
    });
  });

  it('gives printable errors that say where the resource is', () => {
    const typo = contractYamlWith((docs) => (docs[1].spec.columns[5].hash.saltSecretRef.key = 'pepper'));
    expect(loadPolicyFiles([{ name: 'contract.yaml', text: typo }])).toEqual({
      ok: false,
      errors: [
        'contract.yaml: document 2 (MaskingRule shop/customer-pii): spec.columns[5].hash.saltSecretRef: Secret shop/pii-salt with key "pepper" not found',
      ],
    });
  });
});

describe('the shipped example', () => {
  it('examples/demo/policy.yaml loads and compiles', () => {
    const text = readFileSync(new URL('../../examples/demo/policy.yaml', import.meta.url), 'utf8');
    const r = loadPolicyFiles([{ name: 'examples/demo/policy.yaml', text }]);
    if (!r.ok) throw new Error(r.errors.join('\n'));
    expect(r.compiled.policy).toBe('demo/shop');
    expect(r.compiled.masking[0]!.columns.map((c) => c.column)).toContain('phone');
  });
});
