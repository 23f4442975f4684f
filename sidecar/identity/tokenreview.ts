/**
 * Kubernetes TokenReview: the API server says whose token this is. The proxy calls
 * POST /apis/authentication.k8s.io/v1/tokenreviews with its own ServiceAccount token (it needs
 * `create` on `tokenreviews`, as in the chart's ClusterRole). In a pod, the defaults find the API
 * server, the token and the CA where Kubernetes mounts them; the token file is read on every
 * review because projected tokens rotate.
 *
 * Positive answers are cached for `cacheSeconds` (default 10) by the token's SHA-256, so a
 * connection storm does not become an API-server storm; refusals are never cached.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { requestJson } from './http.js';
import { AuthError, type TokenVerifier, type VerifiedToken } from './token.js';

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export interface TokenReviewAuthConfig {
  type: 'tokenreview';
  /** default https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT */
  apiServer?: string;
  /**
   * Audiences the token must be meant for; required (issue 17): with none, the API server would accept
   * any token it issued, the automounted ServiceAccount token of every pod included.
   */
  audiences: string[];
  /** the proxy's own token: given directly, or read from `tokenFile` (default the mounted one) */
  token?: string;
  tokenFile?: string;
  /** the API server's CA: given directly, or read from `caFile` (default the mounted ca.crt) */
  caPem?: string;
  caFile?: string;
  timeoutMs?: number;
  cacheSeconds?: number;
}

const MAX_CACHE = 1024;
const MAX_TOKEN_LENGTH = 16 * 1024;

interface ReviewStatus {
  authenticated?: boolean;
  user?: { username?: string; uid?: string; groups?: string[]; extra?: Record<string, string[]> };
  audiences?: string[];
  error?: string;
}

export class TokenReviewVerifier implements TokenVerifier {
  private readonly cache = new Map<string, { until: number; value: VerifiedToken }>();
  private readonly apiServer: string;

  constructor(
    private readonly cfg: TokenReviewAuthConfig,
    env: NodeJS.ProcessEnv = process.env,
  ) {
    const host = env.KUBERNETES_SERVICE_HOST;
    const port = env.KUBERNETES_SERVICE_PORT ?? '443';
    const fromEnv = host ? `https://${host.includes(':') ? `[${host}]` : host}:${port}` : undefined;
    if (!cfg.audiences?.length) throw new Error('tokenreview auth: at least one audience is required');
    const api = cfg.apiServer ?? fromEnv;
    if (!api) throw new Error('tokenreview auth: no apiServer given and KUBERNETES_SERVICE_HOST is not set');
    new URL(api); // a bad URL is a configuration error now
    this.apiServer = api.replace(/\/+$/, '');
  }

  private async ownToken(): Promise<string> {
    if (this.cfg.token) return this.cfg.token;
    const file = this.cfg.tokenFile ?? `${SERVICE_ACCOUNT_DIR}/token`;
    try {
      return (await readFile(file, 'utf8')).trim();
    } catch (err) {
      throw new AuthError(
        'unavailable',
        `cannot read the proxy's own token ${file}: ${(err as Error).message}`,
      );
    }
  }

  private async ca(): Promise<string | undefined> {
    if (this.cfg.caPem) return this.cfg.caPem;
    if (!this.apiServer.startsWith('https:')) return undefined;
    const file = this.cfg.caFile ?? `${SERVICE_ACCOUNT_DIR}/ca.crt`;
    try {
      return await readFile(file, 'utf8');
    } catch {
      return undefined; // fall back to the system's CAs
    }
  }

  async verify(token: string): Promise<VerifiedToken> {
    if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_LENGTH) {
      throw new AuthError('malformed', 'token is empty or too long');
    }
    const key = createHash('sha256').update(token).digest('hex');
    const hit = this.cache.get(key);
    if (hit && hit.until > Date.now()) return hit.value;
    const status = await this.review(token);
    if (!status.authenticated) {
      // The API server's error never holds the token; keep it short anyway.
      throw new AuthError(
        'review_denied',
        `token review refused${status.error ? `: ${status.error.slice(0, 200)}` : ''}`,
      );
    }
    const wanted = this.cfg.audiences;
    if (!(status.audiences ?? []).some((a) => wanted.includes(a))) {
      throw new AuthError('bad_audience', 'token is not meant for this audience');
    }
    const username = status.user?.username;
    if (!username) throw new AuthError('review_denied', 'token review named no user');
    const value: VerifiedToken = {
      user: username,
      groups: (status.user?.groups ?? []).filter((g) => typeof g === 'string'),
      claims: { uid: status.user?.uid, extra: status.user?.extra ?? {}, audiences: status.audiences ?? [] },
    };
    this.remember(key, value);
    return value;
  }

  private async review(token: string): Promise<ReviewStatus> {
    let res: Awaited<ReturnType<typeof requestJson>>;
    try {
      res = await requestJson({
        method: 'POST',
        url: `${this.apiServer}/apis/authentication.k8s.io/v1/tokenreviews`,
        headers: { authorization: `Bearer ${await this.ownToken()}` },
        body: {
          apiVersion: 'authentication.k8s.io/v1',
          kind: 'TokenReview',
          spec: { token, audiences: this.cfg.audiences },
        },
        caPem: await this.ca(),
        timeoutMs: this.cfg.timeoutMs,
      });
    } catch (err) {
      if (err instanceof AuthError) throw err;
      throw new AuthError('unavailable', `token review: ${(err as Error).message}`);
    }
    if (res.status < 200 || res.status >= 300) {
      // 401/403: the proxy's own token or RBAC is wrong; 5xx: the API server. Not the client's fault.
      throw new AuthError('unavailable', `token review: API server answered HTTP ${res.status}`);
    }
    const status = (res.body as { status?: ReviewStatus } | undefined)?.status;
    if (!status || typeof status !== 'object')
      throw new AuthError('unavailable', 'token review: answer has no status');
    return status;
  }

  private remember(key: string, value: VerifiedToken): void {
    const ttl = (this.cfg.cacheSeconds ?? 10) * 1000;
    if (ttl <= 0) return;
    if (this.cache.size >= MAX_CACHE) {
      const now = Date.now();
      for (const [k, v] of this.cache) if (v.until <= now) this.cache.delete(k);
      if (this.cache.size >= MAX_CACHE) this.cache.delete(this.cache.keys().next().value!);
    }
    this.cache.set(key, { until: Date.now() + ttl, value });
  }
}
