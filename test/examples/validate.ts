/** Checks on `dbguard inject` output: every object passes the Kubernetes schema, labelled templates got the sidecar. */
import { expect } from 'vitest';
import { type Doc, isDbguardResource, validateK8s } from '../chart/k8s-schema.js';

/** The pod template of a workload document, or the pod itself. */
export function podTemplateOf(obj: Record<string, any>): Record<string, any> | undefined {
  switch (obj.kind) {
    case 'Pod':
      return obj;
    case 'CronJob':
      return obj.spec?.jobTemplate?.spec?.template;
    case 'Deployment':
    case 'StatefulSet':
    case 'DaemonSet':
    case 'ReplicaSet':
    case 'Job':
      return obj.spec?.template;
    default:
      return undefined;
  }
}

export async function validateInjected(docs: Doc[]): Promise<void> {
  expect(docs.length).toBeGreaterThan(0);
  for (const d of docs) {
    if (isDbguardResource(d.obj)) continue;
    await validateK8s(d);
    const t = podTemplateOf(d.obj);
    if (t?.metadata?.labels?.['dbguard.io/inject'] !== 'true') continue;
    const containers = [...(t.spec.initContainers ?? []), ...t.spec.containers];
    expect(
      containers.some((c: { name: string }) => c.name === 'dbguard-proxy'),
      `${d.obj.kind} ${(d.obj.metadata as { name: string }).name} has the sidecar`,
    ).toBe(true);
    expect(t.metadata.annotations?.['dbguard.io/status']).toBe('injected');
  }
}
