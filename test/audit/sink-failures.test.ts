/**
 * A dead audit sink, with the real `dbguard proxy` process and real pipes: standard output whose
 * reader exits (`dbguard proxy 2>&1 | head -n 3`: EPIPE, and the operational log on the same broken
 * pipe), a pipe whose reader never reads (stalled), a full disk (/dev/full: ENOSPC) and a log the
 * process may not create (EACCES). Each time: sessions get a clear error instead of running
 * unaudited or hanging, /readyz says why, the metric counts it, the process does not spin, and one
 * SIGTERM ends it.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { CLI } from '../chart/paths.js';
import { freePort } from '../support/pg-cluster.js';
import { until } from '../support/until.js';

const server = inject('pg');
let tmp: string;
let policyFile: string;
const started: ChildProcess[] = [];

beforeAll(() => {
  if (!fs.existsSync(CLI)) throw new Error('run `npm run build` first: the test drives the built CLI');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-sink-'));
  fs.chmodSync(tmp, 0o755);
  policyFile = path.join(tmp, 'policy.yaml');
  // No sslmode: the default (prefer) against the test server, which has no TLS.
  fs.writeFileSync(
    policyFile,
    [
      'apiVersion: dbguard.io/v1alpha1',
      'kind: DatabasePolicy',
      'metadata: {name: shop, namespace: demo}',
      'spec:',
      `  upstream: {host: ${server.host}, port: ${server.port}}`,
      '  defaultAction: Allow',
      '  audit: {statements: All}',
      '',
    ].join('\n'),
  );
});

afterEach(() => {
  // Each case runs in its own process group (sh -c ...): end what is left of it, by its id.
  for (const c of started.splice(0)) {
    try {
      process.kill(-c.pid!, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface Running {
  pid: number;
  port: number;
  metrics: number;
  logFile: string;
}

/**
 * `sh -c` a pipeline around `dbguard proxy`: `{proxy}` in `shape` is replaced by the command, which
 * runs in a subshell that records its pid (the pipe is the subshell's standard output).
 */
async function startPipeline(shape: string, extra: string[] = []): Promise<Running> {
  const port = await freePort();
  const metrics = await freePort();
  const pidFile = path.join(tmp, `pid-${port}`);
  const logFile = path.join(tmp, `log-${port}`);
  const args = [
    CLI,
    'proxy',
    '--listen',
    `127.0.0.1:${port}`,
    '--policy-file',
    policyFile,
    '--metrics-listen',
    `127.0.0.1:${metrics}`,
    '--shutdown-timeout',
    '3s',
    ...extra,
  ];
  const cmd = `(${[process.execPath, ...args].map((a) => `'${a}'`).join(' ')} & echo $! > '${pidFile}'; wait)`;
  const sh = spawn('sh', ['-c', shape.replace('{proxy}', cmd).replace('{log}', `'${logFile}'`)], {
    detached: true,
    stdio: 'ignore',
  });
  started.push(sh);
  const pid = await until('the proxy pid', () => {
    const t = fs.existsSync(pidFile) ? fs.readFileSync(pidFile, 'utf8').trim() : '';
    return t ? Number(t) : undefined;
  });
  await until('the proxy listening', async () => (await fetchText(metrics, '/healthz'))?.status === 200);
  return { pid, port, metrics, logFile };
}

async function fetchText(port: number, p: string): Promise<{ status: number; body: string } | undefined> {
  try {
    const r = await fetch(`http://127.0.0.1:${port}${p}`, { signal: AbortSignal.timeout(2000) });
    return { status: r.status, body: await r.text() };
  } catch {
    return undefined;
  }
}

/** One statement on a new connection: its error, or null; never waits more than 5 s. */
async function tryStatement(port: number, sql = 'SELECT 1'): Promise<(Error & { code?: string }) | null> {
  const c = new pg.Client({
    host: '127.0.0.1',
    port,
    user: 'app',
    password: 'app',
    database: 'app',
    connectionTimeoutMillis: 5000,
    query_timeout: 5000,
  });
  c.on('error', () => {});
  try {
    await c.connect();
    await c.query(sql);
    return null;
  } catch (err) {
    return err as Error & { code?: string };
  } finally {
    await c.end().catch(() => {});
  }
}

/** Statements until one is refused; that refusal. */
async function firstRefusal(port: number): Promise<Error & { code?: string }> {
  return until('a refused statement', () => tryStatement(port).then((e) => e ?? undefined), 20_000);
}

/** CPU seconds (user + system) the process used so far. */
function cpuSeconds(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime (fields 14, 15), in ticks of 1/100 s
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** Sends one SIGTERM and returns how long the process took to exit. */
async function sigterm(pid: number): Promise<number> {
  const t0 = Date.now();
  process.kill(pid, 'SIGTERM');
  await until('the proxy to exit after one SIGTERM', () => !alive(pid), 10_000);
  return Date.now() - t0;
}

/** What every dead sink must give: clear refusals, /readyz, the metric, no spinning, a prompt exit. */
async function expectFailsClosed(r: Running, reason: RegExp): Promise<void> {
  const refused = await firstRefusal(r.port);
  expect(refused.code).toBe('42501');
  expect(refused.message).toMatch(
    /^dbguard: the audit log cannot be written \(audit log .*\), so every statement is refused \(fail closed\)/,
  );
  expect(refused.message).toMatch(reason);
  // Refused at once, connection after connection: nothing waits on the sink.
  const t0 = Date.now();
  for (let i = 0; i < 3; i++) expect((await tryStatement(r.port))?.message).toMatch(reason);
  expect(Date.now() - t0).toBeLessThan(3000);

  const ready = await fetchText(r.metrics, '/readyz');
  expect(ready?.status).toBe(503);
  expect(JSON.parse(ready!.body).reasons.join(' ')).toMatch(reason);
  const text = (await fetchText(r.metrics, '/metrics'))!.body;
  expect(Number(/^dbguard_audit_write_errors_total (\d+)/m.exec(text)?.[1])).toBeGreaterThanOrEqual(1);
  expect(
    Number(
      /^dbguard_denied_queries_total\{policy="demo\/shop",rule="\(audit\)",reason="audit"\} (\d+)/m.exec(
        text,
      )?.[1],
    ),
  ).toBeGreaterThanOrEqual(4);

  // No spinning: over two idle seconds the process uses a small part of one core.
  const cpu0 = cpuSeconds(r.pid);
  await new Promise((res) => setTimeout(res, 2000));
  expect(cpuSeconds(r.pid) - cpu0).toBeLessThan(0.4);

  expect(await sigterm(r.pid)).toBeLessThan(6000);
}

describe('a dead audit sink fails closed and stays stoppable', () => {
  it('EPIPE: `dbguard proxy 2>&1 | head -n 3` after head exits', async () => {
    const r = await startPipeline('{proxy} 2>&1 | head -n 3 > /dev/null');
    await expectFailsClosed(r, /EPIPE/);
  });

  it('a stalled pipe (its reader never reads): refused after --audit-stall-timeout; prepared sessions end', async () => {
    const r = await startPipeline('{proxy} 2> {log} | sleep 600', ['--audit-stall-timeout', '1s']);
    // A session that holds a named prepared statement before the sink stalls.
    const held = new pg.Client({
      host: '127.0.0.1',
      port: r.port,
      user: 'app',
      password: 'app',
      database: 'app',
    });
    // Ended while idle: the FATAL arrives unasked, as an 'error' event.
    const heldEnded = new Promise<Error>((resolve) => held.on('error', resolve));
    await held.connect();
    const prepared = { name: 'held', text: 'SELECT $1::int AS n', values: [1] };
    expect((await held.query(prepared)).rows).toEqual([{ n: 1 }]);

    // Fill the pipe: one client, statements until the sink counts as stalled.
    const filler = new pg.Client({
      host: '127.0.0.1',
      port: r.port,
      user: 'app',
      password: 'app',
      database: 'app',
    });
    await filler.connect();
    const pad = 'x'.repeat(2000);
    let refusal: Error | undefined;
    const deadline = Date.now() + 20_000;
    while (!refusal && Date.now() < deadline) {
      refusal = await filler.query(`SELECT '${pad}' AS padding_${Date.now()}`).then(
        () => undefined,
        (e: Error) => e,
      );
    }
    await filler.end().catch(() => {});
    expect(refusal?.message).toMatch(/stalled, a write has not finished/);
    // The prepared statement is not judged again at Execute: its session was ended instead.
    expect((await heldEnded).message).toMatch(/audit log cannot be written .*held prepared statements/);
    await expectFailsClosed(r, /stalled/);
    expect(fs.readFileSync(r.logFile, 'utf8')).toMatch(/"msg":"audit log down: statements are refused/);
  });

  it('ENOSPC: --audit-log /dev/full is retried, statements are refused meanwhile', async () => {
    const r = await startPipeline('{proxy} > /dev/null 2> {log}', ['--audit-log', '/dev/full']);
    await expectFailsClosed(r, /ENOSPC.*\(retrying\)/);
  });

  it('EACCES: a log the process may not create stops the start with one line', async () => {
    const dir = path.join(tmp, 'root-only');
    fs.mkdirSync(dir, { mode: 0o755 });
    const asRoot = process.getuid?.() === 0;
    if (!asRoot) fs.chmodSync(dir, 0o555);
    const args = [CLI, 'proxy', '--policy-file', policyFile, '--audit-log', path.join(dir, 'audit.log')];
    // As root, run as the `postgres` user the test cluster uses, for whom the directory is read-only.
    const argv = asRoot
      ? ['runuser', '-u', 'postgres', '--', process.execPath, ...args]
      : [process.execPath, ...args];
    let stderr = '';
    let code = 0;
    try {
      execFileSync(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], timeout: 20_000 });
    } catch (err) {
      stderr = String((err as { stderr?: Buffer }).stderr ?? '');
      code = (err as { status?: number }).status ?? -1;
    }
    expect(code).toBe(1);
    expect(stderr.trim().split('\n')).toEqual([
      expect.stringMatching(/^dbguard proxy: audit log .*audit\.log: EACCES: permission denied/),
    ]);
  });
});
