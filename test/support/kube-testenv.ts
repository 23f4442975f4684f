/**
 * A real Kubernetes control plane for tests (what kubebuilder calls envtest): etcd and kube-apiserver
 * built from pinned Go modules by hack/kube-testenv/build.sh, started on free ports with their own CA,
 * serving certificate, ServiceAccount issuer and signing key, RBAC authorization and the default
 * admission plugins. No kubelet and no controller-manager: pods never run, and ServiceAccounts (and their
 * `default` one) exist only when a test creates them.
 *
 * The admin user is a client certificate in `system:masters`; everyone else (the operator) authenticates
 * with a ServiceAccount token from the real TokenRequest API, so RBAC decides what they may do.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import * as k8s from '@kubernetes/client-node';
import YAML from 'yaml';
import { type CertFiles, makeCa } from './tls.js';
import { until } from './until.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const BUILD = 'hack/kube-testenv/build.sh';

export interface KubeTestenvBins {
  etcd: string;
  kubeApiserver: string;
  helm: string;
}

/**
 * The built binaries, or an Error whose message is the one line that says how to build them. The tier
 * fails with it (never skips): `make test` builds them first.
 */
export function kubeTestenvBins(): KubeTestenvBins {
  let dir: string;
  try {
    dir = execFileSync('bash', [path.join(ROOT, BUILD), '--bin-dir'], {
      encoding: 'utf8',
      stdio: 'pipe',
    }).trim();
  } catch (e) {
    const stderr = String((e as { stderr?: unknown }).stderr ?? '').trim();
    throw new Error(stderr || `kube-testenv: binaries not built: run ${BUILD}`);
  }
  return {
    etcd: path.join(dir, 'etcd'),
    kubeApiserver: path.join(dir, 'kube-apiserver'),
    helm: path.join(dir, 'helm'),
  };
}

export interface ApiResponse<T = any> {
  status: number;
  body: T;
}

export interface UserCredentials {
  cert: string;
  key: string;
}

export interface KubeTestenv {
  bins: KubeTestenvBins;
  /** https://127.0.0.1:<port> */
  server: string;
  ca: string;
  dir: string;
  /** the admin (system:masters) client configuration */
  kubeConfig(): k8s.KubeConfig;
  /** a client configuration that authenticates with `token` */
  tokenKubeConfig(token: string): k8s.KubeConfig;
  /** writes the admin kubeconfig (certificates embedded) for CLIs */
  writeKubeconfig(file: string): void;
  /** a raw request as the admin (or with `token`); the body is parsed JSON when it is JSON */
  request<T = any>(
    method: string,
    urlPath: string,
    body?: unknown,
    opts?: { token?: string; user?: UserCredentials; contentType?: string },
  ): Promise<ApiResponse<T>>;
  /** a client certificate for user `name` in `groups` (RBAC subjects of kind User and Group) */
  user(name: string, groups?: string[]): UserCredentials;
  /** server-side apply of objects (a list or a multi-document YAML string) as the admin */
  apply(objects: string | Record<string, any>[]): Promise<void>;
  /** the REST path of an object (or of its collection with `name` omitted) */
  pathOf(apiVersion: string, kind: string, namespace: string | undefined, name?: string): string;
  /** a token of the real TokenRequest API for a ServiceAccount (created when missing) */
  serviceAccountToken(namespace: string, name: string, audiences?: string[]): Promise<string>;
  /** runs the built helm; returns stdout */
  helm(args: string[]): string;
  /** the control plane's logs so far (for failure messages) */
  logs(): string;
  close(): Promise<void>;
}

/** Kinds the tests apply, with their resource names (no discovery needed for these). */
const RESOURCES: Record<string, { plural: string; namespaced: boolean }> = {
  Namespace: { plural: 'namespaces', namespaced: false },
  ServiceAccount: { plural: 'serviceaccounts', namespaced: true },
  Secret: { plural: 'secrets', namespaced: true },
  Service: { plural: 'services', namespaced: true },
  ConfigMap: { plural: 'configmaps', namespaced: true },
  Pod: { plural: 'pods', namespaced: true },
  Endpoints: { plural: 'endpoints', namespaced: true },
  Event: { plural: 'events', namespaced: true },
  ClusterRole: { plural: 'clusterroles', namespaced: false },
  ClusterRoleBinding: { plural: 'clusterrolebindings', namespaced: false },
  Role: { plural: 'roles', namespaced: true },
  RoleBinding: { plural: 'rolebindings', namespaced: true },
  CustomResourceDefinition: { plural: 'customresourcedefinitions', namespaced: false },
  MutatingWebhookConfiguration: { plural: 'mutatingwebhookconfigurations', namespaced: false },
  ValidatingWebhookConfiguration: { plural: 'validatingwebhookconfigurations', namespaced: false },
  Lease: { plural: 'leases', namespaced: true },
  Deployment: { plural: 'deployments', namespaced: true },
  CronJob: { plural: 'cronjobs', namespaced: true },
  NetworkPolicy: { plural: 'networkpolicies', namespaced: true },
  PodDisruptionBudget: { plural: 'poddisruptionbudgets', namespaced: true },
  EndpointSlice: { plural: 'endpointslices', namespaced: true },
  DatabasePolicy: { plural: 'databasepolicies', namespaced: true },
  MaskingRule: { plural: 'maskingrules', namespaced: true },
  ApprovalRequest: { plural: 'approvalrequests', namespaced: true },
};

function pathOf(apiVersion: string, kind: string, namespace: string | undefined, name?: string): string {
  const r = RESOURCES[kind];
  if (!r) throw new Error(`kube-testenv: unknown kind ${kind} (add it to RESOURCES)`);
  const base = apiVersion.includes('/') ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
  const ns = r.namespaced ? `/namespaces/${namespace ?? 'default'}` : '';
  return `${base}${ns}/${r.plural}${name ? `/${encodeURIComponent(name)}` : ''}`;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: 'pipe' });
}

/** A certificate signed by `ca` with a full subject (`/O=system:masters/CN=admin`) and optional SANs. */
function signed(dir: string, name: string, subject: string, ca: CertFiles, san?: string): CertFiles {
  const f = (x: string) => path.join(dir, `${name}.${x}`);
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', subject, '-keyout', f('key'), '-out', f('csr')]);
  const ext = san ? `subjectAltName=${san}\n` : 'extendedKeyUsage=clientAuth\n';
  fs.writeFileSync(f('ext'), ext);
  openssl(
    ['x509', '-req', '-in', f('csr'), '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial'].concat([
      '-days',
      '1',
      '-extfile',
      f('ext'),
      '-out',
      f('crt'),
    ]),
  );
  return { cert: f('crt'), key: f('key') };
}

/** Children of every testenv in this process: killed even when a test worker exits without teardown. */
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

function startProcess(bin: string, args: string[], logFile: string): ChildProcess {
  const out = fs.openSync(logFile, 'a');
  const child = spawn(bin, args, { stdio: ['ignore', out, out] });
  fs.closeSync(out);
  live.add(child);
  child.once('exit', () => live.delete(child));
  return child;
}

async function stopProcess(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}

function tail(file: string, lines = 40): string {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

export interface KubeTestenvOptions {
  /** how long to wait for kube-apiserver's /readyz (first start of a cold binary is slower) */
  readyTimeoutMs?: number;
  /** binaries other than build.sh's (default: kubeTestenvBins()) */
  bins?: KubeTestenvBins;
}

/** Starts etcd and kube-apiserver; on any failure both are stopped and the error names the log's tail. */
export async function startKubeTestenv(opts: KubeTestenvOptions = {}): Promise<KubeTestenv> {
  const bins = opts.bins ?? kubeTestenvBins();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-kube-'));
  let etcd: ChildProcess | undefined;
  let apiserver: ChildProcess | undefined;
  const etcdLog = path.join(dir, 'etcd.log');
  const apiLog = path.join(dir, 'kube-apiserver.log');
  const close = async () => {
    await stopProcess(apiserver);
    await stopProcess(etcd);
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    const [clientPort, peerPort, securePort] = [await freePort(), await freePort(), await freePort()];
    etcd = startProcess(
      bins.etcd,
      [
        '--name=testenv',
        `--data-dir=${path.join(dir, 'etcd-data')}`,
        `--listen-client-urls=http://127.0.0.1:${clientPort}`,
        `--advertise-client-urls=http://127.0.0.1:${clientPort}`,
        `--listen-peer-urls=http://127.0.0.1:${peerPort}`,
        `--initial-advertise-peer-urls=http://127.0.0.1:${peerPort}`,
        `--initial-cluster=testenv=http://127.0.0.1:${peerPort}`,
        // a throwaway store: no fsync (as envtest does), it dies with the test
        '--unsafe-no-fsync',
        '--log-level=warn',
      ],
      etcdLog,
    );
    await until(
      'etcd /health',
      async () => {
        if (etcd!.exitCode !== null) throw new Error(`etcd exited: ${tail(etcdLog)}`);
        const r = await fetch(`http://127.0.0.1:${clientPort}/health`).catch(() => undefined);
        return r?.ok;
      },
      30_000,
      100,
    );

    const ca = makeCa(dir, 'ca', 'kube-testenv-ca');
    const serving = signed(dir, 'apiserver', '/CN=kube-apiserver', ca, 'DNS:localhost,IP:127.0.0.1');
    const admin = signed(dir, 'admin', '/O=system:masters/CN=kube-testenv-admin', ca);
    const saKey = path.join(dir, 'sa.key');
    const saPub = path.join(dir, 'sa.pub');
    openssl(['genrsa', '-out', saKey, '2048']);
    openssl(['rsa', '-in', saKey, '-pubout', '-out', saPub]);

    apiserver = startProcess(
      bins.kubeApiserver,
      [
        `--etcd-servers=http://127.0.0.1:${clientPort}`,
        '--bind-address=127.0.0.1',
        '--advertise-address=127.0.0.1',
        `--secure-port=${securePort}`,
        `--cert-dir=${path.join(dir, 'certs')}`,
        `--tls-cert-file=${serving.cert}`,
        `--tls-private-key-file=${serving.key}`,
        `--client-ca-file=${ca.cert}`,
        '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
        `--service-account-key-file=${saPub}`,
        `--service-account-signing-key-file=${saKey}`,
        '--service-cluster-ip-range=10.0.0.0/24',
        '--authorization-mode=RBAC',
        '--allow-privileged=true',
        // webhooks reach a Service through its endpoints (no kube-proxy here): a selector-less Service with
        // an EndpointSlice pointing at a test process is how a test serves a webhook
        '--enable-aggregator-routing=true',
        // the default admission plugins (ServiceAccount, NamespaceLifecycle, MutatingAdmissionWebhook,
        // ValidatingAdmissionWebhook, ...): no --enable/--disable-admission-plugins on purpose
        '--v=1',
      ],
      apiLog,
    );
    const caPem = fs.readFileSync(ca.cert, 'utf8');
    const server = `https://127.0.0.1:${securePort}`;
    const certPem = fs.readFileSync(admin.cert, 'utf8');
    const keyPem = fs.readFileSync(admin.key, 'utf8');

    const request = <T = any>(
      method: string,
      urlPath: string,
      body?: unknown,
      o: { token?: string; user?: UserCredentials; contentType?: string } = {},
    ): Promise<ApiResponse<T>> =>
      new Promise((resolve, reject) => {
        const data = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
        const req = https.request(
          `${server}${urlPath}`,
          {
            method,
            ca: caPem,
            ...(o.token ? {} : o.user ? o.user : { cert: certPem, key: keyPem }),
            headers: {
              Accept: 'application/json',
              ...(o.token ? { Authorization: `Bearer ${o.token}` } : {}),
              ...(data !== undefined ? { 'Content-Type': o.contentType ?? 'application/json' } : {}),
            },
          },
          (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c) => chunks.push(c));
            res.on('end', () => {
              const text = Buffer.concat(chunks).toString('utf8');
              let parsed: any = text;
              try {
                parsed = JSON.parse(text);
              } catch {}
              resolve({ status: res.statusCode ?? 0, body: parsed });
            });
          },
        );
        req.on('error', reject);
        if (data !== undefined) req.write(data);
        req.end();
      });

    await until(
      'kube-apiserver /readyz',
      async () => {
        if (apiserver!.exitCode !== null) throw new Error(`kube-apiserver exited: ${tail(apiLog)}`);
        const r = await request('GET', '/readyz').catch(() => undefined);
        return r?.status === 200;
      },
      opts.readyTimeoutMs ?? 90_000,
      200,
    );

    const kubeConfigWith = (user: k8s.User) => {
      const kc = new k8s.KubeConfig();
      kc.loadFromOptions({
        clusters: [{ name: 'testenv', server, caData: Buffer.from(caPem).toString('base64') }],
        users: [user],
        contexts: [{ name: 'testenv', cluster: 'testenv', user: user.name }],
        currentContext: 'testenv',
      });
      return kc;
    };
    const adminUser = {
      name: 'admin',
      certData: Buffer.from(certPem).toString('base64'),
      keyData: Buffer.from(keyPem).toString('base64'),
    };

    const apply = async (objects: string | Record<string, any>[]) => {
      const list =
        typeof objects === 'string'
          ? YAML.parseAllDocuments(objects)
              .map((d) => d.toJSON())
              .filter((o) => o && typeof o === 'object' && o.kind)
          : objects;
      for (const o of list) {
        const p = pathOf(o.apiVersion, o.kind, o.metadata?.namespace, o.metadata.name);
        const r = await request('PATCH', `${p}?fieldManager=kube-testenv&force=true`, o, {
          contentType: 'application/apply-patch+yaml',
        });
        if (r.status >= 300) {
          throw new Error(`apply ${o.kind} ${o.metadata.name}: ${r.status} ${JSON.stringify(r.body)}`);
        }
      }
    };

    const env: KubeTestenv = {
      bins,
      server,
      ca: caPem,
      dir,
      kubeConfig: () => kubeConfigWith(adminUser),
      tokenKubeConfig: (token) => kubeConfigWith({ name: 'token', token }),
      writeKubeconfig(file) {
        fs.writeFileSync(file, kubeConfigWith(adminUser).exportConfig(), { mode: 0o600 });
      },
      request,
      user(name, groups = []) {
        const subject = `${groups.map((g) => `/O=${g}`).join('')}/CN=${name}`;
        const f = signed(dir, `user-${name}`, subject, ca);
        return { cert: fs.readFileSync(f.cert, 'utf8'), key: fs.readFileSync(f.key, 'utf8') };
      },
      apply,
      pathOf,
      async serviceAccountToken(namespace, name, audiences) {
        const sa = { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name, namespace } };
        const got = await request('GET', pathOf('v1', 'ServiceAccount', namespace, name));
        if (got.status === 404) await apply([sa]);
        const r = await request('POST', `${pathOf('v1', 'ServiceAccount', namespace, name)}/token`, {
          apiVersion: 'authentication.k8s.io/v1',
          kind: 'TokenRequest',
          spec: { audiences: audiences ?? [], expirationSeconds: 3600 },
        });
        if (r.status !== 201)
          throw new Error(`TokenRequest ${namespace}/${name}: ${r.status} ${JSON.stringify(r.body)}`);
        return r.body.status.token as string;
      },
      helm(args) {
        return execFileSync(bins.helm, args, {
          cwd: ROOT,
          encoding: 'utf8',
          stdio: 'pipe',
          // no user's helm configuration or cache leaks in
          env: {
            ...process.env,
            HELM_CONFIG_HOME: path.join(dir, 'helm'),
            HELM_CACHE_HOME: path.join(dir, 'helm'),
          },
        });
      },
      logs: () => `--- etcd\n${tail(etcdLog)}\n--- kube-apiserver\n${tail(apiLog)}`,
      close,
    };
    return env;
  } catch (e) {
    const logs = `--- etcd\n${tail(etcdLog)}\n--- kube-apiserver\n${tail(apiLog)}`;
    await close();
    throw new Error(`${(e as Error).message}\n${logs}`);
  }
}

/** The generated CRDs as committed in crds/ (what `kubectl apply -f crds/` installs). */
export function crdsFromFiles(): Record<string, any>[] {
  const dir = path.join(ROOT, 'crds');
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.yaml'))
    .sort()
    .map((f) => YAML.parse(fs.readFileSync(path.join(dir, f), 'utf8')));
}

/** Applies crds/ and waits until the API server serves them (Established). */
export async function applyCrds(env: KubeTestenv): Promise<void> {
  const crds = crdsFromFiles();
  await env.apply(crds);
  for (const crd of crds) {
    await until(
      `${crd.metadata.name} Established`,
      async () => {
        const r = await env.request(
          'GET',
          `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd.metadata.name}`,
        );
        return r.body?.status?.conditions?.some((c: any) => c.type === 'Established' && c.status === 'True');
      },
      30_000,
    );
    // Established is not yet servable: until its watch cache is initialized, a list answers
    // 429 "storage is (re)initializing" (the fake API has no such window)
    const { group, versions, names } = crd.spec;
    await until(
      `${crd.metadata.name} listable`,
      async () =>
        (await env.request('GET', `/apis/${group}/${versions[0].name}/${names.plural}`)).status === 200,
      30_000,
    );
  }
}

/** A non-loopback IPv4 address of this machine (endpoints may not be loopback), or undefined. */
export function localAddress(): string | undefined {
  for (const list of Object.values(os.networkInterfaces()))
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  return undefined;
}

/** A selector-less Service `name` whose endpoints are `ip:port` (how the API server reaches a webhook here). */
export async function serviceTo(
  env: KubeTestenv,
  namespace: string,
  name: string,
  servicePort: number,
  ip: string,
  port: number,
): Promise<void> {
  await env.apply([
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name, namespace },
      spec: { ports: [{ name: 'https', port: servicePort, targetPort: port, protocol: 'TCP' }] },
    },
    {
      apiVersion: 'v1',
      kind: 'Endpoints',
      metadata: { name, namespace },
      subsets: [{ addresses: [{ ip }], ports: [{ name: 'https', port, protocol: 'TCP' }] }],
    },
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${name}-test`, namespace, labels: { 'kubernetes.io/service-name': name } },
      addressType: 'IPv4',
      endpoints: [{ addresses: [ip], conditions: { ready: true } }],
      ports: [{ name: 'https', port, protocol: 'TCP' }],
    },
  ]);
}

/** `helm template` of the chart with `args` (values files, --show-only, --set), as a YAML stream. */
export function helmTemplate(helm: string, args: string[] = []): string {
  return execFileSync(
    helm,
    ['template', 'dbguard', 'charts/dbguard', '--namespace', 'dbguard-system', ...args],
    {
      cwd: ROOT,
      encoding: 'utf8',
      stdio: 'pipe',
      env: {
        ...process.env,
        HELM_CONFIG_HOME: path.join(os.tmpdir(), 'dbguard-helm'),
        HELM_CACHE_HOME: path.join(os.tmpdir(), 'dbguard-helm'),
      },
    },
  );
}
