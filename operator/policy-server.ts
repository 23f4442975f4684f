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
import type { MaskingProblem } from '../policy/mask-coverage.js';
import type { OperatorMetrics } from './metrics.js';
import type { PolicyStore } from './policy-store.js';
import type { Authenticate } from './sidecar-auth.js';

export const MAX_WAIT_SECONDS = 300;

export interface PolicyServerOptions {
  store: PolicyStore;
  authenticate: Authenticate;
  metrics?: OperatorMetrics;
  log?: (fields: Record<string, unknown>) => void;
  /** `POST .../masking-problems` (PolicyController.reportMaskingProblems): false when the version is stale */
  reportMaskingProblems?: (
    namespace: string,
    policy: string,
    version: string,
    database: string,
    problems: MaskingProblem[],
  ) => boolean;
}

const PROBLEM_REASONS = new Set(['table_not_found', 'column_not_found']);

/** The body of a masking-problems report, checked field by field (it comes from the network). */
function problemsOf(
  body: unknown,
): { version: string; database: string; problems: MaskingProblem[] } | string {
  const b = body as { policyVersion?: unknown; database?: unknown; problems?: unknown };
  if (typeof b?.policyVersion !== 'string' || typeof b.database !== 'string' || !Array.isArray(b.problems))
    return 'expected {policyVersion, database, problems: [...]}';
  if (b.problems.length > 1000) return 'at most 1000 problems';
  const str = (v: unknown) => typeof v === 'string' && v.length > 0 && v.length <= 512;
  const problems: MaskingProblem[] = [];
  for (const p of b.problems as Record<string, unknown>[]) {
    if (!str(p?.rule) || !PROBLEM_REASONS.has(p.reason as string) || !str(p.schema) || !str(p.table))
      return 'each problem needs rule, reason, schema and table';
    if (p.column !== undefined && !str(p.column)) return 'column must be a name';
    if (p.suggestion !== undefined && !str(p.suggestion)) return 'suggestion must be a name';
    problems.push({
      rule: p.rule as string,
      reason: p.reason as MaskingProblem['reason'],
      schema: p.schema as string,
      table: p.table as string,
      ...(p.column !== undefined ? { column: p.column as string } : {}),
      ...(p.suggestion !== undefined ? { suggestion: p.suggestion as string } : {}),
      message: typeof p.message === 'string' ? p.message.slice(0, 1024) : '',
    });
  }
  return { version: b.policyVersion, database: b.database.slice(0, 256), problems };
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

  // A sidecar reports MaskingRules that name tables or columns its database does not have.
  router.post(
    '/v1/policies/:namespace/:name/masking-problems',
    express.json({ limit: '1mb' }),
    async (req, res) => {
      const { namespace, name } = req.params as { namespace: string; name: string };
      const token = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '')?.[1];
      let principal: Awaited<ReturnType<Authenticate>> | undefined;
      try {
        principal = token ? await opts.authenticate(token) : undefined;
      } catch (err) {
        opts.log?.({ msg: 'token review failed', error: String(err) });
        res.status(503).json({ error: 'token review failed; retry' });
        return;
      }
      if (!principal) {
        res
          .status(401)
          .json({ error: 'a bearer token (projected ServiceAccount token, audience dbguard) is required' });
        return;
      }
      if (principal.namespace !== namespace) {
        res
          .status(403)
          .json({ error: `a sidecar may only report on policies of namespace ${principal.namespace}` });
        return;
      }
      const parsed = problemsOf(req.body);
      if (typeof parsed === 'string') {
        res.status(400).json({ error: parsed });
        return;
      }
      const taken = opts.reportMaskingProblems?.(
        namespace,
        name,
        parsed.version,
        parsed.database,
        parsed.problems,
      );
      if (!taken) {
        res.status(409).json({ error: `policy ${namespace}/${name} is not at version ${parsed.version}` });
        return;
      }
      res.status(202).json({ accepted: parsed.problems.length });
    },
  );
  return router;
}

/** Keep-alive sockets must outlive the longest long-poll, or Node closes them mid-wait. */
export function tuneForLongPoll(server: http.Server): void {
  server.requestTimeout = (MAX_WAIT_SECONDS + 30) * 1000;
  server.headersTimeout = 60_000;
  server.keepAliveTimeout = (MAX_WAIT_SECONDS + 30) * 1000;
  server.maxConnections = 0;
}
