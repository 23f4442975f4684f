/**
 * Resource limits of one proxy, so that governance never falls over under load or attack:
 *
 * - `maxConnections`: client connections admitted at once (authenticating or relaying); the CLI's
 *   default is DEFAULT_MAX_CONNECTIONS, the programmatic API's no limit. The next one gets FATAL 53300
 *   (too_many_connections) right after its start-up packet, as PostgreSQL answers when
 *   max_connections is reached. CancelRequests are never counted (they must get through when the
 *   proxy is full, or a runaway statement could not be stopped).
 * - `idleTimeoutMs`: a session whose client sends and receives nothing for this long while nothing
 *   runs upstream is ended with FATAL 57P05 (idle-session timeout), or 25P03 when it sits in an open
 *   transaction block (idle-in-transaction timeout), exactly the codes PostgreSQL uses.
 * - `upstreamConnectTimeoutMs`: TCP connect, SSL negotiation and TLS handshake with the upstream.
 *   Login after that is bounded by the proxy's `authTimeoutMs`.
 * - A client that leaves while its statement runs: the statement is cancelled upstream
 *   (`cancelIfBusy`), so no query runs on for nobody. PostgreSQL itself only notices a closed
 *   socket when it next writes to it (or with client_connection_check_interval).
 */
import type { Duplex } from 'node:stream';
import type { DecisionPoint } from './decision-point.js';
import type { Logger } from './log.js';

export const TOO_MANY_CONNECTIONS_SQLSTATE = '53300';
export const IDLE_SESSION_TIMEOUT_SQLSTATE = '57P05';
export const IDLE_IN_TRANSACTION_TIMEOUT_SQLSTATE = '25P03';

/** The limits a proxy enforces; every field is optional and off (or the default) when absent. */
export interface ProxyLimits {
  /** client sessions at once; 0 or absent: no limit */
  maxConnections?: number;
  /** end sessions idle this long; 0 or absent: never */
  idleTimeoutMs?: number;
  /** TCP + TLS to the upstream; default 10 s */
  upstreamConnectTimeoutMs?: number;
  /** failed logins allowed per client address within loginFailureWindowMs; 0 or absent: no limit */
  loginFailureLimit?: number;
  /** the window of loginFailureLimit; default DEFAULT_LOGIN_FAILURE_WINDOW_MS */
  loginFailureWindowMs?: number;
}

/** `dbguard proxy`'s default cap: PostgreSQL's own default max_connections. */
export const DEFAULT_MAX_CONNECTIONS = 100;
/** `dbguard proxy`'s default: 10 failed logins per client address per minute. */
export const DEFAULT_LOGIN_FAILURE_LIMIT = 10;
export const DEFAULT_LOGIN_FAILURE_WINDOW_MS = 60_000;

export const DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS = 10_000;
/** Larger than any sensible setting, small enough for setTimeout (2^31 - 1 ms). */
const MAX_TIMEOUT_MS = 24 * 3600 * 1000;

/** Throws a clear error for a limit that is not a sensible non-negative integer. */
export function checkLimits(l: ProxyLimits): void {
  const check = (name: string, v: number | undefined, max: number, min = 0) => {
    if (v === undefined) return;
    if (!Number.isInteger(v) || v < min || v > max) {
      throw new Error(`${name} must be an integer between ${min} and ${max} (got ${v})`);
    }
  };
  check('maxConnections', l.maxConnections, 1_000_000);
  check('idleTimeoutMs', l.idleTimeoutMs, MAX_TIMEOUT_MS);
  check('upstreamConnectTimeoutMs', l.upstreamConnectTimeoutMs, MAX_TIMEOUT_MS, 1);
  check('loginFailureLimit', l.loginFailureLimit, 1_000_000);
  check('loginFailureWindowMs', l.loginFailureWindowMs, MAX_TIMEOUT_MS, 1);
}

/** Counts admitted sessions against `max` (0: unlimited). */
export class ConnectionLimiter {
  private n = 0;
  private refused = 0;
  private lastLog = 0;

  constructor(
    readonly max: number,
    private readonly logger?: Logger,
  ) {}

  get count(): number {
    return this.n;
  }

  /** Takes a slot; false when the proxy is full (the caller answers 53300). */
  tryAcquire(clientAddr: string): boolean {
    if (this.max > 0 && this.n >= this.max) {
      this.refused++;
      // One line per 10 s at most: a connection flood must not become a log flood.
      const now = Date.now();
      if (now - this.lastLog >= 10_000) {
        this.logger?.log('warn', 'connection refused: too many connections', {
          clientAddr,
          max: this.max,
          refusedSinceLastLine: this.refused,
        });
        this.refused = 0;
        this.lastLog = now;
      }
      return false;
    }
    this.n++;
    return true;
  }

  release(): void {
    if (this.n > 0) this.n--;
  }

  get message(): string {
    return `dbguard: too many connections for dbguard proxy (max ${this.max})`;
  }
}

/** What the idle watch needs of a session (Session implements it). */
export interface IdleWatchable {
  readonly id: string;
  /** nothing in flight upstream, at a ReadyForQuery */
  readonly idle: boolean;
  readonly txStatus: 'I' | 'T' | 'E';
  destroy(reason: string): void;
}

/**
 * Wraps a decision point to count its verdicts still pending (a statement held for approval, an
 * audit sink applying backpressure): such a session is waiting on the proxy, not idle. Synchronous
 * verdicts cost one extra call; the other hooks pass through untouched.
 */
export function trackPendingJudges(dp: DecisionPoint): { dp: DecisionPoint; pending(): number } {
  let pending = 0;
  const track = <V>(v: V | Promise<V>): V | Promise<V> => {
    if (!v || typeof (v as Promise<V>).then !== 'function') return v;
    pending++;
    return (v as Promise<V>).finally(() => {
      pending--;
    });
  };
  const wrapped = new Proxy(dp, {
    get(target, key, receiver) {
      if (key === 'judge') return (...a: Parameters<DecisionPoint['judge']>) => track(target.judge(...a));
      if (key === 'judgeFunctionCall')
        return (...a: Parameters<DecisionPoint['judgeFunctionCall']>) =>
          track(target.judgeFunctionCall(...a));
      const v = Reflect.get(target, key, receiver);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
  return { dp: wrapped, pending: () => pending };
}

/**
 * Ends the session when its client socket has seen no traffic either way for `ms` while the session
 * is idle. A long statement keeps no traffic on the socket but is not idle: the timer re-arms with
 * the next byte, so idleness is counted from the end of the last result.
 */
export function watchIdle(
  sock: Duplex,
  session: IdleWatchable,
  ms: number,
  encodeFatal: (sqlstate: string, message: string) => Buffer,
  logger: Logger,
  /** true while the session waits on the proxy itself (a verdict pending) */
  busy: () => boolean = () => false,
): void {
  const s = sock as Duplex & { setTimeout?: (ms: number) => void };
  if (!(ms > 0) || typeof s.setTimeout !== 'function') return;
  s.setTimeout(ms);
  sock.on('timeout', () => {
    if (!session.idle || busy() || sock.destroyed) return;
    const inTx = session.txStatus !== 'I';
    const [sqlstate, message] = inTx
      ? [IDLE_IN_TRANSACTION_TIMEOUT_SQLSTATE, 'terminating connection due to idle-in-transaction timeout']
      : [IDLE_SESSION_TIMEOUT_SQLSTATE, 'terminating connection due to idle-session timeout'];
    logger.log('info', 'session idle timeout', { sessionId: session.id, idleMs: ms, inTransaction: inTx });
    s.setTimeout?.(0);
    // The client reads the FATAL and closes; the session then cleans up the upstream (an open
    // transaction is rolled back by the server when the connection ends).
    sock.end(encodeFatal(sqlstate, `dbguard: ${message}`));
    setTimeout(() => session.destroy('idle timeout'), 1000).unref();
  });
}

/**
 * Called when a session closed: if a statement was still running for it, cancel it upstream
 * (best effort, errors logged) so it does not run on for a client that is gone.
 */
export function cancelIfBusy(
  session: { readonly id: string; readonly idle: boolean },
  cancel: () => Promise<void>,
  logger: Logger,
): void {
  if (session.idle) return;
  logger.log('info', 'client left while a statement ran; cancelling it upstream', { sessionId: session.id });
  cancel().catch((err: unknown) =>
    logger.log('warn', 'cancel after client disconnect failed', {
      sessionId: session.id,
      error: (err as Error)?.message ?? String(err),
    }),
  );
}
