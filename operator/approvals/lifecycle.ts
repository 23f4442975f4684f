/**
 * ApprovalRequest lifecycle, run by the leader only: mirrors a stamped decision into `status`
 * (phase, decidedBy, decidedAt), expires undecided requests (`phase: Expired`), records an Event and a
 * notification for each, and deletes final requests after the retention period (never before an
 * approval's validFor has run out, so a Reject-mode approval is not cut short).
 */
import type { ApprovalRequest } from '../../api/types.js';
import type { EventRecorder } from '../events.js';
import type { ApprovalCache } from './cache.js';
import { effectivePhase, validForSeconds, viewOf } from './model.js';
import type { Notify } from './notify.js';
import { type ApprovalWriter, desiredStatus, finishedAt } from './status.js';

export interface LifecycleOptions {
  cache: ApprovalCache;
  writer: ApprovalWriter;
  isLeader: () => boolean;
  events?: Pick<EventRecorder, 'record'>;
  notify?: Notify;
  /** keep final requests this long (default 24 h) */
  retentionSeconds?: number;
  /** how often every request is looked at (expiry, retention); default 5 s */
  sweepSeconds?: number;
  log?: (fields: Record<string, unknown>) => void;
}

export class ApprovalLifecycle {
  private timer: NodeJS.Timeout | undefined;
  private readonly busy = new Set<string>();
  private readonly again = new Set<string>();
  private readonly retentionMs: number;

  constructor(private readonly o: LifecycleOptions) {
    this.retentionMs = (o.retentionSeconds ?? 86_400) * 1000;
  }

  start(): void {
    this.o.cache.onChange((type, ar) => {
      if (type !== 'delete') this.poke(ar);
    });
    this.timer = setInterval(() => this.sweep(), Math.max(100, (this.o.sweepSeconds ?? 5) * 1000));
    this.timer.unref?.();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  sweep(): void {
    if (!this.o.isLeader()) return;
    for (const ar of this.o.cache.list()) this.poke(ar);
  }

  /** Look at one request now (serialized per request; a poke while busy runs once more after). */
  poke(ar: ApprovalRequest): void {
    if (!this.o.isLeader()) return;
    const key = `${ar.metadata.namespace}/${ar.metadata.name}`;
    if (this.busy.has(key)) {
      this.again.add(key);
      return;
    }
    this.busy.add(key);
    void this.process(ar)
      .catch((err) =>
        this.o.log?.({
          msg: 'approval lifecycle failed',
          key,
          error: String((err as Error)?.message ?? err),
        }),
      )
      .finally(() => {
        this.busy.delete(key);
        if (this.again.delete(key)) {
          const fresh = this.o.cache.cached(ar.metadata.namespace ?? '', ar.metadata.name);
          if (fresh) this.poke(fresh);
        }
      });
  }

  private async process(ar: ApprovalRequest): Promise<void> {
    const now = Date.now();
    const status = desiredStatus(ar, now);
    if (status) {
      const before = ar.status?.phase ?? 'Pending';
      let written: ApprovalRequest;
      try {
        written = await this.o.writer.writeStatus(ar, status);
      } catch (err) {
        if ((err as { code?: number }).code === 409 || (err as { code?: number }).code === 404) return; // a newer version comes by watch
        throw err;
      }
      if (before === 'Pending' && status.phase !== 'Pending') this.announce(written);
      return;
    }
    const done = finishedAt(ar);
    if (done === undefined) return;
    const keepMs = Math.max(
      this.retentionMs,
      effectivePhase(ar, now) === 'Approved' ? validForSeconds(ar) * 1000 : 0,
    );
    if (now >= done + keepMs) {
      await this.o.writer.delete(ar);
      this.o.log?.({
        msg: 'approval request deleted after retention',
        namespace: ar.metadata.namespace,
        name: ar.metadata.name,
      });
    }
  }

  private announce(ar: ApprovalRequest): void {
    const v = viewOf(ar);
    this.o.log?.({
      msg: 'approval request final',
      namespace: v.namespace,
      name: v.name,
      phase: v.phase,
      decidedBy: v.decidedBy,
    });
    const message =
      v.phase === 'Expired'
        ? `not decided before ${ar.spec.expiresAt}; the statement did not run`
        : `${v.phase.toLowerCase()} by ${v.decidedBy}${v.reason ? `: ${v.reason}` : ''}`;
    void this.o.events?.record(
      ar as Parameters<EventRecorder['record']>[0],
      v.phase === 'Approved' ? 'Normal' : 'Warning',
      v.phase,
      message,
    );
    this.o.notify?.('decided', ar, v);
  }
}
