/**
 * Who is asking for a policy: sidecars present a projected ServiceAccount token (audience `dbguard`),
 * checked with a Kubernetes TokenReview. A sidecar may read only the policies of its own namespace.
 */
import { createHash } from 'node:crypto';
import * as k8s from '@kubernetes/client-node';

export interface SidecarPrincipal {
  namespace: string;
  serviceAccount: string;
}

export type Authenticate = (token: string) => Promise<SidecarPrincipal | undefined>;

export const POLICY_AUDIENCE = 'dbguard';

/** `system:serviceaccount:NS:NAME` → principal; anything else is not a sidecar. */
export function principalFromUsername(username: string | undefined): SidecarPrincipal | undefined {
  const m = /^system:serviceaccount:([^:]+):([^:]+)$/.exec(username ?? '');
  return m ? { namespace: m[1]!, serviceAccount: m[2]! } : undefined;
}

/**
 * TokenReview-backed authenticator with a short cache keyed by the token's hash, so a sidecar's
 * long-poll loop does not cost one TokenReview per request.
 */
export function tokenReviewAuthenticator(
  kc: k8s.KubeConfig,
  opts: { cacheMs?: number; audience?: string } = {},
): Authenticate {
  const api = kc.makeApiClient(k8s.AuthenticationV1Api);
  const cacheMs = opts.cacheMs ?? 60_000;
  const audience = opts.audience ?? POLICY_AUDIENCE;
  const cache = new Map<string, { until: number; principal: SidecarPrincipal | undefined }>();
  return async (token) => {
    const key = createHash('sha256').update(token).digest('hex');
    const hit = cache.get(key);
    const now = Date.now();
    if (hit && hit.until > now) return hit.principal;
    const review = await api.createTokenReview({
      body: {
        apiVersion: 'authentication.k8s.io/v1',
        kind: 'TokenReview',
        spec: { token, audiences: [audience] },
      },
    });
    const st = review.status;
    // An authenticated answer without audiences means the token is for the API server itself (every
    // pod's automounted one), from a server that ignored spec.audiences: not a policy token.
    const audOk = (st?.audiences ?? []).includes(audience);
    const principal = st?.authenticated && audOk ? principalFromUsername(st.user?.username) : undefined;
    if (cache.size > 10_000) cache.clear();
    cache.set(key, { until: now + cacheMs, principal });
    return principal;
  };
}
