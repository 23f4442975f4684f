/**
 * The one place where everything else (policy engine, masking, approvals, audit, metrics) plugs
 * into the proxy. Every statement passes `judge` (or `judgeFunctionCall`) before it goes upstream.
 *
 * Semantics the proxy guarantees:
 * - Hooks are called in protocol order for one session, never concurrently for `judge`: while a
 *   judge promise is pending, later client messages of that session wait (in order).
 * - A thrown error or rejected promise from `judge`/`judgeFunctionCall` is a reject with SQLSTATE
 *   XX000 (fail closed). Errors thrown by the other hooks are logged and ignored (`sessionReady`
 *   failing ends the session, since the policy could not be prepared).
 * - A reject verdict is delivered as PostgreSQL would deliver an error for that message: the
 *   client's text is replaced upstream by a statement that fails at parse analysis (so an open
 *   transaction block is aborted and an extended-query pipeline is discarded until Sync) and the
 *   server's error is replaced by the verdict's (severity ERROR). A rejected FunctionCall is
 *   replaced by a failing simple Query, which answers ErrorResponse + ReadyForQuery exactly like
 *   a failing FunctionCall.
 * - `internalQuery` runs at a safe point: the upstream is idle (every client message forwarded so
 *   far is answered) and no client message is forwarded until it is done. Called while the
 *   upstream is busy, it waits for the next safe point; it is refused (rejects) when no safe point
 *   can come without more client input (an extended-query pipeline without Sync, or from an
 *   `idle` hook at a ReadyForQuery that more pipelined messages follow). Inside a transaction
 *   block it runs within a savepoint, so its failure does not abort the client's transaction; in
 *   an aborted block it rejects. Its rows, notices and errors never reach the client.
 */

/** A prepared statement the client created with Parse (confirmed by ParseComplete). */
export interface PreparedStatement {
  /** the client's text */
  sql: string;
  /** the text forwarded upstream (a masking rewrite may differ) */
  forwardedSql: string;
}

export interface SessionHandle {
  /** random id, unique per proxy process (audit `sessionId`) */
  readonly id: string;
  readonly database: string;
  /** the user in the client's StartupMessage (also in credentials mode, where upstream logs in as another) */
  readonly user: string;
  /**
   * The user the session is proven to run as: `user` when the client's authentication was relayed, the
   * proxy's credentials user when the proxy logged in itself. Decisions use this one, never `user`.
   */
  readonly databaseUser: string;
  readonly applicationName?: string;
  /** `ip:port` of the client */
  readonly clientAddr: string;
  /** negotiated protocol version: (3 << 16) | minor */
  readonly protocolVersion: number;
  /** transaction status from the last ReadyForQuery: I idle, T in a block, E in a failed block */
  readonly txStatus: 'I' | 'T' | 'E';
  /** ParameterStatus values reported by the server (server_version, client_encoding, ...) */
  readonly serverParams: ReadonlyMap<string, string>;
  /**
   * true when every message forwarded so far is answered up to its ReadyForQuery, so `serverParams`
   * holds the values the next statement will be read with (the server reports a changed setting just
   * before ReadyForQuery); false inside a pipeline. Optional for other hosts: absent counts as false.
   */
  readonly serverParamsCurrent?: boolean;
  /** every StartupMessage parameter the client sent */
  readonly startupParams: ReadonlyMap<string, string>;
  /** protocol-level prepared statements by name ('' is the unnamed one) */
  readonly statements: ReadonlyMap<string, PreparedStatement>;
  /** open portals by name → the statement name they were bound from */
  readonly portals: ReadonlyMap<string, string>;
  /** whether the client connection uses TLS */
  readonly clientTls: boolean;
  /** see the module comment; simple protocol, values as text */
  internalQuery(sql: string): Promise<{ rows: (string | null)[][]; fields: string[] }>;
  /** per-session scratch space for the decision point */
  readonly state: Map<string, unknown>;
  /** end the session now with a FATAL error the client sees (for example 57P01 to make a pool reconnect) */
  terminate(sqlstate: string, message: string): void;
  /**
   * send the client a NoticeResponse now (at a message boundary), e.g. while `judge` holds a statement
   * for approval; severity defaults to NOTICE and sqlstate to 00000
   */
  notice?(fields: NoticeFields): void;
  /**
   * While `judge` runs: aborted when the client sends a CancelRequest for this session (reason
   * `'cancel'`) or goes away (reason `'disconnect'`). Undefined outside `judge`. Reading it tells the
   * proxy the judge may hold the statement for long, so it keeps reading the client to see it leave.
   */
  readonly waitSignal?: AbortSignal;
}

export interface NoticeFields {
  severity?: 'NOTICE' | 'WARNING' | 'INFO' | 'LOG';
  sqlstate?: string;
  message: string;
  detail?: string;
  hint?: string;
}

export type Verdict =
  /**
   * `sql` may differ from the client's text (masking rewrite). `executions`: a Parse approved by a
   * person (RequireApproval) may be bound this many times; each Bind beyond is refused (42501), since
   * the approver saw none of the values later Binds carry (issue #18).
   */
  | { action: 'forward'; sql: string; executions?: number }
  | { action: 'reject'; sqlstate: string; message: string; detail?: string; hint?: string };

export interface CompletedEvent {
  s: SessionHandle;
  /** the client's text (whole Query string, or the prepared statement's text for Execute) */
  sql: string;
  /** the text that was forwarded (equals `sql` unless rewritten; the denial statement when rejected) */
  verdictSql: string;
  via: 'query' | 'parse' | 'function';
  /** true when the statement was rejected by the decision point (then `sqlstate` is the verdict's) */
  rejected?: boolean;
  commandTag?: string;
  rowCount?: number;
  /** set when the statement failed */
  sqlstate?: string;
  durationMs: number;
}

export interface AuthFailureEvent {
  database: string;
  /** the StartupMessage user */
  user: string;
  /** credentials mode: the user the proxy logs in upstream as (then `user` is only claimed) */
  loginUser?: string;
  applicationName?: string;
  clientAddr: string;
  sqlstate?: string;
  message: string;
}

export interface DecisionPoint {
  /** after authentication, before the client sees its first ReadyForQuery; may call internalQuery */
  sessionReady?(s: SessionHandle): Promise<void> | void;
  /** every simple Query message (the whole multi-statement string) and every Parse */
  judge(sql: string, s: SessionHandle, via: 'query' | 'parse'): Verdict | Promise<Verdict>;
  /** the FunctionCall ('F') message: opaque */
  judgeFunctionCall(functionOid: number, s: SessionHandle): Verdict | Promise<Verdict>;
  /** at each ReadyForQuery from upstream, before it is passed on; may call internalQuery when `safePoint` */
  idle?(s: SessionHandle, info: { safePoint: boolean }): Promise<void> | void;
  /**
   * rewrite/scrub ErrorResponse and NoticeResponse fields (keys are the protocol's one-letter field
   * codes: S, V, C, M, D, H, P, q, W, s, t, c, d, n, F, L, R) before they reach the client; return
   * the fields to send (the hook gets its own copy; the result is re-encoded)
   */
  backendNotice?(fields: Map<string, string>, s: SessionHandle, isError: boolean): Map<string, string>;
  /**
   * one per judged statement outcome: each CommandComplete of a simple Query (the whole string as
   * `sql`), each Execute's completion, each error, and each rejection
   */
  completed?(e: CompletedEvent): void;
  /** the upstream refused the client's login (auth failure, unknown database ...) */
  authFailure?(e: AuthFailureEvent): void;
  sessionEnd?(s: SessionHandle): void;
}

/** The default: forward every statement unchanged. */
export const allowAll: DecisionPoint = {
  judge: (sql) => ({ action: 'forward', sql }),
  judgeFunctionCall: () => ({ action: 'forward', sql: '' }),
};

/**
 * The statement sent upstream in place of a rejected one: it fails at parse analysis (a column
 * reference without FROM), so it has no side effect, aborts an open transaction block and makes the
 * server discard an extended-query pipeline until Sync.
 */
export const DENIAL_SQL = 'SELECT "dbguard: statement denied"';
