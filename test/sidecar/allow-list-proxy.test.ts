/**
 * Allow-lists and views through the real proxy, with real clients (issue 25): the reproductions
 * under `defaultAction: Deny` with one Allow-SELECT rule on orders (join, comma join, scalar sub-select,
 * writable CTE), over the simple and the extended protocol, SQL PREPARE/EXECUTE, cursors, COPY through
 * psql; a Deny on a table against views, views over views and a temporary view made in the session; and
 * the demo's rules turned into an allow-list still serve the demo's queries.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { TOUR } from '../../cli/demo.js';
import type { Sidecar } from '../../sidecar/runtime.js';
import { ROOT } from '../chart/paths.js';
import { compileYaml, startPolicySidecar } from '../support/policy-sidecar.js';

const DB = `allow_proxy_${process.pid}`;
const REAL_SSN = '123-45-6789';

function policyText(port: number, body: string, extra = ''): string {
  return `
apiVersion: dbguard.io/v1alpha1
kind: DatabasePolicy
metadata: {name: shop, namespace: demo}
spec:
  upstream: {host: 127.0.0.1, port: ${port}, sslmode: disable}
${body}
${extra}`;
}

async function sidecarFor(text: string): Promise<Sidecar> {
  return startPolicySidecar(inject('pg'), compileYaml(text));
}

const config = (s: Sidecar): pg.ClientConfig => ({
  host: s.proxy.host,
  port: s.proxy.port,
  user: 'app',
  password: 'app',
  database: DB,
});

async function session(s: Sidecar): Promise<pg.Client> {
  const c = new pg.Client(config(s));
  await c.connect();
  return c;
}

/** Superuser on the test database, not through any proxy. */
async function direct(sql: string): Promise<pg.QueryResult> {
  const { url } = inject('pg');
  const u = new URL(url);
  u.pathname = `/${DB}`;
  const c = new pg.Client({ connectionString: u.toString() });
  await c.connect();
  try {
    return await c.query(sql);
  } finally {
    await c.end();
  }
}

const refused = (message: RegExp | string) => ({
  code: '42501',
  message: typeof message === 'string' ? message : expect.stringMatching(message),
});

beforeAll(async () => {
  const { url } = inject('pg');
  const root = new pg.Client({ connectionString: url });
  await root.connect();
  await root.query(`drop database if exists ${DB}`);
  await root.query(`create database ${DB} owner app`);
  await root.end();
  // the demo's own shop (examples/demo/seed.sql), and views over its customers
  const u = new URL(url);
  u.pathname = `/${DB}`;
  u.username = 'app';
  u.password = 'app';
  const app = new pg.Client({ connectionString: u.toString() });
  await app.connect();
  await app.query(fs.readFileSync(path.join(ROOT, 'examples/demo/seed.sql'), 'utf8'));
  await app.query(`
    create view customer_contacts as select id, name, email from customers;
    create view contacts_v2 as select * from customer_contacts;
    create table audit (id int, what text);`);
  await app.end();
}, 60_000);

afterAll(async () => {
  const c = new pg.Client({ connectionString: inject('pg').url });
  await c.connect();
  await c.query(`drop database if exists ${DB} with (force)`);
  await c.end();
});

describe('an allow-list of one Allow-SELECT rule on orders', () => {
  let sidecar: Sidecar;
  beforeAll(async () => {
    sidecar = await sidecarFor(
      policyText(
        inject('pg').port,
        `  defaultAction: Deny
  rules:
    - name: orders-readers
      action: Allow
      match: {commands: [SELECT], objects: [public.orders]}
    - name: session
      action: Allow
      match: {commands: [BEGIN, COMMIT, ROLLBACK, SET]}
    - name: catalog
      action: Allow
      match: {commands: [SELECT], objects: ["pg_catalog.*"]}`,
      ),
    );
  });
  afterAll(async () => {
    await sidecar?.close();
  });

  const CUSTOMERS =
    'dbguard: statement denied by policy: no rule allows SELECT on public.customers (rule default)';

  it.each([
    'SELECT c.ssn FROM orders o JOIN customers c ON c.id = o.customer_id',
    'SELECT ssn FROM customers, orders',
    'SELECT (SELECT ssn FROM customers LIMIT 1) FROM orders',
    'SELECT * FROM orders WHERE customer_id IN (SELECT id FROM customers WHERE ssn LIKE $$1%$$)',
    'SELECT id FROM orders UNION ALL SELECT id FROM customers',
    'WITH c AS (SELECT ssn FROM customers) SELECT * FROM orders, c',
    'TABLE customers',
  ])('refuses %s and names the pair no rule allows; the session goes on', async (sql) => {
    const c = await session(sidecar);
    try {
      await expect(c.query(sql)).rejects.toMatchObject(refused(CUSTOMERS));
      // the extended protocol (Parse with parameters) is judged the same way
      await expect(c.query({ text: `${sql} LIMIT $1`, values: [1] })).rejects.toMatchObject(
        refused(CUSTOMERS),
      );
      const r = await c.query('SELECT count(*)::int AS n FROM orders');
      expect(r.rows[0].n).toBe(40);
    } finally {
      await c.end();
    }
  });

  it('a writable CTE under the Allow-SELECT rule deletes nothing; inside a transaction it aborts it', async () => {
    const c = await session(sidecar);
    try {
      await expect(
        c.query('WITH d AS (DELETE FROM orders WHERE id > 0 RETURNING 1) SELECT count(*) FROM orders'),
      ).rejects.toMatchObject(
        refused('dbguard: statement denied by policy: no rule allows DELETE on public.orders (rule default)'),
      );
      await c.query('BEGIN');
      await c.query('SELECT count(*) FROM orders');
      await expect(
        c.query('WITH d AS (UPDATE orders SET total_cents = 0 RETURNING 1) SELECT 1 FROM orders'),
      ).rejects.toMatchObject({ code: '42501' });
      await expect(c.query('SELECT 1 FROM orders')).rejects.toMatchObject({ code: '25P02' });
      await c.query('ROLLBACK');
    } finally {
      await c.end();
    }
    const r = await direct('SELECT count(*)::int AS n, min(total_cents)::int AS m FROM orders');
    expect(r.rows[0]).toMatchObject({ n: 40 });
    expect(r.rows[0].m).toBeGreaterThan(0);
  });

  it('SQL PREPARE, cursors, postgres.js and COPY cannot reach customers either', async () => {
    const c = await session(sidecar);
    try {
      await expect(
        c.query('PREPARE p AS SELECT c.ssn FROM orders o JOIN customers c ON c.id = o.customer_id'),
      ).rejects.toMatchObject({ code: '42501' });
      await expect(c.query('EXECUTE p')).rejects.toMatchObject({ code: '42501' });
      await c.query('BEGIN');
      await expect(c.query('DECLARE cur CURSOR FOR SELECT ssn FROM customers, orders')).rejects.toMatchObject(
        { code: '42501' },
      );
      await c.query('ROLLBACK');
    } finally {
      await c.end();
    }
    const sql = postgres({ ...config(sidecar), max: 1, onnotice: () => {} } as postgres.Options<
      Record<string, postgres.PostgresType>
    >);
    try {
      await expect(
        sql`SELECT c.ssn FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id > ${0}`,
      ).rejects.toMatchObject({
        code: '42501',
      });
      const [row] = await sql`SELECT count(*)::int AS n FROM orders WHERE id > ${0}`;
      expect(row!.n).toBe(40);
    } finally {
      await sql.end();
    }
    const s = config(sidecar);
    const out = await promisify(execFile)(
      'psql',
      [
        `postgres://app:app@${s.host}:${s.port}/${DB}`,
        '-X',
        '-c',
        'COPY (SELECT c.ssn FROM orders o JOIN customers c ON c.id = o.customer_id) TO STDOUT',
      ],
      { encoding: 'utf8' },
    ).catch((e: { stdout: string; stderr: string }) => e);
    expect(out.stdout).not.toContain(REAL_SSN);
    expect(out.stderr).toContain('no rule allows');
  });
});

describe('a Deny on a table, against views', () => {
  let sidecar: Sidecar;
  beforeAll(async () => {
    sidecar = await sidecarFor(
      policyText(
        inject('pg').port,
        `  defaultAction: Allow
  rules:
    - name: no-customers
      action: Deny
      match: {commands: [SELECT], objects: [public.customers]}
      message: customers are off limits`,
      ),
    );
  });
  afterAll(async () => {
    await sidecar?.close();
  });
  const NO = 'dbguard: customers are off limits (rule no-customers)';

  it('matches reads through a view, a view over it, a join with it, and a temporary view made in the session', async () => {
    const c = await session(sidecar);
    try {
      for (const sql of [
        'SELECT * FROM customer_contacts',
        'SELECT * FROM contacts_v2',
        'SELECT o.id, v.email FROM orders o JOIN customer_contacts v ON v.id = o.customer_id',
      ])
        await expect(c.query(sql), sql).rejects.toMatchObject(refused(NO));
      // a temporary view over the view, in one message and then read in the next: the proxy re-reads
      // the catalog after the DDL and sees what the new view reads
      await expect(c.query('CREATE TEMP VIEW tv AS SELECT * FROM contacts_v2')).rejects.toMatchObject(
        refused(NO),
      );
      const r = await c.query('SELECT count(*)::int AS n FROM orders');
      expect(r.rows[0].n).toBe(40);
    } finally {
      await c.end();
    }
  });

  it('a table and a view another session made after this one read the catalog are seen for what they are', async () => {
    const c = await session(sidecar);
    try {
      expect((await c.query('SELECT count(*)::int AS n FROM orders')).rows[0].n).toBe(40);
      await direct(`CREATE TABLE made_later (id int); GRANT ALL ON made_later TO app;
        CREATE VIEW made_later_v AS SELECT * FROM contacts_v2; GRANT SELECT ON made_later_v TO app`);
      // unknown to this session's snapshot: the proxy re-reads the catalog instead of guessing
      expect((await c.query('SELECT count(*)::int AS n FROM made_later')).rows[0].n).toBe(0);
      await expect(c.query('SELECT * FROM made_later_v')).rejects.toMatchObject(refused(NO));
    } finally {
      await c.end();
      await direct('DROP VIEW made_later_v; DROP TABLE made_later');
    }
  });

  it('a temporary view of the session over allowed tables works; joined with a view over customers it is refused', async () => {
    const c = await session(sidecar);
    try {
      await c.query('CREATE TEMP VIEW tv_orders AS SELECT id FROM orders');
      expect((await c.query('SELECT count(*)::int AS n FROM tv_orders')).rows[0].n).toBe(40);
      await expect(c.query('SELECT * FROM tv_orders, contacts_v2')).rejects.toMatchObject(refused(NO));
    } finally {
      await c.end();
    }
  });
});

describe("the demo's rules as an allow-list still serve the demo's queries", () => {
  let sidecar: Sidecar;
  beforeAll(async () => {
    const demo = fs.readFileSync(path.join(ROOT, 'examples/demo/policy.yaml'), 'utf8');
    // the demo's MaskingRule and Secret, bound to this allow-list
    const masking = demo.slice(demo.indexOf('\n---\n'));
    sidecar = await sidecarFor(
      policyText(
        inject('pg').port,
        `  defaultAction: Deny
  rules:
    - name: no-destructive-ddl
      action: Deny
      match: {commands: ["DROP *", "TRUNCATE TABLE", "ALTER *"]}
      message: "Schema changes go through migrations."
    - name: no-unbounded-deletes
      action: Deny
      match: {commands: [DELETE, UPDATE], withoutWhere: true}
      message: "UPDATE and DELETE need a WHERE clause."
    - name: session
      action: Allow
      match: {commands: [SET, SHOW, BEGIN, COMMIT, ROLLBACK]}
    - name: read-shop
      action: Allow
      match: {commands: [SELECT], objects: [public.customers, public.orders]}
    - name: write-orders
      action: Allow
      match: {commands: [INSERT, UPDATE, DELETE], objects: [public.orders]}`,
        masking,
      ),
    );
  });
  afterAll(async () => {
    await sidecar?.close();
  });

  it('masked reads, the allowed aggregate and joins run; DROP and unbounded writes are refused by their rules', async () => {
    const c = await session(sidecar);
    try {
      const [masked, drop, allowed] = TOUR;
      const m = await c.query(masked!.sql);
      expect(m.rows).toHaveLength(3);
      expect(m.rows[0]).toMatchObject({ email: 'a***@example.org', ssn: '****' });
      await expect(c.query(drop!.sql)).rejects.toMatchObject(
        refused('dbguard: Schema changes go through migrations. (rule no-destructive-ddl)'),
      );
      expect((await c.query(allowed!.sql)).rows.length).toBe(2);
      const j = await c.query(
        'SELECT o.id, c.ssn FROM orders o JOIN customers c ON c.id = o.customer_id ORDER BY o.id LIMIT 2',
      );
      expect(j.rows.map((r) => r.ssn)).toEqual(['****', '****']);
      await c.query('BEGIN');
      expect((await c.query("UPDATE orders SET status = 'paid' WHERE id = 1")).rowCount).toBe(1);
      await c.query('ROLLBACK');
      // issue 23: a MERGE or a constant-true WHERE is as unbounded as no WHERE at all
      for (const sql of [
        'DELETE FROM orders',
        'DELETE FROM orders WHERE true',
        'DELETE FROM orders WHERE 1 = 1 OR id = 3',
        'MERGE INTO orders o USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE',
        'MERGE INTO orders o USING (SELECT 1) s ON true WHEN MATCHED THEN UPDATE SET total_cents = 0',
      ])
        await expect(c.query(sql), sql).rejects.toMatchObject(refused(/rule no-unbounded-deletes/));
      expect((await direct('SELECT count(*)::int AS n FROM orders WHERE total_cents > 0')).rows[0].n).toBe(
        40,
      );
      // the allow-list does not name audit: nothing is written there
      await expect(c.query("INSERT INTO audit VALUES (1, 'x')")).rejects.toMatchObject(
        refused('dbguard: statement denied by policy: no rule allows INSERT on public.audit (rule default)'),
      );
    } finally {
      await c.end();
    }
  });
});

describe('issue 23: a rule on reading orders, and on unbounded writes, whatever form the statement takes', () => {
  let sidecar: Sidecar;
  beforeAll(async () => {
    sidecar = await sidecarFor(
      policyText(
        inject('pg').port,
        `  defaultAction: Allow
  rules:
    - name: no-orders-reads
      action: Deny
      match: {commands: [SELECT], objects: [public.orders]}
    - name: no-unbounded
      action: Deny
      match: {commands: [DELETE, UPDATE], withoutWhere: true}`,
      ),
    );
  });
  afterAll(async () => {
    await sidecar?.close();
  });

  it('reads through COPY, RETURNING, INSERT ... SELECT, MERGE USING, CTEs and sub-selects are refused and change nothing', async () => {
    const c = await session(sidecar);
    try {
      for (const sql of [
        'UPDATE orders SET status = status WHERE id = 1 RETURNING total_cents',
        'INSERT INTO audit SELECT id, status FROM orders',
        'MERGE INTO audit a USING orders o ON a.id = o.id WHEN NOT MATCHED THEN INSERT VALUES (o.id, o.status)',
        'WITH x AS (SELECT * FROM orders) UPDATE audit SET what = x.status FROM x WHERE audit.id = x.id RETURNING x.status',
        'UPDATE audit SET what = (SELECT status FROM orders LIMIT 1) WHERE id > 0',
        'CREATE TABLE stolen AS SELECT * FROM orders',
      ])
        await expect(c.query(sql), sql).rejects.toMatchObject(refused(/\(rule no-orders-reads\)$/));
      await expect(
        c.query('MERGE INTO orders o USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE'),
      ).rejects.toMatchObject(refused(/\(rule no-unbounded\)$/));
      // writes that read nothing of orders still run
      await c.query('BEGIN');
      expect((await c.query('INSERT INTO orders (customer_id, total_cents) VALUES (1, 100)')).rowCount).toBe(
        1,
      );
      await c.query('ROLLBACK');
    } finally {
      await c.end();
    }
    const s = config(sidecar);
    const out = await promisify(execFile)(
      'psql',
      [`postgres://app:app@${s.host}:${s.port}/${DB}`, '-X', '-c', 'COPY orders TO STDOUT'],
      { encoding: 'utf8' },
    ).catch((e: { stdout: string; stderr: string }) => e);
    expect(out.stdout).toBe('');
    expect(out.stderr).toContain('rule no-orders-reads');
    const r = await direct(
      "SELECT (SELECT count(*)::int FROM orders) AS orders, (SELECT count(*)::int FROM audit) AS audit, to_regclass('stolen') IS NULL AS none",
    );
    expect(r.rows[0]).toEqual({ orders: 40, audit: 0, none: true });
  });
});
