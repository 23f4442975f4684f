/**
 * The object store: objects by resource type, one global resourceVersion counter (like etcd's revision),
 * and a bounded history of changes that watches replay from. Beyond the window a watch gets 410 Gone.
 */
import type { ChangeEvent, KubeObject } from './types.js';

export interface Watcher {
  key: string;
  /** receives every change of `key`; filtering is the watcher's business */
  deliver(ev: ChangeEvent): void;
}

const objKey = (namespace: string | undefined, name: string) => `${namespace ?? ''}/${name}`;

export class ObjectStore {
  private readonly objects = new Map<string, Map<string, KubeObject>>();
  private readonly history: ChangeEvent[] = [];
  private readonly watchers = new Set<Watcher>();
  private rv = 0;
  /** highest resourceVersion whose event is no longer retained: a watch from below it gets 410 */
  private compactedRv = 0;

  constructor(private historyLimit: number) {}

  get resourceVersion(): number {
    return this.rv;
  }

  get oldestWatchableResourceVersion(): number {
    return this.compactedRv;
  }

  setHistoryLimit(n: number): void {
    this.historyLimit = Math.max(0, Math.floor(n));
    this.trim();
  }

  /** Forgets all retained events and moves the counter on, so every resourceVersion clients hold is too old. */
  compact(): void {
    this.rv += 1;
    this.compactedRv = this.rv;
    this.history.length = 0;
  }

  nextResourceVersion(): number {
    this.rv += 1;
    return this.rv;
  }

  get(key: string, namespace: string | undefined, name: string): KubeObject | undefined {
    const o = this.objects.get(key)?.get(objKey(namespace, name));
    return o ? structuredClone(o) : undefined;
  }

  /** All objects of a type (in one namespace when given), sorted by namespace then name. */
  list(key: string, namespace?: string): KubeObject[] {
    const out: KubeObject[] = [];
    for (const o of this.objects.get(key)?.values() ?? [])
      if (namespace === undefined || o.metadata?.namespace === namespace) out.push(structuredClone(o));
    return out.sort((a, b) =>
      objKey(a.metadata?.namespace, a.metadata!.name!).localeCompare(
        objKey(b.metadata?.namespace, b.metadata!.name!),
      ),
    );
  }

  keys(): string[] {
    return [...this.objects.keys()];
  }

  /** Writes an object (its metadata.resourceVersion already set to `rv`) and records the change. */
  write(key: string, type: 'ADDED' | 'MODIFIED', obj: KubeObject, old?: KubeObject): void {
    const m = this.objects.get(key) ?? new Map<string, KubeObject>();
    this.objects.set(key, m);
    m.set(objKey(obj.metadata?.namespace, obj.metadata!.name!), structuredClone(obj));
    this.record({ rv: Number(obj.metadata!.resourceVersion), key, type, object: structuredClone(obj), old });
  }

  /** Removes an object; the DELETED event carries it with a new resourceVersion, as kube-apiserver sends it. */
  remove(key: string, obj: KubeObject): KubeObject {
    this.objects.get(key)?.delete(objKey(obj.metadata?.namespace, obj.metadata!.name!));
    const gone = structuredClone(obj);
    gone.metadata!.resourceVersion = String(this.nextResourceVersion());
    this.record({
      rv: Number(gone.metadata!.resourceVersion),
      key,
      type: 'DELETED',
      object: structuredClone(gone),
    });
    return gone;
  }

  /** Drops a whole type (a deleted CRD) without events for its objects beyond DELETED for each. */
  removeType(key: string): void {
    for (const o of this.list(key)) this.remove(key, o);
    this.objects.delete(key);
  }

  private record(ev: ChangeEvent): void {
    this.history.push(ev);
    this.trim();
    for (const w of [...this.watchers]) if (w.key === ev.key) w.deliver(ev);
  }

  private trim(): void {
    while (this.history.length > this.historyLimit) this.compactedRv = this.history.shift()!.rv;
  }

  /**
   * Registers a watcher and replays retained events after `fromRv` to it, in one synchronous step so that
   * nothing falls between replay and subscription. Returns false (and registers nothing) when `fromRv` is
   * older than the window.
   */
  watch(w: Watcher, fromRv: number): boolean {
    if (fromRv < this.compactedRv) return false;
    for (const ev of this.history) if (ev.key === w.key && ev.rv > fromRv) w.deliver(ev);
    this.watchers.add(w);
    return true;
  }

  unwatch(w: Watcher): void {
    this.watchers.delete(w);
  }
}
