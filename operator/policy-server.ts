/**
 * Policy distribution: `GET /v1/policies/{namespace}/{name}` serves a compiled policy to sidecars.
 *
 * - ETag is the policy version; `If-None-Match` with the current version answers 304.
 * - `?wait=SECONDS` (at most 300) turns a 304 into a long-poll: the request is held until the version
 *   changes or the wait runs out, so a change reaches every sidecar within a round trip.
 * - Bearer token → TokenReview (audience dbguard) → a sidecar reads only its own namespace's policies.
 */
import type http from 'node:http';
import express from 'express';
import type { CompiledPolicy } from '../api/compiled.js';
import type { OperatorMetrics } from './metrics.js';
import type { PolicyStore } from './policy-store.js';
import type { Authenticate } from './sidecar-auth.js';

export const MAX_WAIT_SECONDS = 300;

export interface PolicyServerOptions {
  store: PolicyStore;
  authenticate: Authenticate;
  metrics?: OperatorMetrics;
  log?: (fields: Record<string, unknown>) => void;
}

function etagOf(version: string): string {
  return `"${version}"`;
}

function parseIfNoneMatch(h: string | undefined): string | undefined {
  if (!h) return undefined;
  const first = h.split(',')[0]!.trim().replace(/^W\//, '');
  return first.replace(/^"|"$/g, '');
}

export function policyRouter(opts: PolicyServerOptions): express.Router {
  const router = express.Router();
  const count = (result: string) => opts.metrics?.policyRequests.inc({ result });

  router.get('/v1/policies/:namespace/:name', async (req, res) => {
    const { namespace, name } = req.params as { namespace: string; name: string };
    const auth = req.headers.authorization ?? '';
    const token = /^Bearer\s+(.+)$/i.exec(auth)?.[1];
    if (!token) {
      count('unauthorized');
      res
        .status(401)
        .json({ error: 'a bearer token (projected ServiceAccount token, audience dbguard) is required' });
      return;
    }
    let principal: Awaited<ReturnType<Authenticate>>;
    try {
      principal = await opts.authenticate(token);
    } catch (err) {
      count('error');
      opts.log?.({ msg: 'token review failed', error: String(err) });
      res.status(503).json({ error: 'token review failed; retry' });
      return;
    }
    if (!principal) {
      count('unauthorized');
      res.status(401).json({ error: 'token not accepted' });
      return;
    }
    if (principal.namespace !== namespace) {
      count('forbidden');
      res.status(403).json({
        error: `service account ${principal.namespace}/${principal.serviceAccount} may only read policies of namespace ${principal.namespace}`,
      });
      return;
    }
    const key = `${namespace}/${name}`;
    const known = parseIfNoneMatch(req.headers['if-none-match']);
    const waitSeconds = Math.min(Math.max(Number(req.query.wait ?? 0) || 0, 0), MAX_WAIT_SECONDS);
    let policy: CompiledPolicy | undefined = opts.store.get(key);
    if (waitSeconds > 0 && policy?.version === known) {
      const abort = new AbortController();
      const onClose = () => abort.abort();
      res.on('close', onClose);
      opts.metrics?.policyWaiters.inc();
      try {
        policy = await opts.store.waitForChange(key, known, waitSeconds * 1000, abort.signal);
      } finally {
        opts.metrics?.policyWaiters.dec();
        res.off('close', onClose);
      }
      if (abort.signal.aborted) return;
    }
    res.setHeader('Cache-Control', 'no-store');
    if (!policy) {
      count('not_found');
      res
        .status(404)
        .json({ error: `no compiled policy ${key} (does the DatabasePolicy exist and is it Ready?)` });
      return;
    }
    res.setHeader('ETag', etagOf(policy.version));
    if (policy.version === known) {
      count('not_modified');
      res.status(304).end();
      return;
    }
    count('ok');
    res.status(200).json(policy);
  });
  return router;
}

/** Keep-alive sockets must outlive the longest long-poll, or Node closes them mid-wait. */
export function tuneForLongPoll(server: http.Server): void {
  server.requestTimeout = (MAX_WAIT_SECONDS + 30) * 1000;
  server.headersTimeout = 60_000;
  server.keepAliveTimeout = (MAX_WAIT_SECONDS + 30) * 1000;
  server.maxConnections = 0;
}
