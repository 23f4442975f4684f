import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import {
  ApiException,
  AuthenticationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  type V1Pod,
} from '@kubernetes/client-node';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestCa, type KubeApi, startKubeApi } from '../support/kube-api/index.js';
import { DBP_CRD, dbp, raw } from './fixtures.js';

let api: KubeApi;
let core: CoreV1Api;
let hook: Server;
let hookPort: number;
let caPem: string;
const reviews: any[] = [];

async function failure(p: Promise<unknown>): Promise<{ code: number; body: any }> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ApiException)
      return { code: err.code, body: typeof err.body === 'string' ? JSON.parse(err.body) : err.body };
    throw err;
  }
  throw new Error('expected the call to fail');
}

/** A tiny webhook server like the operator's: injects a sidecar, denies pods labelled deny=yes. */
function webhookApp() {
  const app = express();
  app.use(express.json({ limit: '5mb' }));
  app.post('/mutate', (req, res) => {
    const request = req.body.request;
    reviews.push(request);
    const pod = request.object as V1Pod;
    const patch = [
      { op: 'add', path: '/spec/containers/-', value: { name: 'dbguard-proxy', image: 'dbguard:dev' } },
      {
        op: 'add',
        path: '/metadata/annotations',
        value: { ...(pod.metadata?.annotations ?? {}), 'dbguard.io/status': 'injected' },
      },
    ];
    res.json({
      apiVersion: 'admission.k8s.io/v1',
      kind: 'AdmissionReview',
      response: {
        uid: request.uid,
        allowed: true,
        patchType: 'JSONPatch',
        patch: Buffer.from(JSON.stringify(patch)).toString('base64'),
        warnings: ['dbguard sidecar injected'],
      },
    });
  });
  app.post('/validate', (req, res) => {
    const request = req.body.request;
    reviews.push(request);
    const deny = request.object?.metadata?.labels?.deny === 'yes';
    res.json({
      apiVersion: 'admission.k8s.io/v1',
      kind: 'AdmissionReview',
      response: {
        uid: request.uid,
        allowed: !deny,
        status: deny ? { code: 403, message: 'pods labelled deny=yes are refused' } : undefined,
      },
    });
  });
  app.post('/slow', (_req, _res) => {
    // never answers: the API server's timeout must end the call
  });
  return app;
}

beforeAll(async () => {
  const ca = createTestCa('webhook-ca');
  caPem = ca.certPem;
  const cert = ca.issue(['127.0.0.1', 'localhost', 'dbguard-webhook.dbguard-system.svc']);
  hook = createServer({ key: cert.keyPem, cert: cert.certPem }, webhookApp());
  await new Promise<void>((r) => hook.listen(0, '127.0.0.1', () => r()));
  hookPort = (hook.address() as AddressInfo).port;
  api = await startKubeApi({
    crds: [DBP_CRD],
    namespaces: ['default', 'dbguard-system', 'plain'],
    tokens: {
      'alice-token': { username: 'alice@example.com', groups: ['approvers', 'system:authenticated'] },
    },
  });
  core = api.kubeConfig().makeApiClient(CoreV1Api);
  await core.createNamespace({
    body: { metadata: { name: 'shop', labels: { 'dbguard.io/enabled': 'true' } } },
  });
});
afterAll(async () => {
  await api.close();
  hook.closeAllConnections();
  await new Promise((r) => hook.close(r));
});

describe('TokenReview', () => {
  it('answers from the token map by default and from setTokenReview', async () => {
    const authn = api.kubeConfig().makeApiClient(AuthenticationV1Api);
    const known = await authn.createTokenReview({
      body: { spec: { token: 'alice-token', audiences: ['dbguard'] } },
    });
    expect(known.status).toMatchObject({
      authenticated: true,
      user: { username: 'alice@example.com' },
      audiences: ['dbguard'],
    });
    const unknown = await authn.createTokenReview({ body: { spec: { token: 'nope' } } });
    expect(unknown.status?.authenticated).toBe(false);

    api.setTokenReview((token, audiences) =>
      token === 'sa-token' && audiences?.includes('dbguard')
        ? {
            authenticated: true,
            user: {
              username: 'system:serviceaccount:shop:checkout',
              groups: ['system:serviceaccounts:shop'],
            },
            audiences: ['dbguard'],
          }
        : { authenticated: false, error: 'wrong audience' },
    );
    const sa = await authn.createTokenReview({
      body: { spec: { token: 'sa-token', audiences: ['dbguard'] } },
    });
    expect(sa.status?.user?.username).toBe('system:serviceaccount:shop:checkout');
    const wrongAud = await authn.createTokenReview({
      body: { spec: { token: 'sa-token', audiences: ['other'] } },
    });
    expect(wrongAud.status).toMatchObject({ authenticated: false, error: 'wrong audience' });
    expect((await failure(authn.createTokenReview({ body: { spec: { token: '' } } }))).code).toBe(422);
  });
});

describe('admission webhooks', () => {
  it('calls a mutating webhook over HTTPS with the caBundle on pod CREATE and applies its JSONPatch', async () => {
    await api.addAdmissionWebhook({
      type: 'mutating',
      name: 'inject.dbguard.io',
      url: `https://127.0.0.1:${hookPort}/mutate`,
      caPem,
      rules: [{ operations: ['CREATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods'] }],
      namespaceSelector: {
        matchExpressions: [{ key: 'dbguard.io/enabled', operator: 'In', values: ['true'] }],
      },
      objectSelector: { matchLabels: { 'dbguard.io/inject': 'true' } },
    });
    const alice = api.kubeConfig({ token: 'alice-token' }).makeApiClient(CoreV1Api);
    const res = await raw(api, 'POST', '/api/v1/namespaces/shop/pods', {
      token: 'alice-token',
      body: {
        metadata: { name: 'app-1', labels: { 'dbguard.io/inject': 'true' } },
        spec: { containers: [{ name: 'app', image: 'app:1' }] },
      },
    });
    expect(res.status).toBe(201);
    expect(res.headers.warning).toBe('299 - "dbguard sidecar injected"');
    expect(res.body.spec.containers.map((c: any) => c.name)).toEqual(['app', 'dbguard-proxy']);
    expect(res.body.metadata.annotations['dbguard.io/status']).toBe('injected');
    const stored = await alice.readNamespacedPod({ namespace: 'shop', name: 'app-1' });
    expect(stored.spec?.containers.map((c) => c.name)).toEqual(['app', 'dbguard-proxy']);

    const req = reviews.at(-1);
    expect(req).toMatchObject({
      operation: 'CREATE',
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      namespace: 'shop',
      name: 'app-1',
      userInfo: { username: 'alice@example.com', groups: ['approvers', 'system:authenticated'] },
      dryRun: false,
    });

    // selectors: no label, or a namespace without the label → not called, not mutated
    const before = reviews.length;
    const unlabelled = await core.createNamespacedPod({
      namespace: 'shop',
      body: { metadata: { name: 'app-2' }, spec: { containers: [{ name: 'app', image: 'a' }] } },
    });
    const otherNs = await core.createNamespacedPod({
      namespace: 'plain',
      body: {
        metadata: { name: 'app-3', labels: { 'dbguard.io/inject': 'true' } },
        spec: { containers: [{ name: 'app', image: 'a' }] },
      },
    });
    expect(unlabelled.spec?.containers).toHaveLength(1);
    expect(otherNs.spec?.containers).toHaveLength(1);
    expect(reviews.length).toBe(before);
  });

  it('refuses with 403 and the webhook message when a validating webhook says allowed=false', async () => {
    await api.addAdmissionWebhook({
      type: 'validating',
      name: 'validate.dbguard.io',
      service: { namespace: 'dbguard-system', name: 'dbguard-webhook', path: '/validate', port: 443 },
      caPem,
      rules: [
        { operations: ['CREATE', 'UPDATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['configmaps'] },
      ],
    });
    // the service is not mapped yet: failurePolicy Fail → 500
    const unmapped = await failure(
      core.createNamespacedConfigMap({ namespace: 'plain', body: { metadata: { name: 'cm0' } } }),
    );
    expect(unmapped.code).toBe(500);
    expect(unmapped.body.message).toContain('failed calling webhook "validate.dbguard.io"');

    api.setServiceResolver((ns, name) =>
      ns === 'dbguard-system' && name === 'dbguard-webhook'
        ? { host: '127.0.0.1', port: hookPort }
        : undefined,
    );
    const denied = await failure(
      core.createNamespacedConfigMap({
        namespace: 'plain',
        body: { metadata: { name: 'cm1', labels: { deny: 'yes' } } },
      }),
    );
    expect(denied.code).toBe(403);
    expect(denied.body.message).toBe(
      'admission webhook "validate.dbguard.io" denied the request: pods labelled deny=yes are refused',
    );
    expect(api.store.get('v1', 'ConfigMap', 'plain', 'cm1')).toBeUndefined();
    const ok = await core.createNamespacedConfigMap({
      namespace: 'plain',
      body: { metadata: { name: 'cm2' } },
    });
    // UPDATE sends the old object too
    await failure(
      core.replaceNamespacedConfigMap({
        namespace: 'plain',
        name: 'cm2',
        body: { ...ok, metadata: { ...ok.metadata, labels: { deny: 'yes' } } },
      }),
    );
    expect(reviews.at(-1)).toMatchObject({ operation: 'UPDATE', oldObject: { metadata: { name: 'cm2' } } });
  });

  it('honours failurePolicy and timeoutSeconds, and refuses a certificate the caBundle does not vouch for', async () => {
    await api.addAdmissionWebhook({
      type: 'validating',
      name: 'slow.dbguard.io',
      url: `https://127.0.0.1:${hookPort}/slow`,
      caPem,
      timeoutSeconds: 1,
      failurePolicy: 'Ignore',
      rules: [{ operations: ['CREATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['secrets'] }],
    });
    const t0 = Date.now();
    await core.createNamespacedSecret({ namespace: 'plain', body: { metadata: { name: 's1' } } });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);

    await api.addAdmissionWebhook({
      type: 'mutating',
      name: 'wrong-ca.dbguard.io',
      url: `https://127.0.0.1:${hookPort}/mutate`,
      caPem: createTestCa('someone-else').certPem,
      failurePolicy: 'Fail',
      rules: [{ operations: ['CREATE'], apiGroups: ['dbguard.io'], apiVersions: ['*'], resources: ['*'] }],
    });
    const custom = api.kubeConfig().makeApiClient(CustomObjectsApi);
    const bad = await failure(
      custom.createNamespacedCustomObject({
        group: 'dbguard.io',
        version: 'v1alpha1',
        plural: 'databasepolicies',
        namespace: 'plain',
        body: dbp('plain', 'p'),
      }),
    );
    expect(bad.code).toBe(500);
    expect(bad.body.message).toMatch(/failed calling webhook "wrong-ca.dbguard.io".*certificate/);
  });
});
