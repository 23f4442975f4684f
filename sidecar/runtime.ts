/**
 * The whole sidecar, assembled: policy source (files reloaded on change, or the operator with a
 * last-known-good file), the governor (policy engine + audit + metrics), the protocol proxy, the
 * health/metrics listener and, optionally, token authentication. `dbguard proxy` is a thin CLI over
 * this; tests and benchmarks start it in-process.
 */
import fs from 'node:fs';
import net from 'node:net';
import type { CompiledPolicy } from '../api/compiled.js';
import { initParser } from '../policy/engine.js';
import type { MaskingProblem } from '../policy/mask-coverage.js';
import { databaseUserWithCredentials } from '../policy/warnings.js';
import { ApprovalClient } from './approvals.js';
import type { AuditKey } from './audit/chain.js';
import { type AuditLog, loadAuditParser, openAuditLog, policyLoadedEvent } from './audit/index.js';
import type { Credentials } from './auth/upstream-login.js';
import type { ClientAuth } from './connection.js';
import { Governor, STATE_TOKEN_IDENTITY } from './governor.js';
import { createTokenVerifier, type TokenAuthConfig } from './identity/index.js';
import type { Logger } from './log.js';
import { type HealthServer, SidecarMetrics, startHealthServer } from './metrics.js';
import { PolicyClient } from './policy-client.js';
import { loadPolicyFromFiles } from './policy-source.js';
import { type ProxyHandle, startProxy } from './proxy.js';
import type { UpstreamTarget } from './upstream.js';

export interface SidecarOptions {
  listen: { host?: string; port?: number };
  upstream: UpstreamTarget;
  defaultDatabase?: string;
  credentials?: Credentials;
  tls?: { cert: string | Buffer; key: string | Buffer };
  maxMessageSize?: number;
  /** largest Query/Parse judged (default 1 MiB; 0: no limit but maxMessageSize) */
  maxStatementSize?: number;
  /** beyond it new clients get 53300; 0 or absent: no limit */
  maxConnections?: number;
  /** end sessions idle this long (57P05); 0 or absent: never */
  idleTimeoutMs?: number;
  /** failed logins per client address and window before 28000 refusals; 0 or absent: no limit */
  loginFailureLimit?: number;
  loginFailureWindowMs?: number;
  upstreamConnectTimeoutMs?: number;
  /** start-up and login, on both sides, must finish within it; default 60 s (startProxy's) */
  authTimeoutMs?: number;
  /** policy from files (reloaded when they change) ... */
  policyFiles?: string[];
  policyName?: string;
  /** ... or from the operator */
  operator?: { url: string; tokenFile?: string; caFile?: string; cacheFile?: string; waitSeconds?: number };
  /** how often policy files are checked for changes; default 1000 ms */
  reloadIntervalMs?: number;
  metricsListen?: string;
  /** '-' (stdout) or a file; undefined: no audit trail (tests) */
  auditLog?: string;
  /** an audit write that takes longer stalls the sink: statements are refused (default 10 s) */
  auditStallTimeoutMs?: number;
  /** key the audit chain with HMAC-SHA256 (audit/chain.ts) */
  auditKey?: AuditKey;
  workload?: { serviceAccount?: string; pod?: string };
  tokenAuth?: TokenAuthConfig;
  logger: Logger;
  /** an already loaded policy (the CLI validated the files at start-up) */
  initialPolicy?: CompiledPolicy;
}

export interface Sidecar {
  proxy: ProxyHandle;
  governor: Governor;
  metrics: SidecarMetrics;
  health?: HealthServer;
  audit?: AuditLog;
  policy(): CompiledPolicy | undefined;
  /** re-read the policy files now (SIGHUP) */
  reload(): void;
  close(): Promise<void>;
  shutdown(timeoutMs: number): Promise<void>;
}

/** Is something accepting connections there? (readiness: "the upstream answers") */
function reachable(target: UpstreamTarget, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: target.host, port: target.port });
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(timeoutMs, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

export async function startSidecar(opts: SidecarOptions): Promise<Sidecar> {
  const log = opts.logger;
  await initParser();
  await loadAuditParser();
  const metrics = new SidecarMetrics();
  // Set below; the audit log may go down before the governor exists only if it fails at once.
  let governorRef: Governor | undefined;
  const audit = opts.auditLog
    ? await openAuditLog(opts.auditLog, {
        observer: {
          ...metrics.auditObserver(),
          down: (reason) => {
            const ended = governorRef?.auditDown(reason) ?? 0;
            log.log('error', 'audit log down: statements are refused (fail closed)', { reason, ended });
          },
        },
        ...(opts.auditStallTimeoutMs ? { stallTimeoutMs: opts.auditStallTimeoutMs } : {}),
        ...(opts.auditKey ? { key: opts.auditKey } : {}),
      })
    : undefined;

  let current: CompiledPolicy | undefined;
  const swap = (p: CompiledPolicy, source: 'file' | 'operator' | 'cache') => {
    const previous = current;
    if (previous?.version === p.version) return;
    current = p; // atomic: the next statement judged sees the new version
    if (previous) {
      const ended = governor.policyChanged(p);
      if (ended)
        log.log('info', 'sessions with prepared statements under the old policy ended', { sessions: ended });
    }
    metrics.policyLoaded(p.policy, p.version);
    const warning = opts.credentials
      ? databaseUserWithCredentials(p, `the credentials it holds (user ${opts.credentials.username})`)
      : undefined;
    if (warning)
      log.log('warn', 'policy warning', {
        policy: p.policy,
        reason: warning.reason,
        warning: warning.message,
      });
    metrics.maskingProblems(p.policy, []); // the new version's snapshots report their own
    log.log('info', 'policy loaded', {
      policy: p.policy,
      version: p.version,
      source,
      previous: previous?.version,
    });
    void audit
      ?.write(
        policyLoadedEvent(
          { policy: p.policy, policyVersion: p.version },
          {
            source,
            previousVersion: previous?.version ?? null,
            rules: p.rules.length,
            maskedColumns: p.masking.reduce((n, m) => n + m.columns.length, 0),
            enforcement: p.enforcement,
          },
        ),
      )
      .catch(() => undefined);
  };

  // --- policy source
  let reloadTimer: NodeJS.Timeout | undefined;
  let client: PolicyClient | undefined;
  const files = opts.policyFiles ?? [];
  const reload = () => {
    if (!files.length) return;
    const res = loadPolicyFromFiles(files, opts.policyName);
    if (res.ok) {
      swap(res.compiled, 'file');
      metrics.policySynced();
    } else {
      metrics.policySyncFailed();
      log.log('error', 'policy reload failed; keeping the last good policy', {
        error: res.error,
        keeping: current?.version,
      });
    }
  };
  if (opts.initialPolicy) swap(opts.initialPolicy, 'file');
  if (files.length) {
    if (!opts.initialPolicy) reload();
    const stamp = () =>
      files
        .map((f) => {
          try {
            const st = fs.statSync(f);
            return `${st.mtimeMs}:${st.size}:${st.ino}`;
          } catch {
            return 'missing';
          }
        })
        .join('|');
    let last = stamp();
    reloadTimer = setInterval(() => {
      const now = stamp();
      if (now === last) return;
      last = now;
      reload();
    }, opts.reloadIntervalMs ?? 1000);
    reloadTimer.unref();
  } else if (opts.operator && !opts.initialPolicy) {
    client = new PolicyClient({
      operatorUrl: opts.operator.url,
      policy: opts.policyName ?? '',
      tokenFile: opts.operator.tokenFile,
      caFile: opts.operator.caFile,
      cacheFile: opts.operator.cacheFile,
      waitSeconds: opts.operator.waitSeconds,
      onPolicy: (p, source) => swap(p, source),
      onSync: () => metrics.policySynced(),
      onSyncError: () => metrics.policySyncFailed(),
      log: (f) => log.log('warn', String(f.msg ?? 'policy client'), f),
    });
    client.start();
  }

  // Approvals are created at the operator (RequireApproval rules); without one they are refused.
  const approvals = opts.operator
    ? new ApprovalClient({
        operatorUrl: opts.operator.url,
        tokenFile: opts.operator.tokenFile,
        caFile: opts.operator.caFile,
        log: (f) => log.log('warn', String(f.msg ?? 'approvals'), f),
      })
    : undefined;
  // MaskingRules checked against each database's catalog: each problem logged once per policy version
  // and database, counted, and shown on /readyz.
  let maskSeen: { version: string; byDatabase: Map<string, MaskingProblem[]> } | undefined;
  const onMaskingProblems = (database: string, p: CompiledPolicy, problems: MaskingProblem[]) => {
    if (maskSeen?.version !== p.version) maskSeen = { version: p.version, byDatabase: new Map() };
    if (maskSeen.byDatabase.has(database)) return;
    maskSeen.byDatabase.set(database, problems);
    for (const x of problems) {
      log.log('error', 'masking rule matches nothing in the database', {
        policy: p.policy,
        version: p.version,
        database,
        rule: x.rule,
        reason: x.reason,
        table: `${x.schema}.${x.table}`,
        ...(x.column ? { column: x.column } : {}),
        ...(x.suggestion ? { suggestion: x.suggestion } : {}),
        message: x.message,
      });
    }
    metrics.maskingProblems(p.policy, [...maskSeen.byDatabase.values()].flat());
    // The operator marks the MaskingRules (Ready=False, ColumnNotFound) and records an Event.
    approvals?.reportMaskingProblems(p.policy, p.version, database, problems).catch((err: unknown) =>
      log.log('warn', 'masking problems not reported to the operator', {
        error: String((err as Error)?.message ?? err),
      }),
    );
  };
  const maskingDetails = (): string[] => {
    if (!maskSeen || maskSeen.version !== current?.version) return [];
    return [...maskSeen.byDatabase].flatMap(([db, list]) => list.map((x) => `database ${db}: ${x.message}`));
  };

  const governor = new Governor({
    policy: () => current,
    onMaskingProblems,
    ...(approvals ? { approvals } : {}),
    workload: opts.workload,
    audit,
    metrics,
    log: (f) => log.log('warn', String(f.msg ?? 'governor'), f),
  });
  governorRef = governor;

  let clientAuth: ClientAuth | undefined;
  if (opts.tokenAuth) {
    const verifier = createTokenVerifier(opts.tokenAuth);
    clientAuth = async (password) => {
      const v = await verifier.verify(password);
      return new Map<string, unknown>([[STATE_TOKEN_IDENTITY, { user: v.user, groups: v.groups }]]);
    };
  }

  const proxy = await startProxy({
    listen: opts.listen,
    upstream: opts.upstream,
    ...(opts.defaultDatabase ? { defaultDatabase: opts.defaultDatabase } : {}),
    decisionPoint: governor,
    ...(opts.credentials ? { upstreamCredentials: opts.credentials } : {}),
    ...(clientAuth ? { clientAuth } : {}),
    ...(opts.tls ? { tls: opts.tls } : {}),
    ...(opts.maxMessageSize ? { maxMessageSize: opts.maxMessageSize } : {}),
    ...(opts.maxStatementSize !== undefined ? { maxStatementSize: opts.maxStatementSize } : {}),
    ...(opts.maxConnections ? { maxConnections: opts.maxConnections } : {}),
    ...(opts.idleTimeoutMs ? { idleTimeoutMs: opts.idleTimeoutMs } : {}),
    ...(opts.loginFailureLimit ? { loginFailureLimit: opts.loginFailureLimit } : {}),
    ...(opts.loginFailureWindowMs ? { loginFailureWindowMs: opts.loginFailureWindowMs } : {}),
    ...(opts.upstreamConnectTimeoutMs ? { upstreamConnectTimeoutMs: opts.upstreamConnectTimeoutMs } : {}),
    ...(opts.authTimeoutMs ? { authTimeoutMs: opts.authTimeoutMs } : {}),
    logger: log,
  });

  let health: HealthServer | undefined;
  if (opts.metricsListen) {
    const started = startHealthServer(opts.metricsListen, {
      metrics,
      ready: async () => {
        const reasons: string[] = [];
        if (!current) reasons.push('no policy loaded: every statement is refused');
        if (!(await reachable(opts.upstream)))
          reasons.push(`upstream ${opts.upstream.host}:${opts.upstream.port} does not answer`);
        const auditDown = audit?.health();
        if (auditDown) reasons.push(`${auditDown}: every statement is refused`);
        return { ok: reasons.length === 0, reasons, details: maskingDetails() };
      },
    });
    try {
      health = await started;
    } catch (err) {
      // Nothing may stay open behind a failed start (the process would neither serve nor exit).
      await proxy.close();
      if (reloadTimer) clearInterval(reloadTimer);
      await client?.stop();
      await audit?.close(1000).catch(() => {});
      throw err;
    }
    // the bound address (a :0 listen gets its port here): for people and for scripts that read the log
    log.log('info', 'metrics listening', { listen: health.url });
  }

  const stopAll = async (auditCloseMs?: number) => {
    if (reloadTimer) clearInterval(reloadTimer);
    await client?.stop();
    await health?.close();
    await audit?.close(auditCloseMs);
  };
  return {
    proxy,
    governor,
    metrics,
    health,
    audit,
    policy: () => current,
    reload,
    async close() {
      await proxy.close();
      await stopAll();
    },
    async shutdown(timeoutMs) {
      // One budget for the whole shutdown: the audit log gets what the sessions left (at least 1 s),
      // so a sink that never returns cannot hold the process past it; a sink already down when
      // the signal came gets 2 s at most (SIGTERM on `dbguard proxy | head` must end it promptly).
      const deadline = Date.now() + timeoutMs;
      const auditWasDown = audit?.health() != null;
      await proxy.shutdown(timeoutMs);
      const left = Math.max(1000, deadline - Date.now());
      await stopAll(auditWasDown ? Math.min(left, 2000) : left);
    },
  };
}
