/**
 * Routes around masking, attempted through the real proxy with real clients, the way an attacker
 * would: across several messages of one session (search_path changes, objects created in the session,
 * cursors, SQL-level PREPARE), through the extended protocol (pg with parameters, postgres.js), COPY,
 * error details, notices and transactions. Each asserts that no seeded real value reaches the masked
 * client anywhere, and that the exempt client still sees them.
 */
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import { promisify } from 'node:util';
import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { CompiledPolicy } from '../../api/compiled.js';
import type { Sidecar } from '../../sidecar/runtime.js';
import { installHashKeys } from '../support/hash-key.js';
import { leakDetector } from '../support/leaks.js';
import { compileYaml, startPolicySidecar } from '../support/policy-sidecar.js';

const SCHEMA = 'atk';
// Seeded real values: none of these may ever reach the masked client.
const SALT = 'S4LT-do-not-leak';
const SECRETS = [
  SALT,
  'ada.lovelace@example.org',
  '123-45-6789',
  '4111111111111111',
  'grace.hopper@example.com',
  '234-56-7890',
  '5500000000000004',
];

function policy(port: number): CompiledPolicy {
  const text = `
apiVersion: dbguard.io/v1alpha1
kind: DatabasePolicy
metadata: {name: atk, namespace: shop}
spec:
  upstream: {host: 127.0.0.1, port: ${port}, sslmode: disable}
  defaultAction: Allow
---
apiVersion: dbguard.io/v1alpha1
kind: MaskingRule
metadata: {name: pii, namespace: shop}
spec:
  policyRef: {name: atk}
  columns:
    - {table: ${SCHEMA}.customers, column: email, strategy: Email}
    - {table: ${SCHEMA}.customers, column: ssn, strategy: Redact}
    - {table: ${SCHEMA}.customers, column: card, strategy: Partial, partial: {keepLast: 4}}
    - {table: ${SCHEMA}.customers, column: name, strategy: Hash, hash: {saltSecretRef: {name: salt, key: salt}}}
  exemptSubjects: [{kind: DatabaseUser, name: postgres}]
---
apiVersion: v1
kind: Secret
metadata: {name: salt, namespace: shop}
stringData: {salt: ${SALT}}
`;
  return compileYaml(text);
}

/** Everything a client received, as one string: rows, errors with every field, notices. */
/** what the masks show on purpose (and names the output carries): not leaks */
const leaks = leakDetector(SECRETS, {
  shown: ['a***@example.org', 'g***@example.com', '************1111', '************0004', 'not-null', 'leak'],
});

describe('masking through the proxy', () => {
  const server = inject('pg');
  let sidecar: Sidecar;

  beforeAll(async () => {
    const admin = new pg.Client({
      host: server.host,
      port: server.port,
      user: 'postgres',
      password: 'postgres',
      database: 'app',
    });
    await admin.connect();
    await admin.query(`
      DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE; DROP SCHEMA IF EXISTS atk_evil CASCADE;
      CREATE SCHEMA ${SCHEMA}; CREATE SCHEMA atk_evil;
      CREATE TABLE ${SCHEMA}.customers (id int PRIMARY KEY, name text NOT NULL, email text UNIQUE, ssn text, card text);
      INSERT INTO ${SCHEMA}.customers VALUES
        (1, 'Ada', 'ada.lovelace@example.org', '123-45-6789', '4111111111111111'),
        (2, 'Grace', 'grace.hopper@example.com', '234-56-7890', '5500000000000004');
      GRANT USAGE, CREATE ON SCHEMA ${SCHEMA}, atk_evil TO app;
      GRANT ALL ON ALL TABLES IN SCHEMA ${SCHEMA} TO app;
      CREATE VIEW ${SCHEMA}.customer_view AS SELECT * FROM ${SCHEMA}.customers;
      GRANT SELECT ON ${SCHEMA}.customer_view TO app;
      ANALYZE ${SCHEMA}.customers;`);
    await admin.end();
    await installHashKeys(server, 'app', { 'shop/salt/salt': SALT });
    sidecar = await startPolicySidecar(server, policy(server.port));
  });

  afterAll(async () => {
    await sidecar?.close();
  });

  const client = async (user = 'app', password = 'app') => {
    const c = new pg.Client({
      host: sidecar.proxy.host,
      port: sidecar.proxy.port,
      user,
      password,
      database: 'app',
    });
    const notices: string[] = [];
    c.on('notice', (n) => notices.push(JSON.stringify({ ...n, message: n.message })));
    await c.connect();
    return { c, notices };
  };

  /** Run statements one message at a time; collect everything the client saw. */
  async function attempt(
    statements: (string | { text: string; values: unknown[] })[],
    as: [string, string] = ['app', 'app'],
  ): Promise<string> {
    const { c, notices } = await client(...as);
    const seen: string[] = [];
    for (const s of statements) {
      try {
        const r = await c.query(s as string);
        seen.push(JSON.stringify(Array.isArray(r) ? r.map((x) => x.rows) : r.rows));
      } catch (e) {
        seen.push(JSON.stringify({ ...(e as object), message: (e as Error).message }));
      }
    }
    await c.end().catch(() => {});
    return seen.join('\n') + notices.join('\n');
  }

  it.each([
    [
      'SET search_path in one message, read in the next',
      [`SET search_path = ${SCHEMA}`, 'SELECT * FROM customers'],
    ],
    [
      'search_path via set_config, then a read',
      [`SELECT set_config('search_path', '${SCHEMA},public', false)`, 'SELECT email, ssn FROM customers'],
    ],
    [
      'a same-named view in a schema earlier in the path, created in the session',
      [
        `CREATE VIEW atk_evil.customers AS SELECT * FROM ${SCHEMA}.customers`,
        `SET search_path = atk_evil, ${SCHEMA}`,
        'SELECT * FROM customers',
        'SELECT * FROM atk_evil.customers',
      ],
    ],
    [
      'a temp table copy, then a read',
      [
        `CREATE TEMP TABLE t AS SELECT * FROM ${SCHEMA}.customers`,
        'SELECT * FROM t',
        'SELECT * FROM pg_temp.t',
      ],
    ],
    ['a view the admin made', [`SELECT * FROM ${SCHEMA}.customer_view`]],
    [
      'a function made in the session',
      [
        `CREATE FUNCTION atk_evil.leak() RETURNS SETOF text LANGUAGE sql AS $$ SELECT ssn FROM ${SCHEMA}.customers $$`,
        'SELECT atk_evil.leak()',
        `SET search_path = atk_evil, public`,
        'SELECT leak()',
      ],
    ],
    [
      'a cursor across messages',
      ['BEGIN', `DECLARE c CURSOR FOR SELECT * FROM ${SCHEMA}.customers`, 'FETCH ALL FROM c', 'COMMIT'],
    ],
    [
      'SQL-level PREPARE and EXECUTE',
      [`PREPARE p AS SELECT email, ssn, card FROM ${SCHEMA}.customers`, 'EXECUTE p'],
    ],
    [
      'predicates that guess values',
      [
        `SELECT id FROM ${SCHEMA}.customers WHERE ssn = '123-45-6789'`,
        `SELECT id FROM ${SCHEMA}.customers WHERE email LIKE 'ada%'`,
      ],
    ],
    [
      'parameters in the extended protocol',
      [{ text: `SELECT * FROM ${SCHEMA}.customers WHERE id = $1`, values: [1] }],
    ],
    ['RETURNING after an UPDATE', [`UPDATE ${SCHEMA}.customers SET name = name WHERE id = 1 RETURNING *`]],
    [
      'a constraint error carrying the failing row',
      [`UPDATE ${SCHEMA}.customers SET name = NULL WHERE id = 1`],
    ],
    [
      'a unique violation carrying the key',
      [
        `INSERT INTO ${SCHEMA}.customers (id, name, email) SELECT 9, 'x', email FROM ${SCHEMA}.customers WHERE id = 1`,
        `INSERT INTO ${SCHEMA}.customers VALUES (10, 'x', 'ada.lovelace@example.org')`,
      ],
    ],
    [
      'a multi-statement string',
      [`SET search_path = ${SCHEMA}; SELECT * FROM customers; SELECT row_to_json(c) FROM customers c`],
    ],
    [
      'statistics in the catalog',
      [
        `SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'customers'`,
        'SELECT stavalues1::text FROM pg_statistic',
      ],
    ],
    [
      'dynamic SQL',
      [
        `SELECT query_to_xml('SELECT ssn FROM ${SCHEMA}.customers', true, false, '')`,
        `DO $$ BEGIN RAISE NOTICE '%', (SELECT string_agg(ssn, ',') FROM ${SCHEMA}.customers); END $$`,
      ],
    ],
  ])('%s', async (_name, statements) => {
    const seen = await attempt(statements as string[]);
    expect(leaks(seen)).toEqual([]);
  });

  // pg discards COPY data, so COPY is read with psql, which prints every row it receives.
  it('COPY of the table and of a query (server-side COPY TO STDOUT, read by psql)', async () => {
    const { stdout } = await promisify(execFile)('psql', [
      '-X',
      '-c',
      `COPY ${SCHEMA}.customers TO STDOUT`,
      '-c',
      `COPY (SELECT * FROM ${SCHEMA}.customers ORDER BY id) TO STDOUT`,
      `postgres://app:app@${sidecar.proxy.host}:${sidecar.proxy.port}/app`,
    ]);
    expect(leaks(stdout)).toEqual([]);
    // both COPYs delivered their rows, masked (so the leak check above read real output)
    expect(stdout.match(/a\*\*\*@example\.org/g)?.length).toBeGreaterThanOrEqual(2);
    expect(stdout).toContain('************1111');
  });

  it('psql \\copy and postgres.js (binary, pipelined) get masked values only', async () => {
    const { stdout } = await promisify(execFile)('psql', [
      '-X',
      '-c',
      `\\copy ${SCHEMA}.customers TO STDOUT`,
      '-c',
      `\\copy (SELECT * FROM ${SCHEMA}.customers ORDER BY id) TO STDOUT WITH CSV`,
      `postgres://app:app@${sidecar.proxy.host}:${sidecar.proxy.port}/app`,
    ]);
    expect(leaks(stdout)).toEqual([]);
    expect(stdout).toContain('a***@example.org');
    const sql = postgres({
      host: sidecar.proxy.host,
      port: sidecar.proxy.port,
      user: 'app',
      password: 'app',
      database: 'app',
      max: 1,
      onnotice: () => {},
    });
    try {
      const results = await Promise.all(
        Array.from(
          { length: 20 },
          (_, i) => sql`SELECT email, ssn, card FROM ${sql(SCHEMA)}.customers WHERE id = ${(i % 2) + 1}`,
        ),
      );
      const text = JSON.stringify(results);
      expect(leaks(text)).toEqual([]);
      expect(text).toContain('************1111');
    } finally {
      await sql.end();
    }
  });

  it('the leak detector works: the same attacks as the exempt identity do show real values', async () => {
    const seen = await attempt(
      [
        `SET search_path = ${SCHEMA}`,
        'SELECT * FROM customers',
        `UPDATE ${SCHEMA}.customers SET name = NULL WHERE id = 1`,
      ],
      ['postgres', 'postgres'],
    );
    expect(leaks(seen).map((f) => f.secret)).toEqual(
      expect.arrayContaining(['123-45-6789', 'ada.lovelace@example.org']),
    );
    expect(seen).toContain('Failing row contains');
  });

  it('the masked identity gets masked rows: the attacks above met the rewrite, not a refusal', async () => {
    const exempt = await client('postgres', 'postgres');
    const real = (await exempt.c.query(`SELECT name FROM ${SCHEMA}.customers WHERE id = 1`)).rows[0].name;
    await exempt.c.end();
    const { c } = await client();
    const r = await c.query(`SELECT name, email, ssn, card FROM ${SCHEMA}.customers WHERE id = 1`);
    expect(r.rows[0]).toEqual({
      // the keyed function's HMAC under the installed key, never the name itself
      name: crypto.createHmac('sha256', SALT).update(real).digest('hex'),
      email: 'a***@example.org',
      ssn: '****',
      card: '************1111',
    });
    await c.end();
  });

  it('the exempt identity sees real values through the same proxy', async () => {
    const { c } = await client('postgres', 'postgres');
    const r = await c.query(`SELECT email, ssn, card FROM ${SCHEMA}.customers WHERE id = 1`);
    expect(r.rows[0]).toEqual({
      email: 'ada.lovelace@example.org',
      ssn: '123-45-6789',
      card: '4111111111111111',
    });
    await c.end();
  });

  it('a denied statement inside a transaction aborts it: nothing of it commits', async () => {
    const { c } = await client();
    await c.query('BEGIN');
    await c.query(`UPDATE ${SCHEMA}.customers SET name = 'changed' WHERE id = 2`);
    await expect(c.query(`SELECT * FROM ${SCHEMA}.customer_view`)).rejects.toMatchObject({ code: '42501' });
    await expect(c.query('SELECT 1')).rejects.toMatchObject({ code: '25P02' });
    const end = await c.query('COMMIT');
    expect(end.command).toBe('ROLLBACK');
    await c.end();
    const { c: admin } = await client('postgres', 'postgres'); // name is hashed for the masked subject
    const r = await admin.query(`SELECT name FROM ${SCHEMA}.customers WHERE id = 2`);
    expect(r.rows[0].name).toBe('Grace');
    await admin.end();
  });
});
