/**
 * The sidecar's side of approvals, on the operator's API listener (same bearer-token authentication
 * as policy distribution; a sidecar acts only in its own namespace and only on its own requests):
 *
 * - `POST   /v1/approvals/{ns}`                 create a request (Reject mode reuses an open one)
 * - `GET    /v1/approvals/{ns}/{name}?wait=S`   its state; long-poll while Pending (at most 300 s)
 * - `DELETE /v1/approvals/{ns}/{name}?reason=R` withdraw it (client cancelled or went away)
 * - `POST   /v1/approvals/{ns}/-/approved`      Reject mode: is there a valid approval for this
 *                                                subject, rule and fingerprint?
 *
 * The rule's approval settings (mode, timeout, validFor) come from the policy the operator compiled,
 * not from the sidecar, so a sidecar cannot grant itself a longer window.
 */
import express from 'express';
import type { CompiledPolicy } from '../../api/compiled.js';
import type { ApprovalRequest, ApprovalSubject } from '../../api/types.js';
import type { PolicyStore } from '../policy-store.js';
import type { Authenticate, SidecarPrincipal } from '../sidecar-auth.js';
import type { ApprovalCache } from './cache.js';
import {
  API_GROUP_VERSION,
  approvalName,
  approveCommand,
  denyCommand,
  effectivePhase,
  expiresAtOf,
  FINGERPRINT_LABEL,
  isWithdrawn,
  labelValue,
  MODE_ANNOTATION,
  POLICY_LABEL,
  RULE_LABEL,
  SUBJECT_LABEL,
  subjectKey,
  VALID_FOR_ANNOTATION,
  validUntil,
  viewOf,
} from './model.js';
import type { Notify } from './notify.js';
import type { ApprovalWriter } from './status.js';

export const MAX_APPROVAL_WAIT_SECONDS = 300;

export interface ApprovalApiOptions {
  store: PolicyStore;
  cache: ApprovalCache;
  writer: ApprovalWriter;
  authenticate: Authenticate;
  notify?: Notify;
  /** tell the lifecycle controller a request may need a status write now (expired while polled) */
  poke?: (ar: ApprovalRequest) => void;
  log?: (fields: Record<string, unknown>) => void;
}

/** What `POST /v1/approvals/{ns}` takes. */
export interface CreateApprovalBody {
  policy: string;
  rule: string;
  subject: ApprovalSubject;
  database: string;
  statement: string;
  fingerprint: string;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function str(v: unknown, what: string, max: number, required = true): string {
  if (v === undefined || v === null || v === '') {
    if (required) throw new HttpError(400, `${what} is required`);
    return '';
  }
  if (typeof v !== 'string') throw new HttpError(400, `${what} must be a string`);
  if (v.length > max) throw new HttpError(400, `${what} is longer than ${max} characters`);
  return v;
}

function parseSubject(v: unknown, principal: SidecarPrincipal): ApprovalSubject {
  if (v !== undefined && (typeof v !== 'object' || v === null || Array.isArray(v)))
    throw new HttpError(400, 'subject must be an object');
  const s = (v ?? {}) as Record<string, unknown>;
  const own = `${principal.namespace}/${principal.serviceAccount}`;
  const sa = str(s.serviceAccount, 'subject.serviceAccount', 317, false) || own;
  if (sa !== own)
    throw new HttpError(403, `a sidecar running as ${own} may not ask for approval on behalf of ${sa}`);
  const groups = s.groups ?? [];
  if (
    !Array.isArray(groups) ||
    groups.length > 256 ||
    groups.some((g) => typeof g !== 'string' || g.length > 1024)
  )
    throw new HttpError(400, 'subject.groups must be a list of at most 256 strings');
  const out: ApprovalSubject = { serviceAccount: sa, groups: groups as string[] };
  const pod = str(s.pod, 'subject.pod', 253, false);
  const user = str(s.user, 'subject.user', 1024, false);
  const dbUser = str(s.databaseUser, 'subject.databaseUser', 1024, false);
  if (pod) out.pod = pod;
  if (user) out.user = user;
  if (dbUser) out.databaseUser = dbUser;
  return out;
}

function ruleOf(p: CompiledPolicy | undefined, key: string, rule: string) {
  if (!p) throw new HttpError(409, `policy ${key} is not compiled by this operator (yet)`);
  const r = p.rules.find((x) => x.name === rule);
  if (r?.action !== 'RequireApproval')
    throw new HttpError(
      409,
      `policy ${key} (version ${p.version}) has no RequireApproval rule ${JSON.stringify(rule)}`,
    );
  return { mode: 'Wait' as const, timeoutSeconds: 300, validForSeconds: 3600, ...r.approval };
}

function sameRequest(a: ApprovalRequest, policy: string, rule: string, fingerprint: string, skey: string) {
  return (
    a.spec.policyRef?.name === policy &&
    a.spec.rule === rule &&
    a.spec.fingerprint === fingerprint &&
    subjectKey(a.spec.subject ?? {}) === skey
  );
}

function selector(policy: string, rule: string, fingerprint: string, skey: string): string {
  return [
    `${POLICY_LABEL}=${labelValue(policy)}`,
    `${RULE_LABEL}=${labelValue(rule)}`,
    `${FINGERPRINT_LABEL}=${labelValue(fingerprint)}`,
    `${SUBJECT_LABEL}=${skey}`,
  ].join(',');
}

export function approvalRouter(o: ApprovalApiOptions): express.Router {
  const router = express.Router();
  const json = express.json({ limit: '4mb' });

  async function principalOf(req: express.Request, namespace: string): Promise<SidecarPrincipal> {
    const token = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '')?.[1];
    if (!token)
      throw new HttpError(
        401,
        'a bearer token (projected ServiceAccount token, audience dbguard) is required',
      );
    let p: SidecarPrincipal | undefined;
    try {
      p = await o.authenticate(token);
    } catch (err) {
      o.log?.({ msg: 'token review failed', error: String((err as Error)?.message ?? err) });
      throw new HttpError(503, 'token review failed; retry');
    }
    if (!p) throw new HttpError(401, 'token not accepted');
    if (p.namespace !== namespace)
      throw new HttpError(
        403,
        `service account ${p.namespace}/${p.serviceAccount} may only act in namespace ${p.namespace}`,
      );
    return p;
  }

  /** The request, when it exists and this sidecar's ServiceAccount asked for it. */
  async function ownRequest(p: SidecarPrincipal, namespace: string, name: string): Promise<ApprovalRequest> {
    const ar = await o.cache.get(namespace, name);
    if (!ar || ar.spec?.subject?.serviceAccount !== `${p.namespace}/${p.serviceAccount}`)
      throw new HttpError(404, `no approval request ${namespace}/${name} of this service account`);
    return ar;
  }

  const handle =
    (fn: (req: express.Request, res: express.Response) => Promise<void>) =>
    async (req: express.Request, res: express.Response) => {
      res.setHeader('Cache-Control', 'no-store');
      try {
        await fn(req, res);
      } catch (err) {
        if (err instanceof HttpError) {
          res.status(err.status).json({ error: err.message });
          return;
        }
        const code = (err as { code?: number }).code;
        o.log?.({ msg: 'approval API error', error: String((err as Error)?.message ?? err), code });
        if (!res.headersSent)
          res
            .status(502)
            .json({ error: `the Kubernetes API refused or failed: ${(err as Error)?.message ?? err}` });
      }
    };

  router.post(
    '/v1/approvals/:namespace',
    json,
    handle(async (req, res) => {
      const namespace = req.params.namespace as string;
      const p = await principalOf(req, namespace);
      const b = (req.body ?? {}) as Record<string, unknown>;
      if (typeof b !== 'object' || Array.isArray(b)) throw new HttpError(400, 'expected a JSON object');
      const policy = str(b.policy, 'policy', 253);
      const rule = str(b.rule, 'rule', 63);
      const database = str(b.database, 'database', 1024);
      const statement = str(b.statement, 'statement', 1048576);
      const fingerprint = str(b.fingerprint, 'fingerprint', 256);
      const subject = parseSubject(b.subject, p);
      const key = `${namespace}/${policy}`;
      const approval = ruleOf(o.store.get(key), key, rule);
      const skey = subjectKey(subject);

      if (approval.mode === 'Reject') {
        // A retry before anyone decided: point at the open request instead of piling up new ones.
        const open = (await o.writer.list(namespace, selector(policy, rule, fingerprint, skey))).find(
          (a) =>
            sameRequest(a, policy, rule, fingerprint, skey) &&
            effectivePhase(a) === 'Pending' &&
            !isWithdrawn(a),
        );
        if (open) {
          res.status(200).json(created(open, approval, true));
          return;
        }
      }
      const body: ApprovalRequest = {
        apiVersion: API_GROUP_VERSION,
        kind: 'ApprovalRequest',
        metadata: {
          name: approvalName(policy),
          namespace,
          labels: {
            [POLICY_LABEL]: labelValue(policy),
            [RULE_LABEL]: labelValue(rule),
            [FINGERPRINT_LABEL]: labelValue(fingerprint),
            [SUBJECT_LABEL]: skey,
          },
          annotations: {
            [MODE_ANNOTATION]: approval.mode,
            [VALID_FOR_ANNOTATION]: String(approval.validForSeconds),
          },
        },
        spec: {
          policyRef: { name: policy },
          rule,
          subject,
          database,
          statement,
          fingerprint,
          expiresAt: new Date(Date.now() + approval.timeoutSeconds * 1000).toISOString(),
        },
      };
      let ar: ApprovalRequest | undefined;
      for (let attempt = 0; !ar; attempt++) {
        try {
          ar = await o.writer.create(body);
        } catch (err) {
          // a random-suffix collision: try another name
          if ((err as { code?: number }).code !== 409 || attempt >= 3) throw err;
          body.metadata.name = approvalName(policy);
        }
      }
      try {
        ar = await o.writer.writeStatus(ar, { phase: 'Pending' });
      } catch (err) {
        // the lifecycle controller sets it later; the request is usable without it
        o.log?.({
          msg: 'approval status not written',
          name: ar.metadata.name,
          error: String((err as Error)?.message ?? err),
        });
      }
      o.log?.({
        msg: 'approval requested',
        namespace,
        name: ar.metadata.name,
        policy,
        rule,
        mode: approval.mode,
      });
      o.notify?.('requested', ar, viewOf(ar));
      res.status(201).json(created(ar, approval, false));
    }),
  );

  router.post(
    '/v1/approvals/:namespace/-/approved',
    json,
    handle(async (req, res) => {
      const namespace = req.params.namespace as string;
      const p = await principalOf(req, namespace);
      const b = (req.body ?? {}) as Record<string, unknown>;
      const policy = str(b.policy, 'policy', 253);
      const rule = str(b.rule, 'rule', 63);
      const fingerprint = str(b.fingerprint, 'fingerprint', 256);
      const skey = subjectKey(parseSubject(b.subject, p));
      // A direct read, not the watch cache: an approval given a moment ago must count.
      const now = Date.now();
      const match = (await o.writer.list(namespace, selector(policy, rule, fingerprint, skey)))
        .filter((a) => sameRequest(a, policy, rule, fingerprint, skey))
        .map((a) => ({ a, until: validUntil(a, now) }))
        .filter((x) => x.until > now)
        .sort((x, y) => y.until - x.until)[0];
      res.json(
        match
          ? { approved: true, name: match.a.metadata.name, validUntil: new Date(match.until).toISOString() }
          : { approved: false },
      );
    }),
  );

  router.get(
    '/v1/approvals/:namespace/:name',
    handle(async (req, res) => {
      const namespace = req.params.namespace as string;
      const name = req.params.name as string;
      const p = await principalOf(req, namespace);
      let ar = await ownRequest(p, namespace, name);
      const waitSeconds = Math.min(Math.max(Number(req.query.wait ?? 0) || 0, 0), MAX_APPROVAL_WAIT_SECONDS);
      const deadline = Date.now() + waitSeconds * 1000;
      const gone = new AbortController();
      const onClose = () => gone.abort();
      res.on('close', onClose);
      try {
        while (effectivePhase(ar) === 'Pending' && Date.now() < deadline && !gone.signal.aborted) {
          // wake at the next change, at expiry, or at the end of the wait
          const until = Math.min(deadline, expiresAtOf(ar) + 1);
          await o.cache.nextChange(namespace, name, until - Date.now(), gone.signal);
          ar = (await o.cache.get(namespace, name)) ?? ar;
        }
      } finally {
        res.off('close', onClose);
      }
      if (gone.signal.aborted) return;
      if (effectivePhase(ar) !== (ar.status?.phase ?? 'Pending')) o.poke?.(ar);
      res.json(viewOf(ar));
    }),
  );

  router.delete(
    '/v1/approvals/:namespace/:name',
    handle(async (req, res) => {
      const namespace = req.params.namespace as string;
      const name = req.params.name as string;
      const p = await principalOf(req, namespace);
      await ownRequest(p, namespace, name);
      const reason = req.query.reason === 'ClientCancelled' ? 'ClientCancelled' : 'ClientDisconnected';
      const ar = await o.writer.withdraw(namespace, name, reason);
      if (!ar) throw new HttpError(404, `approval request ${namespace}/${name} is gone`);
      if (isWithdrawn(ar)) {
        o.log?.({ msg: 'approval withdrawn', namespace, name, reason });
        o.notify?.('decided', ar, viewOf(ar));
      }
      res.json(viewOf(ar));
    }),
  );

  return router;
}

function created(
  ar: ApprovalRequest,
  approval: { mode: 'Wait' | 'Reject'; timeoutSeconds: number; validForSeconds: number },
  reused: boolean,
) {
  const ns = ar.metadata.namespace ?? '';
  return {
    ...viewOf(ar),
    reused,
    mode: approval.mode,
    timeoutSeconds: approval.timeoutSeconds,
    validForSeconds: approval.validForSeconds,
    approveCommand: approveCommand(ns, ar.metadata.name),
    denyCommand: denyCommand(ns, ar.metadata.name),
  };
}
