/**
 * Kubernetes Events for what users should see in `kubectl describe`: a policy compiled, a field is
 * wrong, a pod was injected. Repeats of the same reason and message on the same object within a short
 * window are counted on one Event instead of flooding the namespace.
 */
import * as k8s from '@kubernetes/client-node';

type Involved = {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string; uid?: string };
};

export class EventRecorder {
  private readonly api: k8s.CoreV1Api;
  private readonly recent = new Map<string, { name: string; count: number; at: number }>();

  constructor(
    kc: k8s.KubeConfig,
    private readonly component: string,
    private readonly log?: (fields: Record<string, unknown>) => void,
  ) {
    this.api = kc.makeApiClient(k8s.CoreV1Api);
  }

  async record(obj: Involved, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    const namespace = obj.metadata?.namespace ?? 'default';
    const key = `${obj.kind}/${namespace}/${obj.metadata?.name}/${reason}/${message}`;
    const now = new Date();
    const prior = this.recent.get(key);
    try {
      if (prior && now.getTime() - prior.at < 10 * 60_000) {
        prior.count++;
        prior.at = now.getTime();
        await this.api.patchNamespacedEvent(
          { name: prior.name, namespace, body: { count: prior.count, lastTimestamp: now } },
          k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
        );
        return;
      }
      const name = `${obj.metadata?.name ?? 'object'}.${now.getTime().toString(16)}${Math.floor(Math.random() * 0xffff).toString(16)}`;
      await this.api.createNamespacedEvent({
        namespace,
        body: {
          metadata: { name, namespace },
          involvedObject: {
            apiVersion: obj.apiVersion,
            kind: obj.kind,
            name: obj.metadata?.name,
            namespace,
            uid: obj.metadata?.uid,
          },
          type,
          reason,
          message: message.slice(0, 1024),
          source: { component: this.component },
          reportingComponent: this.component,
          firstTimestamp: now,
          lastTimestamp: now,
          count: 1,
        },
      });
      if (this.recent.size > 5000) this.recent.clear();
      this.recent.set(key, { name, count: 1, at: now.getTime() });
    } catch (err) {
      // Events are best effort: never fail a reconcile because an Event could not be written.
      this.log?.({ msg: 'event not recorded', reason, error: String((err as Error)?.message ?? err) });
    }
  }
}
