/**
 * pgbench through the proxy: initialise (COPY and DDL) and run the select-only script with the
 * simple, extended and prepared protocols; no transaction may fail.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { direct, pgClient, startTestProxy, type TestProxy, uniq } from './helpers.js';

const execFileAsync = promisify(execFile);
let proxy: TestProxy;
const db = uniq('pgbench');

beforeAll(async () => {
  proxy = await startTestProxy();
  const c = await pgClient(direct(), 'postgres', 'postgres', 'postgres');
  await c.query(`create database ${db} owner app`);
  await c.end();
});
afterAll(async () => {
  await proxy.close();
  const c = await pgClient(direct(), 'postgres', 'postgres', 'postgres');
  await c.query(`drop database if exists ${db} with (force)`);
  await c.end();
});

function pgbench(args: string[]) {
  return execFileAsync('pgbench', ['-h', proxy.host, '-p', String(proxy.port), '-U', 'app', ...args, db], {
    env: { ...process.env, PGPASSWORD: 'app' },
    maxBuffer: 16 << 20,
  });
}

/** `pgbench -i` through the proxy, once per file, by whichever test needs it first (each runs alone too). */
let initialised: Promise<unknown> | undefined;
const init = () => {
  initialised ??= pgbench(['-i', '-s', '1', '-q']);
  return initialised;
};

describe('pgbench', () => {
  it('initialises scale 1 through the proxy', async () => {
    await init();
    const c = await pgClient(direct(), 'app', 'app', db);
    const r = await c.query('select count(*)::int as n from pgbench_accounts');
    expect(r.rows[0].n).toBe(100000);
    await c.end();
  });

  it.each(['simple', 'extended', 'prepared'])('-S -M %s runs with zero failed transactions', async (mode) => {
    await init();
    const { stdout } = await pgbench(['-S', '-M', mode, '-c', '4', '-j', '2', '-t', '250', '-n']);
    expect(stdout).toMatch(/number of transactions actually processed: 1000\/1000/);
    expect(stdout).toMatch(/number of failed transactions: 0 /);
  });
});
