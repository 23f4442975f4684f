/**
 * Injection end to end: the operator (self-managed certificates, injection routes) and the in-process
 * Kubernetes API, which calls the webhook on pod CREATE over TLS with the caBundle the operator wrote,
 * as kube-apiserver does. Covers the selectors that keep an outage contained, refusals as API errors,
 * warnings, Events on the owner, metrics, and a serving-certificate rotation under traffic.
 */
import https from 'node:https';
import tls from 'node:tls';
import { ApiException, AppsV1Api, CoreV1Api } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { crdObjects } from '../../api/crds.js';
import { SelfManagedCertificates } from '../../operator/certs/self-managed.js';
import { injectionRoutes } from '../../operator/inject/index.js';
import { injectionWebhookConfiguration } from '../../operator/inject/webhook-config.js';
import { type RunningOperator, runOperator } from '../../operator/operator.js';
import { type KubeApi, startKubeApi } from '../support/kube-api/index.js';
import { until } from '../support/until.js';
import { appPod, sidecarOf, validatePod } from './helpers.js';

const OP_NS = 'dbguard-system';
const quiet = () => {};

/** a pod without an owner (its Event goes to the pod itself) */
function bare(extra: Parameters<typeof appPod>[0] = {}) {
  const p = appPod(extra);
  delete p.metadata.ownerReferences;
  return p;
}

describe('injection through the Kubernetes API', () => {
  let api: KubeApi;
  let op: RunningOperator;
  let core: CoreV1Api;

  beforeAll(async () => {
    api = await startKubeApi({
      crds: crdObjects() as any,
      namespaces: ['default', 'shop', OP_NS, 'kube-system'],
    });
    await api.store.put({
      apiVersion: 'dbguard.io/v1alpha1',
      kind: 'DatabasePolicy',
      metadata: { name: 'orders', namespace: 'shop' },
      spec: {
        upstream: { host: 'orders-db.shop.svc', credentialsSecretRef: { name: 'orders-db-app' } },
        defaultAction: 'Allow',
      },
    } as any);
    op = await runOperator({
      kubeConfig: api.kubeConfig(),
      listen: '127.0.0.1:0',
      log: quiet,
      namespace: OP_NS,
      certificates: (ctx) =>
        new SelfManagedCertificates({
          kubeConfig: ctx.kubeConfig,
          namespace: OP_NS,
          serviceName: 'dbguard-operator',
          isLeader: ctx.isLeader,
          metrics: ctx.metrics,
          log: quiet,
          certValidityMs: 8000,
          checkIntervalMs: 400,
          webhookConfigs: [
            {
              kind: 'Mutating',
              name: 'dbguard-sidecar-injector',
              // the operator's own builder: objectSelector, namespaceSelector, failurePolicy Fail
              create: (ca) => injectionWebhookConfiguration({ operatorNamespace: OP_NS, caBundlePem: ca }),
            },
          ],
        }),
      routes: injectionRoutes({
        operatorNamespace: OP_NS,
        image: 'ghcr.io/dbguard/dbguard:e2e',
        nativeSidecar: 'auto',
      }),
    });
    api.setServiceResolver((ns, name) =>
      ns === OP_NS && name === 'dbguard-operator' ? { host: '127.0.0.1', port: op.port } : undefined,
    );
    await until(
      'webhook configuration with caBundle',
      () =>
        api.store.get<any>(
          'admissionregistration.k8s.io/v1',
          'MutatingWebhookConfiguration',
          undefined,
          'dbguard-sidecar-injector',
        )?.webhooks?.[0]?.clientConfig?.caBundle,
    );
    core = api.kubeConfig().makeApiClient(CoreV1Api);
  });

  afterAll(async () => {
    await op?.close();
    await api?.close();
  });

  const injected = async (result: string, reason: string) =>
    (await op.metrics.injections.get()).values.find(
      (v) => v.labels.result === result && v.labels.reason === reason,
    )?.value ?? 0;

  async function createReplicaSet(name: string) {
    const apps = api.kubeConfig().makeApiClient(AppsV1Api);
    return apps.createNamespacedReplicaSet({
      namespace: 'shop',
      body: {
        metadata: { name },
        spec: {
          selector: { matchLabels: { app: name } },
          template: {
            metadata: { labels: { app: name } },
            spec: { containers: [{ name: 'app', image: 'x' }] },
          },
        },
      },
    });
  }

  it('injects a labelled pod on CREATE: native sidecar (1.31 detected), credentials mounted, Event on the ReplicaSet', async () => {
    const rs = await createReplicaSet('checkout-5d9f');
    const pod = appPod();
    pod.metadata.ownerReferences[0].uid = rs.metadata!.uid;
    const created = await core.createNamespacedPod({ namespace: 'shop', body: pod });
    const stored = api.store.get<any>('v1', 'Pod', 'shop', created.metadata!.name!);
    validatePod(stored);
    const sc = stored.spec.initContainers[0];
    expect(sc).toMatchObject({
      name: 'dbguard-proxy',
      restartPolicy: 'Always',
      image: 'ghcr.io/dbguard/dbguard:e2e',
    });
    expect(sc.args).toContain('--upstream-credentials-file=/var/run/secrets/dbguard.io/credentials');
    expect(stored.spec.volumes.find((v: any) => v.name === 'dbguard-credentials').secret.secretName).toBe(
      'orders-db-app',
    );
    expect(stored.metadata.annotations['dbguard.io/status']).toBe('injected');
    // the CA the sidecar will trust is the one the API server trusts for the webhook
    const cfg = api.store.get<any>(
      'admissionregistration.k8s.io/v1',
      'MutatingWebhookConfiguration',
      undefined,
      'dbguard-sidecar-injector',
    );
    expect(Buffer.from(stored.metadata.annotations['dbguard.io/operator-ca']).toString('base64')).toBe(
      cfg.webhooks[0].clientConfig.caBundle,
    );
    const ev = await until('Injected Event', () =>
      api.store
        .list<any>('v1', 'Event', 'shop')
        .find((e) => e.reason === 'Injected' && e.involvedObject.name === 'checkout-5d9f'),
    );
    expect(ev.involvedObject).toMatchObject({ kind: 'ReplicaSet', uid: rs.metadata!.uid });
    expect(await injected('injected', 'native-sidecar')).toBe(1);
  });

  it('never calls the webhook for unlabelled pods, kube-system or the operator namespace', async () => {
    const before = api.requests.length;
    const calls = async () => (await op.metrics.injections.get()).values.reduce((n, v) => n + v.value, 0);
    const n0 = await calls();
    const plain = appPod({ labels: { 'dbguard.io/inject': 'false' } });
    const a = await core.createNamespacedPod({ namespace: 'shop', body: plain });
    expect(sidecarOf(api.store.get<any>('v1', 'Pod', 'shop', a.metadata!.name!))).toBeUndefined();
    for (const ns of ['kube-system', OP_NS]) {
      const p = appPod();
      p.metadata.namespace = ns;
      delete p.metadata.ownerReferences;
      const c = await core.createNamespacedPod({ namespace: ns, body: p });
      expect(sidecarOf(api.store.get<any>('v1', 'Pod', ns, c.metadata!.name!))).toBeUndefined();
    }
    expect(await calls()).toBe(n0);
    expect(api.requests.length).toBeGreaterThan(before);
  });

  it('refuses a pod with a port clash as an API error with the reason, and warns about a missing policy', async () => {
    const clash = bare();
    clash.spec.containers[0].ports.push({ containerPort: 5432 });
    let err: unknown;
    try {
      await core.createNamespacedPod({ namespace: 'shop', body: clash });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ApiException);
    expect((err as ApiException<unknown>).code).toBe(403);
    expect(JSON.parse(String((err as ApiException<unknown>).body)).message).toMatch(
      /admission webhook "inject.dbguard.io" denied the request: dbguard: container "app" declares containerPort 5432/,
    );

    // warnings travel as Warning headers: read them with a raw request
    const missing = bare({ annotations: { 'dbguard.io/policy': 'not-there' } });
    const body = JSON.stringify(missing);
    const res = await new Promise<{ status: number; warning: string }>((resolve, reject) => {
      const u = new URL(`${api.url}/api/v1/namespaces/shop/pods`);
      const req = https.request(
        {
          host: u.hostname,
          port: u.port,
          path: u.pathname,
          method: 'POST',
          ca: api.caPem,
          headers: { Authorization: `Bearer ${api.adminToken}`, 'Content-Type': 'application/json' },
        },
        (r) => {
          r.resume();
          r.on('end', () => resolve({ status: r.statusCode ?? 0, warning: String(r.headers.warning ?? '') }));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
    expect(res.status).toBe(201);
    expect(res.warning).toContain('DatabasePolicy \\"not-there\\" does not exist in namespace \\"shop\\"');
  });

  it('rotates its serving certificate under traffic; the API server keeps calling the webhook', async () => {
    const serial = () =>
      new Promise<string>((resolve, reject) => {
        const s = tls.connect({ host: '127.0.0.1', port: op.port, rejectUnauthorized: false }, () => {
          const sn = s.getPeerCertificate().serialNumber;
          s.end();
          resolve(sn);
        });
        s.on('error', reject);
      });
    const first = await serial();
    const expiry0 = (await op.metrics.certExpiry.get()).values[0]!.value;
    // pods keep being created while the certificate (8 s) is renewed
    let created = 0;
    const deadline = Date.now() + 15_000;
    let rotatedTo: string | undefined;
    while (Date.now() < deadline) {
      const c = await core.createNamespacedPod({ namespace: 'shop', body: bare() });
      expect(sidecarOf(api.store.get<any>('v1', 'Pod', 'shop', c.metadata!.name!))).toBeDefined();
      created++;
      const now = await serial();
      if (now !== first) {
        rotatedTo = now;
        break;
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(rotatedTo, 'the serving certificate was not renewed within 15 s').toBeDefined();
    const after = await core.createNamespacedPod({ namespace: 'shop', body: bare() });
    expect(sidecarOf(api.store.get<any>('v1', 'Pod', 'shop', after.metadata!.name!))).toBeDefined();
    expect(created).toBeGreaterThan(0);
    expect((await op.metrics.certExpiry.get()).values[0]!.value).toBeGreaterThan(expiry0);
  });
});
