/**
 * Least-privilege RBAC: the chart's rules (charts/dbguard/files/rbac/*.yaml, included verbatim by the templates)
 * grant every API call the operator's sources make, and nothing they do not make. Same for the approver role
 * against `kubectl dbguard`, and the gateway role against the proxy's TokenReview.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { type ApiCall, extractAll, granted, key, type PolicyRule } from './api-calls.js';
import { CHART, ROOT } from './paths.js';

const rules = (name: string): PolicyRule[] =>
  parse(fs.readFileSync(path.join(CHART, 'files/rbac', name), 'utf8')) as PolicyRule[];
const template = (name: string) => fs.readFileSync(path.join(CHART, 'templates', name), 'utf8');

/**
 * Calls the chart deliberately does not grant, each with the reason that makes it unnecessary.
 * The test checks that the reason still holds.
 */
const NOT_GRANTED: Record<string, string> = {
  'admissionregistration.k8s.io/mutatingwebhookconfigurations:create':
    'the chart creates the webhook configurations; the operator runs with --manage-webhook-config=false',
  'admissionregistration.k8s.io/validatingwebhookconfigurations:create':
    'the chart creates the webhook configurations; the operator runs with --manage-webhook-config=false',
};

function describeCalls(calls: ApiCall[]): string[] {
  return [...new Set(calls.map((c) => `${key(c)} (${c.file}: ${c.method})`))].sort();
}

describe('operator RBAC', () => {
  const extraction = extractAll(ROOT, ['operator', 'cli/operator.ts']);
  const operatorRules = [
    ...rules('operator-cluster.yaml'),
    ...rules('operator-namespace.yaml'),
    ...rules('operator-webhook-ca.yaml'),
  ];
  const grants = granted(operatorRules);

  it('finds the calls it knows about (the extraction works)', () => {
    const keys = new Set(extraction.calls.map(key));
    // a few calls that certainly exist; if these vanish, the parser broke, not the operator
    for (const k of [
      'dbguard.io/databasepolicies:watch',
      'dbguard.io/databasepolicies/status:patch',
      'coordination.k8s.io/leases:update',
      'authentication.k8s.io/tokenreviews:create',
      'core/events:create',
    ])
      expect(keys, k).toContain(k);
    expect(extraction.unmapped, 'API calls the test cannot map to a permission').toEqual([]);
  });

  it('grants every API call the operator makes', () => {
    const missing = extraction.calls.filter((c) => !grants.has(key(c)) && !NOT_GRANTED[key(c)]);
    expect(describeCalls(missing), 'add these to charts/dbguard/files/rbac/').toEqual([]);
  });

  it('grants nothing the operator does not call (least privilege)', () => {
    const used = new Set(extraction.calls.map(key));
    expect([...grants].filter((g) => !used.has(g)).sort()).toEqual([]);
  });

  it('keeps the reasons for what it does not grant true', () => {
    expect(template('deployment.yaml')).toContain('--manage-webhook-config=false');
    expect(template('webhooks.yaml')).toMatch(/kind: MutatingWebhookConfiguration/);
    expect(template('webhooks.yaml')).toMatch(/kind: \{\{ \$kind \}\}WebhookConfiguration/);
  });

  it('uses no wildcards and no resourceNames-free secrets write outside the own namespace', () => {
    for (const r of operatorRules) {
      for (const field of [r.apiGroups, r.resources, r.verbs]) expect(field).not.toContain('*');
    }
    // writing Secrets is only granted by the namespaced Role (the operator's own certificates)
    const clusterWrites = rules('operator-cluster.yaml').filter(
      (r) => r.resources?.includes('secrets') && r.verbs?.some((v) => v !== 'get'),
    );
    expect(clusterWrites).toEqual([]);
    const rbac = template('rbac.yaml');
    expect(rbac).toMatch(/kind: Role\n[\s\S]*files\/rbac\/operator-namespace\.yaml/);
  });
});

describe('approver and gateway roles', () => {
  it('lets an approver do everything kubectl dbguard does', () => {
    const plugin = extractAll(ROOT, ['cli/kubectl-dbguard.ts']);
    expect(plugin.unmapped).toEqual([]);
    expect(plugin.calls.length).toBeGreaterThan(0);
    const grants = granted(rules('approver.yaml'));
    expect(describeCalls(plugin.calls.filter((c) => !grants.has(key(c))))).toEqual([]);
  });

  it('gives the gateway what --token-auth tokenreview needs', () => {
    const verifier = fs.readFileSync(path.join(ROOT, 'sidecar/identity/tokenreview.ts'), 'utf8');
    expect(verifier).toContain('/apis/authentication.k8s.io/v1/tokenreviews');
    expect(granted(rules('gateway-cluster.yaml'))).toEqual(
      new Set(['authentication.k8s.io/tokenreviews:create']),
    );
  });
});
