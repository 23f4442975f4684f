/**
 * examples/ on a real kube-apiserver: every manifest (policies, the app, RBAC, the NetworkPolicy) is
 * accepted by the API server's own validation (dry run, strict fields), and the approvers' RBAC
 * (the chart's dbguard-approver ClusterRole bound by examples/rbac/approvers.yaml) does what the docs say:
 * an approver may decide a request in their namespace and not read another namespace's; a developer
 * (examples/rbac/policy-authors.yaml) may read requests but not decide them.
 *
 * Not covered here: "a requester cannot approve their own request" is the operator's validating webhook
 * (test/approvals, against the fake API).
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { applyCrds, helmTemplate, type KubeTestenv, startKubeTestenv } from '../support/kube-testenv.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const GV = 'dbguard.io/v1alpha1';

function manifests(): { file: string; objects: Record<string, any>[] }[] {
  const out: { file: string; objects: Record<string, any>[] }[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) {
        // values files for helm, not manifests
        if (e.name !== 'helm') walk(p);
      } else if (e.name.endsWith('.yaml')) {
        const objects = YAML.parseAllDocuments(fs.readFileSync(p, 'utf8'))
          .map((d) => d.toJSON())
          .filter((o) => o?.apiVersion && o.kind);
        out.push({ file: path.relative(ROOT, p), objects });
      }
    }
  };
  walk(path.join(ROOT, 'examples'));
  return out;
}

describe('examples/ and approvers RBAC on a real kube-apiserver', () => {
  let env: KubeTestenv;

  beforeAll(async () => {
    env = await startKubeTestenv();
    await applyCrds(env);
    const namespaces = new Set(['dbguard-system', 'other']);
    for (const m of manifests())
      for (const o of m.objects) if (o.metadata?.namespace) namespaces.add(o.metadata.namespace);
    await env.apply(
      [...namespaces].map((name) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } })),
    );
    await env.apply(helmTemplate(env.bins.helm, ['--show-only', 'templates/approver-clusterrole.yaml']));
    await env.apply(fs.readFileSync(path.join(ROOT, 'examples/rbac/approvers.yaml'), 'utf8'));
    await env.apply(fs.readFileSync(path.join(ROOT, 'examples/rbac/policy-authors.yaml'), 'utf8'));
  }, 180_000);

  afterAll(async () => {
    await env?.close();
  });

  for (const m of manifests()) {
    it(`${m.file}: the API server accepts every object (dry-run apply, strict fields)`, async () => {
      expect(m.objects.length).toBeGreaterThan(0);
      const refused: string[] = [];
      for (const o of m.objects) {
        // server-side apply as a dry run: judged the same whether or not the object exists already
        const p = env.pathOf(o.apiVersion, o.kind, o.metadata.namespace ?? 'default', o.metadata.name);
        const q = 'dryRun=All&fieldValidation=Strict&fieldManager=examples-check&force=true';
        const r = await env.request('PATCH', `${p}?${q}`, o, { contentType: 'application/apply-patch+yaml' });
        if (r.status >= 300)
          refused.push(`${o.kind} ${o.metadata.name}: ${r.status} ${r.body?.message ?? r.body}`);
      }
      expect(refused).toEqual([]);
    });
  }

  it('an approver decides requests in shop, cannot read them elsewhere; a developer reads but cannot decide', async () => {
    const request = (namespace: string) => ({
      apiVersion: GV,
      kind: 'ApprovalRequest',
      metadata: { name: 'bulk-delete', namespace },
      spec: {
        policyRef: { name: 'orders' },
        rule: 'approve-bulk-deletes',
        subject: { serviceAccount: `${namespace}:checkout` },
        database: 'orders',
        statement: 'DELETE FROM orders',
        fingerprint: 'f00d',
        expiresAt: '2030-01-01T00:00:00Z',
      },
    });
    for (const ns of ['shop', 'other']) {
      const r = await env.request('POST', env.pathOf(GV, 'ApprovalRequest', ns), request(ns));
      expect(r.status, JSON.stringify(r.body)).toBe(201);
    }
    const dana = env.user('dana', ['dba-oncall']);
    const dev = env.user('devon', ['shop-developers']);
    const decide = { spec: { decision: 'Approved', reason: 'checked with the team' } };
    const merge = 'application/merge-patch+json';
    const inShop = env.pathOf(GV, 'ApprovalRequest', 'shop', 'bulk-delete');

    const devRead = await env.request('GET', inShop, undefined, { user: dev });
    expect(devRead.status).toBe(200);
    const devDecide = await env.request('PATCH', inShop, decide, { user: dev, contentType: merge });
    expect(devDecide.status).toBe(403);
    expect(devDecide.body.message).toContain('User "devon" cannot patch resource "approvalrequests"');

    const otherRead = await env.request(
      'GET',
      env.pathOf(GV, 'ApprovalRequest', 'other', 'bulk-delete'),
      undefined,
      {
        user: dana,
      },
    );
    expect(otherRead.status).toBe(403);
    const approved = await env.request('PATCH', inShop, decide, { user: dana, contentType: merge });
    expect(approved.status, JSON.stringify(approved.body)).toBe(200);
    expect(approved.body.spec.decision).toBe('Approved');
    // and CEL keeps the decision final, even for an approver
    const flip = await env.request(
      'PATCH',
      inShop,
      { spec: { decision: 'Denied' } },
      { user: dana, contentType: merge },
    );
    expect(flip.status).toBe(422);
  });
});
