/**
 * The benchmark's own pieces against the real test server: the wire client counts rows and reports
 * errors, the pgbench runner parses TPS and latency percentiles, the policies it enforces compile,
 * and the statistics are right. (The full run is `npm run bench`; it is too long for the suite.)
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { loadPolicyFiles } from '../policy/load.js';
import { runPgbench } from './pgbench.js';
import { manyRulesPolicy, realisticPolicy } from './policy.js';
import { median, percentile, table } from './stats.js';
import { WireClient } from './wire-client.js';

const pg = inject('pg');
const db = `bench_${randomBytes(4).toString('hex')}`;
const psql = (sql: string, database = 'postgres') =>
  execFileSync(
    'psql',
    [
      '-X',
      '-q',
      '-v',
      'ON_ERROR_STOP=1',
      '-h',
      pg.host,
      '-p',
      String(pg.port),
      '-U',
      'postgres',
      '-d',
      database,
      '-c',
      sql,
    ],
    {
      env: { ...process.env, PGPASSWORD: pg.password },
      stdio: 'pipe',
    },
  );

describe('bench statistics', () => {
  it('takes nearest-rank percentiles and medians', () => {
    const v = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(v, 0.5)).toBe(50);
    expect(percentile(v, 0.99)).toBe(99);
    expect(percentile([], 0.5)).toBeNaN();
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 2, 3])).toBe(2.5);
    expect(median([Number.NaN, 5])).toBe(5);
  });

  it('renders a Markdown table with right-aligned figures', () => {
    expect(table(['a', 'n'], [['x', 12]]).split('\n')).toEqual(['| a |  n |', '|---|---:|', '| x | 12 |']);
  });
});

describe('bench policies', () => {
  it('the realistic policy compiles with its rules and masked columns', () => {
    const res = loadPolicyFiles([{ name: 'p.yaml', text: realisticPolicy(5432, 'None') }], 'bench/app');
    if (!res.ok) throw new Error(res.errors.join('\n'));
    expect(res.compiled.rules.length).toBeGreaterThanOrEqual(5);
    expect(res.compiled.audit.statements).toBe('None');
    expect(res.compiled.masking[0]!.columns.map((c) => c.column)).toContain('email');
  });

  it('the many-rules policy compiles at the schema limit', () => {
    const res = loadPolicyFiles([{ name: 'big.yaml', text: manyRulesPolicy(250, 'big0') }], 'bench/big0');
    if (!res.ok) throw new Error(res.errors.join('\n'));
    expect(res.compiled.rules).toHaveLength(250);
  });
});

describe('bench wire client and pgbench runner (real server)', () => {
  beforeAll(() => {
    psql(`CREATE DATABASE ${db} OWNER app`);
    execFileSync('pgbench', ['-i', '-q', '-s', '1', '-h', pg.host, '-p', String(pg.port), '-U', 'app', db], {
      env: { ...process.env, PGPASSWORD: 'app' },
      stdio: 'pipe',
    });
  });
  afterAll(() => {
    psql(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  });

  it('counts rows and bytes of a simple query without decoding them', async () => {
    const c = await WireClient.connect({ host: pg.host, port: pg.port, user: 'trustuser', database: db });
    try {
      const r = await c.query('SELECT g, repeat($$x$$, 10) FROM generate_series(1, 5000) g');
      expect(r.rows).toBe(5000);
      expect(r.commandTag).toBe('SELECT 5000');
      expect(r.bytes).toBeGreaterThan(5000 * 10);
      await expect(c.query('SELECT * FROM no_such_table')).rejects.toThrow(/42P01/);
      expect((await c.query('SELECT 1')).rows).toBe(1); // still usable after an error
    } finally {
      c.close();
    }
  });

  it('logs in with md5 and reports a refused login clearly', async () => {
    const ok = await WireClient.connect({
      host: pg.host,
      port: pg.port,
      user: 'md5user',
      password: 'md5pass',
      database: db,
    });
    ok.close();
    await expect(
      WireClient.connect({ host: pg.host, port: pg.port, user: 'md5user', password: 'wrong', database: db }),
    ).rejects.toThrow(/login failed: FATAL 28P01/);
  });

  it('runs pgbench -S and reads TPS and latency percentiles from its log', async () => {
    const r = await runPgbench({
      port: pg.port,
      mode: 'prepared',
      clients: 2,
      seconds: 1,
      user: 'app',
      password: 'app',
      database: db,
    });
    expect(r.tps).toBeGreaterThan(0);
    expect(r.transactions).toBeGreaterThan(10);
    expect(r.p50).toBeGreaterThan(0);
    expect(r.p99).toBeGreaterThanOrEqual(r.p50);
  });

  it('fails clearly when pgbench cannot connect', async () => {
    await expect(
      runPgbench({
        port: pg.port,
        mode: 'simple',
        clients: 1,
        seconds: 1,
        user: 'app',
        password: 'wrong',
        database: db,
      }),
    ).rejects.toThrow(/pgbench failed/);
  });
});
