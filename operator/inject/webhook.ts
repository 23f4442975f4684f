/**
 * The mutating admission webhook (AdmissionReview v1) for pod CREATE. It calls `injectPod`, answers with
 * its JSONPatch, counts the decision in dbguard_operator_injections_total and records an Event on the
 * pod's owner. Anything it cannot handle becomes `allowed: false`: the pod asked for governance, so a
 * failure holds it back rather than letting it run ungoverned.
 */
import express from 'express';
import type { OperatorMetrics } from '../metrics.js';
import { INJECT_LABEL, WEBHOOK_PATH } from './constants.js';
import { type InjectionResult, type InjectOptions, injectPod, type PodLike, policyNameOf } from './inject.js';
import type { PolicyLookup } from './policy-lookup.js';
import { excludedNamespaces } from './webhook-config.js';

type Involved = {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string; uid?: string };
};

export interface EventSink {
  record(obj: Involved, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void>;
}

export interface InjectionWebhookOptions {
  /** read per request: the CA bundle and the sidecar mode may change while the operator runs */
  injectOptions: () => InjectOptions | Promise<InjectOptions>;
  lookup?: PolicyLookup;
  operatorNamespace: string;
  /** besides kube-system and the operator's namespace (the webhook configuration excludes them too) */
  excludedNamespaces?: string[];
  metrics?: OperatorMetrics;
  events?: EventSink;
  log?: (f: Record<string, unknown>) => void;
}

export interface AdmissionRequest {
  uid: string;
  kind?: { group?: string; version?: string; kind?: string };
  resource?: { group?: string; version?: string; resource?: string };
  subResource?: string;
  name?: string;
  namespace?: string;
  operation?: string;
  object?: PodLike | null;
  dryRun?: boolean;
}

export interface AdmissionResponse {
  uid: string;
  allowed: boolean;
  status?: { code: number; reason?: string; message: string };
  patchType?: 'JSONPatch';
  patch?: string;
  warnings?: string[];
}

/** The pod's controller (ReplicaSet, StatefulSet, Job, ...) or, for a bare pod, the pod itself. */
function eventTarget(pod: PodLike, namespace: string | undefined): Involved {
  const owners = ((pod.metadata as any)?.ownerReferences ?? []) as {
    apiVersion?: string;
    kind?: string;
    name?: string;
    uid?: string;
    controller?: boolean;
  }[];
  const owner = owners.find((o) => o?.controller) ?? owners[0];
  if (owner?.kind && owner.name)
    return {
      apiVersion: owner.apiVersion,
      kind: owner.kind,
      metadata: { name: owner.name, namespace, uid: owner.uid },
    };
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: pod.metadata?.name ?? pod.metadata?.generateName ?? 'pod', namespace },
  };
}

/** Decide one AdmissionRequest. Exported for tests that do not need HTTP. */
export async function reviewPod(
  request: AdmissionRequest,
  o: InjectionWebhookOptions,
): Promise<AdmissionResponse> {
  const uid = request.uid;
  const count = (result: string, reason: string) => o.metrics?.injections.inc({ result, reason });
  const isPodCreate =
    request.operation === 'CREATE' &&
    (request.resource?.resource ?? 'pods') === 'pods' &&
    (request.resource?.group ?? '') === '' &&
    !request.subResource;
  if (!isPodCreate) {
    count('skipped', 'not-a-pod-create');
    return { uid, allowed: true };
  }
  const pod = request.object;
  const namespace = request.namespace ?? pod?.metadata?.namespace;
  if (!pod || typeof pod !== 'object') {
    count('refused', 'invalid-pod');
    return {
      uid,
      allowed: false,
      status: { code: 400, reason: 'BadRequest', message: 'dbguard: the request has no pod object' },
    };
  }
  const target = eventTarget(pod, namespace);
  const event = (type: 'Normal' | 'Warning', reason: string, message: string) => {
    if (request.dryRun || !o.events) return;
    void o.events.record(target, type, reason, message);
  };

  if (namespace && excludedNamespaces(o.operatorNamespace, o.excludedNamespaces).includes(namespace)) {
    count('skipped', 'excluded-namespace');
    if (pod.metadata?.labels?.[INJECT_LABEL] === 'true')
      event(
        'Normal',
        'InjectionSkipped',
        `dbguard does not inject pods in namespace ${namespace} (reason: excluded-namespace)`,
      );
    return { uid, allowed: true };
  }

  const name = policyNameOf(pod);
  const policy = name && namespace && o.lookup ? await o.lookup(namespace, name) : undefined;
  const r: InjectionResult = injectPod(pod, await o.injectOptions(), policy, {
    namespace,
    ownerKind: target.kind === 'Pod' ? undefined : target.kind,
  });
  const patch = r.patch;
  count(r.outcome, r.reason);
  o.log?.({
    msg: 'injection',
    outcome: r.outcome,
    reason: r.reason,
    namespace,
    pod: pod.metadata?.name ?? pod.metadata?.generateName,
    dryRun: !!request.dryRun,
  });

  if (r.outcome === 'refused') {
    event('Warning', 'InjectionSkipped', `${r.message} (reason: ${r.reason})`);
    return {
      uid,
      allowed: false,
      status: { code: 403, reason: 'Forbidden', message: `dbguard: ${r.message}` },
    };
  }
  if (r.outcome === 'injected') event('Normal', 'Injected', r.message);
  const response: AdmissionResponse = { uid, allowed: true };
  if (patch.length) {
    response.patchType = 'JSONPatch';
    response.patch = Buffer.from(JSON.stringify(patch)).toString('base64');
  }
  if (r.warnings.length) response.warnings = r.warnings;
  return response;
}

/** Express router serving POST /inject. */
export function injectionWebhook(o: InjectionWebhookOptions): express.Router {
  const router = express.Router();
  router.post(WEBHOOK_PATH, express.json({ limit: '8mb' }), async (req, res) => {
    const review = req.body as { apiVersion?: string; kind?: string; request?: AdmissionRequest } | undefined;
    if (review?.kind !== 'AdmissionReview' || !review.request || typeof review.request.uid !== 'string') {
      res.status(400).json({ error: 'expected an AdmissionReview (admission.k8s.io/v1) with request.uid' });
      return;
    }
    let response: AdmissionResponse;
    try {
      response = await reviewPod(review.request, o);
    } catch (err) {
      o.metrics?.injections.inc({ result: 'error', reason: 'internal' });
      o.log?.({ msg: 'injection failed', error: String((err as Error)?.stack ?? err) });
      response = {
        uid: review.request.uid,
        allowed: false,
        status: {
          code: 500,
          reason: 'InternalError',
          message: `dbguard: injection failed: ${(err as Error)?.message ?? err}`,
        },
      };
    }
    res.json({ apiVersion: review.apiVersion ?? 'admission.k8s.io/v1', kind: 'AdmissionReview', response });
  });
  return router;
}
