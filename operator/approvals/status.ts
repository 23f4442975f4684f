/**
 * Status writes for ApprovalRequests. Every write replaces the status with the resourceVersion it was
 * computed from, so a decision admitted in the meantime makes the write fail (409) instead of being
 * overwritten by a stale "Expired": the record and what the sidecar did never disagree.
 */

import * as k8s from '@kubernetes/client-node';
import type { ApprovalRequest, Condition } from '../../api/types.js';
import { GROUP, VERSION } from '../../api/types.js';
import { effectivePhase, isWithdrawn, PLURAL, stampOf, WITHDRAWN_CONDITION } from './model.js';

type Status = NonNullable<ApprovalRequest['status']>;

/** GET one ApprovalRequest; undefined when it does not exist. */
export async function readApprovalRequest(
  api: k8s.CustomObjectsApi,
  namespace: string,
  name: string,
): Promise<ApprovalRequest | undefined> {
  try {
    return (await api.getNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      namespace,
      plural: PLURAL,
      name,
    })) as ApprovalRequest;
  } catch (err) {
    if ((err as { code?: number }).code === 404) return undefined;
    throw err;
  }
}

export class ApprovalWriter {
  readonly api: k8s.CustomObjectsApi;

  constructor(kc: k8s.KubeConfig) {
    this.api = kc.makeApiClient(k8s.CustomObjectsApi);
  }

  async create(ar: ApprovalRequest): Promise<ApprovalRequest> {
    return (await this.api.createNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      namespace: ar.metadata.namespace!,
      plural: PLURAL,
      body: ar,
    })) as ApprovalRequest;
  }

  read(namespace: string, name: string): Promise<ApprovalRequest | undefined> {
    return readApprovalRequest(this.api, namespace, name);
  }

  async list(namespace: string, labelSelector: string): Promise<ApprovalRequest[]> {
    const res = (await this.api.listNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      namespace,
      plural: PLURAL,
      labelSelector,
    })) as { items: ApprovalRequest[] };
    return res.items ?? [];
  }

  /** Replaces the status; throws the API's 409 when `ar` is no longer current. */
  async writeStatus(ar: ApprovalRequest, status: Status): Promise<ApprovalRequest> {
    return (await this.api.replaceNamespacedCustomObjectStatus({
      group: GROUP,
      version: VERSION,
      namespace: ar.metadata.namespace!,
      plural: PLURAL,
      name: ar.metadata.name,
      body: { ...ar, status },
    })) as ApprovalRequest;
  }

  async delete(ar: ApprovalRequest): Promise<void> {
    try {
      await this.api.deleteNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        namespace: ar.metadata.namespace!,
        plural: PLURAL,
        name: ar.metadata.name,
      });
    } catch (err) {
      if ((err as { code?: number }).code !== 404) throw err;
    }
  }

  /**
   * The client cancelled or went away: a Pending request becomes Expired with condition Withdrawn.
   * A request already decided stays as it is. Returns the request as it ends up (undefined: gone).
   */
  async withdraw(namespace: string, name: string, reason: string): Promise<ApprovalRequest | undefined> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const ar = await this.read(namespace, name);
      if (!ar || effectivePhase(ar) !== 'Pending' || isWithdrawn(ar)) return ar;
      try {
        return await this.writeStatus(ar, {
          ...ar.status,
          phase: 'Expired',
          conditions: withCondition(ar.status?.conditions, {
            type: WITHDRAWN_CONDITION,
            status: 'True',
            reason,
            message: `the client ${reason === 'ClientCancelled' ? 'cancelled the statement' : 'went away'} before a decision`,
          }),
        });
      } catch (err) {
        if ((err as { code?: number }).code !== 409) throw err;
      }
    }
    return this.read(namespace, name);
  }
}

export function withCondition(
  list: Condition[] | undefined,
  c: Omit<Condition, 'lastTransitionTime'>,
): Condition[] {
  const now = new Date().toISOString();
  const others = (list ?? []).filter((x) => x.type !== c.type);
  return [...others, { ...c, lastTransitionTime: now }];
}

/**
 * The status a request should have now, or undefined when its status is already right. Pure, so the
 * lifecycle controller and the tests share it.
 */
export function desiredStatus(ar: ApprovalRequest, now = Date.now()): Status | undefined {
  const phase = effectivePhase(ar, now);
  const cur = ar.status ?? {};
  const stamp = stampOf(ar);
  const next: Status = { ...cur, phase };
  if (phase === 'Approved' || phase === 'Denied') {
    next.decidedBy = stamp!.decidedBy;
    next.decidedAt = stamp!.decidedAt.toISOString();
  } else if (phase === 'Expired' && cur.phase !== 'Expired') {
    next.conditions = withCondition(cur.conditions, {
      type: 'Expired',
      status: 'True',
      reason: stamp ? 'DecidedTooLate' : 'Timeout',
      message: stamp
        ? `decided by ${stamp.decidedBy} after it expired at ${ar.spec.expiresAt}`
        : `not decided before ${ar.spec.expiresAt}`,
    });
  }
  const same =
    cur.phase === next.phase && cur.decidedBy === next.decidedBy && cur.decidedAt === next.decidedAt;
  return same ? undefined : next;
}

/** When a final request may be deleted (ms since epoch); undefined while it is Pending. */
export function finishedAt(ar: ApprovalRequest): number | undefined {
  const phase = ar.status?.phase;
  if (!phase || phase === 'Pending') return undefined;
  const stamp = stampOf(ar);
  if (stamp && phase !== 'Expired') return stamp.decidedAt.getTime();
  const times = (ar.status?.conditions ?? [])
    .map((c) => Date.parse(c.lastTransitionTime ?? ''))
    .filter(Number.isFinite);
  return times.length ? Math.max(...times) : Date.parse(ar.spec.expiresAt) || Date.now();
}
