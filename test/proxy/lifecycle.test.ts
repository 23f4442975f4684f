/**
 * Shutdown (programmatic and `dbguard proxy` on SIGTERM) and start-up errors of the command.
 */
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { UsageError } from '../../cli/flags.js';
import { run } from '../../cli/proxy.js';
import { untilActive } from '../support/activity.js';
import { until } from '../support/until.js';
import { pgConfig, server, startTestProxy, via } from './helpers.js';

const execFileAsync = promisify(execFile);

function connectWithErrors(t: { host: string; port: number }) {
  const c = new pg.Client(pgConfig(t));
  const errors: string[] = [];
  c.on('error', (e: Error & { code?: string }) => errors.push(e.code ?? e.message));
  return { c, errors };
}

describe('shutdown', () => {
  it('idle sessions end at once with 57P01, running statements finish first, new connections are refused', async () => {
    const p = await startTestProxy();
    const idle = connectWithErrors(via(p));
    const busy = connectWithErrors(via(p));
    await idle.c.connect();
    await busy.c.connect();
    const running = busy.c.query('select pg_sleep(2) as slept, 7 as v');
    await untilActive(server(), 'select pg_sleep(2) as slept, 7 as v');
    const t0 = Date.now();
    const stopping = p.shutdown(10_000);
    await until('the idle session ended', () => idle.errors.length > 0);
    expect(idle.errors[0]).toBe('57P01');
    await expect(pgConfigConnect(via(p))).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    const r = await running;
    expect(r.rows[0].v).toBe(7);
    await stopping;
    // it stopped when the running statement ended, not at the 10 s timeout (a bound, not a benchmark)
    expect(Date.now() - t0).toBeLessThan(9000);
    expect(p.activeSessions).toBe(0);
    expect(busy.errors[0]).toBe('57P01');
  });

  it('statements still running at the timeout are cut off', async () => {
    const p = await startTestProxy();
    const busy = connectWithErrors(via(p));
    await busy.c.connect();
    const running = busy.c.query('select pg_sleep(10)').catch((e) => e);
    await untilActive(server(), 'select pg_sleep(10)');
    const t0 = Date.now();
    await p.shutdown(500);
    // cut off at the 500 ms timeout instead of waiting for the 10 s statement (a bound, not a benchmark)
    expect(Date.now() - t0).toBeLessThan(8000);
    expect(await running).toBeInstanceOf(Error);
    expect(p.activeSessions).toBe(0);
  });
});

async function pgConfigConnect(t: { host: string; port: number }) {
  const c = new pg.Client(pgConfig(t));
  c.on('error', () => {});
  await c.connect();
  await c.end();
}

describe('dbguard proxy start-up errors', () => {
  let dir: string;
  let stderr: string[];
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-cli-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  async function runCli(argv: string[]) {
    stderr = [];
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      stderr.push(String(chunk));
      return true;
    });
    try {
      return await run(argv);
    } finally {
      spy.mockRestore();
    }
  }

  it('requires --policy-file unless --operator-url', async () => {
    await expect(runCli([])).rejects.toThrow(UsageError);
  });

  it('a missing policy file: exit 1, one line naming it', async () => {
    const f = path.join(dir, 'nope.yaml');
    expect(await runCli(['--policy-file', f])).toBe(1);
    expect(stderr).toHaveLength(1);
    expect(stderr[0]).toBe(`dbguard proxy: policy file ${f}: no such file\n`);
  });

  it('an invalid policy file: exit 1, one line naming it and the problem', async () => {
    const f = path.join(dir, 'bad.yaml');
    fs.writeFileSync(
      f,
      'apiVersion: dbguard.io/v1alpha1\nkind: DatabasePolicy\nmetadata: {name: x, namespace: y}\nspec: {defaultAction: Perhaps}\n',
    );
    expect(await runCli(['--policy-file', f])).toBe(1);
    expect(stderr).toHaveLength(1);
    expect(stderr[0]).toContain(f);
    expect(stderr[0]!.trim().split('\n')).toHaveLength(1);
  });

  it('a file with no DatabasePolicy: exit 1', async () => {
    const f = path.join(dir, 'empty.yaml');
    fs.writeFileSync(
      f,
      'apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: y}\nstringData: {a: b}\n',
    );
    expect(await runCli(['--policy-file', f])).toBe(1);
    expect(stderr[0]).toMatch(/DatabasePolicy/);
  });
});

describe('dbguard proxy as a process', () => {
  // Built with tsc into a directory under node_modules so that the packages resolve.
  const out = path.resolve('node_modules/.cache', `dbguard-proxy-test-${process.pid}`);
  beforeAll(async () => {
    await execFileAsync(
      'npx',
      ['tsc', '-p', 'tsconfig.build.json', '--outDir', out, '--sourceMap', 'false'],
      {
        cwd: path.resolve('.'),
      },
    ).catch(() => {
      /* type errors in modules under construction elsewhere still emit JavaScript */
    });
  }, 120_000);
  afterAll(() => fs.rmSync(out, { recursive: true, force: true }));

  it('serves with a policy file and drains on SIGTERM', async () => {
    const s = server();
    const policy = path.join(out, 'policy.yaml');
    fs.writeFileSync(
      policy,
      `apiVersion: dbguard.io/v1alpha1
kind: DatabasePolicy
metadata: {name: p, namespace: t}
spec:
  upstream: {host: ${s.host}, port: ${s.port}, sslmode: disable}
  defaultAction: Allow
`,
    );
    const child = spawn(
      process.execPath,
      [
        path.join(out, 'cli/main.js'),
        'proxy',
        '--listen',
        '127.0.0.1:0',
        '--policy-file',
        policy,
        '--shutdown-timeout',
        '10s',
      ],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let err = '';
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no listen line: ${err}`)), 20_000);
      child.stderr.on('data', (d) => {
        err += d;
        const m = /"listen":"127\.0\.0\.1:(\d+)"/.exec(err);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
      child.once('exit', (code) => reject(new Error(`exited ${code}: ${err}`)));
    });
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    const c = new pg.Client(pgConfig({ host: '127.0.0.1', port }));
    c.on('error', () => {});
    await c.connect();
    const running = c.query('select pg_sleep(0.8), 1 as one');
    await new Promise((r) => setTimeout(r, 200));
    child.kill('SIGTERM');
    expect((await running).rows[0].one).toBe(1);
    expect(await exited).toBe(0);
    for (const line of err.trim().split('\n')) expect(() => JSON.parse(line)).not.toThrow();
    expect(err).toMatch(/"msg":"signal received"/);
  }, 60_000);
});
