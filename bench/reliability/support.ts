/**
 * Shared pieces of the reliability runs (soak, faults, fuzz) and their tests: a governed proxy (policy
 * files → Governor → audit trail → proxy), a TCP relay that can stall, and process measurements
 * (RSS, open file descriptors).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import type { CompiledPolicy } from '../../api/compiled.js';
import { hmacPads, installSql } from '../../cli/hash-key-store.js';
import { initParser } from '../../policy/engine.js';
import { loadPolicyFiles } from '../../policy/load.js';
import { type AuditLog, loadAuditParser, openAuditLog } from '../../sidecar/audit/index.js';
import { Governor } from '../../sidecar/governor.js';
import type { Logger, LogLevel } from '../../sidecar/log.js';
import { SidecarMetrics } from '../../sidecar/metrics.js';
import { type ProxyHandle, type ProxyOptions, startProxy } from '../../sidecar/proxy.js';

export interface LogLine {
  level: LogLevel;
  msg: string;
  fields?: Record<string, unknown>;
}

/** A logger that keeps every line (debug included) in memory, as the JSON the real logger writes. */
export function memoryLogger(): Logger & { lines: LogLine[]; text(): string } {
  const lines: LogLine[] = [];
  return {
    lines,
    log: (level, msg, fields) => {
      lines.push({ level, msg, ...(fields ? { fields } : {}) });
    },
    text: () => lines.map((l) => JSON.stringify(l)).join('\n'),
  };
}

const DEFAULT_SALT = 'reliability-salt';

/**
 * `dbguard db install` with the policy's Hash key, as one SQL text for a superuser's set-up script
 * (the key's HMAC pads are in the text: a test set-up, not how a DBA installs a key). The advisory
 * lock serializes set-ups that run at once in one database.
 */
function hashKeySetupSql(salt: string): string {
  const { inner, outer } = hmacPads(Buffer.from(salt, 'utf8'));
  return `SELECT pg_advisory_xact_lock(7001);
    ${installSql([])}
    INSERT INTO dbguard.hash_keys (id, inner_pad, outer_pad)
      VALUES ('shop/pii-salt/salt', '\\x${inner.toString('hex')}', '\\x${outer.toString('hex')}')
      ON CONFLICT (id) DO UPDATE SET inner_pad = EXCLUDED.inner_pad, outer_pad = EXCLUDED.outer_pad;`;
}

/**
 * The policy the reliability runs enforce, for tables in `schema`: DROP and unqualified DELETE are
 * denied, `customers.email`/`ssn` are masked (Email, Redact), `customer_ref` is hashed with `salt`,
 * and the database user `exemptUser` sees real values.
 */
export function reliabilityPolicyYaml(opts: {
  schema: string;
  upstreamPort: number;
  salt?: string;
  exemptUser?: string;
  audit?: 'All' | 'Writes' | 'Denied' | 'None';
}): string {
  const salt = opts.salt ?? DEFAULT_SALT;
  return `
apiVersion: dbguard.io/v1alpha1
kind: DatabasePolicy
metadata: {name: orders, namespace: shop}
spec:
  upstream: {host: 127.0.0.1, port: ${opts.upstreamPort}, sslmode: disable}
  defaultAction: Allow
  rules:
    - name: no-drops
      action: Deny
      match: {commands: ["DROP *", "TRUNCATE TABLE"]}
      message: "Schema changes go through migrations."
    - name: no-bulk-delete
      action: Deny
      match: {commands: ["DELETE", "UPDATE"], withoutWhere: true}
  audit: {statements: ${opts.audit ?? 'All'}}
---
apiVersion: dbguard.io/v1alpha1
kind: MaskingRule
metadata: {name: pii, namespace: shop}
spec:
  policyRef: {name: orders}
  columns:
    - {table: ${opts.schema}.customers, column: email, strategy: Email}
    - {table: ${opts.schema}.customers, column: ssn, strategy: Redact}
    - {table: ${opts.schema}.customers, column: customer_ref, strategy: Hash, hash: {saltSecretRef: {name: pii-salt, key: salt}}}
  exemptSubjects: [{kind: DatabaseUser, name: ${opts.exemptUser ?? 'postgres'}}]
---
apiVersion: v1
kind: Secret
metadata: {name: pii-salt, namespace: shop}
stringData: {salt: "${salt}"}
`;
}

export function compilePolicy(yaml: string): CompiledPolicy {
  const r = loadPolicyFiles([{ name: 'reliability.yaml', text: yaml }], 'shop/orders');
  if (!r.ok) throw new Error(`reliability policy does not compile: ${r.errors.join('; ')}`);
  return r.compiled;
}

/** SQL (run as a superuser in database `app`) creating the schema the policy masks, readable by `app`. */
export function reliabilitySchemaSql(schema: string, rows = 100, salt = DEFAULT_SALT): string {
  return `
    ${hashKeySetupSql(salt)}
    DROP SCHEMA IF EXISTS ${schema} CASCADE;
    CREATE SCHEMA ${schema};
    CREATE TABLE ${schema}.customers (id int PRIMARY KEY, name text, email text, ssn text, customer_ref text);
    INSERT INTO ${schema}.customers
      SELECT i, 'name' || i, 'user' || i || '@example.org', '123-45-' || lpad(i::text, 4, '0'), 'ref-' || i
      FROM generate_series(1, ${rows}) i;
    CREATE TABLE ${schema}.events (id bigserial PRIMARY KEY, client int, payload text, at timestamptz DEFAULT now());
    GRANT USAGE ON SCHEMA ${schema} TO app;
    GRANT ALL ON ALL TABLES IN SCHEMA ${schema} TO app;
    GRANT ALL ON ALL SEQUENCES IN SCHEMA ${schema} TO app;
  `;
}

export interface GovernedProxy {
  proxy: ProxyHandle;
  governor: Governor;
  metrics: SidecarMetrics;
  audit: AuditLog;
  auditFile: string;
  /** every audit line written so far (after flush) */
  auditEvents(): Promise<Record<string, unknown>[]>;
  close(): Promise<void>;
}

/** startProxy + Governor + a file audit trail, as `dbguard proxy --policy-file --audit-log FILE` runs them. */
export async function startGovernedProxy(
  opts: {
    policy: CompiledPolicy | (() => CompiledPolicy | undefined);
    auditFile?: string;
    workload?: { serviceAccount?: string; pod?: string };
  } & Partial<ProxyOptions> &
    Pick<ProxyOptions, 'upstream'>,
): Promise<GovernedProxy> {
  await initParser();
  await loadAuditParser();
  const { policy, auditFile: given, workload, ...proxyOpts } = opts;
  const auditFile =
    given ?? path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-rel-audit-')), 'audit.jsonl');
  const metrics = new SidecarMetrics();
  const audit = await openAuditLog(auditFile, { observer: metrics.auditObserver() });
  const current = typeof policy === 'function' ? policy : () => policy;
  const logger = proxyOpts.logger;
  const governor = new Governor({
    policy: current,
    audit,
    metrics,
    ...(workload ? { workload } : {}),
    log: (f) => logger?.log('warn', String(f.msg ?? 'governor'), f),
  });
  const proxy = await startProxy({ decisionPoint: governor, ...proxyOpts });
  return {
    proxy,
    governor,
    metrics,
    audit,
    auditFile,
    async auditEvents() {
      await audit.flush();
      return fs
        .readFileSync(auditFile, 'utf8')
        .split('\n')
        .filter((l) => l.trim())
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    },
    async close() {
      await proxy.close();
      await audit.close();
    },
  };
}

/**
 * A TCP relay between the proxy and the upstream that can stop forwarding (a network stall: packets
 * are neither delivered nor refused, as behind a dead router) and start again.
 */
export class TcpRelay {
  private server!: net.Server;
  private readonly pairs = new Set<{ a: net.Socket; b: net.Socket }>();
  private stalled = false;
  port = 0;

  constructor(private readonly target: { host: string; port: number }) {}

  async start(): Promise<this> {
    this.server = net.createServer((a) => {
      // While stalled, new connections are accepted by the kernel but nothing flows.
      const b = net.connect(this.target.port, this.target.host);
      const pair = { a, b };
      this.pairs.add(pair);
      const done = () => {
        a.destroy();
        b.destroy();
        this.pairs.delete(pair);
      };
      a.on('error', done).on('close', done);
      b.on('error', done).on('close', done);
      a.pipe(b);
      b.pipe(a);
      if (this.stalled) {
        a.pause();
        b.pause();
      }
    });
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this;
  }

  get connections(): number {
    return this.pairs.size;
  }

  /** Stop reading either side: bytes in flight stay in kernel buffers, nothing is delivered. */
  stall(): void {
    this.stalled = true;
    for (const { a, b } of this.pairs) {
      a.unpipe(b);
      b.unpipe(a);
      a.pause();
      b.pause();
    }
  }

  resume(): void {
    this.stalled = false;
    for (const { a, b } of this.pairs) {
      a.pipe(b);
      b.pipe(a);
      a.resume();
      b.resume();
    }
  }

  async close(): Promise<void> {
    for (const { a, b } of this.pairs) {
      a.destroy();
      b.destroy();
    }
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** Open file descriptors of a process (this one by default; Linux), or -1 where /proc is missing. */
export function openFds(pid: number | 'self' = 'self'): number {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return -1;
  }
}

/** What each open descriptor points to (`socket:[...]`, a path, `anon_inode:[eventfd]` ...). */
export function fdTargets(pid: number | 'self' = 'self'): Map<string, string> {
  const out = new Map<string, string>();
  try {
    for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
      try {
        out.set(fd, fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
      } catch {
        /* closed meanwhile */
      }
    }
  } catch {
    /* no /proc */
  }
  return out;
}

const TCP_STATES: Record<string, string> = {
  '01': 'ESTABLISHED',
  '02': 'SYN_SENT',
  '03': 'SYN_RECV',
  '04': 'FIN_WAIT1',
  '05': 'FIN_WAIT2',
  '06': 'TIME_WAIT',
  '07': 'CLOSE',
  '08': 'CLOSE_WAIT',
  '09': 'LAST_ACK',
  '0A': 'LISTEN',
  '0B': 'CLOSING',
};

/** `0100007F:1F90` (little-endian IPv4 as /proc/net/tcp writes it) → `127.0.0.1:8080`. */
function procAddr(hex: string): string {
  const [ip = '', port = '0'] = hex.split(':');
  const p = Number.parseInt(port, 16);
  if (ip.length === 8) {
    const b = ip.match(/../g)!.map((x) => Number.parseInt(x, 16));
    return `${b.reverse().join('.')}:${p}`;
  }
  return `[v6]:${p}`;
}

/**
 * TCP sockets by inode (from /proc/PID/net/tcp and tcp6): local and remote address and state, to
 * say what a `socket:[inode]` descriptor left open is (a client of the proxy, an upstream
 * connection, a listener).
 */
export function tcpSockets(pid: number | 'self' = 'self'): Map<string, string> {
  const out = new Map<string, string>();
  for (const f of ['tcp', 'tcp6']) {
    let text = '';
    try {
      text = fs.readFileSync(`/proc/${pid}/net/${f}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const c = line.trim().split(/\s+/);
      if (c.length < 10) continue;
      out.set(c[9]!, `${procAddr(c[1]!)}->${procAddr(c[2]!)} ${TCP_STATES[c[3]!] ?? c[3]}`);
    }
  }
  return out;
}

/** The descriptors of `pid` not in `before` (same number and target), sockets described. */
export function newDescriptors(pid: number | 'self', before: Map<string, string>): string[] {
  const sockets = tcpSockets(pid);
  return [...fdTargets(pid)]
    .filter(([fd, t]) => before.get(fd) !== t)
    .map(([fd, t]) => {
      const inode = /^socket:\[(\d+)\]$/.exec(t)?.[1];
      const tcp = inode ? sockets.get(inode) : undefined;
      return `${fd}→${t}${tcp ? ` (${tcp})` : ''}`;
    });
}

/**
 * Which processes hold the client ends of connections to `port` (from `ss -tanp`, with each owner's
 * command line): tells whose connection a descriptor left open on the proxy's side is. Empty when
 * `ss` is missing.
 */
export function clientEndsOf(port: number): string[] {
  let out = '';
  try {
    out = execFileSync('ss', ['-tanpH', 'dport', '=', `:${port}`], { encoding: 'utf8', timeout: 5000 });
  } catch {
    return [];
  }
  const cmd = new Map<string, string>();
  return out
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => {
      const pid = /pid=(\d+)/.exec(l)?.[1];
      if (pid && !cmd.has(pid)) {
        try {
          cmd.set(pid, fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').slice(0, 160));
        } catch {
          cmd.set(pid, '?');
        }
      }
      return `${l.trim().replace(/\s+/g, ' ')}${pid ? ` [${cmd.get(pid)}]` : ''}`;
    });
}

/** Audit events by type (`query`, `session.start` ...), read line by line (the file can be large). */
export async function countAuditEvents(file: string): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  const lines = readline.createInterface({ input: fs.createReadStream(file), crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const ev = String((JSON.parse(line) as { event?: unknown }).event);
    counts.set(ev, (counts.get(ev) ?? 0) + 1);
  }
  return counts;
}

/** Resident set size of this process in MiB. */
export function rssMb(): number {
  return process.memoryUsage().rss / (1024 * 1024);
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export { until } from '../../test/support/until.js';
