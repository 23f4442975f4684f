/**
 * What the injector needs to know about the DatabasePolicy a pod names: whether it exists (else an
 * admission warning) and which credentials Secret the sidecar must mount. The webhook asks the operator's
 * compiled store first and the Kubernetes API second; `dbguard inject` reads policy documents.
 */
import * as k8s from '@kubernetes/client-node';
import { GROUP, VERSION } from '../../api/types.js';
import type { PolicyStore } from '../policy-store.js';
import type { PolicyInfo } from './inject.js';

/** undefined: unknown (the API could not be asked); the pod is then injected without credentials */
export type PolicyLookup = (namespace: string, name: string) => Promise<PolicyInfo | undefined>;

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    t = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

export function clusterPolicyLookup(
  kc: k8s.KubeConfig,
  store?: PolicyStore,
  log?: (f: Record<string, unknown>) => void,
  timeoutMs = 3000,
): PolicyLookup {
  const api = kc.makeApiClient(k8s.CustomObjectsApi);
  return async (namespace, name) => {
    const compiled = store?.get(`${namespace}/${name}`);
    if (compiled) return { exists: true, credentialsSecret: compiled.upstream.credentialsSecret };
    // not compiled (yet, or broken): the resource itself still says which Secret to mount
    try {
      const obj = (await withTimeout(
        api.getNamespacedCustomObject({
          group: GROUP,
          version: VERSION,
          namespace,
          plural: 'databasepolicies',
          name,
        }),
        timeoutMs,
      )) as { spec?: { upstream?: { credentialsSecretRef?: { name?: unknown } } } };
      const secret = obj?.spec?.upstream?.credentialsSecretRef?.name;
      return { exists: true, credentialsSecret: typeof secret === 'string' && secret ? secret : undefined };
    } catch (err) {
      if ((err as { code?: number })?.code === 404) return { exists: false };
      log?.({
        msg: 'policy lookup failed',
        policy: `${namespace}/${name}`,
        error: String((err as Error)?.message ?? err),
      });
      return undefined;
    }
  };
}

type PolicyDoc = {
  kind?: unknown;
  metadata?: { name?: unknown; namespace?: unknown };
  spec?: { upstream?: { credentialsSecretRef?: { name?: unknown } } };
};

/**
 * Lookup over DatabasePolicy documents (policy files, or the manifests being injected). A document without
 * a namespace matches any namespace, as `kubectl apply -n` would place it.
 */
export function documentsPolicyLookup(
  docs: unknown[],
): (namespace: string | undefined, name: string) => PolicyInfo {
  const policies = docs.filter(
    (d): d is PolicyDoc => !!d && typeof d === 'object' && (d as PolicyDoc).kind === 'DatabasePolicy',
  );
  return (namespace, name) => {
    const hit = policies.find(
      (p) =>
        p.metadata?.name === name &&
        (p.metadata?.namespace === undefined ||
          namespace === undefined ||
          p.metadata.namespace === namespace),
    );
    if (!hit) return { exists: false };
    const secret = hit.spec?.upstream?.credentialsSecretRef?.name;
    return { exists: true, credentialsSecret: typeof secret === 'string' && secret ? secret : undefined };
  };
}
