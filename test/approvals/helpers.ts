/**
 * A cluster for approval tests: the in-process Kubernetes API (HTTPS), the operator with self-managed
 * certificates keeping both ApprovalRequest webhook configurations current (the API server calls them
 * over TLS with the caBundle, passing the caller's user), approval routes with a notification
 * receiver, and users: sidecar ServiceAccount tokens and two human approvers.
 */
import fs from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type * as k8s from '@kubernetes/client-node';
import { crdObjects } from '../../api/crds.js';
import { run as kubectlDbguard } from '../../cli/kubectl-dbguard.js';
import {
  APPROVAL_WEBHOOK_CONFIG_NAME,
  approvalMutatingWebhookConfiguration,
  approvalRoutes,
  approvalValidatingWebhookConfiguration,
} from '../../operator/approvals/index.js';
import { SelfManagedCertificates } from '../../operator/certs/self-managed.js';
import { type RunningOperator, runOperator } from '../../operator/operator.js';
import { type KubeApi, serviceAccountTokenReview, startKubeApi } from '../support/kube-api/index.js';
import { until as sharedUntil } from '../support/until.js';

export const NS = 'shop';
export const OP_NS = 'dbguard-system';
export const quiet = () => {};
/** the name the operator's self-managed serving certificate is for */
export const SERVER_NAME = `dbguard-operator.${OP_NS}.svc`;

/** test/support/until.ts with the approval tests' longer default (an operator round trip each). */
export function until<T>(
  what: string,
  fn: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 15_000,
): Promise<T> {
  return sharedUntil(what, fn, timeoutMs);
}

/** The policy used by the approval tests: one rule per mode, told apart by table-name prefixes. */
export function approvalPolicy() {
  return {
    apiVersion: 'dbguard.io/v1alpha1',
    kind: 'DatabasePolicy',
    metadata: { name: 'orders', namespace: NS },
    spec: {
      upstream: { host: 'orders-db.shop.svc.cluster.local' },
      defaultAction: 'Allow',
      rules: [
        {
          name: 'held-deletes',
          action: 'RequireApproval',
          match: { commands: ['DELETE', 'TRUNCATE TABLE'], objects: ['appr_wait.*'] },
          message: 'Bulk deletes need a second person.',
          approval: { mode: 'Wait', timeout: '30s' },
        },
        {
          name: 'short-held-deletes',
          action: 'RequireApproval',
          match: { commands: ['DELETE'], objects: ['appr_short.*'] },
          approval: { mode: 'Wait', timeout: '2s' },
        },
        {
          name: 'twice-deletes',
          action: 'RequireApproval',
          match: { commands: ['DELETE'], objects: ['appr_twice.*'] },
          approval: { mode: 'Wait', timeout: '30s', maxExecutions: 2 },
        },
        {
          name: 'rejected-deletes',
          action: 'RequireApproval',
          match: { commands: ['DELETE'], objects: ['appr_rej.*'] },
          approval: { mode: 'Reject', timeout: '1m', validFor: '3s' },
        },
      ],
    },
  };
}

export interface Notification {
  text: string;
  blocks: unknown[];
}

export interface ApprovalCluster {
  api: KubeApi;
  op: RunningOperator;
  url: string;
  caPem: string;
  notifications: Notification[];
  /** bearer token of the sidecar ServiceAccount shop/checkout */
  sidecarToken: string;
  /** run `kubectl dbguard ...` as a user (token), capturing its output */
  kubectl(token: string, ...argv: string[]): Promise<{ code: number; out: string; err: string }>;
  kubeConfigFor(token: string): k8s.KubeConfig;
  close(): Promise<void>;
}

export const ALICE = 'alice-token';
export const BOB = 'bob-token';
/** the sidecar's own identity used as a Kubernetes user: the requester */
export const CHECKOUT_AS_USER = 'checkout-user-token';

export async function startApprovalCluster(
  opts: { retentionSeconds?: number; sweepSeconds?: number } = {},
): Promise<ApprovalCluster> {
  const notifications: Notification[] = [];
  const receiver = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      try {
        notifications.push(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch {
        notifications.push({ text: 'unparseable', blocks: [] });
      }
      res.end('ok');
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', () => r()));
  const notifyUrl = `http://127.0.0.1:${(receiver.address() as net.AddressInfo).port}/hook`;

  const api = await startKubeApi({ crds: crdObjects() as any, namespaces: ['default', NS, OP_NS] });
  api.setTokenReview(serviceAccountTokenReview({ audience: 'dbguard', groups: ['system:serviceaccounts'] }));
  api.addToken(ALICE, { username: 'alice@example.com', groups: ['dba', 'system:authenticated'] });
  api.addToken(BOB, { username: 'bob@example.com', groups: ['dba', 'system:authenticated'] });
  api.addToken(CHECKOUT_AS_USER, {
    username: `system:serviceaccount:${NS}:checkout`,
    groups: ['system:serviceaccounts', 'system:authenticated'],
  });
  await api.store.put(approvalPolicy() as any);

  let caPem = '';
  const op = await runOperator({
    kubeConfig: api.kubeConfig(),
    listen: '127.0.0.1:0',
    log: quiet,
    namespace: OP_NS,
    watchdogSeconds: 30,
    certificates: (ctx) =>
      new SelfManagedCertificates({
        kubeConfig: ctx.kubeConfig,
        namespace: OP_NS,
        serviceName: 'dbguard-operator',
        isLeader: ctx.isLeader,
        log: quiet,
        checkIntervalMs: 60_000,
        webhookConfigs: [
          {
            kind: 'Mutating',
            name: APPROVAL_WEBHOOK_CONFIG_NAME,
            create: (ca) =>
              approvalMutatingWebhookConfiguration({ operatorNamespace: OP_NS, caBundlePem: ca }),
          },
          {
            kind: 'Validating',
            name: APPROVAL_WEBHOOK_CONFIG_NAME,
            create: (ca) =>
              approvalValidatingWebhookConfiguration({ operatorNamespace: OP_NS, caBundlePem: ca }),
          },
        ],
      }),
    routes: approvalRoutes({
      notifyUrl,
      log: quiet,
      retentionSeconds: opts.retentionSeconds,
      sweepSeconds: opts.sweepSeconds ?? 0.25,
    }),
  });
  api.setServiceResolver((ns, name) =>
    ns === OP_NS && name === 'dbguard-operator' ? { host: '127.0.0.1', port: op.port } : undefined,
  );
  caPem = op.tls!.current()!.caBundle;
  for (const kind of ['MutatingWebhookConfiguration', 'ValidatingWebhookConfiguration'])
    await until(
      `${kind} with caBundle`,
      () =>
        api.store.get<any>('admissionregistration.k8s.io/v1', kind, undefined, APPROVAL_WEBHOOK_CONFIG_NAME)
          ?.webhooks?.[0]?.clientConfig?.caBundle,
    );
  await until('policy compiled', () => op.store.get(`${NS}/orders`));

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-appr-'));
  return {
    api,
    op,
    url: `https://127.0.0.1:${op.port}`,
    caPem,
    notifications,
    sidecarToken: `sa:${NS}:checkout`,
    kubeConfigFor: (token) => api.kubeConfig({ token }),
    async kubectl(token, ...argv) {
      let out = '';
      let err = '';
      const code = await kubectlDbguard(argv, {
        out: (s) => {
          out += s;
        },
        err: (s) => {
          err += s;
        },
        kubeConfig: api.kubeConfig({ token }),
      });
      return { code, out, err };
    },
    async close() {
      await op.close();
      await api.close();
      await new Promise<void>((r) => receiver.close(() => r()));
      fs.rmSync(tmp, { recursive: true, force: true });
    },
  };
}
