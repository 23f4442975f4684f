/**
 * The webhook handler without a cluster: AdmissionReview requests as kube-apiserver sends them, the
 * returned JSONPatch applied with fast-json-patch, the result validated against the Kubernetes schema.
 */

import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PolicyInfo } from '../../operator/inject/inject.js';
import { type InjectionWebhookOptions, injectionWebhook, reviewPod } from '../../operator/inject/webhook.js';
import { OperatorMetrics } from '../../operator/metrics.js';
import { applyResponse, appPod, CA_PEM, options, review, sidecarOf, validatePod } from './helpers.js';

type Recorded = { kind?: string; name?: string; type: string; reason: string; message: string };

function setup(
  policies: Record<string, PolicyInfo> = { 'shop/orders': { exists: true } },
  extra: Partial<InjectionWebhookOptions> = {},
) {
  const events: Recorded[] = [];
  const metrics = new OperatorMetrics({ defaultMetrics: false });
  const o: InjectionWebhookOptions = {
    injectOptions: () => options(),
    lookup: async (ns, name) => policies[`${ns}/${name}`] ?? { exists: false },
    operatorNamespace: 'dbguard-system',
    metrics,
    events: {
      record: async (obj, type, reason, message) => {
        events.push({ kind: obj.kind, name: obj.metadata?.name, type, reason, message });
      },
    },
    ...extra,
  };
  const decide = async (pod: any, extraReq: Record<string, unknown> = {}) => {
    const r = review(pod, extraReq);
    const response = await reviewPod(r.request as any, o);
    expect(response.uid).toBe(r.request.uid);
    return response;
  };
  const counted = async (result: string, reason: string) =>
    (await metrics.injections.get()).values.find(
      (v) => v.labels.result === result && v.labels.reason === reason,
    )?.value ?? 0;
  return { o, events, metrics, decide, counted };
}

describe('webhook decisions', () => {
  it('injects a native sidecar that passes the Kubernetes schema', async () => {
    const { decide, events, counted } = setup();
    const pod = appPod();
    const res = await decide(pod);
    expect(res.allowed).toBe(true);
    expect(res.warnings).toBeUndefined();
    const out = applyResponse(pod, res);
    validatePod(out);

    expect(out.spec.containers).toHaveLength(1);
    const sc = out.spec.initContainers[0];
    expect(sc.name).toBe('dbguard-proxy');
    expect(sc.restartPolicy).toBe('Always');
    expect(sc.image).toBe('ghcr.io/dbguard/dbguard:test');
    expect(sc.args).toEqual(
      expect.arrayContaining([
        'proxy',
        '--listen=127.0.0.1:5432',
        '--operator-url=https://dbguard-operator.dbguard-system.svc:8443',
        '--policy=$(DBGUARD_POD_NAMESPACE)/orders',
        '--metrics-listen=0.0.0.0:9090',
        '--identity-service-account=$(DBGUARD_POD_NAMESPACE)/$(DBGUARD_SERVICE_ACCOUNT)',
        '--identity-pod=$(DBGUARD_POD_NAME)',
        '--operator-token-file=/var/run/secrets/dbguard.io/operator/token',
        '--operator-ca-file=/var/run/secrets/dbguard.io/operator/ca.crt',
        '--policy-cache-file=/var/lib/dbguard/policy.json',
      ]),
    );
    expect(sc.args.some((a: string) => a.startsWith('--upstream-credentials-file'))).toBe(false);
    expect(Object.fromEntries(sc.env.map((e: any) => [e.name, e.valueFrom.fieldRef.fieldPath]))).toEqual({
      DBGUARD_POD_NAME: 'metadata.name',
      DBGUARD_POD_NAMESPACE: 'metadata.namespace',
      DBGUARD_SERVICE_ACCOUNT: 'spec.serviceAccountName',
    });
    expect(sc.securityContext).toEqual({
      runAsNonRoot: true,
      runAsUser: 65532,
      runAsGroup: 65532,
      allowPrivilegeEscalation: false,
      privileged: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    });
    expect(sc.resources.requests).toEqual({ cpu: '50m', memory: '64Mi' });
    expect(sc.resources.limits.memory).toBe('256Mi');
    expect(sc.startupProbe.httpGet).toEqual({ path: '/healthz', port: 'dbguard-metrics' });
    expect(sc.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'dbguard-metrics' });
    expect(sc.ports).toEqual([{ name: 'dbguard-metrics', containerPort: 9090, protocol: 'TCP' }]);

    const token = out.spec.volumes.find((v: any) => v.name === 'dbguard-operator').projected.sources;
    expect(token[0].serviceAccountToken).toMatchObject({ audience: 'dbguard', path: 'token' });
    expect(token[1].downwardAPI.items[0].fieldRef.fieldPath).toBe(
      "metadata.annotations['dbguard.io/operator-ca']",
    );
    expect(out.spec.volumes.find((v: any) => v.name === 'dbguard-cache').emptyDir).toBeDefined();
    expect(out.spec.volumes.some((v: any) => v.name === 'dbguard-credentials')).toBe(false);

    const app = out.spec.containers[0];
    expect(app.env).toEqual([
      { name: 'DATABASE_NAME', value: 'orders' },
      { name: 'PGHOST', value: '127.0.0.1' },
      { name: 'PGPORT', value: '5432' },
    ]);
    expect(out.metadata.annotations['dbguard.io/status']).toBe('injected');
    expect(out.metadata.annotations['dbguard.io/operator-ca']).toBe(CA_PEM);
    expect(out.metadata.annotations['dbguard.io/policy']).toBe('orders');

    expect(events).toEqual([
      expect.objectContaining({
        kind: 'ReplicaSet',
        name: 'checkout-5d9f',
        type: 'Normal',
        reason: 'Injected',
      }),
    ]);
    expect(await counted('injected', 'native-sidecar')).toBe(1);
  });

  it('mounts the credentials Secret into the sidecar only, and honours dbguard.io/port', async () => {
    const { decide } = setup({ 'shop/orders': { exists: true, credentialsSecret: 'orders-db-app' } });
    const pod = appPod({ annotations: { 'dbguard.io/port': '6543' } });
    const out = applyResponse(pod, await decide(pod));
    validatePod(out);
    const sc = sidecarOf(out);
    expect(sc.args).toContain('--upstream-credentials-file=/var/run/secrets/dbguard.io/credentials');
    expect(sc.args).toContain('--listen=127.0.0.1:6543');
    expect(sc.volumeMounts.find((m: any) => m.name === 'dbguard-credentials')).toMatchObject({
      readOnly: true,
    });
    expect(out.spec.volumes.find((v: any) => v.name === 'dbguard-credentials').secret.secretName).toBe(
      'orders-db-app',
    );
    expect(out.spec.containers[0].volumeMounts ?? []).toEqual([]);
    expect(out.spec.containers[0].env).toContainEqual({ name: 'PGPORT', value: '6543' });
    // no other container (app or init) mounts the volume or refers to the Secret in any way (issue 17)
    const others = [...(out.spec.initContainers ?? []), ...out.spec.containers].filter((c: any) => c !== sc);
    expect(others.length).toBeGreaterThan(0);
    for (const c of others) {
      expect(JSON.stringify(c)).not.toContain('dbguard-credentials');
      expect(JSON.stringify(c)).not.toContain('orders-db-app');
    }
  });

  it('adds a regular container where native sidecars are not available, and keeps the app first', async () => {
    const { o, decide, counted } = setup();
    o.injectOptions = () => options({ nativeSidecar: false });
    const pod = appPod({ spec: { initContainers: [{ name: 'migrate', image: 'shop/migrate:1' }] } });
    const out = applyResponse(pod, await decide(pod));
    validatePod(out);
    expect(out.spec.containers.map((c: any) => c.name)).toEqual(['app', 'dbguard-proxy']);
    expect(out.spec.containers[1].restartPolicy).toBeUndefined();
    expect(out.spec.initContainers.map((c: any) => c.name)).toEqual(['migrate']);
    // the proxy is not running yet while init containers run: they keep their own settings
    expect(out.spec.initContainers[0].env).toBeUndefined();
    expect(await counted('injected', 'container')).toBe(1);
  });

  it('puts the native sidecar before existing init containers, which then also get PGHOST', async () => {
    const { decide } = setup();
    const pod = appPod({
      spec: {
        initContainers: [
          { name: 'migrate', image: 'shop/migrate:1', env: [{ name: 'PGHOST', value: 'db' }] },
        ],
      },
    });
    const out = applyResponse(pod, await decide(pod));
    validatePod(out);
    expect(out.spec.initContainers.map((c: any) => c.name)).toEqual(['dbguard-proxy', 'migrate']);
    // PGHOST set by the app stays; only PGPORT is added
    expect(out.spec.initContainers[1].env).toEqual([
      { name: 'PGHOST', value: 'db' },
      { name: 'PGPORT', value: '5432' },
    ]);
  });

  it('leaves PGHOST/PGPORT alone when the pod opts out', async () => {
    const { decide } = setup();
    const pod = appPod({ annotations: { 'dbguard.io/pg-env': 'false' } });
    const out = applyResponse(pod, await decide(pod));
    expect(out.spec.containers[0].env).toEqual([{ name: 'DATABASE_NAME', value: 'orders' }]);
  });

  it('is idempotent: the injected pod sent again (reinvocation) gets no patch', async () => {
    const { decide, events, counted } = setup();
    const pod = appPod();
    const once = applyResponse(pod, await decide(pod));
    const again = await decide(once);
    expect(again).toEqual({ uid: expect.any(String), allowed: true });
    expect(events.filter((e) => e.reason === 'Injected')).toHaveLength(1);
    expect(await counted('skipped', 'already-injected')).toBe(1);
  });

  it('on reinvocation fills in a container another webhook added after the injection', async () => {
    const { decide } = setup();
    const pod = appPod();
    const once = applyResponse(pod, await decide(pod));
    once.spec.containers.push({ name: 'added-later', image: 'x' });
    const out = applyResponse(once, await decide(once));
    expect(out.spec.containers[1].env).toEqual([
      { name: 'PGHOST', value: '127.0.0.1' },
      { name: 'PGPORT', value: '5432' },
    ]);
    expect(out.spec.initContainers.filter((c: any) => c.name === 'dbguard-proxy')).toHaveLength(1);
  });

  it('adds the credentials mount to a pod injected offline without knowing the policy, once', async () => {
    const offline = setup({});
    const pod = appPod();
    const injected = applyResponse(pod, await offline.decide(pod)); // policy unknown: no credentials
    expect(sidecarOf(injected).args.some((a: string) => a.startsWith('--upstream-credentials-file'))).toBe(
      false,
    );
    const { decide } = setup({ 'shop/orders': { exists: true, credentialsSecret: 'orders-db-app' } });
    const fixed = applyResponse(injected, await decide(injected));
    validatePod(fixed);
    expect(sidecarOf(fixed).args).toContain(
      '--upstream-credentials-file=/var/run/secrets/dbguard.io/credentials',
    );
    expect(sidecarOf(fixed).volumeMounts.map((m: any) => m.name)).toContain('dbguard-credentials');
    expect(fixed.spec.volumes.filter((v: any) => v.name === 'dbguard-credentials')).toHaveLength(1);
    expect((await decide(fixed)).patch).toBeUndefined();
  });

  it('injects, with an admission warning, when the named DatabasePolicy does not exist', async () => {
    const { decide } = setup({});
    const pod = appPod({ annotations: { 'dbguard.io/policy': 'missing' } });
    const res = await decide(pod);
    expect(res.allowed).toBe(true);
    expect(res.warnings).toEqual([
      expect.stringContaining('DatabasePolicy "missing" does not exist in namespace "shop"'),
    ]);
    expect(sidecarOf(applyResponse(pod, res))).toBeDefined();
  });

  it('refuses a pod whose container already uses the proxy port, with a clear message and an Event', async () => {
    const { decide, events, counted } = setup();
    const pod = appPod();
    pod.spec.containers[0].ports.push({ containerPort: 5432 });
    const res = await decide(pod);
    expect(res.allowed).toBe(false);
    expect(res.status?.code).toBe(403);
    expect(res.status?.message).toMatch(/container "app" declares containerPort 5432.*dbguard\.io\/port/);
    expect(res.patch).toBeUndefined();
    expect(events).toEqual([
      expect.objectContaining({
        kind: 'ReplicaSet',
        type: 'Warning',
        reason: 'InjectionSkipped',
        message: expect.stringContaining('reason: port-conflict'),
      }),
    ]);
    expect(await counted('refused', 'port-conflict')).toBe(1);

    const metricsClash = appPod();
    metricsClash.spec.containers[0].ports = [{ containerPort: 9090 }];
    const r2 = await decide(metricsClash);
    expect(r2.allowed).toBe(false);
    expect(r2.status?.message).toContain('dbguard.io/metrics-port');
    const moved = appPod({ annotations: { 'dbguard.io/metrics-port': '9191' } });
    moved.spec.containers[0].ports = [{ containerPort: 9090 }];
    const out = applyResponse(moved, await decide(moved));
    validatePod(out);
    expect(sidecarOf(out).args).toContain('--metrics-listen=0.0.0.0:9191');
  });

  it('refuses pods it cannot govern: no policy annotation, bad annotations, hostNetwork, volume name taken', async () => {
    const { decide, counted } = setup();
    const noPolicy = appPod();
    delete noPolicy.metadata.annotations['dbguard.io/policy'];
    const r1 = await decide(noPolicy);
    expect(r1.allowed).toBe(false);
    expect(r1.status?.message).toContain('no annotation dbguard.io/policy');
    const badPort = await decide(appPod({ annotations: { 'dbguard.io/port': '70000' } }));
    expect(badPort.status?.message).toContain('dbguard.io/port: "70000" is not a port number');
    const badName = await decide(appPod({ annotations: { 'dbguard.io/policy': 'Orders DB' } }));
    expect(badName.status?.message).toContain('is not a valid resource name');
    const host = await decide(appPod({ spec: { hostNetwork: true } }));
    expect(host.status?.message).toContain('hostNetwork');
    const vol = await decide(appPod({ spec: { volumes: [{ name: 'dbguard-cache', emptyDir: {} }] } }));
    expect(vol.status?.message).toContain('volume named "dbguard-cache"');
    expect(await counted('refused', 'missing-policy')).toBe(1);
    expect(await counted('refused', 'invalid-annotation')).toBe(2);
  });

  it('skips the excluded namespaces and anything that is not a pod CREATE', async () => {
    const { decide, events, counted } = setup();
    const sys = appPod();
    sys.metadata.namespace = 'kube-system';
    const r = await decide(sys, { namespace: 'kube-system' });
    expect(r).toEqual({ uid: expect.any(String), allowed: true });
    const own = await decide(appPod(), { namespace: 'dbguard-system' });
    expect(own.patch).toBeUndefined();
    expect(events.every((e) => e.reason === 'InjectionSkipped' && e.type === 'Normal')).toBe(true);
    const update = await decide(appPod(), { operation: 'UPDATE' });
    expect(update).toEqual({ uid: expect.any(String), allowed: true });
    expect(await counted('skipped', 'excluded-namespace')).toBe(2);
  });

  it('writes no Event for a dryRun request', async () => {
    const { decide, events } = setup();
    const res = await decide(appPod(), { dryRun: true });
    expect(res.patch).toBeDefined();
    expect(events).toEqual([]);
  });

  it('records the Event on a bare pod itself', async () => {
    const { decide, events } = setup();
    const pod = appPod();
    delete pod.metadata.ownerReferences;
    pod.metadata.name = 'debug';
    await decide(pod);
    expect(events[0]).toMatchObject({ kind: 'Pod', name: 'debug', reason: 'Injected' });
  });
});

describe('webhook over HTTP', () => {
  let server: http.Server;
  let url: string;
  const state = setup();
  beforeAll(async () => {
    const app = express();
    app.use(injectionWebhook(state.o));
    server = http.createServer(app);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/inject`;
  });
  afterAll(async () => {
    await new Promise((r) => server.close(r));
  });

  const post = (body: unknown) =>
    fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });

  it('answers an AdmissionReview with an AdmissionReview carrying the same uid', async () => {
    const r = review(appPod());
    const res = await post(r);
    expect(res.status).toBe(200);
    const body = (await res.json()) as any;
    expect(body).toMatchObject({
      apiVersion: 'admission.k8s.io/v1',
      kind: 'AdmissionReview',
      response: { uid: r.request.uid, allowed: true },
    });
    validatePod(applyResponse(appPod(), body.response));
  });

  it('rejects a body that is not an AdmissionReview with 400, and a lookup failure with allowed: false', async () => {
    expect((await post({ hello: 'world' })).status).toBe(400);
    const bad = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{not json',
    });
    expect(bad.status).toBe(400);
    state.o.lookup = async () => {
      throw new Error('boom');
    };
    const res = await post(review(appPod()));
    const body = (await res.json()) as any;
    expect(body.response).toMatchObject({
      allowed: false,
      status: { code: 500, message: expect.stringContaining('boom') },
    });
    expect(await state.counted('error', 'internal')).toBe(1);
  });
});

describe('the schema check itself', () => {
  it('rejects a pod the API server would reject (so the checks above can fail)', () => {
    const pod = appPod();
    pod.spec.initContainers = [
      { name: 'dbguard-proxy', image: 'x', restartPolicy: 'Always', ports: [{ containerPort: 'http' }] },
    ];
    expect(() => validatePod(pod)).toThrow();
    const noImage = appPod();
    noImage.spec.containers.push({ image: 'x' });
    expect(() => validatePod(noImage)).toThrow(/name/);
  });
});
