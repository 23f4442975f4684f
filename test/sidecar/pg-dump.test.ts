/**
 * A masked copy of production (issue 23 item 4): pg_dump through dbguard as a masked subject writes a
 * dump whose masked columns hold masked values, in every format, and it restores into an empty database.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Sidecar } from '../../sidecar/runtime.js';
import { adminQuery } from '../support/admin.js';
import { leakDetector } from '../support/leaks.js';
import { compileYaml, startPolicySidecar } from '../support/policy-sidecar.js';

const run = promisify(execFile);
const DB = `dumpsrc_${process.pid}`;
const SECRETS = ['zq.vyx@example.org', '987-65-4321', 'kx.wqj@example.net', '876-54-3210'];
const leaks = leakDetector(SECRETS, { shown: ['z***@example.org', 'k***@example.net'] });

describe('a masked pg_dump through the proxy', () => {
  const server = inject('pg');
  let sidecar: Sidecar;
  let dir: string;
  const proxyUrl = () => `postgres://app:app@${sidecar.proxy.host}:${sidecar.proxy.port}/${DB}`;
  const directUrl = (db: string) => `postgres://postgres:postgres@${server.host}:${server.port}/${db}`;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-dump-'));
    fs.chmodSync(dir, 0o777);
    await adminQuery(server, `DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`, 'postgres');
    await adminQuery(server, `CREATE DATABASE ${DB} OWNER app`, 'postgres');
    await adminQuery(
      server,
      `SET ROLE app;
       CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text, ssn text NOT NULL);
       CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers, total int);
       CREATE VIEW order_totals AS SELECT customer_id, sum(total) AS total FROM orders GROUP BY customer_id;
       INSERT INTO customers VALUES (1, 'Zed', 'zq.vyx@example.org', '987-65-4321'),
                                    (2, 'Kay', 'kx.wqj@example.net', '876-54-3210');
       INSERT INTO orders VALUES (10, 1, 5), (11, 2, 7);`,
      DB,
    );
    const policy = compileYaml(`
apiVersion: dbguard.io/v1alpha1
kind: DatabasePolicy
metadata: {name: dump, namespace: shop}
spec:
  upstream: {host: 127.0.0.1, port: ${server.port}, sslmode: disable}
  defaultAction: Allow
---
apiVersion: dbguard.io/v1alpha1
kind: MaskingRule
metadata: {name: pii, namespace: shop}
spec:
  policyRef: {name: dump}
  columns:
    - {table: customers, column: email, strategy: Email}
    - {table: customers, column: ssn, strategy: Redact}
`);
    sidecar = await startPolicySidecar(server, policy);
  }, 60_000);

  afterAll(async () => {
    await sidecar?.close();
    fs.rmSync(dir, { recursive: true, force: true });
    await adminQuery(server, `DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`, 'postgres');
  });

  async function restoredRows(db: string) {
    const r = await adminQuery(server, 'SELECT id, name, email, ssn FROM customers ORDER BY id', db);
    return r.rows;
  }

  it('plain format: masked values in the dump, and it restores into an empty database', async () => {
    const out = path.join(dir, 'plain.sql');
    await run('pg_dump', ['--no-owner', '-f', out, proxyUrl()]);
    const text = fs.readFileSync(out, 'utf8');
    expect(leaks(text)).toEqual([]);
    expect(text).toContain('z***@example.org');
    const target = `dumpdst_plain_${process.pid}`;
    await adminQuery(server, `DROP DATABASE IF EXISTS ${target}`, 'postgres');
    await adminQuery(server, `CREATE DATABASE ${target}`, 'postgres');
    try {
      await run('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', out, directUrl(target)]);
      expect(await restoredRows(target)).toEqual([
        { id: 1, name: 'Zed', email: 'z***@example.org', ssn: '****' },
        { id: 2, name: 'Kay', email: 'k***@example.net', ssn: '****' },
      ]);
      const orders = await adminQuery(server, 'SELECT count(*)::int AS n FROM order_totals', target);
      expect(orders.rows[0].n).toBe(2);
    } finally {
      await adminQuery(server, `DROP DATABASE IF EXISTS ${target} WITH (FORCE)`, 'postgres');
    }
  });

  it.each([
    ['custom', ['-Fc'], false],
    ['directory, 2 jobs', ['-Fd', '-j', '2'], true],
  ])('%s format restores with pg_restore', async (name, flags, isDir) => {
    const out = path.join(dir, name.replace(/\W+/g, '_'));
    await run('pg_dump', ['--no-owner', ...flags, '-f', out, proxyUrl()]);
    // the archive's data, as pg_restore prints it, holds masks only
    const { stdout } = await run('pg_restore', ['-f', '-', out], { maxBuffer: 16 << 20 });
    expect(leaks(stdout)).toEqual([]);
    expect(stdout).toContain('k***@example.net');
    expect(isDir ? fs.statSync(out).isDirectory() : fs.statSync(out).isFile()).toBe(true);
    const target = `dumpdst_${name.replace(/\W+/g, '_')}_${process.pid}`;
    await adminQuery(server, `DROP DATABASE IF EXISTS ${target}`, 'postgres');
    await adminQuery(server, `CREATE DATABASE ${target}`, 'postgres');
    try {
      await run('pg_restore', ['--no-owner', '-d', directUrl(target), out]);
      const rows = await restoredRows(target);
      expect(rows.map((r) => r.ssn)).toEqual(['****', '****']);
      expect(leaks(JSON.stringify(rows))).toEqual([]);
    } finally {
      await adminQuery(server, `DROP DATABASE IF EXISTS ${target} WITH (FORCE)`, 'postgres');
    }
  });

  it('--schema-only, --data-only and -t work', async () => {
    const schema = (await run('pg_dump', ['--schema-only', proxyUrl()])).stdout;
    expect(schema).toContain('CREATE TABLE public.customers');
    const data = (await run('pg_dump', ['--data-only', '-t', 'customers', proxyUrl()])).stdout;
    expect(data).toContain('z***@example.org');
    expect(data).not.toContain('CREATE TABLE');
    expect(leaks(schema + data)).toEqual([]);
  });
});
