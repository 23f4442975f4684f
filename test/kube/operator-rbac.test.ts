/**
 * The operator on a real kube-apiserver, as its ServiceAccount: the chart's RBAC (rendered by the real
 * helm) is applied, the operator's token comes from the real TokenRequest API, so every call it makes
 * passes the real RBAC authorizer. A DatabasePolicy gets status Ready and is served; sidecars authenticate
 * with TokenRequest tokens (audience dbguard) that the real TokenReview API checks.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningOperator, runOperator } from '../../operator/operator.js';
import { applyCrds, helmTemplate, type KubeTestenv, startKubeTestenv } from '../support/kube-testenv.js';
import { until } from '../support/until.js';

const NS = 'shop';
const SYSTEM = 'dbguard-system';
const GV = 'dbguard.io/v1alpha1';

describe('operator as its ServiceAccount on a real kube-apiserver (RBAC enforced)', () => {
  let env: KubeTestenv;
  let op: RunningOperator;
  const logs: Record<string, unknown>[] = [];

  beforeAll(async () => {
    env = await startKubeTestenv();
    await applyCrds(env);
    await env.apply(
      [SYSTEM, NS, 'other'].map((name) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } })),
    );
    // the chart's own ServiceAccount and RBAC, as helm renders them with the default values
    await env.apply(
      helmTemplate(env.bins.helm, [
        '--show-only',
        'templates/serviceaccount.yaml',
        '--show-only',
        'templates/rbac.yaml',
      ]),
    );
    const token = await env.serviceAccountToken(SYSTEM, 'dbguard-operator');
    op = await runOperator({
      kubeConfig: env.tokenKubeConfig(token),
      listen: '127.0.0.1:0',
      metricsListen: '127.0.0.1:0',
      namespace: SYSTEM,
      log: (f) => logs.push(f),
      watchdogSeconds: 30,
    });
  }, 180_000);

  afterAll(async () => {
    await op?.close();
    await env?.close();
  });

  it('is refused what its role does not grant (RBAC is really enforced)', async () => {
    const token = await env.serviceAccountToken(SYSTEM, 'dbguard-operator');
    const pods = await env.request('GET', env.pathOf('v1', 'Pod', NS), undefined, { token });
    expect(pods.status).toBe(403);
    expect(pods.body.message).toContain('system:serviceaccount:dbguard-system:dbguard-operator');
    const policies = await env.request('GET', env.pathOf(GV, 'DatabasePolicy', NS), undefined, { token });
    expect(policies.status).toBe(200);
  });

  it('marks a DatabasePolicy Ready (status written through RBAC) and serves it to a sidecar token', async () => {
    const created = await env.request('POST', env.pathOf(GV, 'DatabasePolicy', NS), {
      apiVersion: GV,
      kind: 'DatabasePolicy',
      metadata: { name: 'orders', namespace: NS },
      spec: {
        upstream: { host: 'orders-db.shop.svc.cluster.local' },
        defaultAction: 'Allow',
        rules: [{ name: 'no-drop', action: 'Deny', match: { commands: ['DROP *'] }, message: 'no drops' }],
      },
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const maskRes = await env.request('POST', env.pathOf(GV, 'MaskingRule', NS), {
      apiVersion: GV,
      kind: 'MaskingRule',
      metadata: { name: 'customer-pii', namespace: NS },
      spec: {
        policyRef: { name: 'orders' },
        columns: [{ table: 'customers', column: 'ssn', strategy: 'Redact' }],
      },
    });
    expect(maskRes.status, JSON.stringify(maskRes.body)).toBe(201);

    const ready = await until(
      'DatabasePolicy Ready=True',
      async () => {
        const r = await env.request('GET', env.pathOf(GV, 'DatabasePolicy', NS, 'orders'));
        const c = r.body?.status?.conditions?.find((x: any) => x.type === 'Ready');
        return c?.status === 'True' && r.body.status.maskingRules === 1 ? r.body : undefined;
      },
      30_000,
      200,
    );
    expect(ready.status.policyVersion).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(ready.status.observedGeneration).toBe(ready.metadata.generation);
    const events = await env.request('GET', `${env.pathOf('v1', 'Event', NS)}`);
    expect(
      events.body.items.some((e: any) => e.reason === 'Compiled' && e.involvedObject.name === 'orders'),
    ).toBe(true);

    // a sidecar's projected token: TokenRequest with audience dbguard, checked by the real TokenReview API
    const sidecar = await env.serviceAccountToken(NS, 'checkout', ['dbguard']);
    const url = `http://127.0.0.1:${op.port}/v1/policies/${NS}/orders`;
    const ok = await fetch(url, { headers: { Authorization: `Bearer ${sidecar}` } });
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as { version: string }).version).toBe(ready.status.policyVersion);

    // another namespace's ServiceAccount: authenticated, not allowed this namespace's policy
    const other = await env.serviceAccountToken('other', 'app', ['dbguard']);
    expect((await fetch(url, { headers: { Authorization: `Bearer ${other}` } })).status).toBe(403);
    // a token for the API server (the automounted kind), not for dbguard: the real TokenReview says
    // unauthenticated for audience dbguard
    const apiToken = await env.serviceAccountToken(NS, 'checkout');
    expect((await fetch(url, { headers: { Authorization: `Bearer ${apiToken}` } })).status).toBe(401);

    const forbidden = logs.filter((l) => /forbidden|403/i.test(JSON.stringify(l)));
    expect(forbidden).toEqual([]);
  });

  it('/readyz is ready once both informers listed through RBAC', async () => {
    const r = await fetch(`http://127.0.0.1:${op.metricsPort}/readyz`);
    expect(r.status).toBe(200);
  });
});
