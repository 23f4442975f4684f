/**
 * A Kubernetes API served over real HTTP(S) inside the test process, for the operator's tests:
 * `@kubernetes/client-node` and kubectl talk to it as to a cluster. See README.md for what it does and
 * does not do.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { stringify as toYaml } from 'yaml';
import type { ServiceResolver } from './admission.js';
import { createTestCa } from './certs.js';
import { ApiError, type StatusDetails } from './errors.js';
import { Operations, type RequestContext } from './operations.js';
import { splitApiVersion, typeKey } from './resources.js';
import { ApiHandler, type FaultMatch } from './server.js';
import type { KubeObject, RequestRecord, ResourceType, UserInfo } from './types.js';

export type { ServiceResolver } from './admission.js';
export { createTestCa, type TestCa } from './certs.js';
export { ApiError } from './errors.js';
export type { FaultMatch } from './server.js';
export type { KubeObject, RequestRecord, UserInfo } from './types.js';

export interface KubeApiOptions {
  /** HTTPS with a throwaway CA (default) or plain HTTP */
  tls?: boolean;
  /** default 127.0.0.1; port default 0 (a free one) */
  host?: string;
  port?: number;
  /** change events retained for watches; a watch from an older resourceVersion gets 410 Gone (default 1000) */
  historyLimit?: number;
  /** how often a watch with allowWatchBookmarks=true gets a BOOKMARK (default 1000 ms) */
  bookmarkIntervalMs?: number;
  /** bearer token → user; the admin token (see `adminToken`) is always added */
  tokens?: Record<string, UserInfo>;
  /** requests without a token act as system:anonymous instead of getting 401 (default false) */
  anonymous?: boolean;
  /** namespaced creates in a missing namespace fail with 404 as on a cluster (default true) */
  requireNamespaces?: boolean;
  /** created at start (default: default, kube-system, kube-public) */
  namespaces?: string[];
  /** CustomResourceDefinition objects to serve from the start (e.g. parsed crds/*.yaml) */
  crds?: KubeObject[];
}

export interface TokenReviewAnswer {
  authenticated: boolean;
  user?: UserInfo;
  audiences?: string[];
  error?: string;
}

/** token (and requested audiences) → the answer of POST /apis/authentication.k8s.io/v1/tokenreviews */
export type TokenReviewFn = (
  token: string,
  audiences: string[] | undefined,
  requester: UserInfo,
) => TokenReviewAnswer | Promise<TokenReviewAnswer>;

export interface SimpleWebhook {
  type: 'mutating' | 'validating';
  /** the configuration object's name; defaults to the webhook's name */
  configName?: string;
  /** the webhook's name, e.g. inject.dbguard.io */
  name: string;
  url?: string;
  service?: { namespace: string; name: string; path?: string; port?: number };
  /** PEM; base64-encoded into clientConfig.caBundle for you */
  caPem?: string;
  rules: {
    operations: string[];
    apiGroups: string[];
    apiVersions: string[];
    resources: string[];
    scope?: string;
  }[];
  namespaceSelector?: Record<string, unknown>;
  objectSelector?: Record<string, unknown>;
  failurePolicy?: 'Fail' | 'Ignore';
  timeoutSeconds?: number;
}

/** Direct access to stored objects for assertions and seeding (no HTTP, no admission). */
export interface StoreView {
  /** the current global resourceVersion */
  readonly resourceVersion: number;
  get<T = KubeObject>(
    apiVersion: string,
    kind: string,
    namespace: string | undefined,
    name: string,
  ): T | undefined;
  list<T = KubeObject>(apiVersion: string, kind: string, namespace?: string): T[];
  /** create, or replace unconditionally (status included), with the usual metadata handling and schema checks */
  put<T = KubeObject>(obj: KubeObject): Promise<T>;
  /** delete now or mark for deletion when finalizers remain; false when it did not exist */
  delete(apiVersion: string, kind: string, namespace: string | undefined, name: string): Promise<boolean>;
}

export interface KubeApi {
  url: string;
  /** PEM of the CA that signed the server certificate ('' with tls: false) */
  caPem: string;
  /** bearer token of the admin user (system:masters) */
  adminToken: string;
  /** a client-node config pointing at this server with a bearer token (default: the admin's) */
  kubeConfig(opts?: { token?: string; namespace?: string }): KubeConfig;
  /** writes a kubeconfig file (CA data embedded) for kubectl and returns its path */
  writeKubeconfig(path: string, opts?: { token?: string; namespace?: string }): string;
  store: StoreView;
  /** every request the server saw (last 5000): count list/watch calls with it */
  requests: RequestRecord[];
  /** serves a CustomResourceDefinition (as if applied; no admission) and returns it as stored */
  registerCrd(crd: KubeObject): Promise<KubeObject>;
  setTokenReview(fn: TokenReviewFn): void;
  /** adds (or replaces) a bearer token → user for requests and the default TokenReview answer */
  addToken(token: string, user: UserInfo): void;
  /** creates a Mutating/ValidatingWebhookConfiguration with one webhook and returns it */
  addAdmissionWebhook(w: SimpleWebhook): Promise<KubeObject>;
  /** where a webhook's clientConfig.service is reached (TLS still verifies `<name>.<namespace>.svc`) */
  setServiceResolver(fn: ServiceResolver): void;
  /** forgets the retained events: every resourceVersion clients hold becomes too old (410 on re-watch);
   *  open watches are ended so they re-watch, unless keepWatches */
  compactHistory(opts?: { keepWatches?: boolean }): void;
  setHistoryLimit(n: number): void;
  /** open and new watches stop sending anything, yet stay open */
  stallWatches(): void;
  /** new watches work again (stalled ones stay stalled) */
  resumeWatches(): void;
  /** ends every open watch stream normally */
  endWatches(): void;
  readonly activeWatchCount: number;
  /** the next `times` requests matching `match` fail with this Status */
  injectFault(
    match: FaultMatch,
    status: { code: number; reason?: string; message?: string; details?: StatusDetails },
    times?: number,
  ): void;
  clearFaults(): void;
  close(): Promise<void>;
}

const ADMIN: UserInfo = {
  username: 'admin',
  uid: 'admin',
  groups: ['system:masters', 'system:authenticated'],
};

export async function startKubeApi(opts: KubeApiOptions = {}): Promise<KubeApi> {
  const tls = opts.tls ?? true;
  const host = opts.host ?? '127.0.0.1';
  const adminToken = `admin-${randomBytes(12).toString('hex')}`;
  const tokens = new Map<string, UserInfo>(Object.entries(opts.tokens ?? {}));
  tokens.set(adminToken, ADMIN);
  const ops = new Operations({
    historyLimit: opts.historyLimit ?? 1000,
    requireNamespaces: opts.requireNamespaces ?? true,
  });
  let address = '';
  const handler = new ApiHandler(ops, {
    tokens,
    anonymous: opts.anonymous ?? false,
    bookmarkIntervalMs: opts.bookmarkIntervalMs ?? 1000,
    serverAddress: () => address,
  });

  let tokenReview: TokenReviewFn = (token, audiences) => {
    const user = tokens.get(token);
    return user
      ? { authenticated: true, user, audiences }
      : { authenticated: false, error: 'invalid bearer token' };
  };
  ops.tokenReview = async (review, ctx): Promise<KubeObject> => {
    const spec = review.spec as { token: string; audiences?: string[] };
    const a = await tokenReview(spec.token, spec.audiences, ctx.user);
    const status: Record<string, unknown> = { authenticated: a.authenticated };
    if (a.authenticated) {
      status.user = a.user ?? { username: '' };
      if (a.audiences ?? spec.audiences) status.audiences = a.audiences ?? spec.audiences;
    } else status.error = a.error ?? '';
    const { metadata, ...rest } = review;
    return { ...rest, metadata: { ...(metadata ?? {}) }, status };
  };

  const internal = (): RequestContext => ({ user: ADMIN, warnings: [], skipAdmission: true });
  const typeOf = (apiVersion: string, kind: string): ResourceType => {
    const t = ops.registry.byKind(apiVersion, kind);
    if (!t) throw new Error(`kube-api: no resource type for ${apiVersion} ${kind}`);
    return t;
  };

  for (const ns of opts.namespaces ?? ['default', 'kube-system', 'kube-public'])
    await ops.create(typeOf('v1', 'Namespace'), 'v1', undefined, { metadata: { name: ns } }, internal());
  for (const crd of opts.crds ?? [])
    await ops.create(
      typeOf('apiextensions.k8s.io/v1', 'CustomResourceDefinition'),
      'v1',
      undefined,
      crd,
      internal(),
    );

  const ca = tls ? createTestCa('dbguard-kube-api-ca') : undefined;
  const cert = ca?.issue(
    ['localhost', '127.0.0.1', host].filter((h, i, a) => a.indexOf(h) === i),
    'kube-apiserver',
  );
  const server: Server = tls
    ? createHttpsServer({ key: cert!.keyPem, cert: cert!.certPem }, handler.handle)
    : createHttpServer(handler.handle);
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  address = `${host}:${port}`;
  const url = `${tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`;
  const caPem = ca?.certPem ?? '';

  const configObject = (o: { token?: string; namespace?: string } = {}) => ({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [
      {
        name: 'kube-api',
        // client-node refuses http:// unless TLS verification is switched off, hence the flag for plain HTTP
        cluster: {
          server: url,
          ...(tls
            ? { 'certificate-authority-data': Buffer.from(caPem).toString('base64') }
            : { 'insecure-skip-tls-verify': true }),
        },
      },
    ],
    users: [{ name: 'kube-api-user', user: { token: o.token ?? adminToken } }],
    contexts: [
      {
        name: 'kube-api',
        context: { cluster: 'kube-api', user: 'kube-api-user', namespace: o.namespace ?? 'default' },
      },
    ],
    'current-context': 'kube-api',
  });

  const store: StoreView = {
    get resourceVersion() {
      return ops.store.resourceVersion;
    },
    get<T>(apiVersion: string, kind: string, namespace: string | undefined, name: string) {
      const t = typeOf(apiVersion, kind);
      const o = ops.store.get(typeKey(t.group, t.plural), t.namespaced ? namespace : undefined, name);
      return (o ? ops.present(t, splitApiVersion(apiVersion)[1], o) : undefined) as T | undefined;
    },
    list<T>(apiVersion: string, kind: string, namespace?: string) {
      const t = typeOf(apiVersion, kind);
      const v = splitApiVersion(apiVersion)[1];
      return ops.store.list(typeKey(t.group, t.plural), namespace).map((o) => ops.present(t, v, o)) as T[];
    },
    async put<T>(obj: KubeObject) {
      if (!obj.apiVersion || !obj.kind || !obj.metadata?.name)
        throw new Error('kube-api store.put: apiVersion, kind and metadata.name are required');
      const t = typeOf(obj.apiVersion, obj.kind);
      const v = splitApiVersion(obj.apiVersion)[1];
      const ns = obj.metadata.namespace;
      const existing = ops.store.get(
        typeKey(t.group, t.plural),
        t.namespaced ? ns : undefined,
        obj.metadata.name,
      );
      if (!existing) {
        const created = await ops.create(t, v, ns, obj, internal());
        if (t.statusSubresource && t.crd && obj.status !== undefined)
          return (await ops.update(
            t,
            v,
            ns,
            obj.metadata.name,
            { ...created, status: obj.status },
            'status',
            internal(),
          )) as T;
        return created as T;
      }
      const body = {
        ...obj,
        metadata: { ...obj.metadata, resourceVersion: existing.metadata!.resourceVersion },
      };
      const main = await ops.update(t, v, ns, obj.metadata.name, body, undefined, internal());
      if (t.statusSubresource && obj.status !== undefined)
        return (await ops.update(
          t,
          v,
          ns,
          obj.metadata.name,
          { ...main, status: obj.status },
          'status',
          internal(),
        )) as T;
      return main as T;
    },
    async delete(apiVersion: string, kind: string, namespace: string | undefined, name: string) {
      const t = typeOf(apiVersion, kind);
      try {
        await ops.delete(t, splitApiVersion(apiVersion)[1], namespace, name, {}, internal());
        return true;
      } catch (err) {
        if (err instanceof ApiError && err.code === 404) return false;
        throw err;
      }
    },
  };

  return {
    url,
    caPem,
    adminToken,
    kubeConfig(o) {
      const kc = new KubeConfig();
      kc.loadFromString(JSON.stringify(configObject(o)));
      return kc;
    },
    writeKubeconfig(path, o) {
      writeFileSync(path, toYaml(configObject(o)), { mode: 0o600 });
      return path;
    },
    store,
    requests: handler.requests,
    registerCrd: (crd) => {
      const t = typeOf('apiextensions.k8s.io/v1', 'CustomResourceDefinition');
      const name = crd.metadata?.name;
      if (name && ops.store.get(typeKey(t.group, t.plural), undefined, name)) return store.put(crd);
      return ops.create(t, 'v1', undefined, crd, internal());
    },
    setTokenReview(fn) {
      tokenReview = fn;
    },
    addToken(token, user) {
      tokens.set(token, user);
    },
    addAdmissionWebhook(w) {
      if (!w.url && !w.service) throw new Error('addAdmissionWebhook: give url or service');
      const kind = w.type === 'mutating' ? 'MutatingWebhookConfiguration' : 'ValidatingWebhookConfiguration';
      const webhook: Record<string, unknown> = {
        name: w.name,
        clientConfig: {
          ...(w.url ? { url: w.url } : { service: w.service }),
          ...(w.caPem ? { caBundle: Buffer.from(w.caPem).toString('base64') } : {}),
        },
        rules: w.rules.map((r) => ({ scope: '*', ...r })),
        failurePolicy: w.failurePolicy ?? 'Fail',
        sideEffects: 'None',
        admissionReviewVersions: ['v1'],
        timeoutSeconds: w.timeoutSeconds ?? 10,
        namespaceSelector: w.namespaceSelector ?? {},
        objectSelector: w.objectSelector ?? {},
      };
      if (w.type === 'mutating') webhook.reinvocationPolicy = 'Never';
      return store.put({
        apiVersion: 'admissionregistration.k8s.io/v1',
        kind,
        metadata: { name: w.configName ?? w.name },
        webhooks: [webhook],
      });
    },
    setServiceResolver(fn) {
      ops.admission.serviceResolver = fn;
    },
    compactHistory(o) {
      ops.store.compact();
      if (!o?.keepWatches) handler.endWatches();
    },
    setHistoryLimit: (n) => ops.store.setHistoryLimit(n),
    stallWatches: () => handler.stallWatches(),
    resumeWatches: () => handler.resumeWatches(),
    endWatches: () => handler.endWatches(),
    get activeWatchCount() {
      return handler.activeWatchCount;
    },
    injectFault(match, status, times = 1) {
      handler.injectFault(
        match,
        new ApiError(
          status.code,
          status.reason ?? 'InternalError',
          status.message ?? 'injected fault',
          status.details,
        ),
        times,
      );
    },
    clearFaults: () => handler.clearFaults(),
    async close() {
      handler.endWatches();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

/**
 * TokenReview for the tests' ServiceAccount tokens, `sa:<namespace>:<name>`: such a token stands for
 * `system:serviceaccount:<namespace>:<name>`; any other token is refused. With `audience`, only a
 * review that asks for that audience succeeds (as a projected token bound to it would).
 */
export function serviceAccountTokenReview(
  opts: { audience?: string; groups?: string[] } = {},
): TokenReviewFn {
  return (token, audiences) => {
    const sa = /^sa:(.+):(.+)$/.exec(token);
    if (!sa || (opts.audience !== undefined && !audiences?.includes(opts.audience)))
      return { authenticated: false, error: 'unknown token' };
    return {
      authenticated: true,
      user: { username: `system:serviceaccount:${sa[1]}:${sa[2]}`, groups: opts.groups ?? [] },
      audiences: ['dbguard'],
    };
  };
}
