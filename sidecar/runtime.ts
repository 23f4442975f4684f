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
  const audit = opts.auditLog
    ? await openAuditLog(opts.auditLog, {
        observer: metrics.auditObserver(),
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
  const governor = new Governor({
    policy: () => current,
    ...(approvals ? { approvals } : {}),
    workload: opts.workload,
    audit,
    metrics,
    log: (f) => log.log('warn', String(f.msg ?? 'governor'), f),
  });

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
    health = await startHealthServer(opts.metricsListen, {
      metrics,
      ready: async () => {
        const reasons: string[] = [];
        if (!current) reasons.push('no policy loaded: every statement is refused');
        if (!(await reachable(opts.upstream)))
          reasons.push(`upstream ${opts.upstream.host}:${opts.upstream.port} does not answer`);
        const st = audit?.status();
        if (st?.failed) reasons.push('audit log failed');
        return { ok: reasons.length === 0, reasons };
      },
    });
    // the bound address (a :0 listen gets its port here): for people and for scripts that read the log
    log.log('info', 'metrics listening', { listen: health.url });
  }

  const stopAll = async () => {
    if (reloadTimer) clearInterval(reloadTimer);
    await client?.stop();
    await health?.close();
    await audit?.close();
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
      await proxy.shutdown(timeoutMs);
      await stopAll();
    },
  };
}
