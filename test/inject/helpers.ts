/** Shared pieces of the injection tests: pods as an API server sends them, and the checks on a result. */
import jsonpatch from 'fast-json-patch';
import { Pod } from 'kubernetes-models/v1';
import { expect } from 'vitest';
import type { InjectOptions } from '../../operator/inject/inject.js';

export const CA_PEM = '-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n';

export function options(extra: Partial<InjectOptions> = {}): InjectOptions {
  return {
    image: 'ghcr.io/dbguard/dbguard:test',
    nativeSidecar: true,
    operatorUrl: 'https://dbguard-operator.dbguard-system.svc:8443',
    operatorCaPem: CA_PEM,
    ...extra,
  };
}

/** A pod as a ReplicaSet controller creates it: generateName, owner, defaulted fields. */
export function appPod(
  extra: { labels?: Record<string, string>; annotations?: Record<string, string>; spec?: any } = {},
): any {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      generateName: 'checkout-5d9f-',
      namespace: 'shop',
      labels: { app: 'checkout', 'dbguard.io/inject': 'true', ...(extra.labels ?? {}) },
      annotations: { 'dbguard.io/policy': 'orders', ...(extra.annotations ?? {}) },
      ownerReferences: [
        {
          apiVersion: 'apps/v1',
          kind: 'ReplicaSet',
          name: 'checkout-5d9f',
          uid: 'rs-uid-1',
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
    },
    spec: {
      serviceAccountName: 'checkout',
      restartPolicy: 'Always',
      dnsPolicy: 'ClusterFirst',
      containers: [
        {
          name: 'app',
          image: 'shop/checkout:1.4',
          ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }],
          env: [{ name: 'DATABASE_NAME', value: 'orders' }],
          resources: {},
          terminationMessagePath: '/dev/termination-log',
          terminationMessagePolicy: 'File',
          imagePullPolicy: 'IfNotPresent',
        },
      ],
      ...(extra.spec ?? {}),
    },
  };
}

let uidCounter = 0;
/** AdmissionReview v1 for pod CREATE, shaped like kube-apiserver's. */
export function review(pod: any, extra: Record<string, unknown> = {}) {
  const uid = `req-${++uidCounter}-${Date.now()}`;
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid,
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      requestKind: { group: '', version: 'v1', kind: 'Pod' },
      requestResource: { group: '', version: 'v1', resource: 'pods' },
      name: pod?.metadata?.name ?? '',
      namespace: pod?.metadata?.namespace ?? 'shop',
      operation: 'CREATE',
      userInfo: {
        username: 'system:serviceaccount:kube-system:replicaset-controller',
        groups: ['system:serviceaccounts'],
      },
      object: pod,
      oldObject: null,
      dryRun: false,
      options: { apiVersion: 'meta.k8s.io/v1', kind: 'CreateOptions' },
      ...extra,
    },
  };
}

/** Applies a base64 JSONPatch from an AdmissionResponse with fast-json-patch (no mutation of `pod`). */
export function applyResponse(pod: any, response: { patch?: string; patchType?: string }): any {
  if (!response.patch) return structuredClone(pod);
  expect(response.patchType).toBe('JSONPatch');
  const ops = JSON.parse(Buffer.from(response.patch, 'base64').toString('utf8'));
  const errors = jsonpatch.validate(ops, structuredClone(pod));
  expect(errors, `invalid patch: ${errors?.message}`).toBeUndefined();
  return jsonpatch.applyPatch(structuredClone(pod), ops, true, false).newDocument;
}

/** Validates a pod against the Kubernetes OpenAPI schema (throws with the offending path). */
export function validatePod(pod: any): void {
  // kubernetes-models wants a name; a generateName pod gets one from the API server
  const named = {
    ...pod,
    metadata: { ...pod.metadata, name: pod.metadata?.name ?? `${pod.metadata?.generateName ?? 'pod-'}x1` },
  };
  new Pod(named).validate();
}

export const sidecarOf = (pod: any) =>
  [...(pod.spec.initContainers ?? []), ...pod.spec.containers].find((c: any) => c.name === 'dbguard-proxy');
