/**
 * A DatabasePolicy CRD for the kube-api tests: a trimmed copy of the contract's schema (the generated one
 * lives in crds/ once api/schemas.ts exists), with the status subresource, short name and printer columns.
 */
import type { KubeApi, KubeObject } from '../support/kube-api/index.js';

export const DBP_CRD: KubeObject = {
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: { name: 'databasepolicies.dbguard.io' },
  spec: {
    group: 'dbguard.io',
    scope: 'Namespaced',
    names: {
      plural: 'databasepolicies',
      singular: 'databasepolicy',
      kind: 'DatabasePolicy',
      listKind: 'DatabasePolicyList',
      shortNames: ['dbp'],
    },
    versions: [
      {
        name: 'v1alpha1',
        served: true,
        storage: true,
        subresources: { status: {} },
        additionalPrinterColumns: [
          { name: 'Upstream', type: 'string', jsonPath: '.spec.upstream.host' },
          { name: 'Ready', type: 'string', jsonPath: '.status.conditions[0].status' },
          { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
        ],
        schema: {
          openAPIV3Schema: {
            type: 'object',
            properties: {
              apiVersion: { type: 'string' },
              kind: { type: 'string' },
              metadata: { type: 'object' },
              spec: {
                type: 'object',
                required: ['upstream'],
                properties: {
                  upstream: {
                    type: 'object',
                    required: ['host'],
                    properties: {
                      host: { type: 'string', minLength: 1 },
                      port: { type: 'integer', minimum: 1, maximum: 65535, default: 5432 },
                      sslmode: {
                        type: 'string',
                        enum: ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'],
                        default: 'prefer',
                      },
                    },
                  },
                  defaultAction: { type: 'string', enum: ['Allow', 'Deny'], default: 'Allow' },
                  rules: {
                    type: 'array',
                    'x-kubernetes-list-type': 'map',
                    'x-kubernetes-list-map-keys': ['name'],
                    items: {
                      type: 'object',
                      required: ['name', 'action'],
                      properties: {
                        name: { type: 'string' },
                        action: { type: 'string', enum: ['Allow', 'Deny', 'RequireApproval'] },
                        message: { type: 'string' },
                        match: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true },
                      },
                      'x-kubernetes-validations': [
                        { rule: "self.action != 'RequireApproval' || has(self.approval)" },
                      ],
                    },
                  },
                  enforcement: { type: 'string', enum: ['Enforce', 'DryRun'], default: 'Enforce' },
                },
              },
              status: {
                type: 'object',
                properties: {
                  observedGeneration: { type: 'integer' },
                  policyVersion: { type: 'string' },
                  conditions: {
                    type: 'array',
                    items: {
                      type: 'object',
                      required: ['type', 'status'],
                      properties: {
                        type: { type: 'string' },
                        status: { type: 'string', enum: ['True', 'False', 'Unknown'] },
                        reason: { type: 'string' },
                        message: { type: 'string' },
                        lastTransitionTime: { type: 'string', format: 'date-time' },
                      },
                    },
                  },
                },
              },
            },
          },
        },
      },
    ],
  },
};

export function dbp(
  namespace: string,
  name: string,
  host = 'orders-db.shop.svc',
  extra: Record<string, unknown> = {},
): KubeObject {
  return {
    apiVersion: 'dbguard.io/v1alpha1',
    kind: 'DatabasePolicy',
    metadata: { name, namespace },
    spec: { upstream: { host }, ...extra },
  };
}

/** Polls `check` every 20 ms until it returns a truthy value (bounded by `ms`). */
export async function eventually<T>(
  check: () => T | undefined | false | Promise<T | undefined | false>,
  ms = 5000,
): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  while (Date.now() < end) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`condition not met within ${ms} ms${last ? `: ${(last as Error).message}` : ''}`);
}

export interface RawResponse {
  status: number;
  headers: import('node:http').IncomingHttpHeaders;
  body: any;
}

/** One HTTP request to the test API server, trusting its CA, JSON in and out. */
export async function raw(
  api: KubeApi,
  method: string,
  path: string,
  opts: { body?: unknown; token?: string | null; headers?: Record<string, string> } = {},
): Promise<RawResponse> {
  const { request } = await import('node:https');
  const u = new URL(path, api.url);
  const text =
    opts.body === undefined
      ? undefined
      : typeof opts.body === 'string'
        ? opts.body
        : JSON.stringify(opts.body);
  const headers: Record<string, string> = { Accept: 'application/json', ...(opts.headers ?? {}) };
  if (opts.token !== null) headers.Authorization = `Bearer ${opts.token ?? api.adminToken}`;
  if (text !== undefined) headers['Content-Type'] ??= 'application/json';
  return new Promise((resolve, reject) => {
    const req = request(u, { method, headers, ca: api.caPem, timeout: 10_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const t = Buffer.concat(chunks).toString('utf8');
        let body: any = t;
        try {
          body = JSON.parse(t);
        } catch {}
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
      });
    });
    req.on('timeout', () => req.destroy(new Error('raw request timed out')));
    req.on('error', reject);
    req.end(text);
  });
}
