/**
 * One client session in the relay phase (after authentication): client messages go upstream
 * through the decision point, server messages go back to the client. Bytes pass through as slices
 * of what was received; only the messages the decision point and the session state need are
 * decoded. A FIFO of the responses expected from the server (one entry per frontend message that
 * gets an answer) tells which ErrorResponse, CommandComplete or ReadyForQuery belongs to which
 * client message.
 */
import crypto from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { CancelRegistry } from './cancel-registry.js';
import {
  type CompletedEvent,
  DENIAL_SQL,
  type DecisionPoint,
  type NoticeFields,
  type PreparedStatement,
  type SessionHandle,
  type Verdict,
} from './decision-point.js';
import type { Logger } from './log.js';
import {
  decodeBind,
  decodeCommandComplete,
  decodeCopyFail,
  decodeDataRowText,
  decodeExecute,
  decodeFields,
  decodeFunctionCall,
  decodeParameterStatus,
  decodeParse,
  decodeQuery,
  decodeRowDescription,
  decodeTarget,
  encodeError,
  encodeFields,
  encodeParse,
  encodeQuery,
  expectEmpty,
  FRONTEND_TYPES,
  nameOf,
  ProtocolViolation,
  rowCountOf,
  T,
  TERMINATE,
} from './protocol/codec.js';
import { type Frame, Framer } from './protocol/framer.js';
import { OutBuffer, PauseGate } from './protocol/out-buffer.js';
import { rebindTo } from './protocol/rebind.js';
import { oversizedStatement, skipOverStatementLimit } from './statement-size.js';

/** What a frontend message waits for from the server. */
type Pending =
  | {
      kind: 'Q';
      sql: string;
      verdictSql: string;
      reject?: RejectVerdict;
      start: number;
      /** refused unread for its size: no decision was made, none is reported */
      oversized?: true;
    }
  | {
      kind: 'P';
      name: string;
      sql: string;
      verdictSql: string;
      reject?: RejectVerdict;
      start: number;
      oversized?: true;
    }
  | { kind: 'B'; portal: string; statement: string; start: number; reject?: RejectVerdict }
  | { kind: 'D' }
  | { kind: 'E'; portal: string; start: number }
  | { kind: 'C'; target: 'S' | 'P'; name: string }
  | { kind: 'S' }
  | { kind: 'F'; oid: number; reject?: RejectVerdict; start: number }
  | { kind: 'internal'; job: InternalJob };

type RejectVerdict = Extract<Verdict, { action: 'reject' }>;

interface InternalJob {
  sql: string;
  /** a recovery job (ROLLBACK TO SAVEPOINT) resolves nobody */
  recovery?: boolean;
  savepoint: boolean;
  fields: string[];
  rows: (string | null)[][];
  error?: Map<string, string>;
  resolve(v: { rows: (string | null)[][]; fields: string[] }): void;
  reject(err: Error): void;
}

/** Small array deque: push at the tail, shift at the head in O(1). */
class Fifo<X> {
  private a: X[] = [];
  private h = 0;
  get length(): number {
    return this.a.length - this.h;
  }
  push(x: X): void {
    this.a.push(x);
  }
  peek(): X | undefined {
    return this.h < this.a.length ? this.a[this.h] : undefined;
  }
  tail(): X | undefined {
    return this.a.length > this.h ? this.a[this.a.length - 1] : undefined;
  }
  shift(): X | undefined {
    if (this.h >= this.a.length) return undefined;
    const x = this.a[this.h]!;
    this.a[this.h] = undefined as unknown as X;
    this.h++;
    if (this.h === this.a.length) {
      this.a = [];
      this.h = 0;
    } else if (this.h > 1024 && this.h * 2 > this.a.length) {
      this.a = this.a.slice(this.h);
      this.h = 0;
    }
    return x;
  }
  /** in order, oldest first */
  *[Symbol.iterator](): IterableIterator<X> {
    for (let i = this.h; i < this.a.length; i++) yield this.a[i]!;
  }
  drain(): X[] {
    const out = this.a.slice(this.h);
    this.a = [];
    this.h = 0;
    return out;
  }
}

/** Types the backend side needs whole (decoded); all others stream through as fragments. */
const BACKEND_DECODED = new Set<number>([
  T.CommandComplete,
  T.ErrorResponse,
  T.NoticeResponse,
  T.ReadyForQuery,
  T.ParameterStatus,
  T.BackendKeyData,
  T.Auth,
  T.NegotiateProtocolVersion,
]);

const isCopyMessage = (t: number) => t === T.CopyData || t === T.CopyDone || t === T.CopyFail;
const endsAtReadyForQuery = (p: Pending) =>
  p.kind === 'Q' || p.kind === 'S' || p.kind === 'F' || p.kind === 'internal';

export interface SessionInit {
  id: string;
  client: Duplex;
  upstream: Duplex;
  clientAddr: string;
  clientTls: boolean;
  startupParams: Map<string, string>;
  /** credentials mode: the user the proxy logged in upstream as (the session's proven database user) */
  loginUser?: string;
  serverParams: Map<string, string>;
  protocolVersion: number;
  txStatus: 'I' | 'T' | 'E';
  /** the first ReadyForQuery, held until sessionReady is done */
  firstReady: Buffer;
  /** bytes already received from each side beyond what the start-up phase consumed */
  clientLeftover: Buffer;
  upstreamLeftover: Buffer;
  /** the proxy's key given to the client, released at the end */
  cancelPid?: number;
  decisionPoint: DecisionPoint;
  /** facts established at start-up (a verified token's identity) for the decision point */
  initialState?: Map<string, unknown>;
  cancels: CancelRegistry;
  logger: Logger;
  maxMessageSize: number;
  /** largest Query or Parse message judged; a larger one is refused unread (statement-size.ts) */
  maxStatementSize?: number;
  onClosed(s: Session): void;
}

export class Session implements SessionHandle {
  readonly id: string;
  readonly database: string;
  readonly user: string;
  readonly databaseUser: string;
  readonly applicationName?: string;
  readonly clientAddr: string;
  readonly protocolVersion: number;
  readonly startupParams: ReadonlyMap<string, string>;
  readonly serverParams: Map<string, string>;
  readonly statements = new Map<string, PreparedStatement>();
  readonly portals = new Map<string, string>();
  readonly clientTls: boolean;
  readonly state = new Map<string, unknown>();
  txStatus: 'I' | 'T' | 'E';

  private readonly client: Duplex;
  private readonly upstream: Duplex;
  private readonly dp: DecisionPoint;
  private readonly log: Logger;
  private readonly init: SessionInit;
  private readonly fe: Framer;
  private readonly be: Framer;
  private feFrames: Frame[] = [];
  private feHead = 0;
  private beFrames: Frame[] = [];
  private beHead = 0;
  private readonly upOut = new OutBuffer();
  private readonly clOut = new OutBuffer();
  private readonly clientGate: PauseGate;
  private readonly upstreamGate: PauseGate;
  private readonly fifo = new Fifo<Pending>();
  private feBusy = false;
  private beBusy = false;
  /** after an extended-query error, the server ignores every message until Sync */
  private discardTillSync = false;
  /** last backend message was ReadyForQuery and nothing was forwarded since */
  private safePoint = false;
  /** safe-point hooks (sessionReady, idle) running: client messages wait */
  private hookLock = 0;
  /** an idle hook runs at a ReadyForQuery that pipelined responses follow */
  private heldUnsafe = false;
  private readonly internalQueue: InternalJob[] = [];
  private internalRunning: InternalJob | null = null;
  /** how the fragments of the current streamed backend message are handled */
  private partMode: 'forward' | 'assemble' = 'forward';
  private assembling: Buffer[] = [];
  private textEncoding: BufferEncoding = 'utf8';
  private shuttingDown = false;
  /** an asynchronous verdict's applying step, waiting for the upstream to be free */
  private pendingApply: (() => void) | null = null;
  private closed = false;
  /** statements that ended in the backend chunk being handled; see reportCompleted() */
  private completions: CompletedEvent[] = [];
  private terminating = false;
  /** a judge is running (it may ask for waitSignal); its number tells a late completion from the current judge */
  private judging = 0;
  private judgeCount = 0;
  /**
   * The running judge's wait signal (SessionHandle.waitSignal), made when first asked for: most judges
   * never wait, and an AbortController per statement is garbage. A cancel or disconnect before it is
   * made is kept in `judgeAbortReason` and aborts it at birth.
   */
  private judgeAbort: AbortController | null = null;
  private judgeAbortReason: string | undefined;
  /** the running judge asked for waitSignal: it may hold long, so the client is read meanwhile */
  private judgeWaiting = false;
  /** a streamed backend message is partly forwarded: a notice must wait for its end */
  private midBackendMessage = false;
  private heldNotices: Buffer[] = [];
  /** a client message went upstream after the last ReadyForQuery: a changed setting may not be reported yet */
  private paramsUnreported = false;
  /** approved prepared statements (verdict `executions`): Binds left, by statement name */
  private readonly approvedBinds = new Map<string, number>();
  /** a statement name no client knows: a refused Bind names it, so the server fails it (26000) */
  private readonly refusedBindTarget = `dbguard_refused_${crypto.randomBytes(16).toString('hex')}`;

  constructor(init: SessionInit) {
    this.init = init;
    this.id = init.id;
    this.client = init.client;
    this.upstream = init.upstream;
    this.clientAddr = init.clientAddr;
    this.clientTls = init.clientTls;
    this.startupParams = init.startupParams;
    this.user = init.startupParams.get('user') ?? '';
    this.databaseUser = init.loginUser ?? this.user;
    this.database = init.startupParams.get('database') || this.user;
    const app = init.startupParams.get('application_name');
    if (app !== undefined) this.applicationName = app;
    this.serverParams = init.serverParams;
    this.protocolVersion = init.protocolVersion;
    this.txStatus = init.txStatus;
    this.dp = init.decisionPoint;
    for (const [k, v] of init.initialState ?? []) this.state.set(k, v);
    this.log = init.logger;
    this.updateEncoding();
    this.fe = new Framer({
      side: 'frontend',
      streamed: (t) => t === T.CopyData,
      maxBodyLength: init.maxMessageSize - 4,
      ...(init.maxStatementSize ? { skipOver: skipOverStatementLimit(init.maxStatementSize) } : {}),
      validType: (t) => FRONTEND_TYPES.has(t),
    });
    this.be = new Framer({
      side: 'backend',
      streamed: (t) => !BACKEND_DECODED.has(t),
      maxBodyLength: 0x7fffffff,
    });
    this.clientGate = new PauseGate(this.client);
    this.upstreamGate = new PauseGate(this.upstream);
  }

  // ------------------------------------------------------------------ lifecycle

  /** Attaches the sockets, runs sessionReady, then lets the client see its first ReadyForQuery. */
  start(): void {
    this.client.on('data', (chunk: Buffer) => this.onClientData(chunk));
    this.upstream.on('data', (chunk: Buffer) => this.onUpstreamData(chunk));
    this.client.on('error', (err) => this.close(`client socket error: ${err.message}`, 'debug'));
    this.upstream.on('error', (err) => this.close(`upstream socket error: ${err.message}`, 'warn'));
    this.client.on('close', () => this.close('client closed'));
    this.upstream.on('close', () => this.close('upstream closed'));
    this.client.on('end', () => this.close('client ended'));
    this.upstream.on('end', () => {
      this.flushClient();
      this.close('upstream ended', 'debug', true);
    });

    this.safePoint = true;
    this.hookLock++;
    // Buffer what the client may have pipelined; it is processed once the session is ready.
    if (this.init.clientLeftover.length) this.pushFrontendBytes(this.init.clientLeftover);
    if (this.init.upstreamLeftover.length) this.pushBackendBytes(this.init.upstreamLeftover);
    this.client.resume();
    this.upstream.resume();
    this.pumpBackend();
    const done = () => {
      if (this.closed) return;
      try {
        this.hookLock--;
        this.flushClient();
        this.writeClient(this.init.firstReady);
        if (this.safePoint) this.afterSafeReady();
      } catch (err) {
        this.fail(err);
      }
    };
    let ready: Promise<void> | void;
    try {
      ready = this.dp.sessionReady?.(this);
    } catch (err) {
      this.sessionReadyFailed(err);
      return;
    }
    if (ready && typeof (ready as Promise<void>).then === 'function') {
      (ready as Promise<void>).then(done, (err) => this.sessionReadyFailed(err));
    } else {
      done();
    }
  }

  private sessionReadyFailed(err: unknown): void {
    if (this.closed) return; // the client left while the session was being prepared
    this.log.log('error', 'session preparation failed', { sessionId: this.id, error: errMsg(err) });
    this.fatalToClient('08006', 'dbguard: the session could not be prepared; see the proxy log');
  }

  /** Ends the session after the running statements finish (SIGTERM). */
  beginShutdown(): void {
    this.shuttingDown = true;
    if (this.safePoint && this.hookLock === 0 && !this.internalRunning && this.fifo.length === 0) {
      this.fatalToClient('57P01', 'terminating connection due to administrator command');
    }
  }

  /** Ends the session with a FATAL error (SessionHandle: e.g. prepared statements a new policy invalidates). */
  terminate(sqlstate: string, message: string): void {
    this.fatalToClient(sqlstate, message);
  }

  /** Closes both sockets now. */
  destroy(reason: string): void {
    this.close(reason);
  }

  /** SessionHandle.waitSignal */
  get waitSignal(): AbortSignal | undefined {
    if (!this.judging) return undefined;
    if (!this.judgeAbort) {
      this.judgeAbort = new AbortController();
      if (this.judgeAbortReason !== undefined) this.judgeAbort.abort(this.judgeAbortReason);
    }
    this.judgeWaiting = true;
    this.clientGate.release('judge');
    return this.judgeAbort.signal;
  }

  /** Aborts the running judge's wait signal (now, or when it is made). */
  private abortJudge(reason: 'cancel' | 'disconnect'): void {
    if (!this.judging) return;
    if (this.judgeAbort) this.judgeAbort.abort(reason);
    else this.judgeAbortReason ??= reason;
  }

  /** A CancelRequest with this session's key arrived: a judge holding a statement gives up. */
  clientCancelled(): void {
    this.abortJudge('cancel');
  }

  /** SessionHandle.notice: a NoticeResponse to the client, never inside a partly forwarded message. */
  notice(fields: NoticeFields): void {
    if (this.closed) return;
    const m = new Map<string, string>([
      ['S', fields.severity ?? 'NOTICE'],
      ['V', fields.severity ?? 'NOTICE'],
      ['C', fields.sqlstate ?? '00000'],
      ['M', fields.message],
    ]);
    if (fields.detail) m.set('D', fields.detail);
    if (fields.hint) m.set('H', fields.hint);
    const b = encodeFields(T.NoticeResponse, m, this.textEncoding);
    if (this.midBackendMessage) {
      this.heldNotices.push(b);
      return;
    }
    this.clOut.push(b);
    if (!this.beBusy) this.flushClient();
  }

  /**
   * SessionHandle.serverParamsCurrent: nothing forwarded since the last ReadyForQuery. An empty FIFO
   * alone is not enough: an Execute answered by CommandComplete (after Flush, no Sync) may have changed
   * a setting the server reports only at the next ReadyForQuery.
   */
  get serverParamsCurrent(): boolean {
    return !this.paramsUnreported && this.fifo.length === 0 && this.internalRunning === null;
  }

  get idle(): boolean {
    return this.safePoint && this.fifo.length === 0;
  }

  private close(reason: string, level: 'debug' | 'warn' = 'debug', graceful = false): void {
    if (this.closed) return;
    this.closed = true;
    this.log.log(level, 'session closed', { sessionId: this.id, reason });
    if (graceful) {
      // Let what is written reach the client (a final error), but do not wait forever.
      this.client.end();
      setTimeout(() => this.client.destroy(), 5000).unref();
    } else {
      this.client.destroy();
    }
    if (!this.upstream.destroyed) {
      // Tell the server we are leaving so it does not log an unexpected EOF.
      this.upstream.end(this.terminating ? undefined : TERMINATE);
      setTimeout(() => this.upstream.destroy(), 1000).unref();
    }
    if (this.init.cancelPid !== undefined) this.init.cancels.release(this.init.cancelPid);
    this.abortJudge('disconnect');
    const err = new Error('dbguard: session closed');
    for (const job of this.internalQueue.splice(0)) job.reject(err);
    this.internalRunning?.reject(err);
    this.internalRunning = null;
    this.reportCompleted(); // statements that ended before the close are still audited, before session.end
    try {
      this.dp.sessionEnd?.(this);
    } catch (e) {
      this.hookError('sessionEnd', e);
    }
    this.init.onClosed(this);
  }

  /** Sends a FATAL error to the client and ends the session. */
  private fatalToClient(sqlstate: string, message: string): void {
    if (this.closed) return;
    this.flushClient();
    this.client.write(encodeError({ severity: 'FATAL', sqlstate, message }));
    this.close(message, 'debug', true);
  }

  private protocolViolation(err: ProtocolViolation): void {
    this.log.log('warn', 'protocol violation', {
      sessionId: this.id,
      clientAddr: this.clientAddr,
      error: err.message,
    });
    this.fatalToClient(err.sqlstate, err.message);
  }

  private fail(err: unknown): void {
    if (err instanceof ProtocolViolation) {
      this.protocolViolation(err);
      return;
    }
    this.log.log('error', 'session failed', { sessionId: this.id, error: errMsg(err) });
    this.fatalToClient('XX000', 'dbguard: internal proxy error; see the proxy log');
  }

  private hookError(hook: string, err: unknown): void {
    this.log.log('error', 'decision point hook failed', { sessionId: this.id, hook, error: errMsg(err) });
  }

  // ------------------------------------------------------------------ writing

  /** A slow reader on one side pauses reading on the other until it drains. */
  private writeClient(b: Buffer): void {
    if (this.closed) return;
    if (!this.client.write(b) && !this.upstreamGate.has('backpressure')) {
      this.upstreamGate.hold('backpressure');
      this.client.once('drain', () => this.upstreamGate.release('backpressure'));
    }
  }

  private writeUpstream(b: Buffer): void {
    if (this.closed) return;
    if (!this.upstream.write(b) && !this.clientGate.has('backpressure')) {
      this.clientGate.hold('backpressure');
      this.upstream.once('drain', () => this.clientGate.release('backpressure'));
    }
  }

  private flushClient(): void {
    const b = this.clOut.take();
    if (b) this.writeClient(b);
  }

  private flushUpstream(): void {
    const b = this.upOut.take();
    if (b) this.writeUpstream(b);
  }

  // ------------------------------------------------------------------ text

  private updateEncoding(): void {
    const enc = (this.serverParams.get('client_encoding') ?? 'UTF8').toUpperCase();
    // Anything but UTF8 is decoded byte-for-byte (latin1), which round-trips exactly.
    this.textEncoding = enc === 'UTF8' || enc === 'UNICODE' ? 'utf8' : 'latin1';
  }

  private text(b: Buffer): string {
    return b.toString(this.textEncoding);
  }

  private bytes(s: string): Buffer {
    return Buffer.from(s, this.textEncoding);
  }

  // ------------------------------------------------------------------ frontend (client → upstream)

  private onClientData(chunk: Buffer): void {
    if (this.closed) return;
    try {
      this.pushFrontendBytes(chunk);
    } catch (err) {
      this.fail(err);
      return;
    }
    this.pumpFrontend();
  }

  private pushFrontendBytes(chunk: Buffer): void {
    this.fe.push(chunk, this.feFrames);
    // Holding many unprocessed messages (a judge pending): stop reading until they are done.
    if (this.feFrames.length - this.feHead > 256) this.clientGate.hold('queue');
  }

  /** Client messages wait while a safe-point hook or an internal query owns the upstream. COPY data never waits. */
  private get upstreamOwned(): boolean {
    return this.hookLock > 0 || this.internalRunning !== null || this.internalQueue.length > 0;
  }

  private pumpFrontend(): void {
    if (this.feBusy || this.closed) return;
    this.feBusy = true;
    try {
      if (this.pendingApply) {
        // A verdict arrived asynchronously; it is applied only when the upstream is ours again.
        if (this.upstreamOwned) {
          this.feBusy = false;
          return;
        }
        const apply = this.pendingApply;
        this.pendingApply = null;
        apply();
      }
      while (this.feHead < this.feFrames.length) {
        const f = this.feFrames[this.feHead]!;
        if (!isCopyMessage(f.type) && this.upstreamOwned) break;
        this.feHead++;
        const r = this.handleFrontend(f);
        if (r) {
          this.flushUpstream();
          // A judge that may hold long (approval) keeps the client read, so a disconnect is seen at once;
          // what the client pipelines meanwhile queues (bounded by the 'queue' hold).
          if (!this.judgeWaiting) this.clientGate.hold('judge');
          r.then(
            (apply) => {
              this.pendingApply = apply;
              this.feBusy = false;
              this.clientGate.release('judge');
              this.pumpFrontend();
            },
            (err) => this.fail(err),
          );
          return;
        }
      }
      if (this.feHead === this.feFrames.length) {
        this.feFrames = [];
        this.feHead = 0;
        this.clientGate.release('queue');
      }
      this.flushUpstream();
      this.feBusy = false;
    } catch (err) {
      this.fail(err);
    }
  }

  /** Returns a promise (of the step that applies the verdict) only when a verdict is asynchronous. */
  private handleFrontend(f: Frame): Promise<() => void> | undefined {
    if (f.kind === 'part') {
      this.upOut.push(f.bytes); // CopyData fragment
      return undefined;
    }
    if (f.kind === 'skipped') {
      // Too large to judge: refused like a denial (the server answers the denial statement with an
      // error the client is shown ours for), so the session and its protocol state carry on.
      const o = oversizedStatement(f, this.init.maxStatementSize ?? 0);
      this.log.log('warn', 'statement over the size limit refused', {
        sessionId: this.id,
        message: f.type === T.Query ? 'Query' : 'Parse',
        bytes: f.length,
        limit: this.init.maxStatementSize,
      });
      const base = { sql: '', verdictSql: DENIAL_SQL, reject: o.reject, start: performance.now() };
      if (o.parseName === undefined) {
        this.send(encodeQuery(Buffer.from(DENIAL_SQL)), { kind: 'Q', ...base, oversized: true });
      } else {
        this.send(encodeParse(o.parseName, Buffer.from(DENIAL_SQL), 0, Buffer.alloc(0)), {
          kind: 'P',
          name: nameOf(o.parseName),
          ...base,
          oversized: true,
        });
      }
      return undefined;
    }
    const body = f.body;
    switch (f.type) {
      case T.Query: {
        const { sql } = decodeQuery(body);
        const text = this.text(sql);
        return this.withVerdict(
          () => this.dp.judge(text, this, 'query'),
          (v) => {
            const start = performance.now();
            if (v.action === 'reject') {
              this.send(encodeQuery(Buffer.from(DENIAL_SQL)), {
                kind: 'Q',
                sql: text,
                verdictSql: DENIAL_SQL,
                reject: v,
                start,
              });
            } else if (v.sql === text) {
              this.send(f.raw, { kind: 'Q', sql: text, verdictSql: text, start });
            } else {
              this.send(encodeQuery(this.bytes(v.sql)), { kind: 'Q', sql: text, verdictSql: v.sql, start });
            }
          },
        );
      }
      case T.Parse: {
        const p = decodeParse(body);
        const text = this.text(p.sql);
        return this.withVerdict(
          () => this.dp.judge(text, this, 'parse'),
          (v) => {
            const start = performance.now();
            const base = { kind: 'P' as const, name: p.name, sql: text, start };
            // a new statement under this name is judged anew; an approved one runs `executions` times
            if (v.action === 'forward' && v.executions !== undefined)
              this.approvedBinds.set(p.name, v.executions);
            else this.approvedBinds.delete(p.name);
            if (v.action === 'reject') {
              // Parameter type OIDs are dropped: the denial statement has no parameters.
              this.send(encodeParse(p.nameBytes, Buffer.from(DENIAL_SQL), 0, Buffer.alloc(0)), {
                ...base,
                verdictSql: DENIAL_SQL,
                reject: v,
              });
            } else if (v.sql === text) {
              this.send(f.raw, { ...base, verdictSql: text });
            } else {
              this.send(encodeParse(p.nameBytes, this.bytes(v.sql), p.paramTypeCount, p.paramTypes), {
                ...base,
                verdictSql: v.sql,
              });
            }
          },
        );
      }
      case T.Bind: {
        const b = decodeBind(body);
        const left = this.approvedBinds.get(b.statement);
        if (left !== undefined && left <= 0) {
          // Bound to a statement that does not exist, the Bind fails and the server skips to Sync, as
          // for any failed extended-protocol message; the client is shown our refusal instead.
          this.send(rebindTo(f.raw, this.refusedBindTarget), {
            kind: 'B',
            portal: b.portal,
            statement: b.statement,
            start: performance.now(),
            reject: {
              action: 'reject',
              sqlstate: '42501',
              message:
                'dbguard: this prepared statement was approved for one execution; prepare it again to ask for a new approval',
              detail:
                'The approver saw the statement with its placeholders, not the values of later executions.',
            },
          });
          return undefined;
        }
        if (left !== undefined) this.approvedBinds.set(b.statement, left - 1);
        this.send(f.raw, { kind: 'B', portal: b.portal, statement: b.statement, start: performance.now() });
        return undefined;
      }
      case T.Describe:
        decodeTarget(body, 'Describe');
        this.send(f.raw, { kind: 'D' });
        return undefined;
      case T.Execute: {
        const e = decodeExecute(body);
        this.send(f.raw, { kind: 'E', portal: e.portal, start: performance.now() });
        return undefined;
      }
      case T.Close: {
        const c = decodeTarget(body, 'Close');
        if (c.kind === 'S') this.approvedBinds.delete(c.name);
        this.send(f.raw, { kind: 'C', target: c.kind, name: c.name });
        return undefined;
      }
      case T.Sync:
        expectEmpty(body, 'Sync');
        this.send(f.raw, { kind: 'S' });
        return undefined;
      case T.Flush:
        expectEmpty(body, 'Flush');
        this.send(f.raw, null);
        return undefined;
      case T.FunctionCall: {
        const { oid } = decodeFunctionCall(body);
        return this.withVerdict(
          () => this.dp.judgeFunctionCall(oid, this),
          (v) => {
            const start = performance.now();
            if (v.action === 'reject') {
              // A failing simple Query answers ErrorResponse + ReadyForQuery, like a failing FunctionCall.
              this.send(encodeQuery(Buffer.from(DENIAL_SQL)), { kind: 'F', oid, reject: v, start });
            } else {
              this.send(f.raw, { kind: 'F', oid, start });
            }
          },
        );
      }
      case T.CopyFail:
        decodeCopyFail(body);
        this.upOut.push(f.raw);
        return undefined;
      case T.CopyData:
      case T.CopyDone:
        this.upOut.push(f.raw);
        return undefined;
      case T.Terminate:
        this.flushUpstream();
        this.terminating = true;
        this.upstream.end(f.raw);
        this.close('client terminated');
        return undefined;
      default:
        throw new ProtocolViolation(`invalid frontend message type ${f.type}`);
    }
  }

  /** Runs a judge; applies its verdict now when synchronous, else returns the promise of the applying step. */
  private withVerdict(
    judge: () => Verdict | Promise<Verdict>,
    apply: (v: Verdict) => void,
  ): Promise<() => void> | undefined {
    let v: Verdict | Promise<Verdict>;
    const me = ++this.judgeCount;
    this.judging = me;
    this.judgeAbort = null;
    this.judgeAbortReason = undefined;
    this.judgeWaiting = false;
    const done = () => {
      if (this.judging === me) {
        this.judging = 0;
        this.judgeAbort = null;
        this.judgeAbortReason = undefined;
        this.judgeWaiting = false;
      }
    };
    try {
      v = judge();
    } catch (err) {
      done();
      apply(this.judgeFailed(err));
      return undefined;
    }
    if (v && typeof (v as Promise<Verdict>).then === 'function') {
      return (v as Promise<Verdict>).then(
        (verdict) => {
          done();
          return () => {
            if (!this.closed) apply(checkVerdict(verdict));
          };
        },
        (err) => {
          done();
          return () => {
            if (!this.closed) apply(this.judgeFailed(err));
          };
        },
      );
    }
    done();
    apply(checkVerdict(v as Verdict));
    return undefined;
  }

  private judgeFailed(err: unknown): Verdict {
    this.hookError('judge', err);
    return {
      action: 'reject',
      sqlstate: 'XX000',
      message: 'dbguard: the statement could not be judged; see the proxy log',
    };
  }

  /** Queues bytes for upstream and records the response they wait for. */
  private send(bytes: Buffer, pending: Pending | null): void {
    this.upOut.push(bytes);
    this.safePoint = false;
    if (!pending) return;
    // Flush, Describe and Close run nothing: they cannot change a setting.
    if (pending.kind !== 'D' && pending.kind !== 'C') this.paramsUnreported = true;
    if (this.discardTillSync) {
      // The server ignores this message (an earlier one failed): it will not be answered.
      if (pending.kind !== 'S') return;
      this.discardTillSync = false;
    }
    this.fifo.push(pending);
  }

  // ------------------------------------------------------------------ backend (upstream → client)

  private onUpstreamData(chunk: Buffer): void {
    if (this.closed) return;
    try {
      this.pushBackendBytes(chunk);
    } catch (err) {
      this.fail(err);
      return;
    }
    this.pumpBackend();
  }

  private pushBackendBytes(chunk: Buffer): void {
    this.be.push(chunk, this.beFrames);
  }

  private pumpBackend(): void {
    if (this.beBusy || this.closed) return;
    this.beBusy = true;
    try {
      while (this.beHead < this.beFrames.length) {
        const f = this.beFrames[this.beHead++]!;
        const r = this.handleBackend(f);
        if (r) {
          this.flushClient();
          this.reportCompleted();
          this.upstreamGate.hold('hook');
          r.then(
            () => {
              this.beBusy = false;
              this.upstreamGate.release('hook');
              this.pumpBackend();
            },
            (err) => this.fail(err),
          );
          return;
        }
        if (this.closed) return;
      }
      this.beFrames = [];
      this.beHead = 0;
      this.flushClient();
      this.beBusy = false;
      this.reportCompleted();
    } catch (err) {
      this.fail(err);
    }
  }

  private handleBackend(f: Frame): Promise<void> | undefined {
    const head = this.fifo.peek();
    if (f.kind === 'part') {
      if (f.first) {
        if (head?.kind === 'internal') {
          this.partMode = 'assemble';
          this.assembling = [];
        } else {
          this.partMode = 'forward';
          this.onPassThrough(f.type);
        }
      }
      if (this.partMode === 'forward') {
        this.clOut.push(f.bytes);
        this.midBackendMessage = !f.last;
        if (f.last && this.heldNotices.length) for (const b of this.heldNotices.splice(0)) this.clOut.push(b);
      } else {
        this.assembling.push(Buffer.from(f.bytes));
        if (f.last) {
          const raw = Buffer.concat(this.assembling);
          this.assembling = [];
          this.internalMessage(head as Extract<Pending, { kind: 'internal' }>, f.type, raw.subarray(5));
        }
      }
      return undefined;
    }
    // the backend framer has no skipOver: it never drops a message
    if (f.kind === 'skipped') throw new Error('a backend message was skipped');
    // `f.body` is a view made on demand: DataRow and the other pass-through messages never need one.
    const { type, raw } = f;
    switch (type) {
      case T.ReadyForQuery:
        return this.onReadyForQuery(raw, f.body);
      case T.ErrorResponse:
        this.onError(raw, f.body);
        return undefined;
      case T.CommandComplete: {
        if (head?.kind === 'internal') return undefined;
        this.onCommandComplete(decodeCommandComplete(f.body));
        this.clOut.push(raw);
        return undefined;
      }
      case T.NoticeResponse: {
        if (head?.kind === 'internal') return undefined;
        this.clOut.push(this.scrub(raw, f.body, false));
        return undefined;
      }
      case T.ParameterStatus: {
        const { name, value } = decodeParameterStatus(f.body);
        this.serverParams.set(name, value);
        if (name === 'client_encoding') this.updateEncoding();
        this.clOut.push(raw);
        return undefined;
      }
      case T.BackendKeyData:
        return undefined; // never leak the server's key
      case T.Auth:
        throw new Error('upstream sent an authentication request after authentication');
      default:
        if (head?.kind === 'internal') {
          this.internalMessage(head, type, f.body);
          return undefined;
        }
        this.onPassThrough(type);
        this.clOut.push(raw);
        return undefined;
    }
  }

  /** FIFO bookkeeping for messages that pass through without being decoded. */
  private onPassThrough(type: number): void {
    const head = this.fifo.peek();
    if (!head) return;
    switch (type) {
      case T.ParseComplete:
        if (head.kind === 'P') {
          this.fifo.shift();
          this.statements.set(head.name, { sql: head.sql, forwardedSql: head.verdictSql });
        }
        return;
      case T.BindComplete:
        if (head.kind === 'B') {
          this.fifo.shift();
          this.portals.set(head.portal, head.statement);
        }
        return;
      case T.CloseComplete:
        if (head.kind === 'C') {
          this.fifo.shift();
          if (head.target === 'S') this.statements.delete(head.name);
          else this.portals.delete(head.name);
        }
        return;
      case T.NoData:
        if (head.kind === 'D') this.fifo.shift();
        return;
      case T.RowDescription:
        if (head.kind === 'D') this.fifo.shift();
        return;
      case T.EmptyQueryResponse:
        if (head.kind === 'E') this.fifo.shift();
        return;
      case T.PortalSuspended:
        if (head.kind === 'E') {
          this.fifo.shift();
          this.emitCompleted(head, {});
        }
        return;
      case T.FunctionCallResponse:
        if (head.kind === 'F') this.emitCompleted(head, {});
        return;
      default:
        return;
    }
  }

  private onCommandComplete(tag: string): void {
    const head = this.fifo.peek();
    const rowCount = rowCountOf(tag);
    const extra = rowCount === undefined ? { commandTag: tag } : { commandTag: tag, rowCount };
    if (head?.kind === 'Q') this.emitCompleted(head, extra);
    else if (head?.kind === 'E') {
      this.fifo.shift();
      this.emitCompleted(head, extra);
    }
    if (tag === 'DISCARD ALL' || tag === 'DEALLOCATE ALL') {
      this.statements.clear();
      if (tag === 'DISCARD ALL') this.portals.clear();
    }
  }

  private onError(raw: Buffer, body: Buffer): void {
    const fields = decodeFields(body, 'ErrorResponse', this.textEncoding);
    const severity = fields.get('V') ?? fields.get('S') ?? 'ERROR';
    const head = this.fifo.peek();
    if (severity === 'FATAL' || severity === 'PANIC') {
      // The server ends the session; pass the reason on (scrubbed) and let the close follow.
      this.clOut.push(this.scrub(raw, body, true, fields));
      return;
    }
    if (!head) {
      this.clOut.push(this.scrub(raw, body, true, fields));
      return;
    }
    if (head.kind === 'internal') {
      head.job.error = fields;
      return;
    }
    const reject = 'reject' in head ? head.reject : undefined;
    if (reject) {
      this.clOut.push(encodeError({ severity: 'ERROR', ...reject }));
      if (!('oversized' in head && head.oversized))
        this.emitCompleted(head, { sqlstate: reject.sqlstate, rejected: true });
    } else {
      this.clOut.push(this.scrub(raw, body, true, fields));
      if (
        head.kind === 'Q' ||
        head.kind === 'P' ||
        head.kind === 'B' ||
        head.kind === 'E' ||
        head.kind === 'F'
      ) {
        this.emitCompleted(head, { sqlstate: fields.get('C') ?? 'XX000' });
      }
    }
    if (endsAtReadyForQuery(head)) return;
    // An extended-query message failed: the server discards everything up to the next Sync.
    this.fifo.shift();
    while (this.fifo.length > 0 && this.fifo.peek()!.kind !== 'S') this.fifo.shift();
    if (this.fifo.length === 0) this.discardTillSync = true;
  }

  private scrub(raw: Buffer, body: Buffer, isError: boolean, decoded?: Map<string, string>): Buffer {
    const hook = this.dp.backendNotice;
    if (!hook) return raw;
    const fields =
      decoded ?? decodeFields(body, isError ? 'ErrorResponse' : 'NoticeResponse', this.textEncoding);
    let out: Map<string, string>;
    try {
      // The hook gets a copy it may change in place; the result is always re-encoded.
      out = hook.call(this.dp, new Map(fields), this, isError);
      if (!(out instanceof Map)) throw new Error('backendNotice must return a Map');
    } catch (err) {
      this.hookError('backendNotice', err);
      // Fail closed: keep only what cannot carry data values.
      out = new Map([...fields].filter(([k]) => k === 'S' || k === 'V' || k === 'C'));
      out.set('M', isError ? 'dbguard: error details withheld' : 'dbguard: notice withheld');
    }
    return encodeFields(isError ? T.ErrorResponse : T.NoticeResponse, out, this.textEncoding);
  }

  private onReadyForQuery(raw: Buffer, body: Buffer): Promise<void> | undefined {
    if (body.length !== 1) throw new Error('upstream sent a malformed ReadyForQuery');
    const status = String.fromCharCode(body[0]!);
    if (status !== 'I' && status !== 'T' && status !== 'E')
      throw new Error(`upstream sent an invalid transaction status ${status}`);
    // Pop up to and including the entry this ReadyForQuery answers.
    let head = this.fifo.shift();
    while (head && !endsAtReadyForQuery(head)) head = this.fifo.shift();
    this.txStatus = status;
    // Every setting changed so far was reported before this ReadyForQuery, unless more is in flight.
    if (this.fifo.length === 0) this.paramsUnreported = false;
    if (status === 'I') this.portals.clear();
    if (head?.kind === 'internal') {
      this.finishInternal(head.job);
      return undefined;
    }
    const safe = this.fifo.length === 0;
    if (safe) this.safePoint = true;
    const idle = this.dp.idle;
    if (idle) {
      if (safe) this.hookLock++;
      let r: unknown;
      try {
        r = idle.call(this.dp, this, { safePoint: safe });
      } catch (err) {
        this.hookError('idle', err);
      }
      if (isPromise(r)) {
        const after = r.catch((err) => this.hookError('idle', err));
        if (safe) {
          // Hold only this ReadyForQuery: the hook's internal queries need the backend stream
          // to flow, and nothing else can arrive for the client meanwhile (its messages wait).
          after.then(() => {
            this.hookLock--;
            if (this.closed) return;
            this.flushClient();
            this.writeClient(raw);
            if (this.safePoint) this.afterSafeReady();
          });
          return undefined;
        }
        // Pipelined responses follow: hold the whole backend stream, in order.
        this.heldUnsafe = true;
        return after.then(() => {
          this.heldUnsafe = false;
          this.clOut.push(raw);
        });
      }
      if (safe) this.hookLock--;
    }
    this.clOut.push(raw);
    if (safe && this.safePoint) this.afterSafeReady();
    return undefined;
  }

  /** At a safe point: run waiting internal queries, honour shutdown, or let client messages flow. */
  private afterSafeReady(): void {
    if (this.hookLock > 0) return;
    if (this.internalQueue.length > 0) {
      this.runNextInternal();
      return;
    }
    if (this.shuttingDown && this.fifo.length === 0) {
      this.fatalToClient('57P01', 'terminating connection due to administrator command');
      return;
    }
    if (this.pendingApply || this.feHead < this.feFrames.length) queueMicrotask(() => this.pumpFrontend());
  }

  private emitCompleted(head: Pending, extra: Partial<CompletedEvent>): void {
    const completed = this.dp.completed;
    if (!completed || head.kind === 'internal' || head.kind === 'D' || head.kind === 'C' || head.kind === 'S')
      return;
    let sql: string;
    let verdictSql: string;
    let via: CompletedEvent['via'];
    switch (head.kind) {
      case 'Q':
      case 'P':
        sql = head.sql;
        verdictSql = head.verdictSql;
        via = head.kind === 'Q' ? 'query' : 'parse';
        break;
      case 'B':
      case 'E': {
        const stmtName = head.kind === 'B' ? head.statement : this.portals.get(head.portal);
        const st = stmtName === undefined ? undefined : this.statements.get(stmtName);
        sql = st?.sql ?? '';
        verdictSql = st?.forwardedSql ?? '';
        via = 'parse';
        break;
      }
      case 'F':
        sql = `<function call ${head.oid}>`;
        verdictSql = head.reject ? DENIAL_SQL : sql;
        via = 'function';
        break;
    }
    // Written out, not `{ ...extra }`: one per statement, and a spread makes a slow object in V8.
    this.completions.push({
      s: this,
      sql,
      verdictSql,
      via,
      rejected: extra.rejected,
      commandTag: extra.commandTag,
      rowCount: extra.rowCount,
      sqlstate: extra.sqlstate,
      durationMs: performance.now() - head.start,
    });
  }

  /**
   * Hands the completions of this backend chunk to the decision point (audit, metrics). Called once
   * the chunk's bytes were written to the client: the bookkeeping then overlaps with the client's
   * next round trip instead of delaying its answer. Still synchronous, in the same turn of the event
   * loop, so nothing else of this session (its next statement) can be judged before it.
   */
  private reportCompleted(): void {
    const list = this.completions;
    if (list.length === 0) return;
    this.completions = [];
    const completed = this.dp.completed;
    if (!completed) return;
    for (const e of list) {
      try {
        completed.call(this.dp, e);
      } catch (err) {
        this.hookError('completed', err);
      }
    }
  }

  // ------------------------------------------------------------------ internal queries

  internalQuery(sql: string): Promise<{ rows: (string | null)[][]; fields: string[] }> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new Error('internalQuery: the session is closed'));
      const recovering =
        this.internalRunning?.recovery === true || this.internalQueue.some((j) => j.recovery === true);
      if (this.txStatus === 'E' && !recovering) {
        return reject(new Error('internalQuery: the client transaction is aborted (25P02)'));
      }
      const job: InternalJob = { sql, savepoint: false, fields: [], rows: [], resolve, reject };
      if (this.safePoint && !this.internalRunning) {
        this.internalQueue.push(job);
        this.runNextInternal();
        return;
      }
      if (!this.safePointReachable()) {
        return reject(
          new Error(
            'internalQuery: the session cannot reach a safe point without more client input (pipeline without Sync)',
          ),
        );
      }
      this.internalQueue.push(job);
    });
  }

  private safePointReachable(): boolean {
    if (this.heldUnsafe || this.discardTillSync) return false;
    if (this.internalRunning) return true;
    const tail = this.fifo.tail();
    if (tail === undefined || !endsAtReadyForQuery(tail)) return false;
    // An extended-protocol message not yet followed by Sync: if it fails, the server discards every
    // later message (a Query too) until Sync, so the ReadyForQuery the tail promises may never come.
    let unsynced = false;
    for (const x of this.fifo) {
      if (x.kind === 'S') unsynced = false;
      else if (x.kind === 'P' || x.kind === 'B' || x.kind === 'D' || x.kind === 'E' || x.kind === 'C')
        unsynced = true;
      else if (unsynced && (x.kind === 'Q' || x.kind === 'F')) return false;
    }
    return true;
  }

  private runNextInternal(): void {
    if (this.internalRunning || !this.safePoint || this.closed) return;
    const job = this.internalQueue.shift();
    if (!job) return;
    if (!job.recovery && this.txStatus === 'E') {
      job.reject(new Error('internalQuery: the client transaction is aborted (25P02)'));
      this.runNextInternal();
      if (!this.internalRunning && this.internalQueue.length === 0) this.afterSafeReady();
      return;
    }
    this.internalRunning = job;
    this.safePoint = false;
    this.flushUpstream();
    let text = job.sql.replace(/[\s;]+$/, '');
    if (!job.recovery && this.txStatus === 'T') {
      // Inside the client's transaction block: a failure must not abort it.
      job.savepoint = true;
      text = `SAVEPOINT dbguard_internal; ${text}; RELEASE SAVEPOINT dbguard_internal`;
    }
    this.fifo.push({ kind: 'internal', job });
    this.writeUpstream(encodeQuery(Buffer.from(text, 'utf8')));
  }

  private internalMessage(head: Extract<Pending, { kind: 'internal' }>, type: number, body: Buffer): void {
    const job = head.job;
    if (type === T.RowDescription) {
      job.fields = decodeRowDescription(body, this.textEncoding);
      job.rows = [];
    } else if (type === T.DataRow) {
      job.rows.push(decodeDataRowText(body, this.textEncoding));
    } else if (type === T.NotificationResponse) {
      this.clOut.push(encodeRaw(type, body)); // asynchronous: belongs to the client
    } else if (type === T.CopyInResponse) {
      // An internal query must not start COPY FROM STDIN: fail it so the server is not left waiting.
      this.writeUpstream(Buffer.concat([Buffer.from([T.CopyFail, 0, 0, 0, 5]), Buffer.from([0])]));
    }
  }

  private finishInternal(job: InternalJob): void {
    this.internalRunning = null;
    this.safePoint = this.fifo.length === 0;
    if (job.error) {
      if (job.savepoint) {
        this.internalQueue.unshift({
          sql: 'ROLLBACK TO SAVEPOINT dbguard_internal; RELEASE SAVEPOINT dbguard_internal',
          recovery: true,
          savepoint: false,
          fields: [],
          rows: [],
          resolve: () => {},
          reject: () => {},
        });
      }
      const e = job.error;
      job.reject(
        Object.assign(new Error(`internalQuery failed: ${e.get('M') ?? 'error'} (${e.get('C') ?? '?'})`), {
          sqlstate: e.get('C'),
        }),
      );
    } else {
      job.resolve({ rows: job.rows, fields: job.fields });
    }
    if (this.internalQueue.length > 0) {
      this.runNextInternal();
      return;
    }
    if (this.safePoint) this.afterSafeReady();
  }
}

function encodeRaw(type: number, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = type;
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

function isPromise(v: unknown): v is Promise<void> {
  return !!v && typeof (v as Promise<void>).then === 'function';
}

function checkVerdict(v: Verdict): Verdict {
  // A NUL would end the statement early on the wire: never forward such a text.
  if (v && v.action === 'forward' && typeof v.sql === 'string' && !v.sql.includes('\0')) return v;
  if (v && v.action === 'reject' && typeof v.sqlstate === 'string' && /^[0-9A-Z]{5}$/.test(v.sqlstate))
    return v;
  return { action: 'reject', sqlstate: 'XX000', message: 'dbguard: invalid verdict from the decision point' };
}

function errMsg(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function newSessionId(): string {
  return crypto.randomUUID();
}
