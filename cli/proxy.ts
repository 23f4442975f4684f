/**
 * `dbguard proxy`: the PostgreSQL protocol proxy in front of one upstream (contract §3).
 * Runs until SIGTERM/SIGINT, then lets running statements finish for up to --shutdown-timeout.
 */

import fs from 'node:fs';
import { parseListen as parseListenAddress } from '../api/listen.js';
import { SSL_MODES, type SslMode } from '../api/types.js';
import { TOKEN_AUDIENCE } from '../operator/inject/constants.js';
import { type AuditKey, auditKeyFrom } from '../sidecar/audit/chain.js';
import type { Credentials } from '../sidecar/auth/upstream-login.js';
import { type TokenAuthConfig, workloadIdentity } from '../sidecar/identity/index.js';
import {
  DEFAULT_LOGIN_FAILURE_LIMIT,
  DEFAULT_LOGIN_FAILURE_WINDOW_MS,
  DEFAULT_MAX_CONNECTIONS,
} from '../sidecar/limits.js';
import { jsonLogger } from '../sidecar/log.js';
import { parseListen as parseMetricsListen } from '../sidecar/metrics.js';
import { loadPolicyFromFiles } from '../sidecar/policy-source.js';
import { DEFAULT_MAX_MESSAGE_SIZE } from '../sidecar/proxy.js';
import { startSidecar } from '../sidecar/runtime.js';
import { DEFAULT_MAX_STATEMENT_SIZE } from '../sidecar/statement-size.js';
import { parseUpstreamUrl, type UpstreamTarget } from '../sidecar/upstream.js';
import { postgresUrlProblem } from './errors.js';
import { type FlagSpec, helpText, parseFlags, UsageError } from './flags.js';

export const FLAGS: FlagSpec[] = [
  { name: 'listen', default: '127.0.0.1:6432', help: 'address to accept PostgreSQL clients on (HOST:PORT)' },
  {
    name: 'upstream',
    help: "the database server, postgres://host:port/db; overrides the policy's spec.upstream, which the policy file must still have (default: that spec.upstream)",
  },
  {
    name: 'policy-file',
    repeatable: true,
    help: 'multi-document YAML with DatabasePolicy/MaskingRule/Secret resources',
  },
  { name: 'policy', help: 'which DatabasePolicy, NAMESPACE/NAME (needed when the files hold several)' },
  { name: 'operator-url', help: 'pull the compiled policy from the operator instead of files' },
  { name: 'metrics-listen', help: 'serve /metrics, /healthz, /readyz on HOST:PORT' },
  { name: 'audit-log', default: '-', help: "audit events as JSON lines: '-' (stdout) or a file" },
  {
    name: 'audit-stall-timeout',
    default: '10s',
    help: 'an audit write that takes longer (a pipe nobody reads) stops statements until it finishes',
  },
  {
    name: 'audit-key-file',
    help: "key the audit chain with HMAC-SHA256 under this file's bytes (a mounted Secret, at least 16 bytes; a trailing newline is ignored); without it the chain is unkeyed SHA-256 and shows accidental edits only",
  },
  { name: 'identity-service-account', help: "the workload's ServiceAccount, NAMESPACE/NAME" },
  { name: 'identity-pod', help: "the workload's pod name" },
  { name: 'tls-cert', help: 'PEM certificate for TLS to clients (with --tls-key)' },
  { name: 'tls-key', help: 'PEM private key for TLS to clients' },
  {
    name: 'upstream-sslmode',
    help: `TLS to the upstream: ${SSL_MODES.join(' | ')} (default: the policy's, else prefer)`,
  },
  { name: 'upstream-ca', help: "PEM CA file to verify the upstream's certificate" },
  {
    name: 'max-connections',
    default: String(DEFAULT_MAX_CONNECTIONS),
    help: 'client connections at most, authenticating or relaying (beyond: FATAL 53300); 0 = no limit',
  },
  {
    name: 'login-failure-limit',
    default: String(DEFAULT_LOGIN_FAILURE_LIMIT),
    help: 'failed logins allowed per client address within --login-failure-window (beyond: FATAL 28000 until the window passes); 0 = no limit',
  },
  {
    name: 'login-failure-window',
    default: `${DEFAULT_LOGIN_FAILURE_WINDOW_MS / 1000}s`,
    help: 'the window of --login-failure-limit',
  },
  {
    name: 'idle-timeout',
    default: '0',
    help: 'end client sessions idle this long (57P05), e.g. 30m; 0 = never',
  },
  {
    name: 'upstream-connect-timeout',
    default: '10s',
    help: 'give up connecting to the upstream after this long',
  },
  {
    name: 'auth-timeout',
    default: '60s',
    help: 'a client must finish start-up and login within this long, as authentication_timeout',
  },
  {
    name: 'max-message-size',
    default: String(DEFAULT_MAX_MESSAGE_SIZE),
    help: 'largest client message in bytes',
  },
  {
    name: 'max-statement-size',
    default: String(DEFAULT_MAX_STATEMENT_SIZE),
    help: 'largest statement (Query or Parse message) in bytes that is judged; a larger one is refused with 54000 unread and the session goes on; 0 = only --max-message-size',
  },
  { name: 'shutdown-timeout', default: '30s', help: 'on SIGTERM, how long running statements may finish' },
  {
    name: 'operator-token-file',
    help: 'projected ServiceAccount token (audience dbguard) presented to the operator',
  },
  {
    name: 'operator-ca-file',
    help: "PEM CA of the operator's serving certificate (empty file: system roots)",
  },
  {
    name: 'policy-cache-file',
    help: 'last-known-good policy file, enforced at start when the operator is away',
  },
  {
    name: 'upstream-credentials-file',
    help: 'directory (mounted Secret) with username and password files, or a file with user:password',
  },
  {
    name: 'token-auth',
    help: 'clients log in with a token as password: jwt | tokenreview (needs upstream credentials)',
  },
  {
    name: 'token-issuer',
    help: 'JWT: expected issuer (OIDC discovery finds the keys when --token-jwks-url is absent)',
  },
  { name: 'token-audience', repeatable: true, help: 'accepted token audience (repeatable)' },
  { name: 'token-jwks-url', help: 'JWT: JWKS URL' },
  { name: 'token-user-claim', help: 'JWT: claim naming the user (default email, then sub)' },
  { name: 'token-groups-claim', help: 'JWT: claim listing groups (default groups)' },
  { name: 'help', boolean: true, help: 'show this help' },
];

/** A mounted Secret directory (username, password files) or a `user:password` file. */
function readCredentials(file: string): Credentials {
  try {
    if (fs.statSync(file).isDirectory()) {
      const read = (k: string) => fs.readFileSync(`${file}/${k}`, 'utf8').replace(/\r?\n$/, '');
      return { username: read('username'), password: read('password') };
    }
    const text = fs.readFileSync(file, 'utf8').trim();
    const i = text.indexOf(':');
    if (i <= 0) throw new Error('expected user:password');
    return { username: text.slice(0, i), password: text.slice(i + 1) };
  } catch (err) {
    throw new StartupError(`--upstream-credentials-file ${file}: ${(err as Error).message}`);
  }
}

/** The audit chain's key from a file (a mounted Secret); refused with a line naming the flag. */
function readAuditKey(file: string): AuditKey {
  try {
    return auditKeyFrom(fs.readFileSync(file));
  } catch (err) {
    throw new StartupError(`--audit-key-file ${file}: ${(err as Error).message}`);
  }
}

/** `30s`, `5m`, `1h`, `250ms` or plain seconds → milliseconds. */
export function parseDurationMs(v: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(v.trim());
  if (!m) throw new UsageError(`--${flag}: invalid duration '${v}' (examples: 30s, 2m, 500ms)`);
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  return Math.round(n * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[unit]!);
}

function parseListen(v: string): { host: string; port: number } {
  try {
    return parseListenAddress(v, { defaultHost: '127.0.0.1' });
  } catch (err) {
    throw new UsageError(`--listen: ${(err as Error).message}`);
  }
}

function readPem(path: string, flag: string): string {
  try {
    return fs.readFileSync(path, 'utf8');
  } catch (err) {
    throw new StartupError(
      `--${flag} ${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`,
    );
  }
}

/** A start-up problem with the configuration: one line, exit code 1. */
class StartupError extends Error {}

export async function run(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, FLAGS);
  if (flags.has('help')) {
    process.stdout.write(
      `${helpText('proxy', 'Run the PostgreSQL protocol proxy in front of one upstream.', FLAGS)}\n`,
    );
    return 0;
  }
  if (flags.positionals.length) throw new UsageError(`unexpected argument '${flags.positionals[0]}'`);
  const logger = jsonLogger();
  try {
    const policyFiles = flags.all('policy-file');
    const operatorUrl = flags.get('operator-url');
    if (policyFiles.length === 0 && !operatorUrl) {
      throw new UsageError('--policy-file is required (or --operator-url)');
    }
    let compiled: ReturnType<typeof loadPolicyFromFiles> | undefined;
    if (policyFiles.length) {
      compiled = loadPolicyFromFiles(policyFiles, flags.get('policy'));
      if (!compiled.ok) throw new StartupError(compiled.error);
    }
    const policy = compiled?.ok ? compiled.compiled : undefined;

    // Upstream: the flag wins over the policy's spec.upstream.
    let target: UpstreamTarget;
    let defaultDatabase: string | undefined;
    // standalone: a Secret document in the policy files; kept beside the policy, never inside it
    let credentials: Credentials | undefined = compiled?.ok ? compiled.credentials : undefined;
    const upstreamUrl = flags.get('upstream');
    if (upstreamUrl) {
      const problem = postgresUrlProblem(upstreamUrl);
      if (problem) throw new UsageError(`--upstream: ${problem}`);
      let parsed: ReturnType<typeof parseUpstreamUrl>;
      try {
        parsed = parseUpstreamUrl(upstreamUrl);
      } catch (err) {
        throw new StartupError(`--upstream: ${(err as Error).message}`);
      }
      target = parsed.target;
      defaultDatabase = parsed.database;
      if (parsed.credentials) credentials = parsed.credentials;
      if (!target.sslmode && policy) target.sslmode = policy.upstream.sslmode;
    } else if (policy) {
      target = { host: policy.upstream.host, port: policy.upstream.port, sslmode: policy.upstream.sslmode };
    } else {
      throw new UsageError('--upstream is required when the policy comes from --operator-url');
    }
    const sslmode = flags.get('upstream-sslmode');
    if (sslmode !== undefined) {
      if (!(SSL_MODES as readonly string[]).includes(sslmode)) {
        throw new UsageError(`--upstream-sslmode: '${sslmode}' is not one of ${SSL_MODES.join(', ')}`);
      }
      target.sslmode = sslmode as SslMode;
    }
    const caFile = flags.get('upstream-ca');
    if (caFile) target.caPem = readPem(caFile, 'upstream-ca');
    else if (policy?.upstream.caPem) target.caPem = policy.upstream.caPem;

    const certFile = flags.get('tls-cert');
    const keyFile = flags.get('tls-key');
    if (!!certFile !== !!keyFile) throw new UsageError('--tls-cert and --tls-key go together');
    const tlsOpts =
      certFile && keyFile
        ? { cert: readPem(certFile, 'tls-cert'), key: readPem(keyFile, 'tls-key') }
        : undefined;

    const maxMessageSize = Number(flags.get('max-message-size'));
    if (
      !Number.isInteger(maxMessageSize) ||
      maxMessageSize < 1024 ||
      maxMessageSize > DEFAULT_MAX_MESSAGE_SIZE
    ) {
      throw new UsageError(`--max-message-size: an integer from 1024 to ${DEFAULT_MAX_MESSAGE_SIZE}`);
    }
    const maxStatementSize = Math.min(
      Number(flags.get('max-statement-size')),
      // the default yields to a smaller --max-message-size
      flags.get('max-statement-size') === String(DEFAULT_MAX_STATEMENT_SIZE)
        ? maxMessageSize
        : Number.POSITIVE_INFINITY,
    );
    if (
      !Number.isInteger(maxStatementSize) ||
      (maxStatementSize !== 0 && (maxStatementSize < 1024 || maxStatementSize > maxMessageSize))
    ) {
      throw new UsageError('--max-statement-size: 0, or an integer from 1024 to --max-message-size');
    }
    const shutdownMs = parseDurationMs(flags.get('shutdown-timeout') ?? '30s', 'shutdown-timeout');
    const listen = parseListen(flags.get('listen') ?? '127.0.0.1:6432');
    const metricsListen = flags.get('metrics-listen');
    if (metricsListen) {
      try {
        parseMetricsListen(metricsListen);
      } catch (err) {
        throw new UsageError(`--metrics-listen: ${(err as Error).message}`);
      }
    }

    const credFile = flags.get('upstream-credentials-file');
    if (credFile) credentials = readCredentials(credFile);
    if (operatorUrl && !flags.get('policy'))
      throw new UsageError('--policy NAMESPACE/NAME is required with --operator-url');
    let tokenAuth: TokenAuthConfig | undefined;
    const tokenMode = flags.get('token-auth');
    if (tokenMode) {
      if (!credentials)
        throw new UsageError(
          '--token-auth needs upstream credentials (policy credentialsSecretRef or --upstream-credentials-file)',
        );
      if (tokenMode === 'jwt') {
        const issuer = flags.get('token-issuer');
        if (!issuer) throw new UsageError('--token-auth jwt needs --token-issuer');
        tokenAuth = {
          type: 'jwt',
          issuer,
          audiences: flags.all('token-audience'),
          ...(flags.get('token-jwks-url') ? { jwksUrl: flags.get('token-jwks-url') } : {}),
          ...(flags.get('token-user-claim') ? { userClaim: flags.get('token-user-claim') } : {}),
          ...(flags.get('token-groups-claim') ? { groupsClaim: flags.get('token-groups-claim') } : {}),
        };
        if (!tokenAuth.audiences.length) throw new UsageError('--token-auth jwt needs --token-audience');
      } else if (tokenMode === 'tokenreview') {
        // Without an audience the API server accepts any token it issued, the automounted one of every pod
        // included; `dbguard` is the audience of every injected sidecar's operator token.
        const audiences = flags.all('token-audience');
        if (!audiences.length)
          throw new UsageError(
            '--token-auth tokenreview needs --token-audience (for example dbguard-gateway): without one every automounted ServiceAccount token logs in',
          );
        if (audiences.includes(TOKEN_AUDIENCE))
          throw new UsageError(
            `--token-audience ${TOKEN_AUDIENCE}: every injected sidecar holds a token for that audience; choose another (for example dbguard-gateway)`,
          );
        tokenAuth = { type: 'tokenreview', audiences };
      } else {
        throw new UsageError(`--token-auth: '${tokenMode}' is not jwt or tokenreview`);
      }
    }
    let workload: ReturnType<typeof workloadIdentity>;
    try {
      workload = workloadIdentity({
        serviceAccount: flags.get('identity-service-account'),
        pod: flags.get('identity-pod'),
      });
    } catch (err) {
      throw new StartupError((err as Error).message);
    }
    const operatorCa = flags.get('operator-ca-file');
    const sidecar = await startSidecar({
      listen,
      upstream: target,
      ...(defaultDatabase ? { defaultDatabase } : {}),
      ...(credentials ? { credentials } : {}),
      ...(tlsOpts ? { tls: tlsOpts } : {}),
      maxMessageSize,
      maxStatementSize,
      maxConnections: (() => {
        const n = Number(flags.get('max-connections'));
        if (!Number.isInteger(n) || n < 0)
          throw new UsageError('--max-connections: a whole number, 0 for no limit');
        return n;
      })(),
      loginFailureLimit: (() => {
        const n = Number(flags.get('login-failure-limit'));
        if (!Number.isInteger(n) || n < 0)
          throw new UsageError('--login-failure-limit: a whole number, 0 for no limit');
        return n;
      })(),
      loginFailureWindowMs: (() => {
        const ms = parseDurationMs(flags.get('login-failure-window') ?? '60s', 'login-failure-window');
        if (ms < 1 || ms > 24 * 3600 * 1000) throw new UsageError('--login-failure-window: from 1ms to 24h');
        return ms;
      })(),
      idleTimeoutMs:
        flags.get('idle-timeout') === '0'
          ? 0
          : parseDurationMs(flags.get('idle-timeout') ?? '0', 'idle-timeout'),
      upstreamConnectTimeoutMs: parseDurationMs(
        flags.get('upstream-connect-timeout') ?? '10s',
        'upstream-connect-timeout',
      ),
      authTimeoutMs: (() => {
        // 0 is not "never" here: the start-up reads would time out at once and refuse every client.
        // PostgreSQL's own range (1 s – 600 s) is kept loose: 1 ms – 24 h, like the other timeouts.
        const ms = parseDurationMs(flags.get('auth-timeout') ?? '60s', 'auth-timeout');
        if (ms < 1 || ms > 24 * 3600 * 1000) throw new UsageError('--auth-timeout: from 1ms to 24h');
        return ms;
      })(),
      ...(policyFiles.length ? { policyFiles, initialPolicy: policy } : {}),
      policyName: flags.get('policy'),
      // the operator serves the policy (unless files are given) and takes approval requests
      ...(operatorUrl
        ? {
            operator: {
              url: operatorUrl,
              tokenFile: flags.get('operator-token-file'),
              // an empty CA file means the system roots
              caFile:
                operatorCa && fs.existsSync(operatorCa) && fs.statSync(operatorCa).size > 0
                  ? operatorCa
                  : undefined,
              cacheFile: flags.get('policy-cache-file'),
            },
          }
        : {}),
      metricsListen,
      auditLog: flags.get('audit-log') ?? '-',
      auditStallTimeoutMs: (() => {
        const ms = parseDurationMs(flags.get('audit-stall-timeout') ?? '10s', 'audit-stall-timeout');
        if (ms < 1) throw new UsageError('--audit-stall-timeout: more than 0, e.g. 10s');
        return ms;
      })(),
      ...(flags.get('audit-key-file') ? { auditKey: readAuditKey(flags.get('audit-key-file')!) } : {}),
      workload,
      ...(tokenAuth ? { tokenAuth } : {}),
      logger,
    });
    const proxy = sidecar;
    process.on('SIGHUP', () => {
      sidecar.reload();
      void sidecar.audit
        ?.reopen()
        .catch((err: unknown) => logger.log('error', 'audit log reopen failed', { error: String(err) }));
    });

    // Last line of defence: a bug in one connection's handling must not end every session. Never
    // re-entered: an exception while logging one (a broken stderr) must not start a loop.
    let inUncaught = false;
    const onUncaught = (err: unknown) => {
      if (inUncaught) return;
      inUncaught = true;
      try {
        logger.log('error', 'uncaught exception', {
          error: err instanceof Error ? (err.stack ?? err.message) : String(err),
        });
      } catch {
        /* nowhere left to report it */
      } finally {
        inUncaught = false;
      }
    };
    process.on('uncaughtException', onUncaught);
    process.on('unhandledRejection', onUncaught);

    const code = await new Promise<number>((resolve) => {
      let stopping = false;
      const stop = (signal: string) => {
        if (stopping) return;
        stopping = true;
        logger.log('info', 'signal received', { signal, shutdownTimeoutMs: shutdownMs });
        proxy.shutdown(shutdownMs).then(
          () => resolve(0),
          (err: unknown) => {
            // The audit log could not be flushed (its sink is down): say so in the exit code.
            logger.log('error', 'shutdown incomplete', { error: String((err as Error)?.message ?? err) });
            resolve(1);
          },
        );
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
    });
    // A write to a stalled standard output stays pending for good and would keep the process alive.
    if (code !== 0) process.exit(code);
    return code;
  } catch (err) {
    if (err instanceof StartupError) {
      process.stderr.write(`dbguard proxy: ${err.message}\n`);
      return 1;
    }
    if (err instanceof UsageError) throw err;
    process.stderr.write(`dbguard proxy: ${(err as Error).message}\n`);
    return 1;
  }
}
