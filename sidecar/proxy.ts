/**
 * The proxy's programmatic API: `startProxy` listens, accepts PostgreSQL clients and relays each to
 * the upstream server through a DecisionPoint. `dbguard proxy`, the demo and the tests use it.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { Credentials } from './auth/upstream-login.js';
import { CancelRegistry } from './cancel-registry.js';
import { type ClientAuth, handleConnection, type ProxyContext } from './connection.js';
import { allowAll, type DecisionPoint } from './decision-point.js';
import {
  ConnectionLimiter,
  checkLimits,
  DEFAULT_LOGIN_FAILURE_WINDOW_MS,
  type ProxyLimits,
} from './limits.js';
import { jsonLogger, type Logger } from './log.js';
import { LoginThrottle } from './login-throttle.js';
import type { Session } from './session.js';
import { DEFAULT_MAX_STATEMENT_SIZE } from './statement-size.js';
import type { UpstreamTarget } from './upstream.js';

/** PostgreSQL's own limit on one message (MaxAllocSize). */
export const DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024 * 1024;

/** `maxConnections`, `idleTimeoutMs`, `upstreamConnectTimeoutMs`, `loginFailure*`: see limits.ts. */
export interface ProxyOptions extends ProxyLimits {
  /** where to listen; default 127.0.0.1 on a free port */
  listen?: { host?: string; port?: number };
  upstream: UpstreamTarget;
  /** database used when a client names none */
  defaultDatabase?: string;
  /** default: allow everything unchanged */
  decisionPoint?: DecisionPoint;
  /**
   * Log in upstream with these instead of relaying the client's authentication; clients are then
   * told AuthenticationOk by the proxy (loopback trust).
   */
  upstreamCredentials?: Credentials;
  /** with upstreamCredentials: verify the client's password as a token (see ProxyContext.clientAuth) */
  clientAuth?: ClientAuth;
  /** TLS to clients (answers SSLRequest with 'S'); PEM */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** largest frontend message accepted, in bytes (default 1 GB) */
  maxMessageSize?: number;
  /**
   * largest Query or Parse message judged, in bytes (default 1 MiB); a larger one is refused with 54000
   * without being read into memory, and the session goes on (statement-size.ts). 0: no limit but
   * maxMessageSize.
   */
  maxStatementSize?: number;
  /** start-up and authentication must finish within this (default 60 s, like authentication_timeout) */
  authTimeoutMs?: number;
  logger?: Logger;
}

export interface ProxyHandle {
  host: string;
  port: number;
  /** sessions relaying now */
  readonly activeSessions: number;
  /** Stops accepting and closes every connection at once. */
  close(): Promise<void>;
  /**
   * Stops accepting; idle sessions end at once (FATAL 57P01, as PostgreSQL's shutdown), busy ones
   * at their next ReadyForQuery; after `timeoutMs` the rest are closed.
   */
  shutdown(timeoutMs: number): Promise<void>;
}

export async function startProxy(opts: ProxyOptions): Promise<ProxyHandle> {
  const logger = opts.logger ?? jsonLogger();
  const maxMessageSize = opts.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE;
  if (
    !Number.isInteger(maxMessageSize) ||
    maxMessageSize < 1024 ||
    maxMessageSize > DEFAULT_MAX_MESSAGE_SIZE
  ) {
    throw new Error(`max message size must be an integer between 1024 and ${DEFAULT_MAX_MESSAGE_SIZE} bytes`);
  }
  // the default yields to a smaller max message size; an explicit setting must fit within it
  const maxStatementSize = opts.maxStatementSize ?? Math.min(DEFAULT_MAX_STATEMENT_SIZE, maxMessageSize);
  if (
    !Number.isInteger(maxStatementSize) ||
    (maxStatementSize !== 0 && (maxStatementSize < 1024 || maxStatementSize > maxMessageSize))
  ) {
    throw new Error(
      `max statement size must be 0 (no limit) or an integer between 1024 and the max message size (${maxMessageSize}) bytes`,
    );
  }
  checkLimits(opts);
  const ctx: ProxyContext = {
    upstream:
      opts.upstreamConnectTimeoutMs !== undefined
        ? { ...opts.upstream, connectTimeoutMs: opts.upstreamConnectTimeoutMs }
        : opts.upstream,
    decisionPoint: opts.decisionPoint ?? allowAll,
    maxMessageSize,
    maxStatementSize,
    authTimeoutMs: opts.authTimeoutMs ?? 60_000,
    logger,
    cancels: new CancelRegistry(),
    sessions: new Set<Session>(),
    starting: new Set<net.Socket>(),
    limiter: new ConnectionLimiter(opts.maxConnections ?? 0, logger),
    loginThrottle: new LoginThrottle(
      opts.loginFailureLimit ?? 0,
      opts.loginFailureWindowMs ?? DEFAULT_LOGIN_FAILURE_WINDOW_MS,
      logger,
    ),
    idleTimeoutMs: opts.idleTimeoutMs ?? 0,
  };
  if (opts.defaultDatabase) ctx.defaultDatabase = opts.defaultDatabase;
  if (opts.upstreamCredentials) ctx.credentials = opts.upstreamCredentials;
  if (opts.clientAuth) {
    if (!opts.upstreamCredentials)
      throw new Error('token authentication needs upstream credentials held by the proxy');
    ctx.clientAuth = opts.clientAuth;
  }
  if (opts.tls) ctx.secureContext = tls.createSecureContext({ cert: opts.tls.cert, key: opts.tls.key });

  const server = net.createServer((sock) => {
    handleConnection(sock, ctx).catch((err) => {
      // handleConnection catches its own errors; this is the last line so the process never dies.
      logger.log('error', 'connection handler failed', { error: (err as Error)?.message ?? String(err) });
      sock.destroy();
    });
  });
  server.on('error', (err) => logger.log('error', 'listener error', { error: err.message }));
  const host = opts.listen?.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.listen?.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as net.AddressInfo).port;
  logger.log('info', 'listening', {
    listen: `${host}:${port}`,
    upstream: `${opts.upstream.host}:${opts.upstream.port}`,
    sslmode: opts.upstream.sslmode ?? 'prefer',
    clientTls: !!opts.tls,
    credentials: opts.upstreamCredentials ? 'proxy' : 'relay',
  });

  const closeListener = () => new Promise<void>((resolve) => server.close(() => resolve()));
  const waitForSessions = async (deadline: number) => {
    while ((ctx.sessions.size > 0 || ctx.starting.size > 0) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  return {
    host,
    port,
    get activeSessions() {
      return ctx.sessions.size;
    },
    async close() {
      const closing = closeListener();
      for (const s of [...ctx.sessions]) s.destroy('proxy closing');
      for (const sock of [...ctx.starting]) sock.destroy();
      await closing;
    },
    async shutdown(timeoutMs: number) {
      logger.log('info', 'shutting down', { sessions: ctx.sessions.size, timeoutMs });
      const closing = closeListener();
      for (const s of [...ctx.sessions]) s.beginShutdown();
      await waitForSessions(Date.now() + timeoutMs);
      for (const s of [...ctx.sessions]) s.destroy('shutdown timeout');
      for (const sock of [...ctx.starting]) sock.destroy();
      await closing;
      logger.log('info', 'stopped', {});
    },
  };
}
