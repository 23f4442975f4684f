/**
 * Defect 1 of issue 22 on a real kube-apiserver: with the chart's defaults (leader election on,
 * self-managed certificates, the chart's webhook configurations with an empty caBundle), the first
 * certificate round runs before any replica leads, and writing caBundles is leader-only. The replica
 * that becomes leader must write them at once, not at the next periodic check (up to an hour later), or
 * every labelled pod is rejected by a webhook whose TLS the API server cannot verify.
 *
 * Two replicas run as the operator's ServiceAccount with the chart's RBAC; killing the leader hands over.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { operatorTls } from '../../operator/certs/index.js';
import { type RunningOperator, runOperator } from '../../operator/operator.js';
import { applyCrds, helmTemplate, type KubeTestenv, startKubeTestenv } from '../support/kube-testenv.js';
import { until } from '../support/until.js';

const SYSTEM = 'dbguard-system';
const CONFIGS = [
  ['mutatingwebhookconfigurations', 'dbguard-sidecar-injector'],
  ['mutatingwebhookconfigurations', 'dbguard-approvals'],
  ['validatingwebhookconfigurations', 'dbguard-approvals'],
] as const;

describe('leader election with self-managed certificates on a real kube-apiserver', () => {
  let env: KubeTestenv;
  const replicas: RunningOperator[] = [];
  const logs: Record<string, unknown>[] = [];

  const start = async (identity: string) => {
    const token = await env.serviceAccountToken(SYSTEM, 'dbguard-operator');
    const op = await runOperator({
      kubeConfig: env.tokenKubeConfig(token),
      listen: '127.0.0.1:0',
      leaderElect: true,
      namespace: SYSTEM,
      identity,
      leaseDurationSeconds: 4,
      renewDeadlineSeconds: 3,
      retryPeriodSeconds: 1,
      // as the chart's Deployment runs it: --webhook-certs=self-managed --manage-webhook-config=false
      certificates: operatorTls({ mode: 'self-managed', namespace: SYSTEM, manageWebhookConfig: false }),
      log: (f) => logs.push({ identity, ...f }),
    });
    replicas.push(op);
    return op;
  };

  const bundles = async () =>
    Promise.all(
      CONFIGS.map(async ([resource, name]) => {
        const r = await env.request('GET', `/apis/admissionregistration.k8s.io/v1/${resource}/${name}`);
        expect(r.status, JSON.stringify(r.body)).toBe(200);
        return r.body.webhooks.map((w: any) => w.clientConfig.caBundle ?? '') as string[];
      }),
    );

  beforeAll(async () => {
    env = await startKubeTestenv();
    await applyCrds(env);
    await env.apply([{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: SYSTEM } }]);
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
  }, 180_000);

  afterAll(async () => {
    for (const r of replicas) await r.close().catch(() => {});
    await env?.close();
  });

  it('the chart renders the webhook configurations without a caBundle (the operator owns it)', async () => {
    for (const b of await bundles()) expect(b.every((x) => x === '')).toBe(true);
  });

  it('the first leader writes every caBundle within seconds, not at the next hourly check', async () => {
    const a = await start('replica-a');
    const b = await start('replica-b');
    const leader = await until('a leader', () => [a, b].find((r) => r.isLeader()), 20_000, 100);
    const want = Buffer.from(leader.tls!.current()!.caBundle).toString('base64');
    await until(
      'caBundles written',
      async () => (await bundles()).flat().every((x) => x === want),
      15_000,
      200,
    );
    // both replicas serve the one certificate from the Secret
    expect(a.tls!.current()!.caBundle).toBe(b.tls!.current()!.caBundle);
  }, 60_000);

  it('killing the leader hands over; the new leader keeps the caBundles written', async () => {
    const leader = replicas.find((r) => r.isLeader())!;
    const follower = replicas.find((r) => r !== leader)!;
    await leader.close();
    replicas.splice(replicas.indexOf(leader), 1);
    await until('the follower leads', () => follower.isLeader(), 20_000, 100);
    // the caBundles are reset to empty (as a fresh `helm upgrade` of a broken install could leave them):
    // the new leader writes them again on taking over
    for (const [resource, name] of CONFIGS) {
      const r = await env.request('GET', `/apis/admissionregistration.k8s.io/v1/${resource}/${name}`);
      for (const w of r.body.webhooks) w.clientConfig.caBundle = undefined;
      const put = await env.request(
        'PUT',
        `/apis/admissionregistration.k8s.io/v1/${resource}/${name}`,
        r.body,
      );
      expect(put.status, JSON.stringify(put.body)).toBe(200);
    }
    const want = Buffer.from(follower.tls!.current()!.caBundle).toString('base64');
    const third = await start('replica-c');
    expect(third.isLeader()).toBe(false);
    await follower.close();
    replicas.splice(replicas.indexOf(follower), 1);
    await until('replica-c leads', () => third.isLeader(), 20_000, 100);
    await until(
      'caBundles rewritten by the new leader',
      async () => (await bundles()).flat().every((x) => x === want),
      15_000,
      200,
    );
  }, 90_000);
});
