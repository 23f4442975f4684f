import {
  ApiException,
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubernetesObjectApi,
  PatchStrategy,
  setHeaderOptions,
  type V1Lease,
} from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type KubeApi, type KubeObject, startKubeApi } from '../support/kube-api/index.js';
import { DBP_CRD, dbp, raw } from './fixtures.js';

let api: KubeApi;
let core: CoreV1Api;
let custom: CustomObjectsApi;
let objects: KubernetesObjectApi;
const G = { group: 'dbguard.io', version: 'v1alpha1', plural: 'databasepolicies' };

/** The Status object of a failed client-node call. */
async function failure(p: Promise<unknown>): Promise<{ code: number; body: any }> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ApiException) {
      const body = typeof err.body === 'string' ? JSON.parse(err.body) : err.body;
      return { code: err.code, body };
    }
    throw err;
  }
  throw new Error('expected the call to fail');
}

beforeAll(async () => {
  api = await startKubeApi({ crds: [DBP_CRD] });
  const kc = api.kubeConfig();
  core = kc.makeApiClient(CoreV1Api);
  custom = kc.makeApiClient(CustomObjectsApi);
  objects = KubernetesObjectApi.makeApiClient(kc);
  await core.createNamespace({ body: { metadata: { name: 'shop' } } });
});
afterAll(() => api.close());

describe('core resources through CoreV1Api', () => {
  it('creates, reads, lists with selectors, and answers NotFound/AlreadyExists as Status objects', async () => {
    const cm = await core.createNamespacedConfigMap({
      namespace: 'shop',
      body: { metadata: { name: 'cm-a', labels: { app: 'orders', tier: 'db' } }, data: { k: 'v' } },
    });
    expect(cm.metadata?.uid).toMatch(/^[0-9a-f-]{36}$/);
    expect(cm.metadata?.creationTimestamp).toBeInstanceOf(Date);
    expect(Number(cm.metadata?.resourceVersion)).toBeGreaterThan(0);
    await core.createNamespacedConfigMap({
      namespace: 'shop',
      body: { metadata: { name: 'cm-b', labels: { app: 'billing' } } },
    });

    const dup = await failure(
      core.createNamespacedConfigMap({ namespace: 'shop', body: { metadata: { name: 'cm-a' } } }),
    );
    expect(dup.code).toBe(409);
    expect(dup.body).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'AlreadyExists', code: 409 });

    const missing = await failure(core.readNamespacedConfigMap({ namespace: 'shop', name: 'nope' }));
    expect(missing.code).toBe(404);
    expect(missing.body).toMatchObject({
      kind: 'Status',
      reason: 'NotFound',
      message: 'configmaps "nope" not found',
    });

    const byLabel = await core.listNamespacedConfigMap({
      namespace: 'shop',
      labelSelector: 'app in (orders),tier',
    });
    expect(byLabel.items.map((i) => i.metadata?.name)).toEqual(['cm-a']);
    expect(Number(byLabel.metadata?.resourceVersion)).toBeGreaterThanOrEqual(
      Number(cm.metadata?.resourceVersion),
    );
    const notOrders = await core.listNamespacedConfigMap({ namespace: 'shop', labelSelector: 'app!=orders' });
    expect(notOrders.items.map((i) => i.metadata?.name)).toEqual(['cm-b']);
    const byName = await core.listConfigMapForAllNamespaces({
      fieldSelector: 'metadata.name=cm-b,metadata.namespace=shop',
    });
    expect(byName.items.map((i) => i.metadata?.name)).toEqual(['cm-b']);

    const inMissingNs = await failure(
      core.createNamespacedConfigMap({ namespace: 'ghost', body: { metadata: { name: 'x' } } }),
    );
    expect(inMissingNs.code).toBe(404);
  });

  it('generates names, converts Secret stringData, and deletes', async () => {
    const s = await core.createNamespacedSecret({
      namespace: 'shop',
      body: { metadata: { generateName: 'creds-' }, stringData: { password: 'p4ss' } },
    });
    expect(s.metadata?.name).toMatch(/^creds-[a-z0-9]{5}$/);
    expect(s.data?.password).toBe(Buffer.from('p4ss').toString('base64'));
    await core.deleteNamespacedSecret({ namespace: 'shop', name: s.metadata!.name! });
    expect(
      (await failure(core.readNamespacedSecret({ namespace: 'shop', name: s.metadata!.name! }))).code,
    ).toBe(404);
  });

  it('answers 409 Conflict to an update with a stale resourceVersion', async () => {
    const sa = await core.createNamespacedServiceAccount({
      namespace: 'shop',
      body: { metadata: { name: 'checkout' } },
    });
    const fresh = await core.replaceNamespacedServiceAccount({
      namespace: 'shop',
      name: 'checkout',
      body: { ...sa, metadata: { ...sa.metadata, labels: { v: '2' } } },
    });
    expect(Number(fresh.metadata?.resourceVersion)).toBeGreaterThan(Number(sa.metadata?.resourceVersion));
    const stale = await failure(
      core.replaceNamespacedServiceAccount({
        namespace: 'shop',
        name: 'checkout',
        body: { ...sa, metadata: { ...sa.metadata, labels: { v: '3' } } },
      }),
    );
    expect(stale.code).toBe(409);
    expect(stale.body.reason).toBe('Conflict');
    expect(stale.body.message).toContain('the object has been modified');
  });

  it('stores core/v1 and events.k8s.io/v1 Events for tests to read', async () => {
    await core.createNamespacedEvent({
      namespace: 'shop',
      body: {
        metadata: { name: 'orders.1' },
        involvedObject: { kind: 'DatabasePolicy', namespace: 'shop', name: 'orders' },
        reason: 'Compiled',
        message: 'policy compiled',
        type: 'Normal',
      },
    });
    await objects.create({
      apiVersion: 'events.k8s.io/v1',
      kind: 'Event',
      metadata: { name: 'orders.2', namespace: 'shop' },
      regarding: { kind: 'DatabasePolicy', namespace: 'shop', name: 'orders' },
      reason: 'Invalid',
      note: 'bad rule',
      type: 'Warning',
      action: 'Compile',
      reportingController: 'dbguard.io/operator',
      reportingInstance: 'op-1',
      eventTime: new Date().toISOString(),
    } as KubeObject as any);
    expect(api.store.list('v1', 'Event', 'shop').map((e: any) => e.reason)).toEqual(['Compiled']);
    expect(api.store.list('events.k8s.io/v1', 'Event', 'shop').map((e: any) => e.note)).toEqual(['bad rule']);
    const listed = await core.listNamespacedEvent({
      namespace: 'shop',
      fieldSelector: 'involvedObject.name=orders',
    });
    expect(listed.items).toHaveLength(1);
  });
});

describe('custom resources', () => {
  it('CRUD through CustomObjectsApi with defaults, generation and uid', async () => {
    const created: any = await custom.createNamespacedCustomObject({
      ...G,
      namespace: 'shop',
      body: dbp('shop', 'orders'),
    });
    expect(created.metadata.generation).toBe(1);
    expect(created.spec.upstream).toEqual({ host: 'orders-db.shop.svc', port: 5432, sslmode: 'prefer' });
    expect(created.spec.defaultAction).toBe('Allow');
    const got: any = await custom.getNamespacedCustomObject({ ...G, namespace: 'shop', name: 'orders' });
    expect(got.metadata.uid).toBe(created.metadata.uid);

    // a metadata-only change keeps the generation; a spec change bumps it
    const labelled: any = await custom.replaceNamespacedCustomObject({
      ...G,
      namespace: 'shop',
      name: 'orders',
      body: { ...got, metadata: { ...got.metadata, labels: { team: 'a' } } },
    });
    expect(labelled.metadata.generation).toBe(1);
    const merged: any = await custom.patchNamespacedCustomObject(
      { ...G, namespace: 'shop', name: 'orders', body: { spec: { defaultAction: 'Deny' } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    expect(merged.metadata.generation).toBe(2);
    expect(merged.spec.defaultAction).toBe('Deny');
    expect(merged.spec.upstream.host).toBe('orders-db.shop.svc');
    // JSON patch is the generated client's default content type
    const jp: any = await custom.patchNamespacedCustomObject({
      ...G,
      namespace: 'shop',
      name: 'orders',
      body: [
        { op: 'test', path: '/spec/defaultAction', value: 'Deny' },
        { op: 'replace', path: '/spec/upstream/port', value: 6543 },
        { op: 'add', path: '/metadata/annotations', value: { 'x/y': 'z' } },
      ],
    });
    expect(jp.spec.upstream.port).toBe(6543);
    expect(jp.metadata.generation).toBe(3);

    const all: any = await custom.listClusterCustomObject(G);
    expect(all.items.map((i: any) => `${i.metadata.namespace}/${i.metadata.name}`)).toEqual(['shop/orders']);
    expect(all.items[0].kind).toBe('DatabasePolicy');

    const deleted: any = await custom.deleteNamespacedCustomObject({
      ...G,
      namespace: 'shop',
      name: 'orders',
    });
    expect(deleted.metadata.name).toBe('orders');
    expect(api.store.get('dbguard.io/v1alpha1', 'DatabasePolicy', 'shop', 'orders')).toBeUndefined();
  });

  it('keeps status and spec apart: /status changes only status, a normal update ignores status', async () => {
    const created: any = await custom.createNamespacedCustomObject({
      ...G,
      namespace: 'shop',
      body: { ...dbp('shop', 'status-split'), status: { policyVersion: 'ignored-on-create' } },
    });
    expect(created.status).toBeUndefined();
    const withStatus: any = await custom.replaceNamespacedCustomObjectStatus({
      ...G,
      namespace: 'shop',
      name: 'status-split',
      body: {
        ...created,
        spec: { upstream: { host: 'changed-through-status' } },
        status: {
          observedGeneration: 1,
          conditions: [{ type: 'Ready', status: 'True', reason: 'Compiled', message: 'ok' }],
        },
      },
    });
    expect(withStatus.status.conditions[0].status).toBe('True');
    expect(withStatus.spec.upstream.host).toBe('orders-db.shop.svc');
    expect(withStatus.metadata.generation).toBe(1);

    const viaMain: any = await custom.replaceNamespacedCustomObject({
      ...G,
      namespace: 'shop',
      name: 'status-split',
      body: {
        ...withStatus,
        spec: { ...withStatus.spec, defaultAction: 'Deny' },
        status: { conditions: [] },
      },
    });
    expect(viaMain.spec.defaultAction).toBe('Deny');
    expect(viaMain.status.conditions).toHaveLength(1);
    expect(viaMain.metadata.generation).toBe(2);

    const patchedStatus: any = await custom.patchNamespacedCustomObjectStatus(
      {
        ...G,
        namespace: 'shop',
        name: 'status-split',
        body: { status: { observedGeneration: 2 }, spec: { defaultAction: 'Allow' } },
      },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    expect(patchedStatus.status.observedGeneration).toBe(2);
    expect(patchedStatus.spec.defaultAction).toBe('Deny');
    expect(patchedStatus.metadata.generation).toBe(2);
  });

  it('requires a resourceVersion to update a custom resource and rejects a stale one', async () => {
    const created: any = await custom.createNamespacedCustomObject({
      ...G,
      namespace: 'shop',
      body: dbp('shop', 'rv-check'),
    });
    const { resourceVersion: _rv, ...metaWithoutRv } = created.metadata;
    const noRv = await failure(
      custom.replaceNamespacedCustomObject({
        ...G,
        namespace: 'shop',
        name: 'rv-check',
        body: { ...created, metadata: metaWithoutRv },
      }),
    );
    expect(noRv.code).toBe(422);
    await custom.replaceNamespacedCustomObject({
      ...G,
      namespace: 'shop',
      name: 'rv-check',
      body: { ...created, spec: { ...created.spec, enforcement: 'DryRun' } },
    });
    const stale = await failure(
      custom.replaceNamespacedCustomObject({ ...G, namespace: 'shop', name: 'rv-check', body: created }),
    );
    expect(stale.code).toBe(409);
    // a merge patch carrying the stale resourceVersion is a precondition too
    const stalePatch = await failure(
      custom.patchNamespacedCustomObject(
        {
          ...G,
          namespace: 'shop',
          name: 'rv-check',
          body: {
            metadata: { resourceVersion: created.metadata.resourceVersion },
            spec: { defaultAction: 'Deny' },
          },
        },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      ),
    );
    expect(stalePatch.code).toBe(409);
  });

  it('rejects an invalid custom resource with 422 Invalid and field paths; prunes unknown fields with a warning', async () => {
    const bad = await failure(
      custom.createNamespacedCustomObject({
        ...G,
        namespace: 'shop',
        body: dbp('shop', 'bad', 'h', {
          upstream: { port: 'x' },
          defaultAction: 'Maybe',
          rules: [{ name: 'r1', action: 'Deny' }, { name: 'r1', action: 'Allow' }, { action: 'Deny' }],
        }),
      }),
    );
    expect(bad.code).toBe(422);
    expect(bad.body.reason).toBe('Invalid');
    const fields = bad.body.details.causes.map((c: any) => c.field);
    expect(fields).toEqual(
      expect.arrayContaining([
        'spec.upstream.host',
        'spec.upstream.port',
        'spec.defaultAction',
        'spec.rules[2].name',
        'spec.rules[1]',
      ]),
    );
    expect(bad.body.message).toContain('DatabasePolicy.dbguard.io "bad" is invalid');
    expect(bad.body.details.causes).toContainEqual({
      reason: 'FieldValueNotSupported',
      message: 'Unsupported value: "Maybe": supported values: "Allow", "Deny"',
      field: 'spec.defaultAction',
    });

    const withUnknown: any = await custom.createNamespacedCustomObject({
      ...G,
      namespace: 'shop',
      body: dbp('shop', 'pruned', 'h', {
        bogus: 1,
        rules: [{ name: 'r', action: 'Deny', match: { anything: ['kept'] } }],
      }),
    });
    expect(withUnknown.spec.bogus).toBeUndefined();
    expect(withUnknown.spec.rules[0].match.anything).toEqual(['kept']);
    const warned = await raw(api, 'POST', '/apis/dbguard.io/v1alpha1/namespaces/shop/databasepolicies', {
      body: dbp('shop', 'warned', 'h', { bogus: 1 }),
    });
    expect(warned.status).toBe(201);
    expect(warned.headers.warning).toContain('299 - "unknown field \\"spec.bogus\\""');

    const strict = await failure(
      custom.createNamespacedCustomObject({
        ...G,
        namespace: 'shop',
        body: dbp('shop', 'strict', 'h', { bogus: 1 }),
        fieldValidation: 'Strict',
      }),
    );
    expect(strict.code).toBe(400);
    expect(strict.body.message).toContain('spec.bogus');
  });

  it('works through KubernetesObjectApi (discovery, create, read, patch, replace, list, delete)', async () => {
    const created = await objects.create(dbp('shop', 'generic') as any);
    expect(created.metadata?.uid).toBeTruthy();
    const read: any = await objects.read({
      apiVersion: 'dbguard.io/v1alpha1',
      kind: 'DatabasePolicy',
      metadata: { name: 'generic', namespace: 'shop' },
    });
    expect(read.spec.upstream.port).toBe(5432);
    // KubernetesObjectApi defaults to strategic merge patch, which custom resources get as a merge patch
    const patched: any = await objects.patch({
      apiVersion: 'dbguard.io/v1alpha1',
      kind: 'DatabasePolicy',
      metadata: { name: 'generic', namespace: 'shop' },
      spec: { enforcement: 'DryRun' },
    } as any);
    expect(patched.spec.enforcement).toBe('DryRun');
    const replaced: any = await objects.replace({
      ...patched,
      spec: { ...patched.spec, defaultAction: 'Deny' },
    });
    expect(replaced.metadata.generation).toBe(3);
    const list = await objects.list('dbguard.io/v1alpha1', 'DatabasePolicy', 'shop');
    expect(list.items.map((i) => i.metadata?.name)).toContain('generic');
    await objects.delete({
      apiVersion: 'dbguard.io/v1alpha1',
      kind: 'DatabasePolicy',
      metadata: { name: 'generic', namespace: 'shop' },
    });
    expect(api.store.get('dbguard.io/v1alpha1', 'DatabasePolicy', 'shop', 'generic')).toBeUndefined();

    // a Pod through the same generic client: strategic merge merges containers by name
    await objects.create({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'p1', namespace: 'shop' },
      spec: { containers: [{ name: 'app', image: 'app:1' }] },
    } as any);
    const pod: any = await objects.patch({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'p1', namespace: 'shop' },
      spec: { containers: [{ name: 'sidecar', image: 'dbguard:1' }] },
    } as any);
    expect(pod.spec.containers.map((c: any) => c.name)).toEqual(['app', 'sidecar']);
  });

  it('holds deletion until finalizers are removed, and garbage-collects owned objects', async () => {
    const created: any = await custom.createNamespacedCustomObject({
      ...G,
      namespace: 'shop',
      body: {
        ...dbp('shop', 'finalized'),
        metadata: { name: 'finalized', namespace: 'shop', finalizers: ['dbguard.io/cleanup'] },
      },
    });
    await core.createNamespacedConfigMap({
      namespace: 'shop',
      body: {
        metadata: {
          name: 'finalized-compiled',
          ownerReferences: [
            {
              apiVersion: 'dbguard.io/v1alpha1',
              kind: 'DatabasePolicy',
              name: 'finalized',
              uid: created.metadata.uid,
              controller: true,
            },
          ],
        },
      },
    });
    const marked: any = await custom.deleteNamespacedCustomObject({
      ...G,
      namespace: 'shop',
      name: 'finalized',
    });
    expect(marked.metadata.deletionTimestamp).toBeTruthy();
    const still: any = api.store.get('dbguard.io/v1alpha1', 'DatabasePolicy', 'shop', 'finalized');
    expect(still.metadata.deletionTimestamp).toBeTruthy();
    await custom.patchNamespacedCustomObject({
      ...G,
      namespace: 'shop',
      name: 'finalized',
      body: [{ op: 'remove', path: '/metadata/finalizers' }],
    });
    expect(api.store.get('dbguard.io/v1alpha1', 'DatabasePolicy', 'shop', 'finalized')).toBeUndefined();
    expect(api.store.get('v1', 'ConfigMap', 'shop', 'finalized-compiled')).toBeUndefined();
  });
});

describe('lifecycle', () => {
  it('serves a CRD created through the API, and stops serving it (and its objects) when it is deleted', async () => {
    const crd: any = {
      apiVersion: 'apiextensions.k8s.io/v1',
      kind: 'CustomResourceDefinition',
      metadata: { name: 'widgets.example.com' },
      spec: {
        group: 'example.com',
        scope: 'Cluster',
        names: { plural: 'widgets', singular: 'widget', kind: 'Widget' },
        versions: [
          {
            name: 'v1',
            served: true,
            storage: true,
            schema: {
              openAPIV3Schema: {
                type: 'object',
                properties: { spec: { type: 'object', properties: { size: { type: 'integer' } } } },
              },
            },
          },
        ],
      },
    };
    const stored: any = await objects.create(crd);
    expect(stored.status.conditions.find((c: any) => c.type === 'Established').status).toBe('True');
    const w = { group: 'example.com', version: 'v1', plural: 'widgets' };
    await custom.createClusterCustomObject({
      ...w,
      body: { apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name: 'w1' }, spec: { size: 3 } },
    });
    expect(
      (
        await failure(
          custom.createClusterCustomObject({
            ...w,
            body: {
              apiVersion: 'example.com/v1',
              kind: 'Widget',
              metadata: { name: 'w2' },
              spec: { size: 'big' },
            },
          }),
        )
      ).code,
    ).toBe(422);
    await objects.delete(crd);
    expect((await failure(custom.getClusterCustomObject({ ...w, name: 'w1' }))).code).toBe(404);
    expect((await raw(api, 'GET', '/apis/example.com/v1')).status).toBe(404);
    const badCrd = await failure(objects.create({ ...crd, metadata: { name: 'wrong.example.com' } }));
    expect(badCrd.code).toBe(422);
  });

  it('terminates a namespace: contents go first, new content is refused meanwhile', async () => {
    await core.createNamespace({ body: { metadata: { name: 'doomed' } } });
    await core.createNamespacedConfigMap({ namespace: 'doomed', body: { metadata: { name: 'plain' } } });
    await core.createNamespacedConfigMap({
      namespace: 'doomed',
      body: { metadata: { name: 'held', finalizers: ['example.com/hold'] } },
    });
    await core.deleteNamespace({ name: 'doomed' });
    const ns = await core.readNamespace({ name: 'doomed' });
    expect(ns.status?.phase).toBe('Terminating');
    expect(api.store.get('v1', 'ConfigMap', 'doomed', 'plain')).toBeUndefined();
    const refused = await failure(
      core.createNamespacedConfigMap({ namespace: 'doomed', body: { metadata: { name: 'late' } } }),
    );
    expect(refused.code).toBe(403);
    await core.patchNamespacedConfigMap({
      namespace: 'doomed',
      name: 'held',
      body: [{ op: 'remove', path: '/metadata/finalizers' }],
    });
    expect((await failure(core.readNamespace({ name: 'doomed' }))).code).toBe(404);
  });

  it('paginates lists with limit/continue, deletes collections by label, and does not persist dryRun', async () => {
    await core.createNamespace({ body: { metadata: { name: 'many' } } });
    for (let i = 0; i < 5; i++)
      await core.createNamespacedConfigMap({
        namespace: 'many',
        body: { metadata: { name: `cm-${i}`, labels: { batch: i < 3 ? 'a' : 'b' } } },
      });
    const page1 = await core.listNamespacedConfigMap({ namespace: 'many', limit: 2 });
    expect(page1.items.map((i) => i.metadata?.name)).toEqual(['cm-0', 'cm-1']);
    expect(page1.metadata?.remainingItemCount).toBe(3);
    const page2 = await core.listNamespacedConfigMap({
      namespace: 'many',
      limit: 2,
      _continue: page1.metadata?._continue,
    });
    expect(page2.items.map((i) => i.metadata?.name)).toEqual(['cm-2', 'cm-3']);

    await core.deleteCollectionNamespacedConfigMap({ namespace: 'many', labelSelector: 'batch=a' });
    expect(api.store.list('v1', 'ConfigMap', 'many').map((c: any) => c.metadata.name)).toEqual([
      'cm-3',
      'cm-4',
    ]);

    const dry = await core.createNamespacedConfigMap({
      namespace: 'many',
      body: { metadata: { name: 'dry' } },
      dryRun: 'All',
    });
    expect(dry.metadata?.uid).toBeTruthy();
    expect(api.store.get('v1', 'ConfigMap', 'many', 'dry')).toBeUndefined();
  });
});

describe('leases (leader election)', () => {
  it('creates a Lease, renews it, and rejects a competing stale renewal with 409', async () => {
    const coord = api.kubeConfig().makeApiClient(CoordinationV1Api);
    const body: V1Lease = {
      metadata: { name: 'dbguard-operator', namespace: 'kube-system' },
      spec: {
        holderIdentity: 'op-a',
        leaseDurationSeconds: 15,
        acquireTime: new Date() as any,
        renewTime: new Date() as any,
      },
    };
    const lease = await coord.createNamespacedLease({ namespace: 'kube-system', body });
    expect((await failure(coord.createNamespacedLease({ namespace: 'kube-system', body }))).code).toBe(409);
    const renewed = await coord.replaceNamespacedLease({
      namespace: 'kube-system',
      name: 'dbguard-operator',
      body: { ...lease, spec: { ...lease.spec, renewTime: new Date() as any } },
    });
    expect(renewed.spec?.holderIdentity).toBe('op-a');
    // op-b read the lease before op-a renewed it: its takeover must fail
    const takeover = await failure(
      coord.replaceNamespacedLease({
        namespace: 'kube-system',
        name: 'dbguard-operator',
        body: { ...lease, spec: { ...lease.spec, holderIdentity: 'op-b' } },
      }),
    );
    expect(takeover.code).toBe(409);
    expect(
      api.store.get<V1Lease>('coordination.k8s.io/v1', 'Lease', 'kube-system', 'dbguard-operator')?.spec
        ?.holderIdentity,
    ).toBe('op-a');
  });
});

describe('server behaviour', () => {
  it('rejects requests without a valid bearer token with 401', async () => {
    const anon = await raw(api, 'GET', '/api/v1/namespaces', { token: null });
    expect(anon.status).toBe(401);
    expect(anon.body).toMatchObject({ kind: 'Status', reason: 'Unauthorized' });
    const bad = api.kubeConfig({ token: 'wrong' }).makeApiClient(CoreV1Api);
    expect((await failure(bad.listNamespace())).code).toBe(401);
  });

  it('serves discovery for core, built-in groups and CRDs', async () => {
    const groups: any = await api.kubeConfig().makeApiClient(CoreV1Api).getAPIResources();
    expect(groups.resources.map((r: any) => r.name)).toEqual(
      expect.arrayContaining(['pods', 'pods/status', 'secrets', 'namespaces']),
    );
    const dbg = await raw(api, 'GET', '/apis/dbguard.io/v1alpha1');
    expect(dbg.body.resources).toContainEqual(
      expect.objectContaining({
        name: 'databasepolicies',
        namespaced: true,
        kind: 'DatabasePolicy',
        shortNames: ['dbp'],
      }),
    );
    expect(dbg.body.resources.map((r: any) => r.name)).toContain('databasepolicies/status');
    const groupList = await raw(api, 'GET', '/apis');
    expect(groupList.body.groups.map((g: any) => g.name)).toEqual(
      expect.arrayContaining(['apps', 'coordination.k8s.io', 'dbguard.io']),
    );
  });

  it('serves plain HTTP when asked', async () => {
    const plain = await startKubeApi({ tls: false, namespaces: ['default', 'plain-ns'] });
    try {
      expect(plain.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      const names = (await plain.kubeConfig().makeApiClient(CoreV1Api).listNamespace()).items.map(
        (n) => n.metadata?.name,
      );
      expect(names).toEqual(['default', 'plain-ns']);
    } finally {
      await plain.close();
    }
  });

  it('injects faults for the next matching requests', async () => {
    await core.createNamespacedConfigMap({ namespace: 'shop', body: { metadata: { name: 'faulty' } } });
    api.injectFault(
      { verb: 'get', resource: 'configmaps', name: 'faulty' },
      { code: 500, message: 'etcd is on fire' },
    );
    expect(
      (await failure(core.readNamespacedConfigMap({ namespace: 'shop', name: 'faulty' }))).body.message,
    ).toBe('etcd is on fire');
    expect((await core.readNamespacedConfigMap({ namespace: 'shop', name: 'faulty' })).metadata?.name).toBe(
      'faulty',
    );
  });
});
