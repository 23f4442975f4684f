/**
 * One accepted client connection, from its first byte to the relay: TLS and protocol negotiation,
 * a CancelRequest, the upstream connection, authentication (relayed, or with the proxy's own
 * credentials), and the server's start-up messages up to the first ReadyForQuery. Then a Session
 * relays. Any failure closes this connection only.
 */
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type tls from 'node:tls';
import { type Credentials, loginUpstream } from './auth/upstream-login.js';
import type { CancelRegistry } from './cancel-registry.js';
import { readClientHello } from './client-startup.js';
import type { DecisionPoint } from './decision-point.js';
import {
  type ConnectionLimiter,
  cancelIfBusy,
  TOO_MANY_CONNECTIONS_SQLSTATE,
  trackPendingJudges,
  watchIdle,
} from './limits.js';
import type { Logger } from './log.js';
import { LOGIN_THROTTLED_SQLSTATE, type LoginThrottle } from './login-throttle.js';
import {
  AUTH,
  BodyReader,
  decodeBackendKeyData,
  decodeFields,
  decodeParameterStatus,
  encodeAuth,
  encodeBackendKeyData,
  encodeCancel,
  encodeError,
  encodeStartup,
  filterSaslMechanisms,
  PROTOCOL_3_0,
  ProtocolViolation,
  saslInitialGs2Flag,
  T,
  typeName,
} from './protocol/codec.js';
import { ReadTimeout, SocketClosed, SocketReader } from './protocol/socket-reader.js';
import { newSessionId, Session } from './session.js';
import { connectUpstream, type UpstreamTarget } from './upstream.js';

export type ClientAuth = (
  password: string,
  info: { user: string; database: string; clientAddr: string; tls: boolean },
) => Promise<Map<string, unknown>>;

/** Loopback clients may send a cleartext password without TLS: it never leaves the pod. */
export function isLoopback(addr: string | undefined): boolean {
  const a = (addr ?? '').replace(/^::ffff:/, '');
  return a === '::1' || a.startsWith('127.');
}

export interface ProxyContext {
  upstream: UpstreamTarget;
  /** database when the client names none (else PostgreSQL's default: the user name) */
  defaultDatabase?: string;
  decisionPoint: DecisionPoint;
  credentials?: Credentials;
  /**
   * With credentials: ask the client for a password (cleartext, over TLS or loopback only) and verify it
   * as a token; the facts it yields become the session's identity (`initialState`). Throws to refuse,
   * with `reason` (expired, bad_audience, ...) on the error when known.
   */
  clientAuth?: ClientAuth;
  secureContext?: tls.SecureContext;
  maxMessageSize: number;
  /** largest Query/Parse judged (statement-size.ts); 0: maxMessageSize alone */
  maxStatementSize?: number;
  authTimeoutMs: number;
  logger: Logger;
  cancels: CancelRegistry;
  sessions: Set<Session>;
  /** connections still starting up (not yet a Session) */
  starting: Set<net.Socket>;
  /** admitted sessions against maxConnections (limits.ts) */
  limiter?: ConnectionLimiter;
  /** failed logins per client address (login-throttle.ts) */
  loginThrottle?: LoginThrottle;
  /** end sessions idle this long (0: never) */
  idleTimeoutMs?: number;
}

/** Largest message accepted during authentication (PostgreSQL allows a few kB for passwords and SASL). */
const MAX_AUTH_MESSAGE = 64 * 1024;

export async function handleConnection(raw: net.Socket, ctx: ProxyContext): Promise<void> {
  const clientAddr = `${raw.remoteAddress ?? '?'}:${raw.remotePort ?? '?'}`;
  raw.setNoDelay(true);
  raw.setKeepAlive(true, 60_000);
  ctx.starting.add(raw);
  let client: Duplex = raw;
  let upstream: Duplex | undefined;
  let handedOver = false;
  let admitted = false;
  const fatal = (sqlstate: string, message: string) => {
    if (!client.destroyed && client.writable)
      client.end(encodeError({ severity: 'FATAL', sqlstate, message }));
    setTimeout(() => client.destroy(), 1000).unref();
  };
  raw.on('error', () => {}); // reported by the reads below
  try {
    const hello = await readClientHello(raw, ctx.secureContext, ctx.authTimeoutMs);
    if (hello.kind === 'cancel') {
      await forwardCancel(ctx, hello.pid, hello.secret);
      raw.destroy();
      return;
    }
    client = hello.sock;
    client.on('error', () => {});
    // An address that failed too often is refused before it takes a slot or touches the database.
    const peer = (raw.remoteAddress ?? '?').replace(/^::ffff:/, '');
    const wait = ctx.loginThrottle?.blockedFor(peer) ?? 0;
    if (wait > 0) {
      fatal(LOGIN_THROTTLED_SQLSTATE, ctx.loginThrottle!.message(peer, wait));
      return;
    }
    // Counted after the start-up packet, like PostgreSQL's max_connections: a CancelRequest never is.
    if (ctx.limiter && !ctx.limiter.tryAcquire(clientAddr)) {
      fatal(TOO_MANY_CONNECTIONS_SQLSTATE, ctx.limiter.message);
      return;
    }
    admitted = true;
    const params = hello.params;
    const user = params.get('user');
    if (!user) {
      fatal('28000', 'no PostgreSQL user name specified in startup packet');
      return;
    }
    // The user the server will check: the client's own (relayed) or the proxy's credentials user. The
    // database defaults to it, as the server does, so both sides name the same one.
    const loginUser = ctx.credentials?.username ?? user;
    if (!params.has('database') && ctx.defaultDatabase) params.set('database', ctx.defaultDatabase);
    if (!params.get('database') && ctx.credentials) params.set('database', loginUser);
    const replication = params.get('replication')?.toLowerCase();
    if (replication !== undefined && !['false', 'off', 'no', '0'].includes(replication)) {
      fatal('28000', 'dbguard: replication connections are not allowed through the proxy');
      return;
    }
    const database = params.get('database') || user;
    const applicationName = params.get('application_name');

    /**
     * Opens the upstream connection and sends the start-up packet. In relay mode the server is the one
     * to authenticate the client, so this comes first; with the proxy's own credentials it comes only
     * once the client has proven itself (token, loopback, user): an unauthenticated client holds no
     * database backend (docs/security.md, "Authenticate before touching the database").
     */
    const openUpstream = async (): Promise<{ up: Duplex; upReader: SocketReader } | undefined> => {
      const upstreamParams = new Map(params);
      if (ctx.credentials) upstreamParams.set('user', ctx.credentials.username);
      let up: Duplex;
      try {
        // The start-up packet goes with the connection: sslmode allow/prefer retry when it is refused.
        up = await connectUpstream(ctx.upstream, encodeStartup(hello.version, upstreamParams));
      } catch (err) {
        ctx.logger.log('warn', 'upstream connection failed', { clientAddr, error: (err as Error).message });
        fatal('08006', `dbguard: cannot reach the database server: ${(err as Error).message}`);
        return undefined;
      }
      upstream = up;
      up.on('error', () => {});
      const upReader = new SocketReader(up, 'upstream');
      return { up, upReader };
    };
    let opened = ctx.credentials ? undefined : await openUpstream();
    if (!ctx.credentials && !opened) return;

    let protocolVersion = hello.version;
    /**
     * A refused login: audited, logged, and counted against the client's address (login-throttle.ts)
     * unless `clientsFault` is false: the proxy's own upstream login failing, or the server refusing
     * for reasons that are not the client's proof (too many connections, no such database), must not
     * lock clients out.
     */
    const authFailed = (fields: Map<string, string> | undefined, message: string, clientsFault = true) => {
      if (clientsFault) ctx.loginThrottle?.fail(peer);
      try {
        ctx.decisionPoint.authFailure?.({
          database,
          user,
          ...(ctx.credentials ? { loginUser } : {}),
          ...(applicationName !== undefined ? { applicationName } : {}),
          clientAddr,
          ...(fields?.get('C') ? { sqlstate: fields.get('C')! } : {}),
          message,
        });
      } catch (err) {
        ctx.logger.log('error', 'decision point hook failed', {
          hook: 'authFailure',
          error: (err as Error).message,
        });
      }
      ctx.logger.log('info', 'login refused', {
        clientAddr,
        database,
        user,
        sqlstate: fields?.get('C'),
        reason: message,
      });
    };

    // ---- authentication
    let initialState: Map<string, unknown> | undefined;
    if (ctx.credentials && ctx.clientAuth) {
      if (!hello.tls && !isLoopback(raw.remoteAddress)) {
        authFailed(undefined, 'token over a non-TLS, non-loopback connection');
        fatal('28000', 'dbguard: token authentication needs TLS (sslmode=require) from non-loopback clients');
        return;
      }
      client.write(encodeAuth(AUTH.cleartext));
      const answer = await hello.reader.message(MAX_AUTH_MESSAGE, ctx.authTimeoutMs);
      if (answer.type !== T.Password) {
        throw new ProtocolViolation(`expected password response, got message type ${typeName(answer.type)}`);
      }
      const password = new BodyReader(answer.body, 'PasswordMessage').cstring().toString('utf8');
      try {
        initialState = await ctx.clientAuth(password, { user, database, clientAddr, tls: hello.tls });
      } catch (err) {
        const reason = (err as { reason?: string }).reason ?? 'invalid_token';
        authFailed(new Map([['C', '28000']]), `token refused: ${reason}`);
        fatal('28000', `dbguard: token authentication failed for user "${user}" (${reason})`);
        return;
      }
    }
    if (ctx.credentials && !ctx.clientAuth && !isLoopback(raw.remoteAddress)) {
      // The proxy holds the database credentials: without token authentication it may only trust
      // clients on the same host (the pod's own containers), or anyone who can reach it gets in.
      authFailed(
        new Map([['C', '28000']]),
        'credentials mode refuses non-loopback clients without token auth',
      );
      fatal(
        '28000',
        'dbguard: this proxy holds the database credentials and trusts only loopback clients; use token authentication',
      );
      return;
    }
    if (ctx.credentials && !ctx.clientAuth && user !== loginUser) {
      // Loopback trust proves nothing about a name: the session runs as the credentials' user, and a
      // client naming another one (say an exempt `auditor`) is refused rather than recorded as what it
      // is not (docs/security.md, "Identity is what was proven"). With token auth the token is the proof
      // and the startup user is only recorded as claimed.
      authFailed(new Map([['C', '28000']]), 'startup user differs from the proxy credentials user');
      fatal(
        '28000',
        `dbguard: this proxy logs in to the database as "${loginUser}" with its own credentials and cannot prove the user "${user}"; connect with user=${loginUser}`,
      );
      return;
    }
    if (ctx.credentials) {
      // The client has proven itself: only now is the database asked for a connection.
      opened = await openUpstream();
      if (!opened) return;
      const res = await loginUpstream(opened.upReader, opened.up, ctx.credentials, ctx.authTimeoutMs);
      for (const m of res.ok ? res.relay : []) {
        protocolVersion = negotiatedVersion(m.subarray(5));
        client.write(m);
      }
      if (!res.ok) {
        const fields = res.errorRaw ? decodeFields(res.errorRaw.subarray(5)) : undefined;
        authFailed(fields, fields?.get('M') ?? res.reason, false);
        fatal(
          fields?.get('C') ?? '28000',
          'dbguard: the proxy could not log in to the database server; see the proxy log',
        );
        return;
      }
      client.write(encodeAuth(AUTH.ok));
    } else {
      const { up, upReader } = opened!;
      const clientReader = hello.reader;
      let withheldPlus = false;
      for (;;) {
        const m = await upReader.message(MAX_AUTH_MESSAGE, ctx.authTimeoutMs);
        if (m.type === T.ErrorResponse) {
          const fields = decodeFields(m.body);
          // class 28: the server refused the client's password (28P01) or name (28000)
          authFailed(fields, fields.get('M') ?? 'authentication failed', fields.get('C')?.startsWith('28'));
          client.end(m.raw);
          return;
        }
        if (m.type === T.NegotiateProtocolVersion) {
          protocolVersion = negotiatedVersion(m.body);
          client.write(m.raw);
          continue;
        }
        if (m.type !== T.Auth) throw new Error(`upstream sent ${typeName(m.type)} during authentication`);
        const r = new BodyReader(m.body, 'Authentication');
        const code = r.int32();
        if (code === AUTH.ok) {
          client.write(m.raw);
          break;
        }
        if (code === AUTH.sasl) {
          // SCRAM-SHA-256-PLUS binds to the TLS channel, which ends at the proxy: it cannot work through it.
          const { mechanisms, encoded, withheldPlus: withheld } = filterSaslMechanisms(r.rest());
          withheldPlus = withheld;
          if (mechanisms.length === 0)
            throw new Error('upstream offers only SASL mechanisms that need channel binding');
          client.write(encodeAuth(AUTH.sasl, encoded));
        } else if (code === AUTH.cleartext || code === AUTH.md5 || code === AUTH.saslContinue) {
          client.write(m.raw);
        } else if (code === AUTH.saslFinal) {
          client.write(m.raw);
          continue; // no answer expected
        } else {
          fatal(
            '28000',
            `dbguard: authentication method ${code} (GSSAPI/SSPI) cannot be relayed by the proxy`,
          );
          return;
        }
        const answer = await clientReader.message(MAX_AUTH_MESSAGE, ctx.authTimeoutMs);
        if (answer.type !== T.Password) {
          throw new ProtocolViolation(
            `expected password response, got message type ${typeName(answer.type)}`,
          );
        }
        if (code === AUTH.sasl && withheldPlus && saslInitialGs2Flag(answer.body) === 'y') {
          // A client on TLS to the proxy whose server could bind: the server would refuse it with a
          // "channel binding negotiation error" that does not say what to do. Say it here.
          fatal(
            '28000',
            'dbguard: SCRAM channel binding cannot pass through the proxy (TLS ends here); connect with ' +
              'channel_binding=disable, or use the sidecar over loopback or the proxy in credentials mode',
          );
          return;
        }
        up.write(answer.raw);
      }
    }

    // ---- start-up messages up to the first ReadyForQuery
    const { up, upReader } = opened!;
    const serverParams = new Map<string, string>();
    let realKey: { pid: number; secret: Buffer } | undefined;
    let sessionRef: Session | undefined;
    let proxyKey: { pid: number; secret: Buffer } | undefined;
    let firstReady: Buffer | undefined;
    let txStatus: 'I' | 'T' | 'E' = 'I';
    while (!firstReady) {
      const m = await upReader.message(MAX_AUTH_MESSAGE, ctx.authTimeoutMs);
      switch (m.type) {
        case T.ParameterStatus: {
          const { name, value } = decodeParameterStatus(m.body);
          serverParams.set(name, value);
          client.write(m.raw);
          break;
        }
        case T.BackendKeyData: {
          realKey = decodeBackendKeyData(m.body);
          const key = realKey;
          const target = { ...ctx.upstream };
          proxyKey = ctx.cancels.issue(
            {
              cancel: () => {
                // a statement held by the decision point (approval) is cancelled here, not upstream
                sessionRef?.clientCancelled();
                return sendCancel(target, key.pid, key.secret);
              },
            },
            protocolVersion > PROTOCOL_3_0 ? 32 : 4,
          );
          client.write(encodeBackendKeyData(proxyKey.pid, proxyKey.secret));
          break;
        }
        case T.ErrorResponse: {
          const fields = decodeFields(m.body);
          authFailed(fields, fields.get('M') ?? 'connection refused', false);
          client.end(m.raw);
          if (proxyKey) ctx.cancels.release(proxyKey.pid);
          return;
        }
        case T.ReadyForQuery:
          txStatus = String.fromCharCode(m.body[0] ?? 0x49) as 'I' | 'T' | 'E';
          firstReady = m.raw;
          break;
        case T.NoticeResponse:
        case T.NegotiateProtocolVersion:
          client.write(m.raw);
          break;
        default:
          throw new Error(`upstream sent ${typeName(m.type)} before its first ReadyForQuery`);
      }
    }

    // With an idle timeout, verdicts still pending (approval waits) must not count as idle time.
    const judges = ctx.idleTimeoutMs ? trackPendingJudges(ctx.decisionPoint) : undefined;
    const session = new Session({
      id: newSessionId(),
      client,
      upstream: up,
      clientAddr,
      clientTls: hello.tls,
      startupParams: params,
      ...(ctx.credentials ? { loginUser } : {}),
      serverParams,
      protocolVersion,
      txStatus,
      firstReady,
      clientLeftover: hello.reader.detach(),
      upstreamLeftover: upReader.detach(),
      ...(proxyKey ? { cancelPid: proxyKey.pid } : {}),
      decisionPoint: judges?.dp ?? ctx.decisionPoint,
      ...(initialState ? { initialState } : {}),
      cancels: ctx.cancels,
      logger: ctx.logger,
      maxMessageSize: ctx.maxMessageSize,
      ...(ctx.maxStatementSize ? { maxStatementSize: ctx.maxStatementSize } : {}),
      onClosed: (s) => {
        ctx.sessions.delete(s);
        ctx.limiter?.release();
        // A client gone while its statement runs: cancel it, or the server runs it on for nobody.
        const key = realKey;
        if (key) cancelIfBusy(s, () => sendCancel({ ...ctx.upstream }, key.pid, key.secret), ctx.logger);
      },
    });
    handedOver = true;
    ctx.sessions.add(session);
    ctx.starting.delete(raw);
    sessionRef = session;
    session.start();
    if (ctx.idleTimeoutMs)
      watchIdle(
        client,
        session,
        ctx.idleTimeoutMs,
        (sqlstate, message) => encodeError({ severity: 'FATAL', sqlstate, message }),
        ctx.logger,
        () => (judges?.pending() ?? 0) > 0,
      );
  } catch (err) {
    if (err instanceof ProtocolViolation) {
      ctx.logger.log('warn', 'protocol violation', { clientAddr, error: err.message });
      fatal(err.sqlstate, err.message);
    } else if (err instanceof SocketClosed) {
      ctx.logger.log('debug', 'connection closed during start-up', { clientAddr, error: err.message });
      client.destroy();
    } else if (err instanceof ReadTimeout) {
      ctx.logger.log('info', 'start-up timed out', { clientAddr, error: err.message });
      fatal('08006', `dbguard: ${err.message}`);
    } else {
      ctx.logger.log('warn', 'connection start-up failed', {
        clientAddr,
        error: (err as Error)?.message ?? String(err),
      });
      fatal('08006', 'dbguard: connection start-up failed; see the proxy log');
    }
  } finally {
    if (!handedOver) {
      if (admitted) ctx.limiter?.release();
      ctx.starting.delete(raw);
      upstream?.destroy();
    }
  }
}

function negotiatedVersion(body: Buffer): number {
  // NegotiateProtocolVersion: int32 newest protocol version supported (PostgreSQL sends the whole
  // version, (3 << 16) | minor), then the unrecognized options.
  const v = body.length >= 4 ? body.readInt32BE(0) : PROTOCOL_3_0;
  return v >= 1 << 16 ? v : PROTOCOL_3_0 | v;
}

async function forwardCancel(ctx: ProxyContext, pid: number, secret: Buffer): Promise<void> {
  const target = ctx.cancels.lookup(pid, secret);
  if (!target) {
    // PostgreSQL says nothing about an unknown key either; log it, as it may be an attempt to guess.
    ctx.logger.log('info', 'cancel request with an unknown key ignored', {});
    return;
  }
  try {
    await target.cancel();
  } catch (err) {
    ctx.logger.log('warn', 'cancel request failed', { error: (err as Error).message });
  }
}

/** Sends the real CancelRequest to the server on a new connection (TLS per the upstream's sslmode). */
async function sendCancel(target: UpstreamTarget, pid: number, secret: Buffer): Promise<void> {
  const sock = await connectUpstream(target);
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      sock.destroy();
      resolve();
    }, 5000);
    sock.on('error', () => {});
    sock.on('close', () => {
      clearTimeout(timer);
      resolve();
    });
    sock.resume();
    // The server closes the connection once it has read the request.
    sock.end(encodeCancel(pid, secret));
  });
}
