/**
 * The real `dbguard proxy` process (built CLI) in front of the real server: a policy file with rules and
 * masking, the audit trail, metrics and health, reload on change, and clear start-up errors.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { adminQuery } from '../support/admin.js';
import { until } from '../support/until.js';

const CLI = path.resolve('dist/cli/main.js');
const run = promisify(execFile);

/**
 * The built `dbguard proxy` on 127.0.0.1, port 0 (the kernel picks it: no port is chosen first and
 * bound later by someone else); `stderr()` is its log so far, `listening()` the bound ports read from it.
 */
function spawnProxy(
  policyFile: string,
  auditFile: string,
  ...extra: string[]
): {
  proc: ChildProcess;
  stderr: () => string;
  listening: () => Promise<{ port: number; metricsPort?: number }>;
} {
  const proc = spawn(
    process.execPath,
    [
      CLI,
      'proxy',
      '--listen',
      '127.0.0.1:0',
      '--policy-file',
      policyFile,
      '--audit-log',
      auditFile,
      ...extra,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  proc.stderr!.on('data', (d) => {
    log += d;
  });
  const lines = () =>
    log
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { msg: string; listen?: string });
  const wantsMetrics = extra.includes('--metrics-listen');
  const listening = async () => {
    const listen = await until('proxy listening', () => lines().find((l) => l.msg === 'listening')?.listen);
    const metrics = wantsMetrics
      ? await until('metrics listening', () => lines().find((l) => l.msg === 'metrics listening')?.listen)
      : undefined;
    return {
      port: Number(listen.split(':').at(-1)),
      ...(metrics ? { metricsPort: Number(new URL(metrics).port) } : {}),
    };
  };
  return { proc, stderr: () => log, listening };
}

function policyYaml(upstreamPort: number, denyMessage = 'Schema changes go through migrations.'): string {
  return `
apiVersion: dbguard.io/v1alpha1
kind: DatabasePolicy
metadata: {name: orders, namespace: shop}
spec:
  upstream: {host: 127.0.0.1, port: ${upstreamPort}, sslmode: disable}
  defaultAction: Allow
  rules:
    - name: no-drops
      action: Deny
      match: {commands: ["DROP *"]}
      message: "${denyMessage}"
  audit: {statements: All}
---
apiVersion: dbguard.io/v1alpha1
kind: MaskingRule
metadata: {name: pii, namespace: shop}
spec:
  policyRef: {name: orders}
  columns:
    - {table: cli_customers, column: ssn, strategy: Redact}
    - {table: cli_customers, column: email, strategy: Email}
  exemptSubjects: [{kind: DatabaseUser, name: postgres}]
`;
}

describe('dbguard proxy (CLI process)', () => {
  const server = inject('pg');
  let dir: string;
  let proc: ChildProcess;
  let port: number;
  let metricsPort: number;
  let stderr = () => '';
  const policyFile = () => path.join(dir, 'policy.yaml');
  const auditFile = () => path.join(dir, 'audit.jsonl');

  beforeAll(async () => {
    if (!fs.existsSync(CLI)) throw new Error('run `npm run build` first: the test drives the built CLI');
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-cli-'));
    fs.writeFileSync(policyFile(), policyYaml(server.port));
    await adminQuery(
      server,
      `DROP TABLE IF EXISTS cli_customers;
      CREATE TABLE cli_customers (id int PRIMARY KEY, email text, ssn text);
      INSERT INTO cli_customers VALUES (1, 'ada@example.org', '123-45-6789');
      GRANT ALL ON cli_customers TO app;`,
    );
    let listening: () => Promise<{ port: number; metricsPort?: number }>;
    ({ proc, stderr, listening } = spawnProxy(policyFile(), auditFile(), '--metrics-listen', '127.0.0.1:0'));
    ({ port, metricsPort = 0 } = await listening());
  });

  afterAll(async () => {
    proc?.kill('SIGTERM');
    await new Promise((r) => proc?.once('exit', r));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const connect = async (user = 'app', password = 'app') => {
    const c = new pg.Client({ host: '127.0.0.1', port, user, password, database: 'app' });
    await c.connect();
    return c;
  };

  it('masks for a masked subject, not for an exempt one, and blocks DROP', async () => {
    const app = await connect();
    const r = await app.query('SELECT email, ssn FROM cli_customers WHERE id = $1', [1]);
    expect(r.rows).toEqual([{ email: 'a***@example.org', ssn: '****' }]);
    await expect(app.query('DROP TABLE cli_customers')).rejects.toMatchObject({ code: '42501' });
    await app.end();
    const admin = await connect('postgres', 'postgres');
    const real = await admin.query('SELECT ssn FROM cli_customers');
    expect(real.rows[0].ssn).toBe('123-45-6789');
    await admin.end();
  });

  it('writes the audit trail without values and counts in /metrics', async () => {
    const denials = async () => {
      const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      return Number(
        /dbguard_denied_queries_total\{policy="shop\/orders",rule="no-drops",reason="rule"\} (\d+)/.exec(
          text,
        )?.[1] ?? 0,
      );
    };
    const deniedBefore = await denials();
    // this test's own statements: one masked read, one denial
    const app = await connect();
    await app.query('SELECT email, ssn FROM cli_customers WHERE id = $1', [1]);
    await expect(app.query('DROP TABLE cli_customers')).rejects.toMatchObject({ code: '42501' });
    await app.end();
    const events = await until('audit events', () => {
      if (!fs.existsSync(auditFile())) return undefined;
      const lines = fs
        .readFileSync(auditFile(), 'utf8')
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l));
      return lines.some((e) => e.decision === 'deny') ? lines : undefined;
    });
    expect(events[0].event).toBe('policy.loaded');
    const masked = events.find((e) => e.event === 'query' && e.decision === 'mask');
    expect(masked.statement.objects).toEqual(['public.cli_customers']);
    expect(masked.identity.databaseUser).toBe('app');
    expect(masked.maskedColumns).toContain('public.cli_customers.ssn');
    const denied = events.find((e) => e.decision === 'deny');
    expect(denied).toMatchObject({ rule: 'no-drops', sqlstate: '42501', enforced: true });
    expect(fs.readFileSync(auditFile(), 'utf8')).not.toMatch(/123-45-6789|ada@example/);
    const { stdout } = await run(process.execPath, [CLI, 'audit', 'verify', auditFile()]);
    expect(stdout).toMatch(/^ok:/);

    expect(await denials()).toBe(deniedBefore + 1);
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    expect(metrics).toMatch(/dbguard_masked_queries_total\{policy="shop\/orders"\} [1-9]/);
    expect(metrics).toMatch(/dbguard_policy_info\{policy="shop\/orders",version="sha256:[0-9a-f]+"\} 1/);
    const ready = await fetch(`http://127.0.0.1:${metricsPort}/readyz`);
    expect(ready.status).toBe(200);
  });

  it('reloads a changed policy file, and keeps the last good one when the new one is broken', async () => {
    fs.writeFileSync(policyFile(), policyYaml(server.port, 'Changed message.'));
    const app = await connect();
    await until('new policy', async () => {
      try {
        await app.query('DROP TABLE cli_customers');
      } catch (e) {
        return (e as Error).message.includes('Changed message.');
      }
      return false;
    });
    fs.writeFileSync(
      policyFile(),
      'apiVersion: dbguard.io/v1alpha1\nkind: DatabasePolicy\nmetadata: {name: orders, namespace: shop}\nspec: {}\n',
    );
    await until('reload error logged', () => stderr().includes('policy reload failed'));
    await expect(app.query('DROP TABLE cli_customers')).rejects.toThrow('Changed message.');
    await app.end();
  });

  it('refuses to start on an invalid policy file with one clear line', async () => {
    const bad = path.join(dir, 'bad.yaml');
    fs.writeFileSync(
      bad,
      'apiVersion: dbguard.io/v1alpha1\nkind: DatabasePolicy\nmetadata: {name: x, namespace: y}\nspec: {upstream: {host: h}, rules: [{name: r, action: Maybe}]}\n',
    );
    const res = await run(process.execPath, [
      CLI,
      'proxy',
      '--policy-file',
      bad,
      '--listen',
      '127.0.0.1:0',
    ]).catch((e) => e);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain(bad);
    expect(res.stderr).toContain('spec.rules[0].action');
    const missing = await run(process.execPath, [
      CLI,
      'proxy',
      '--policy-file',
      path.join(dir, 'nope.yaml'),
    ]).catch((e) => e);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('no such file');
  });
});

describe('dbguard proxy --auth-timeout (CLI process)', () => {
  const server = inject('pg');
  let dir: string;

  beforeAll(() => {
    if (!fs.existsSync(CLI)) throw new Error('run `npm run build` first: the test drives the built CLI');
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-cli-auth-'));
    fs.writeFileSync(path.join(dir, 'policy.yaml'), policyYaml(server.port));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('closes a client that connects and sends nothing after the timeout, with FATAL 08006', async () => {
    const { proc, stderr, listening } = spawnProxy(
      path.join(dir, 'policy.yaml'),
      path.join(dir, 'audit.jsonl'),
      '--auth-timeout',
      '800ms',
    );
    try {
      const { port } = await listening();
      const sock = net.connect(port, '127.0.0.1');
      const t0 = Date.now();
      let received = Buffer.alloc(0);
      sock.on('data', (d) => {
        received = Buffer.concat([received, d]);
      });
      sock.on('error', () => {});
      const closedAfter = await new Promise<number>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('not closed within 10 s')), 10_000);
        sock.on('close', () => {
          clearTimeout(t);
          resolve(Date.now() - t0);
        });
      });
      // not before the timeout, and well before the 60 s default
      expect(closedAfter).toBeGreaterThanOrEqual(700);
      expect(closedAfter).toBeLessThan(5000);
      expect(received[0]).toBe('E'.charCodeAt(0));
      expect(received.toString('latin1')).toContain('C08006');
      await until('timeout logged', () => stderr().includes('start-up timed out'));
      // a client that does log in within the timeout is unaffected
      const c = new pg.Client({ host: '127.0.0.1', port, user: 'app', password: 'app', database: 'app' });
      await c.connect();
      expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
      await c.end();
    } finally {
      // With no session left, SIGTERM must end the process promptly (the 30 s shutdown timeout is
      // for running statements only).
      const t0 = Date.now();
      proc.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const exited = await Promise.race([
        new Promise<boolean>((r) => proc.once('exit', () => r(true))),
        new Promise<boolean>((r) => {
          timer = setTimeout(() => r(false), 15_000);
        }),
      ]);
      clearTimeout(timer);
      if (!exited) proc.kill('SIGKILL');
      expect(exited, `no exit ${Date.now() - t0} ms after SIGTERM; log: ${stderr().slice(-1500)}`).toBe(true);
    }
  });

  it('refuses a zero or malformed DBGUARD_AUTH_TIMEOUT with a line naming the flag', async () => {
    for (const value of ['0', 'soon']) {
      const res = await run(
        process.execPath,
        [CLI, 'proxy', '--policy-file', path.join(dir, 'policy.yaml'), '--listen', '127.0.0.1:0'],
        { env: { ...process.env, DBGUARD_AUTH_TIMEOUT: value } },
      ).catch((e) => e);
      expect(res.code).not.toBe(0);
      expect(res.stderr).toContain('--auth-timeout');
    }
  });
});

/**
 * Issue 17, "Identity is what was proven": the proxy holds the database credentials, so a client's
 * startup user proves nothing. The reproduction was `psql user=auditor` (no password) getting real values
 * because `auditor` is an exempt DatabaseUser subject, with `databaseUser: "auditor"` in the audit trail.
 */
describe('dbguard proxy holding credentials: a claimed startup user is not an identity', () => {
  const server = inject('pg');
  let dir: string;
  let proc: ChildProcess;
  let port: number;
  let stderr = () => '';
  const auditFile = () => path.join(dir, 'audit.jsonl');
  const events = () =>
    fs
      .readFileSync(auditFile(), 'utf8')
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));
  const psql = (user: string, sql: string) =>
    run('psql', ['-X', '-w', '-A', '-t', '-c', sql, `host=127.0.0.1 port=${port} user=${user} dbname=app`], {
      env: { ...process.env, PGPASSWORD: '', PGSSLMODE: 'disable' },
    }).then(
      (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
      (e) => ({ code: e.code as number, stdout: String(e.stdout), stderr: String(e.stderr) }),
    );

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-claim-'));
    fs.writeFileSync(
      path.join(dir, 'policy.yaml'),
      `
apiVersion: dbguard.io/v1alpha1
kind: DatabasePolicy
metadata: {name: orders, namespace: shop}
spec:
  upstream: {host: 127.0.0.1, port: ${server.port}, sslmode: disable}
  rules: [{name: no-drops, action: Deny, match: {commands: ["DROP *"]}}]
---
apiVersion: dbguard.io/v1alpha1
kind: MaskingRule
metadata: {name: pii, namespace: shop}
spec:
  policyRef: {name: orders}
  columns:
    - {table: claim_customers, column: ssn, strategy: Redact}
    - {table: claim_customers, column: email, strategy: Email}
  exemptSubjects: [{kind: DatabaseUser, name: auditor}]
`,
    );
    // the layout of the mounted Secret the injector gives the sidecar
    fs.mkdirSync(path.join(dir, 'credentials'));
    fs.writeFileSync(path.join(dir, 'credentials', 'username'), 'app');
    fs.writeFileSync(path.join(dir, 'credentials', 'password'), 'app');
    await adminQuery(
      server,
      `DROP TABLE IF EXISTS claim_customers;
      CREATE TABLE claim_customers (id int PRIMARY KEY, email text, ssn text);
      INSERT INTO claim_customers VALUES (7001, 'ada@example.org', '123-45-6789');
      GRANT ALL ON claim_customers TO app;`,
    );
    let listening: () => Promise<{ port: number }>;
    ({ proc, stderr, listening } = spawnProxy(
      path.join(dir, 'policy.yaml'),
      auditFile(),
      '--upstream-credentials-file',
      path.join(dir, 'credentials'),
    ));
    ({ port } = await listening());
  });

  afterAll(async () => {
    proc?.kill('SIGTERM');
    await new Promise((r) => proc?.once('exit', r));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('psql user=auditor (no password) is refused with 28000, never served real values', async () => {
    const r = await psql('auditor', 'SELECT ssn, email FROM claim_customers WHERE id = 7001');
    expect(r.code).not.toBe(0);
    expect(r.stdout).not.toContain('123-45-6789');
    expect(r.stderr).toContain('dbguard: this proxy logs in to the database as "app"');
    expect(r.stderr).toContain('cannot prove the user "auditor"; connect with user=app');
    await until('auth.failure audited', () =>
      fs.existsSync(auditFile()) && events().some((e) => e.event === 'auth.failure') ? true : undefined,
    );
    const failure = events().find((e) => e.event === 'auth.failure');
    // the trail names the login the proxy holds, and the name the client gave only as claimed
    expect(failure.identity).toMatchObject({ databaseUser: 'app', claimedDatabaseUser: 'auditor' });
  });

  it('psql as the credentials user gets masked values, audited as that user', async () => {
    const r = await psql('app', 'SELECT ssn, email FROM claim_customers WHERE id = 7001');
    expect(r).toMatchObject({ code: 0 });
    expect(r.stdout.trim()).toBe('****|a***@example.org');
    const masked = await until('mask audited', () =>
      events().find((e) => e.event === 'query' && e.decision === 'mask'),
    );
    expect(masked.identity.databaseUser).toBe('app');
    expect(masked.identity).not.toHaveProperty('claimedDatabaseUser');
    expect(fs.readFileSync(auditFile(), 'utf8')).not.toContain('"databaseUser":"auditor"');
  });

  it("refuses token auth by TokenReview without an audience, or with the sidecars' own (issue 17)", async () => {
    const base = [
      CLI,
      'proxy',
      '--listen',
      '127.0.0.1:0',
      '--policy-file',
      path.join(dir, 'policy.yaml'),
      '--upstream-credentials-file',
      path.join(dir, 'credentials'),
      '--token-auth',
      'tokenreview',
    ];
    const none = await run(process.execPath, base).catch((e) => e);
    expect(none.code).not.toBe(0);
    expect(none.stderr).toContain('--token-auth tokenreview needs --token-audience');
    const sidecars = await run(process.execPath, [...base, '--token-audience', 'dbguard']).catch((e) => e);
    expect(sidecars.code).not.toBe(0);
    expect(sidecars.stderr).toContain('every injected sidecar holds a token for that audience');
  });

  it('logs a warning that the policy names DatabaseUser subjects while the proxy holds credentials', () => {
    const line = stderr()
      .split('\n')
      .find((l) => l.includes('DatabaseUserSubjectWithCredentials'));
    expect(line).toBeDefined();
    expect(JSON.parse(line!)).toMatchObject({ level: 'warn', policy: 'shop/orders' });
    expect(line).toContain('DatabaseUser subjects (auditor)');
  });
});
