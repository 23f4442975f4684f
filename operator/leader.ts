/**
 * Leader election on a coordination.k8s.io/v1 Lease, the way client-go does it: the holder renews
 * `renewTime` every retry period; a candidate takes the lease over once `renewTime + leaseDuration` has
 * passed. Every write carries the resourceVersion it read, so two candidates can never both win: the
 * loser gets 409 Conflict. A leader that cannot renew within `renewDeadline` steps down on its own,
 * before anyone else may take over.
 */
import * as k8s from '@kubernetes/client-node';

export interface LeaderElectionOptions {
  kubeConfig: k8s.KubeConfig;
  namespace: string;
  name: string;
  identity: string;
  leaseDurationSeconds?: number;
  renewDeadlineSeconds?: number;
  retryPeriodSeconds?: number;
  onStartedLeading?: () => void;
  onStoppedLeading?: () => void;
  log?: (fields: Record<string, unknown>) => void;
}

function timeOf(t: unknown): number {
  if (t instanceof Date) return t.getTime();
  if (typeof t === 'string') return Date.parse(t);
  return 0;
}

function isStatus(err: unknown, code: number): boolean {
  return (err as { code?: number })?.code === code;
}

export class LeaderElector {
  private readonly api: k8s.CoordinationV1Api;
  private timer: NodeJS.Timeout | undefined;
  private leading = false;
  private lastRenew = 0;
  private stopped = false;
  readonly leaseDuration: number;
  private readonly renewDeadline: number;
  private readonly retryPeriod: number;

  constructor(private readonly opts: LeaderElectionOptions) {
    this.api = opts.kubeConfig.makeApiClient(k8s.CoordinationV1Api);
    this.leaseDuration = opts.leaseDurationSeconds ?? 15;
    this.renewDeadline = opts.renewDeadlineSeconds ?? 10;
    this.retryPeriod = opts.retryPeriodSeconds ?? 2;
  }

  isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    this.stopped = false;
    void this.tick();
  }

  /** Stop renewing without releasing the lease, as a crashed replica would (tests, forced shutdown). */
  abandon(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }

  /** Stop campaigning; a leader releases the lease so a successor need not wait for expiry. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.leading) {
      try {
        const lease = await this.read();
        if (lease?.spec?.holderIdentity === this.opts.identity) {
          lease.spec.holderIdentity = undefined;
          lease.spec.renewTime = undefined;
          await this.api.replaceNamespacedLease({
            name: this.opts.name,
            namespace: this.opts.namespace,
            body: lease,
          });
        }
      } catch {
        /* the lease expires by itself */
      }
      this.setLeading(false);
    }
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.tick(), this.retryPeriod * 1000);
    this.timer.unref?.();
  }

  private async read(): Promise<k8s.V1Lease | undefined> {
    try {
      return await this.api.readNamespacedLease({ name: this.opts.name, namespace: this.opts.namespace });
    } catch (err) {
      if (isStatus(err, 404)) return undefined;
      throw err;
    }
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    try {
      const acquired = await this.tryAcquireOrRenew();
      if (acquired) this.lastRenew = Date.now();
      this.setLeading(acquired);
    } catch (err) {
      this.opts.log?.({ msg: 'leader election error', error: String(err) });
      if (this.leading && Date.now() - this.lastRenew > this.renewDeadline * 1000) this.setLeading(false);
    }
    this.schedule();
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const now = new Date();
    const micro = new k8s.V1MicroTime(now.getTime());
    const lease = await this.read();
    if (!lease) {
      try {
        await this.api.createNamespacedLease({
          namespace: this.opts.namespace,
          body: {
            apiVersion: 'coordination.k8s.io/v1',
            kind: 'Lease',
            metadata: { name: this.opts.name, namespace: this.opts.namespace },
            spec: {
              holderIdentity: this.opts.identity,
              leaseDurationSeconds: this.leaseDuration,
              acquireTime: micro,
              renewTime: micro,
              leaseTransitions: 0,
            },
          },
        });
        return true;
      } catch (err) {
        if (isStatus(err, 409)) return false;
        throw err;
      }
    }
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity;
    const expired =
      !holder ||
      timeOf(spec.renewTime) + (spec.leaseDurationSeconds ?? this.leaseDuration) * 1000 < now.getTime();
    if (holder !== this.opts.identity && !expired) return false;
    const takingOver = holder !== this.opts.identity;
    lease.spec = {
      ...spec,
      holderIdentity: this.opts.identity,
      leaseDurationSeconds: this.leaseDuration,
      renewTime: micro,
      ...(takingOver
        ? { acquireTime: micro, leaseTransitions: (spec.leaseTransitions ?? 0) + (holder ? 1 : 0) }
        : {}),
    };
    try {
      await this.api.replaceNamespacedLease({
        name: this.opts.name,
        namespace: this.opts.namespace,
        body: lease,
      });
      return true;
    } catch (err) {
      if (isStatus(err, 409)) return false;
      throw err;
    }
  }

  private setLeading(v: boolean): void {
    if (v === this.leading) return;
    this.leading = v;
    this.opts.log?.({ msg: v ? 'became leader' : 'lost leadership', identity: this.opts.identity });
    if (v) this.opts.onStartedLeading?.();
    else this.opts.onStoppedLeading?.();
  }
}
