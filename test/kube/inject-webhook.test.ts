/**
 * Defect 1 of issue 22 end to end on a real kube-apiserver: the operator starts as the chart runs it
 * (leader election on, self-managed certificates, the chart's webhook configurations with no caBundle,
 * the chart's RBAC, a TokenRequest token), and within 60 s a labelled Pod created through the real API
 * gets the sidecar: the API server called the webhook through the operator Service's endpoints and
 * verified its TLS against the caBundle the operator wrote. The ServiceAccount admission plugin ran too.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { operatorTls } from '../../operator/certs/index.js';
import { injectionRoutes } from '../../operator/inject/index.js';
import { type RunningOperator, runOperator } from '../../operator/operator.js';
import {
  applyCrds,
  helmTemplate,
  type KubeTestenv,
  localAddress,
  serviceTo,
  startKubeTestenv,
} from '../support/kube-testenv.js';

const SYSTEM = 'dbguard-system';
const NS = 'shop';
const GV = 'dbguard.io/v1alpha1';

describe('sidecar injection through a real kube-apiserver', () => {
  let env: KubeTestenv;
  let op: RunningOperator | undefined;
  const ip = localAddress();

  beforeAll(async () => {
    if (!ip)
      throw new Error('kube-testenv: this machine has no non-loopback IPv4 address for webhook endpoints');
    env = await startKubeTestenv();
    await applyCrds(env);
    await env.apply(
      [SYSTEM, NS].map((name) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } })),
    );
    await env.apply(
      helmTemplate(env.bins.helm, [
        '--show-only',
        'templates/serviceaccount.yaml',
        '--show-only',
        'templates/rbac.yaml',
        '--show-only',
        'templates/webhooks.yaml',
      ]),
    );
    await env.apply([
      { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'checkout', namespace: NS } },
      {
        apiVersion: GV,
        kind: 'DatabasePolicy',
        metadata: { name: 'orders', namespace: NS },
        spec: { upstream: { host: 'orders-db.shop.svc' }, defaultAction: 'Allow' },
      },
    ]);
  }, 180_000);

  afterAll(async () => {
    await op?.close();
    await env?.close();
  });

  it('injects a labelled pod within 60 s of a cold start with the chart defaults (TLS verified by the API server)', async () => {
    const started = Date.now();
    const token = await env.serviceAccountToken(SYSTEM, 'dbguard-operator');
    op = await runOperator({
      kubeConfig: env.tokenKubeConfig(token),
      listen: `${ip}:0`,
      leaderElect: true,
      namespace: SYSTEM,
      identity: 'replica-a',
      certificates: operatorTls({ mode: 'self-managed', namespace: SYSTEM, manageWebhookConfig: false }),
      routes: [
        injectionRoutes({
          operatorNamespace: SYSTEM,
          image: 'ghcr.io/dbguard/dbguard:e2e',
          nativeSidecar: 'auto',
        }),
      ],
      log: () => {},
    });
    await serviceTo(env, SYSTEM, 'dbguard-operator', 8443, ip!, op.port);

    const pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        generateName: 'checkout-',
        namespace: NS,
        labels: { app: 'checkout', 'dbguard.io/inject': 'true' },
        annotations: { 'dbguard.io/policy': 'orders' },
      },
      spec: { serviceAccountName: 'checkout', containers: [{ name: 'app', image: 'shop/checkout:1.4' }] },
    };
    // until the leader has written the caBundle the API server cannot verify the webhook: failurePolicy
    // Fail rejects the pod, so retry, within the 60 s the issue allows
    let last: { status: number; body: any } | undefined;
    while (Date.now() - started < 60_000) {
      last = await env.request('POST', env.pathOf('v1', 'Pod', NS), pod);
      if (last.status === 201) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(last?.status, JSON.stringify(last?.body)).toBe(201);
    const created = last!.body;
    expect(created.metadata.annotations['dbguard.io/status']).toBe('injected');
    const sidecar = [...(created.spec.initContainers ?? []), ...created.spec.containers].find(
      (c: any) => c.name === 'dbguard-proxy',
    );
    expect(sidecar?.image).toBe('ghcr.io/dbguard/dbguard:e2e');
    // the ServiceAccount admission plugin's projected API token volume is there next to the webhook's
    expect(created.spec.volumes.some((v: any) => v.name.startsWith('kube-api-access-'))).toBe(true);
    expect(created.spec.volumes.some((v: any) => v.name === 'dbguard-operator')).toBe(true);
  }, 90_000);
});
