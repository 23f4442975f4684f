/**
 * The compiled policies the operator serves, keyed by `namespace/name`, with waiters for long-poll.
 * Every replica keeps one (leader or not): serving is read-only and scales out by replicas.
 */
import type { CompiledPolicy } from '../api/compiled.js';

type Waiter = (p: CompiledPolicy | undefined) => void;

export class PolicyStore {
  private readonly policies = new Map<string, CompiledPolicy>();
  private readonly waiters = new Map<string, Set<Waiter>>();

  get(key: string): CompiledPolicy | undefined {
    return this.policies.get(key);
  }

  keys(): string[] {
    return [...this.policies.keys()];
  }

  /** Replace the policy for `key`; wakes every waiter when the version changed. */
  set(key: string, policy: CompiledPolicy): void {
    const old = this.policies.get(key);
    this.policies.set(key, policy);
    if (old?.version !== policy.version) this.wake(key, policy);
  }

  delete(key: string): void {
    if (!this.policies.delete(key)) return;
    this.wake(key, undefined);
  }

  /** Number of long-poll requests waiting (for metrics and the scale test). */
  waiting(): number {
    let n = 0;
    for (const s of this.waiters.values()) n += s.size;
    return n;
  }

  /**
   * Resolve when the policy for `key` differs from `knownVersion`, or after `timeoutMs` with the current
   * one. `abort` withdraws the wait (client went away) so no waiter leaks.
   */
  waitForChange(
    key: string,
    knownVersion: string | undefined,
    timeoutMs: number,
    abort?: AbortSignal,
  ): Promise<CompiledPolicy | undefined> {
    const current = this.policies.get(key);
    if (current?.version !== knownVersion) return Promise.resolve(current);
    return new Promise((resolve) => {
      let set = this.waiters.get(key);
      if (!set) {
        set = new Set();
        this.waiters.set(key, set);
      }
      const done = (p: CompiledPolicy | undefined) => {
        clearTimeout(timer);
        abort?.removeEventListener('abort', onAbort);
        const s = this.waiters.get(key);
        s?.delete(done);
        if (s && s.size === 0) this.waiters.delete(key);
        resolve(p);
      };
      const onAbort = () => done(this.policies.get(key));
      const timer = setTimeout(() => done(this.policies.get(key)), timeoutMs);
      abort?.addEventListener('abort', onAbort, { once: true });
      set.add(done);
    });
  }

  private wake(key: string, policy: CompiledPolicy | undefined): void {
    const set = this.waiters.get(key);
    if (!set) return;
    for (const w of [...set]) w(policy);
  }
}
