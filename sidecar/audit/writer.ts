/**
 * The audit log: JSON lines, hash-chained (chain.ts), written in batches, never dropping an event.
 *
 * Backpressure: `write(event)` puts the event in a bounded queue and resolves at once while there
 * is room. When the sink is slower than traffic and the queue is full, `write` resolves only once
 * the event has been admitted, in arrival order: callers (the proxy's session loops) are made to
 * wait instead of events being dropped. `flush()` resolves when every event accepted so far is in
 * the sink (`write(2)` returned; add `fsync: true` for the disk).
 *
 * Failure: a file sink that fails (disk full, EIO) is retried with backoff, with writers waiting
 * meanwhile, and `status().failing` says why (readiness should report it). A stream sink that
 * errors (standard output closed) cannot be retried: the log turns failed and every pending and
 * later `write` rejects with AuditLogError. A write that does not finish within `stallTimeoutMs`
 * (a pipe whose reader stopped reading) marks the sink stalled. In all three cases `health()` says
 * why, so the proxy refuses statements (fail closed) instead of running them unaudited or making
 * sessions wait for ever; the stall and each sink error count as audit write errors.
 */
import { type FileHandle, open, stat } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { type AuditKey, type Chainer, type ChainState, chainer, GENESIS } from './chain.js';
import type { AuditEvent } from './events.js';
import { eventBody } from './serialize.js';

export class AuditLogError extends Error {
  override name = 'AuditLogError';
}

/** Hooks for metrics; SidecarMetrics.auditObserver() provides one. */
export interface AuditObserver {
  /** a batch reached the sink */
  written?(events: readonly AuditEvent[]): void;
  /** a writer waited this long for room in the queue */
  waited?(seconds: number): void;
  /** a sink error (the log retries file sinks) */
  error?(err: Error): void;
  /** the log just stopped taking events (failed, failing, stalled): `health()` turned non-null */
  down?(reason: string): void;
}

export interface AuditLogOptions {
  /** events held before writers wait; default 4096 */
  maxQueue?: number;
  /** events per write(2); default 512 */
  maxBatch?: number;
  /**
   * How long an event may wait for others before the batch is written; default 5 ms, 0 writes at
   * once. At one client a write(2) per statement costs more than everything else the proxy does for
   * it; a few milliseconds turn that into one write per tens of statements. `flush()`, `close()`,
   * a full batch and writers waiting for room all write at once.
   */
  lingerMs?: number;
  /** fsync after every batch (files only); default false */
  fsync?: boolean;
  observer?: AuditObserver;
  /** the stream behind target `-`; default process.stdout */
  stdout?: Writable;
  /** file mode for a new log file; default 0o640 */
  mode?: number;
  /** backoff for a failing file sink */
  retryInitialMs?: number;
  retryMaxMs?: number;
  /** how long close() keeps retrying a failing sink before giving up; default 10 s */
  closeTimeoutMs?: number;
  /** a write of one batch that takes longer marks the sink stalled; default 10 s */
  stallTimeoutMs?: number;
  /** key the chain with HMAC-SHA256 (chain.ts); without it, the unkeyed SHA-256 chain */
  key?: AuditKey;
}

export interface AuditLogStatus {
  target: string;
  /** events written since open */
  written: number;
  queued: number;
  /** writers waiting for room (backpressure) */
  waiting: number;
  /** the current sink error, while a file sink is being retried */
  failing: string | null;
  /** a write has not finished within stallTimeoutMs */
  stalled: boolean;
  failed: boolean;
  closed: boolean;
  chain: ChainState;
}

export interface AuditLog {
  write(event: AuditEvent): Promise<void>;
  /**
   * write() without a promise when there is room: true when the event was queued, false when the
   * caller must use write() (queue full, writers waiting, log failed or closed). The hot path of a
   * session calls this first: most events then cost no promise and no microtask.
   */
  tryWrite(event: AuditEvent): boolean;
  /** after the file was renamed away (SIGHUP): close it, create `target` again, keep the chain */
  reopen(): Promise<void>;
  flush(): Promise<void>;
  /** Flushes and closes; gives up after `timeoutMs` (default the closeTimeoutMs option). */
  close(timeoutMs?: number): Promise<void>;
  status(): AuditLogStatus;
  /**
   * Null while events reach the sink; otherwise why not, in one line (the sink failed, is failing
   * and being retried, or stalled). Cheap: the proxy asks before every statement.
   */
  health(): string | null;
}

interface Sink {
  write(buf: Buffer): Promise<void>;
  close(): Promise<void>;
  /** the log gave up on the sink: drop what it still holds (a stalled pipe would keep the process alive) */
  abandon?(): void;
}

class FileSink implements Sink {
  private constructor(
    private readonly fh: FileHandle,
    private readonly fsync: boolean,
  ) {}

  static async open(path: string, mode: number, fsync: boolean): Promise<FileSink> {
    // O_APPEND: other appenders (none expected) cannot interleave inside a line.
    return new FileSink(await open(path, 'a', mode), fsync);
  }

  /** Resumes after a partial write: `offset` is advanced in place so a retry does not duplicate. */
  async writeFrom(buf: Buffer, progress: { offset: number }): Promise<void> {
    while (progress.offset < buf.length) {
      const { bytesWritten } = await this.fh.write(buf, progress.offset, buf.length - progress.offset);
      progress.offset += bytesWritten;
    }
    if (this.fsync) await this.fh.sync();
  }

  write(buf: Buffer): Promise<void> {
    return this.writeFrom(buf, { offset: 0 });
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}

class StreamSink implements Sink {
  private error: Error | undefined;
  private readonly onError = (err: Error) => {
    this.error ??= err;
  };

  constructor(private readonly stream: Writable) {
    stream.on('error', this.onError);
  }

  write(buf: Buffer): Promise<void> {
    if (this.error) return Promise.reject(this.error);
    return new Promise((resolve, reject) => {
      this.stream.write(buf, (err) => (err ? reject(err) : resolve()));
    });
  }

  async close(): Promise<void> {
    // Never end process.stdout: other output (and the process) still uses it.
    this.stream.off('error', this.onError);
  }

  abandon(): void {
    this.stream.on('error', () => {}); // the destroy below fails the pending writes
    this.stream.destroy();
  }
}

/** Where the chain continues in an existing file: its last line's seq and hash. */
async function tailState(
  path: string,
  chain: Chainer,
): Promise<{ state: ChainState; needsNewline: boolean } | undefined> {
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(path);
  } catch {
    return undefined; // no file yet
  }
  if (!info.isFile() || info.size === 0) return undefined; // a FIFO or an empty file
  const window = Math.min(info.size, 1024 * 1024);
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(window);
    await fh.read(buf, 0, window, info.size - window);
    const needsNewline = buf[buf.length - 1] !== 0x0a;
    const body = needsNewline ? buf : buf.subarray(0, buf.length - 1);
    const start = body.lastIndexOf(0x0a) + 1;
    const last = body.subarray(start);
    let seq = 0;
    try {
      const parsed = JSON.parse(last.toString('utf8'));
      if (Number.isSafeInteger(parsed?.seq) && parsed.seq > 0) seq = parsed.seq;
    } catch {
      // A torn or foreign last line: chain from its hash anyway; verify will name that line.
    }
    return { state: { seq, prev: chain.hash(last) }, needsNewline };
  } finally {
    await fh.close();
  }
}

interface Waiter {
  event: AuditEvent;
  since: bigint;
  resolve(): void;
  reject(err: Error): void;
}

interface Flusher {
  target: number;
  resolve(): void;
  reject(err: Error): void;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref?.());

class AuditLogImpl implements AuditLog {
  /**
   * Accepted events, already serialised: their lines (with seq and prev) are in `enc` up to `encOff`,
   * line i ending at `encEnds[i]`. An event is encoded when it is accepted, so its cost falls on the
   * statement that made it (after its answer went out) instead of on a burst of a few dozen events when
   * the linger time ends, which held up whatever the event loop had to do next.
   */
  private readonly queue: AuditEvent[] = [];
  private readonly encEnds: number[] = [];
  private enc: Buffer = Buffer.allocUnsafe(INITIAL_SCRATCH);
  private encOff = 0;
  /** a batch buffer a file sink is done with, kept for the next swap instead of a new allocation */
  private spare: Buffer | undefined;
  private readonly waiters: Waiter[] = [];
  private flushers: Flusher[] = [];
  private reopenWaiters: { resolve(): void; reject(err: Error): void }[] = [];
  private accepted = 0;
  private written = 0;
  private pumping = false;
  private lingerTimer: NodeJS.Timeout | undefined;
  private failing: string | null = null;
  /** when the batch being written was handed to the sink (0: no write in flight) */
  private writeSince = 0;
  private stalled = false;
  private stallTimer: NodeJS.Timeout | undefined;
  /** observer.down was told, and health() has not been null since */
  private toldDown = false;
  private fatal: Error | undefined;
  private closed = false;
  private closeDeadline = Number.POSITIVE_INFINITY;
  /** a newline owed to a file whose last line was torn: written before the next batch */
  private pendingPrefix = '';
  private readonly maxQueue: number;
  private readonly maxBatch: number;
  private readonly lingerMs: number;
  /** sha256, or hmac-sha256 with opts.key (chain.ts) */
  private readonly chainer: Chainer;

  constructor(
    private readonly target: string,
    private sink: Sink,
    private readonly chain: ChainState,
    private readonly opts: AuditLogOptions,
    needsNewline: boolean,
  ) {
    this.maxQueue = Math.max(1, opts.maxQueue ?? 4096);
    this.maxBatch = Math.max(1, opts.maxBatch ?? 512);
    this.lingerMs = opts.lingerMs ?? DEFAULT_LINGER_MS;
    this.chainer = chainer(opts.key);
    if (needsNewline) this.pendingPrefix = '\n';
  }

  write(event: AuditEvent): Promise<void> {
    if (this.fatal) return Promise.reject(this.fatal);
    if (this.closed) return Promise.reject(new AuditLogError('audit log is closed'));
    const down = this.health();
    if (down && this.waiters.length >= this.maxQueue) {
      // The proxy refuses statements while the sink is down; what still comes (session start and end,
      // the refusals themselves) must not pile up in memory without bound.
      const e = new AuditLogError(`${down}; event not queued`);
      this.opts.observer?.error?.(e);
      return Promise.reject(e);
    }
    if (this.waiters.length === 0 && this.queue.length < this.maxQueue) {
      try {
        this.accept(event);
      } catch (err) {
        return Promise.reject(err);
      }
      this.kick();
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      this.waiters.push({ event, since: process.hrtime.bigint(), resolve, reject });
      this.kick(true);
    });
  }

  tryWrite(event: AuditEvent): boolean {
    if (this.fatal || this.closed || this.waiters.length > 0 || this.queue.length >= this.maxQueue)
      return false;
    this.accept(event); // an event that cannot be serialised throws here, to its caller, and is not counted
    this.kick();
    return true;
  }

  /**
   * Serialises the event as the next line of the chain (seq and prev assigned here, in acceptance
   * order) into the pending batch. Each line is encoded once, straight into the batch buffer, and
   * hashed from there: hashing the string would encode it to UTF-8 a second time.
   */
  private accept(event: AuditEvent): void {
    const seq = this.chain.seq + 1;
    // Same bytes as JSON.stringify({ ...event, seq, prev }) (events never carry seq or prev), without
    // the spread copy, which costs V8 about 10 µs per event on the hot path.
    let line: string;
    try {
      line = `${eventBody(event)},"seq":${seq},"prev":"${this.chain.prev}"${this.chainer.suffix}}`;
    } catch (err) {
      // Nothing is changed yet: the event is refused alone, counted as an audit write error.
      const e = new AuditLogError(
        `audit event refused, it cannot be serialised: ${(err as Error)?.message ?? err}`,
      );
      this.opts.observer?.error?.(e);
      throw e;
    }
    let off = this.encOff;
    // At most 3 bytes per UTF-16 unit, the newline, and a newline owed to a torn last line.
    const need = off + line.length * 3 + 2;
    if (this.enc.length < need) {
      const grown = Buffer.allocUnsafe(Math.max(this.enc.length * 2, need));
      this.enc.copy(grown, 0, 0, off);
      this.enc = grown;
    }
    const buf = this.enc;
    if (this.pendingPrefix) {
      off += buf.write(this.pendingPrefix, off, 'utf8');
      this.pendingPrefix = '';
    }
    const n = buf.write(line, off, 'utf8');
    this.chain.seq = seq;
    this.chain.prev = this.chainer.hash(buf.subarray(off, off + n));
    off += n;
    buf[off++] = 0x0a;
    this.encOff = off;
    this.encEnds.push(off);
    this.queue.push(event);
    this.accepted++;
  }

  reopen(): Promise<void> {
    if (this.fatal) return Promise.reject(this.fatal);
    if (this.closed) return Promise.reject(new AuditLogError('audit log is closed'));
    if (this.target === '-') return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.reopenWaiters.push({ resolve, reject });
      this.kick(true);
    });
  }

  flush(): Promise<void> {
    if (this.fatal) return Promise.reject(this.fatal);
    if (this.written >= this.accepted) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.flushers.push({ target: this.accepted, resolve, reject });
      this.kick(true);
    });
  }

  async close(timeoutMs = this.opts.closeTimeoutMs ?? 10_000): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.closeDeadline = Date.now() + timeoutMs;
    // A write that never returns (a stalled pipe) must not hold the process at shutdown.
    const giveUp = setTimeout(() => {
      this.fail(
        new AuditLogError(`audit log ${this.target}: gave up at close: ${this.health() ?? 'timed out'}`),
      );
    }, timeoutMs);
    giveUp.unref?.();
    try {
      if (!this.fatal) {
        await new Promise<void>((resolve, reject) => {
          this.flushers.push({ target: this.accepted, resolve, reject });
          this.kick(true);
        });
      }
    } finally {
      clearTimeout(giveUp);
      clearTimeout(this.stallTimer);
      if (this.fatal) this.sink.abandon?.();
      await this.sink.close().catch(() => {});
    }
    if (this.fatal) throw this.fatal;
  }

  health(): string | null {
    if (this.fatal) return this.fatal.message;
    if (this.failing !== null) return `audit log ${this.target}: ${this.failing} (retrying)`;
    if (this.stalled) {
      const s = Math.round((Date.now() - this.writeSince) / 1000);
      return `audit log ${this.target}: stalled, a write has not finished for ${s}s`;
    }
    return null;
  }

  status(): AuditLogStatus {
    return {
      target: this.target,
      written: this.written,
      queued: this.queue.length,
      waiting: this.waiters.length,
      failing: this.failing,
      stalled: this.stalled,
      failed: this.fatal !== undefined,
      closed: this.closed,
      chain: { ...this.chain },
    };
  }

  private someoneWaits(): boolean {
    return (
      this.waiters.length > 0 ||
      this.reopenWaiters.length > 0 ||
      this.flushers.length > 0 ||
      this.closed ||
      this.lingerMs <= 0
    );
  }

  /** Start the pump: after the linger delay, or at once when `urgent` or a batch is full. */
  private kick(urgent = false): void {
    if (this.pumping) return;
    if (this.lingerTimer) {
      if (!urgent && this.queue.length < this.maxBatch) return;
      clearTimeout(this.lingerTimer);
      this.lingerTimer = undefined;
    }
    if (!urgent && this.lingerMs > 0 && this.queue.length < this.maxBatch) {
      this.lingerTimer = setTimeout(() => {
        this.lingerTimer = undefined;
        this.kick(true);
      }, this.lingerMs);
      return;
    }
    this.pumping = true;
    queueMicrotask(() => void this.pump());
  }

  private admitWaiters(): void {
    while (this.waiters.length > 0 && this.queue.length < this.maxQueue) {
      const w = this.waiters.shift()!;
      try {
        this.accept(w.event);
      } catch (err) {
        w.reject(err as Error);
        continue;
      }
      this.opts.observer?.waited?.(Number(process.hrtime.bigint() - w.since) / 1e9);
      w.resolve();
    }
  }

  private settleFlushers(): void {
    if (this.flushers.length === 0) return;
    const still: Flusher[] = [];
    for (const f of this.flushers) this.written >= f.target ? f.resolve() : still.push(f);
    this.flushers = still;
  }

  private async pump(): Promise<void> {
    try {
      for (;;) {
        if (this.reopenWaiters.length > 0) await this.swapSink();
        this.admitWaiters();
        if (this.queue.length === 0) break;
        const { batch, buf, reusable } = this.take();
        this.admitWaiters();
        await this.persist(buf);
        if (reusable && !this.spare && reusable.length <= MAX_KEPT_SCRATCH) this.spare = reusable;
        this.written += batch.length;
        this.opts.observer?.written?.(batch);
        this.settleFlushers();
        // Under steady traffic a write ends with a few new events queued: let them gather for the
        // linger time (kick below) instead of writing them at once, or batches shrink to one event
        // per write again. Someone waiting (room, flush, close, rotation) or a full batch goes now.
        if (this.queue.length < this.maxBatch && !this.someoneWaits()) break;
      }
      this.settleFlushers();
    } catch (err) {
      this.fail(err instanceof Error ? err : new Error(String(err)));
    } finally {
      this.pumping = false;
    }
    // Work that arrived while the last await was settling.
    if (this.fatal) return;
    const waiting = this.waiters.length > 0 || this.reopenWaiters.length > 0;
    if (waiting || this.queue.length > 0) {
      this.kick(waiting || this.flushers.length > 0 || this.closed);
    }
  }

  /**
   * The next batch: up to maxBatch accepted events and their bytes. When it is everything pending, a
   * file sink gets the batch buffer itself and accepting goes on in the spare one (the pump writes one
   * batch at a time, and a file sink is done with it when persist() resolves). A stream may still hold
   * a chunk after its write callback (a pipe's readable side keeps it until read), so it gets a copy,
   * as does the head of a longer queue, whose tail then moves to the front.
   */
  private take(): { batch: AuditEvent[]; buf: Buffer; reusable?: Buffer } {
    const total = this.queue.length;
    const n = Math.min(total, this.maxBatch);
    const end = this.encEnds[n - 1]!;
    const batch = this.queue.splice(0, n);
    this.encEnds.splice(0, n);
    if (n === total && this.sink instanceof FileSink) {
      const full = this.enc;
      this.enc = this.spare ?? Buffer.allocUnsafe(INITIAL_SCRATCH);
      this.spare = undefined;
      this.encOff = 0;
      return { batch, buf: full.subarray(0, end), reusable: full };
    }
    const buf = Buffer.from(this.enc.subarray(0, end));
    this.enc.copy(this.enc, 0, end, this.encOff);
    this.encOff -= end;
    for (let k = 0; k < this.encEnds.length; k++) this.encEnds[k]! -= end;
    if (this.encOff === 0 && this.enc.length > MAX_KEPT_SCRATCH)
      this.enc = Buffer.allocUnsafe(INITIAL_SCRATCH);
    return { batch, buf };
  }

  /** Write one batch; retry a file sink with backoff, resuming after what was already written. */
  private async persist(buf: Buffer): Promise<void> {
    const progress = { offset: 0 };
    let delay = this.opts.retryInitialMs ?? 50;
    for (;;) {
      try {
        this.watchStall();
        try {
          if (this.sink instanceof FileSink) await this.sink.writeFrom(buf, progress);
          else await this.sink.write(buf);
        } finally {
          this.writeDone();
        }
        this.failing = null;
        this.noteHealth();
        return;
      } catch (err) {
        const e = err instanceof Error ? err : new Error(String(err));
        this.opts.observer?.error?.(e);
        if (!(this.sink instanceof FileSink))
          throw new AuditLogError(`audit log ${this.target}: ${e.message}`);
        this.failing = e.message;
        this.noteHealth();
        if (Date.now() > this.closeDeadline) {
          throw new AuditLogError(`audit log ${this.target}: gave up at close: ${e.message}`);
        }
        await sleep(delay);
        delay = Math.min(delay * 2, this.opts.retryMaxMs ?? 5000);
      }
    }
  }

  /** A write starts: if it is still running after stallTimeoutMs, the sink is stalled. */
  private watchStall(): void {
    this.writeSince = Date.now();
    const ms = this.opts.stallTimeoutMs ?? 10_000;
    this.stallTimer = setTimeout(() => {
      this.stalled = true;
      this.opts.observer?.error?.(
        new AuditLogError(`audit log ${this.target}: stalled, a write has not finished for ${ms / 1000}s`),
      );
      this.noteHealth();
    }, ms);
    this.stallTimer.unref?.();
  }

  /** Tells observer.down once per episode of health() being non-null. */
  private noteHealth(): void {
    const why = this.health();
    if (!why) this.toldDown = false;
    else if (!this.toldDown) {
      this.toldDown = true;
      this.opts.observer?.down?.(why);
    }
  }

  private writeDone(): void {
    clearTimeout(this.stallTimer);
    this.stallTimer = undefined;
    this.writeSince = 0;
    this.stalled = false;
  }

  /** Rotation: everything before the reopen() call went to the old file, the rest goes to the new one. */
  private async swapSink(): Promise<void> {
    const waiting = this.reopenWaiters;
    this.reopenWaiters = [];
    // What is queued goes to the old file first: the new file's first line then chains from its last.
    while (this.queue.length > 0) {
      const { batch, buf } = this.take();
      await this.persist(buf);
      this.written += batch.length;
      this.opts.observer?.written?.(batch);
    }
    this.settleFlushers();
    try {
      const next = await FileSink.open(this.target, this.opts.mode ?? 0o640, this.opts.fsync ?? false);
      await this.sink.close().catch(() => {});
      this.sink = next;
      for (const w of waiting) w.resolve();
    } catch (err) {
      // Keep writing to the old (renamed) file rather than losing events; tell the caller.
      const e = new AuditLogError(`audit log ${this.target}: reopen failed: ${(err as Error).message}`);
      this.opts.observer?.error?.(e);
      for (const w of waiting) w.reject(e);
    }
  }

  private fail(err: Error): void {
    clearTimeout(this.lingerTimer);
    this.lingerTimer = undefined;
    this.fatal = err instanceof AuditLogError ? err : new AuditLogError(err.message);
    for (const w of this.waiters.splice(0)) w.reject(this.fatal);
    for (const f of this.flushers.splice(0)) f.reject(this.fatal);
    for (const r of this.reopenWaiters.splice(0)) r.reject(this.fatal);
    this.noteHealth();
  }
}

const DEFAULT_LINGER_MS = 5;
const INITIAL_SCRATCH = 64 * 1024;
const MAX_KEPT_SCRATCH = 1024 * 1024;

/**
 * Open the audit log. `-` is standard output (or `opts.stdout`), a fresh chain. A path is opened
 * for append and created if missing (mode 0640); when it already holds lines, the chain continues
 * from its last line. A FIFO works too (open waits for a reader).
 */
export async function openAuditLog(
  target: '-' | (string & {}),
  opts: AuditLogOptions = {},
): Promise<AuditLog> {
  if (typeof target !== 'string' || target === '')
    throw new AuditLogError('audit log target must be - or a path');
  if (target === '-') {
    const sink = new StreamSink(opts.stdout ?? process.stdout);
    return new AuditLogImpl(target, sink, { seq: 0, prev: GENESIS }, opts, false);
  }
  let tail: Awaited<ReturnType<typeof tailState>>;
  try {
    tail = await tailState(target, chainer(opts.key));
  } catch (err) {
    throw new AuditLogError(`audit log ${target}: cannot read its end: ${(err as Error).message}`);
  }
  let sink: FileSink;
  try {
    sink = await FileSink.open(target, opts.mode ?? 0o640, opts.fsync ?? false);
  } catch (err) {
    throw new AuditLogError(`audit log ${target}: ${(err as Error).message}`);
  }
  return new AuditLogImpl(
    target,
    sink,
    tail?.state ?? { seq: 0, prev: GENESIS },
    opts,
    tail?.needsNewline ?? false,
  );
}
