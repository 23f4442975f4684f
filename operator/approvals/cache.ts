/**
 * Every ApprovalRequest in the cluster, kept current by a list-then-watch informer, with waiters: the
 * sidecar's long-poll and the lifecycle controller both react to a change within one watch event.
 * A request the watch has not delivered yet (just created by another replica) is read with a GET.
 */

import * as k8s from '@kubernetes/client-node';
import type { ApprovalRequest } from '../../api/types.js';
import { GROUP, VERSION } from '../../api/types.js';
import { PLURAL } from './model.js';
import { readApprovalRequest } from './status.js';

export type ChangeListener = (type: 'add' | 'update' | 'delete', ar: ApprovalRequest) => void;

export class ApprovalCache {
  private readonly informer: k8s.Informer<ApprovalRequest & k8s.KubernetesObject> &
    k8s.ObjectCache<ApprovalRequest & k8s.KubernetesObject>;
  private readonly api: k8s.CustomObjectsApi;
  private readonly waiters = new Map<string, Set<() => void>>();
  private readonly listeners = new Set<ChangeListener>();
  private restartTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private started: Promise<void> | undefined;

  constructor(
    kc: k8s.KubeConfig,
    private readonly log?: (fields: Record<string, unknown>) => void,
  ) {
    this.api = kc.makeApiClient(k8s.CustomObjectsApi);
    const list = () => this.api.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL });
    this.informer = k8s.makeInformer(kc, `/apis/${GROUP}/${VERSION}/${PLURAL}`, list as any) as any;
    const on = (type: 'add' | 'update' | 'delete') => (o: ApprovalRequest) => {
      this.wake(keyOf(o.metadata.namespace ?? '', o.metadata.name));
      for (const l of this.listeners) {
        try {
          l(type, o);
        } catch (err) {
          this.log?.({ msg: 'approval listener failed', error: String((err as Error)?.message ?? err) });
        }
      }
    };
    this.informer.on('add', on('add'));
    this.informer.on('update', on('update'));
    this.informer.on('delete', on('delete'));
    this.informer.on('error', (err: unknown) => {
      this.log?.({ msg: 'approval watch error; restarting', error: String((err as Error)?.message ?? err) });
      this.scheduleRestart();
    });
  }

  /** Starts once; later calls return the same promise (resolves when the first list is in). */
  start(): Promise<void> {
    this.started ??= this.informer.start().catch((err) => {
      this.log?.({ msg: 'approval list failed; retrying', error: String((err as Error)?.message ?? err) });
      this.scheduleRestart();
    });
    return this.started;
  }

  private scheduleRestart(): void {
    if (this.stopped || this.restartTimer) return;
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      void this.informer.start().catch(() => this.scheduleRestart());
    }, 2000);
    this.restartTimer.unref?.();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    await this.informer.stop();
    for (const set of this.waiters.values()) for (const w of set) w();
    this.waiters.clear();
  }

  onChange(l: ChangeListener): void {
    this.listeners.add(l);
  }

  list(): ApprovalRequest[] {
    return this.informer.list() as ApprovalRequest[];
  }

  cached(namespace: string, name: string): ApprovalRequest | undefined {
    return this.informer.get(name, namespace) as ApprovalRequest | undefined;
  }

  /** The cached object, or a fresh GET when the watch has not delivered it (undefined: not found). */
  async get(namespace: string, name: string): Promise<ApprovalRequest | undefined> {
    return this.cached(namespace, name) ?? readApprovalRequest(this.api, namespace, name);
  }

  private wake(key: string): void {
    const set = this.waiters.get(key);
    if (!set) return;
    this.waiters.delete(key);
    for (const w of set) w();
  }

  /**
   * Resolves at the next change of that request, after `timeoutMs`, or when `signal` aborts,
   * whichever comes first. Callers re-read and re-check in a loop.
   */
  nextChange(namespace: string, name: string, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    const key = keyOf(namespace, name);
    return new Promise((resolve) => {
      let set = this.waiters.get(key);
      if (!set) {
        set = new Set();
        this.waiters.set(key, set);
      }
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        this.waiters.get(key)?.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, timeoutMs));
      signal?.addEventListener('abort', done, { once: true });
      set.add(done);
    });
  }
}

function keyOf(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}
