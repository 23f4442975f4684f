import {
  ADD,
  CustomObjectsApi,
  DELETE,
  type KubernetesObject,
  makeInformer,
  UPDATE,
  Watch,
} from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type KubeApi, startKubeApi } from '../support/kube-api/index.js';
import { DBP_CRD, dbp, eventually } from './fixtures.js';

let api: KubeApi;
let custom: CustomObjectsApi;
const G = { group: 'dbguard.io', version: 'v1alpha1', plural: 'databasepolicies' };

beforeAll(async () => {
  api = await startKubeApi({
    crds: [DBP_CRD],
    bookmarkIntervalMs: 100,
    namespaces: ['default', 'w1', 'w2', 'w3', 'w4'],
  });
  custom = api.kubeConfig().makeApiClient(CustomObjectsApi);
});
afterAll(() => api.close());

type Seen = { type: string; name: string; rv: string };

function informerFor(namespace: string) {
  const path = `/apis/dbguard.io/v1alpha1/namespaces/${namespace}/databasepolicies`;
  const informer = makeInformer<KubernetesObject>(
    api.kubeConfig(),
    path,
    () => custom.listNamespacedCustomObject({ ...G, namespace }) as any,
  );
  const seen: Seen[] = [];
  const push = (type: string) => (o: KubernetesObject) =>
    seen.push({ type, name: o.metadata!.name!, rv: o.metadata!.resourceVersion! });
  informer.on(ADD, push('add'));
  informer.on(UPDATE, push('update'));
  informer.on(DELETE, push('delete'));
  const lists = () =>
    api.requests.filter(
      (r) => r.verb === 'list' && r.resource === 'databasepolicies' && r.namespace === namespace,
    ).length;
  return { informer, seen, lists };
}

describe('informers', () => {
  it('receive ADDED, MODIFIED and DELETED through list+watch', async () => {
    await custom.createNamespacedCustomObject({ ...G, namespace: 'w1', body: dbp('w1', 'before') });
    const { informer, seen } = informerFor('w1');
    await informer.start();
    try {
      await eventually(() => seen.some((s) => s.type === 'add' && s.name === 'before'));
      await custom.createNamespacedCustomObject({ ...G, namespace: 'w1', body: dbp('w1', 'after') });
      await custom.patchNamespacedCustomObject({
        ...G,
        namespace: 'w1',
        name: 'after',
        body: [{ op: 'add', path: '/spec/defaultAction', value: 'Deny' }],
      });
      await custom.deleteNamespacedCustomObject({ ...G, namespace: 'w1', name: 'before' });
      await eventually(() => seen.some((s) => s.type === 'delete' && s.name === 'before'));
      expect(seen.map((s) => `${s.type}:${s.name}`)).toEqual([
        'add:before',
        'add:after',
        'update:after',
        'delete:before',
      ]);
      expect((informer.get('after', 'w1') as any).spec.defaultAction).toBe('Deny');
    } finally {
      await informer.stop();
    }
  });

  it('relist after compactHistory: the re-watch gets 410 Gone and the informer lists again', async () => {
    const { informer, seen, lists } = informerFor('w2');
    await informer.start();
    try {
      await custom.createNamespacedCustomObject({ ...G, namespace: 'w2', body: dbp('w2', 'a') });
      await eventually(() => seen.some((s) => s.name === 'a'));
      expect(lists()).toBe(1);
      const watchesBefore = api.requests.filter((r) => r.verb === 'watch' && r.namespace === 'w2').length;
      api.compactHistory();
      await eventually(() => lists() === 2);
      // the informer came back: a change after the relist still reaches it
      await eventually(
        () =>
          api.requests.filter((r) => r.verb === 'watch' && r.namespace === 'w2').length >= watchesBefore + 2,
      );
      await custom.createNamespacedCustomObject({ ...G, namespace: 'w2', body: dbp('w2', 'b') });
      await eventually(() => seen.some((s) => s.type === 'add' && s.name === 'b'));
    } finally {
      await informer.stop();
    }
  });
});

describe('watch streams', () => {
  function watchRaw(path: string, params: Record<string, string | number | boolean | undefined>) {
    const events: { type: string; object: any }[] = [];
    let ended: unknown = 'open';
    const ctl = new Watch(api.kubeConfig()).watch(
      path,
      params,
      (type, object) => events.push({ type, object }),
      (err) => {
        ended = err ?? null;
      },
    );
    return { events, ended: () => ended, abort: async () => (await ctl).abort() };
  }

  it('replays changes after resourceVersion N, sends bookmarks, and honours timeoutSeconds', async () => {
    const first: any = await custom.createNamespacedCustomObject({
      ...G,
      namespace: 'w3',
      body: dbp('w3', 'one'),
    });
    await custom.createNamespacedCustomObject({ ...G, namespace: 'w3', body: dbp('w3', 'two') });
    const w = watchRaw('/apis/dbguard.io/v1alpha1/namespaces/w3/databasepolicies', {
      resourceVersion: first.metadata.resourceVersion,
      allowWatchBookmarks: true,
      timeoutSeconds: 1,
    });
    await eventually(() => w.events.some((e) => e.type === 'BOOKMARK'));
    expect(w.events[0]).toMatchObject({ type: 'ADDED', object: { metadata: { name: 'two' } } });
    expect(w.events.filter((e) => e.type === 'ADDED')).toHaveLength(1);
    const bm = w.events.find((e) => e.type === 'BOOKMARK')!;
    expect(bm.object).toMatchObject({ kind: 'DatabasePolicy', apiVersion: 'dbguard.io/v1alpha1' });
    expect(Number(bm.object.metadata.resourceVersion)).toBeGreaterThan(
      Number(first.metadata.resourceVersion),
    );
    await eventually(() => w.ended() !== 'open', 3000);
    expect(w.ended()).toBeNull();
  });

  it('answers an ERROR event with a 410 Status for a resourceVersion outside the window', async () => {
    const old: any = await custom.createNamespacedCustomObject({
      ...G,
      namespace: 'w3',
      body: dbp('w3', 'old'),
    });
    api.setHistoryLimit(2);
    for (let i = 0; i < 3; i++)
      await custom.patchNamespacedCustomObject({
        ...G,
        namespace: 'w3',
        name: 'old',
        body: [{ op: 'add', path: '/metadata/labels', value: { i: String(i) } }],
      });
    const w = watchRaw('/apis/dbguard.io/v1alpha1/namespaces/w3/databasepolicies', {
      resourceVersion: old.metadata.resourceVersion,
    });
    await eventually(() => w.ended() !== 'open');
    expect(w.events).toHaveLength(1);
    expect(w.events[0]).toMatchObject({
      type: 'ERROR',
      object: { kind: 'Status', code: 410, reason: 'Expired' },
    });
    api.setHistoryLimit(1000);
  });

  it('turns an object leaving a label selector into DELETED and one entering it into ADDED', async () => {
    const w = watchRaw('/apis/dbguard.io/v1alpha1/namespaces/w3/databasepolicies', {
      labelSelector: 'watched=yes',
    });
    await eventually(() => api.activeWatchCount > 0);
    await custom.createNamespacedCustomObject({ ...G, namespace: 'w3', body: dbp('w3', 'sel') });
    const label = (v: string) =>
      custom.patchNamespacedCustomObject({
        ...G,
        namespace: 'w3',
        name: 'sel',
        body: [{ op: 'add', path: '/metadata/labels', value: { watched: v } }],
      });
    await label('yes');
    await label('no');
    await eventually(() => w.events.length >= 2);
    expect(w.events.map((e) => `${e.type}:${e.object.metadata.name}`)).toEqual(['ADDED:sel', 'DELETED:sel']);
    await w.abort();
  });

  it('stallWatches keeps connections open but silent; ending them lets the informer catch up', async () => {
    const { informer, seen } = informerFor('w4');
    await informer.start();
    try {
      await custom.createNamespacedCustomObject({ ...G, namespace: 'w4', body: dbp('w4', 'x') });
      await eventually(() => seen.some((s) => s.name === 'x'));
      const open = api.activeWatchCount;
      api.stallWatches();
      await custom.createNamespacedCustomObject({ ...G, namespace: 'w4', body: dbp('w4', 'during-stall') });
      await new Promise((r) => setTimeout(r, 300));
      expect(seen.some((s) => s.name === 'during-stall')).toBe(false);
      expect(api.activeWatchCount).toBe(open);
      // the operator would notice (no bookmarks) and restart its watch; here the server drops the dead streams
      api.resumeWatches();
      api.endWatches();
      await eventually(() => seen.some((s) => s.type === 'add' && s.name === 'during-stall'));
    } finally {
      await informer.stop();
    }
  });
});
