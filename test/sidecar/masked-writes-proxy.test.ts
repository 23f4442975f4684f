/**
 * Issue 24 through the real proxy: a masked subject's ordinary writes never replace real values with
 * masks. The reproductions over the simple protocol, write-backs of the masked form as
 * parameters (extended protocol), COPY round trips with psql, an active-record style save with `pg`
 * and SQLAlchemy's unit of work (psycopg 3). After each, the table is read over a direct superuser
 * connection, never through the proxy: the real email and SSN must still be there.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from 'vitest';
import type { CompiledPolicy } from '../../api/compiled.js';
import type { Sidecar } from '../../sidecar/runtime.js';
import { adminQuery } from '../support/admin.js';
import { compileYaml, startPolicySidecar } from '../support/policy-sidecar.js';

const run = promisify(execFile);
const SCHEMA = 'mw';
const RULE = 'shop/pii';

const SEED = `
  DELETE FROM ${SCHEMA}.customers; DELETE FROM ${SCHEMA}.staging;
  INSERT INTO ${SCHEMA}.customers VALUES
    (7001, 'Ada', 'ada.lovelace@example.org', '123-45-6789'),
    (8001, 'Grace', 'Grace.Hopper@Example.NET', '234-56-7890');`;

const REAL = [
  { id: 7001, name: 'Ada', email: 'ada.lovelace@example.org', ssn: '123-45-6789' },
  { id: 8001, name: 'Grace', email: 'Grace.Hopper@Example.NET', ssn: '234-56-7890' },
];

function policy(port: number): CompiledPolicy {
  const text = `
apiVersion: dbguard.io/v1alpha1
kind: DatabasePolicy
metadata: {name: shop, namespace: shop}
spec:
  upstream: {host: 127.0.0.1, port: ${port}, sslmode: disable}
  defaultAction: Allow
---
apiVersion: dbguard.io/v1alpha1
kind: MaskingRule
metadata: {name: pii, namespace: shop}
spec:
  policyRef: {name: shop}
  columns:
    - {table: ${SCHEMA}.customers, column: email, strategy: Email}
    - {table: ${SCHEMA}.customers, column: ssn, strategy: Redact}
  exemptSubjects: [{kind: DatabaseUser, name: postgres}]
`;
  return compileYaml(text);
}

const refused = (column: string) =>
  `dbguard: cannot write ${SCHEMA}.customers.${column} from a masked value (rule ${RULE})`;
const writtenBack = (column: string) =>
  `dbguard: cannot write ${SCHEMA}.customers.${column} from a masked value: the new value is this row's masked value (rule ${RULE})`;

describe('a masked subject writing through the proxy never stores masks', () => {
  const server = inject('pg');
  let sidecar: Sidecar;

  const real = async () =>
    (await adminQuery(server, `SELECT id, name, email, ssn FROM ${SCHEMA}.customers ORDER BY id`)).rows;

  beforeAll(async () => {
    await adminQuery(
      server,
      `DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE; CREATE SCHEMA ${SCHEMA};
       CREATE TABLE ${SCHEMA}.customers (id int PRIMARY KEY, name text NOT NULL, email text, ssn text);
       CREATE TABLE ${SCHEMA}.staging (id int PRIMARY KEY, name text, email text, ssn text);
       GRANT USAGE ON SCHEMA ${SCHEMA} TO app; GRANT ALL ON ALL TABLES IN SCHEMA ${SCHEMA} TO app;`,
    );
    sidecar = await startPolicySidecar(server, policy(server.port));
  });

  beforeEach(async () => {
    await adminQuery(server, SEED);
  });

  afterAll(async () => {
    await sidecar?.close();
  });

  async function client(): Promise<pg.Client> {
    const c = new pg.Client({
      host: sidecar.proxy.host,
      port: sidecar.proxy.port,
      user: 'app',
      password: 'app',
      database: 'app',
    });
    await c.connect();
    return c;
  }

  async function failure(p: Promise<unknown>): Promise<{ code?: string; message: string }> {
    try {
      await p;
    } catch (e) {
      const err = e as pg.DatabaseError;
      return { code: err.code, message: err.message };
    }
    throw new Error('the statement succeeded');
  }

  it("the issue's reproductions are refused and the session stays usable", async () => {
    const c = await client();
    try {
      expect(
        await failure(c.query(`UPDATE ${SCHEMA}.customers SET email = email, ssn = ssn WHERE id = 7001`)),
      ).toEqual({
        code: '42501',
        message: refused('email'),
      });
      expect(
        await failure(c.query(`UPDATE ${SCHEMA}.customers SET email = lower(email) WHERE id = 8001`)),
      ).toEqual({
        code: '42501',
        message: refused('email'),
      });
      const r = await c.query(`SELECT email, ssn FROM ${SCHEMA}.customers ORDER BY id`);
      expect(r.rows).toEqual([
        { email: 'a***@example.org', ssn: '****' },
        { email: 'G***@Example.NET', ssn: '****' },
      ]);
    } finally {
      await c.end();
    }
    expect(await real()).toEqual(REAL);
  });

  it('parameters that carry the masked form are refused at execution; genuine ones are stored', async () => {
    const c = await client();
    try {
      const sql = `UPDATE ${SCHEMA}.customers SET name = $1, email = $2, ssn = $3 WHERE id = $4`;
      expect(await failure(c.query(sql, ['Ada L.', 'a***@example.org', '****', 7001]))).toEqual({
        code: '42501',
        message: writtenBack('email'),
      });
      // inside a transaction the refusal aborts it, as any error does
      await c.query('BEGIN');
      expect((await failure(c.query(sql, ['Ada L.', 'ada@new.example', '****', 7001]))).message).toBe(
        writtenBack('ssn'),
      );
      expect((await failure(c.query('SELECT 1'))).code).toBe('25P02');
      await c.query('ROLLBACK');
      expect(await real()).toEqual(REAL);
      // the same prepared statement with genuine values
      await c.query(sql, ['Ada L.', 'ada@new.example', '999-99-9999', 7001]);
      expect((await real())[0]).toEqual({
        id: 7001,
        name: 'Ada L.',
        email: 'ada@new.example',
        ssn: '999-99-9999',
      });
      expect((await real())[1]).toEqual(REAL[1]);
    } finally {
      await c.end();
    }
  });

  it('an active-record save that writes back every column fails loudly; a changed-columns save works', async () => {
    /** What active-record layers over `pg` do: load the row, keep every field, save them all. */
    class CustomerRecord {
      private constructor(
        readonly values: Record<string, unknown>,
        private readonly loaded: Record<string, unknown>,
      ) {}
      static async find(c: pg.Client, id: number): Promise<CustomerRecord> {
        const r = await c.query(`SELECT * FROM ${SCHEMA}.customers WHERE id = $1`, [id]);
        return new CustomerRecord({ ...r.rows[0] }, { ...r.rows[0] });
      }
      async save(c: pg.Client, onlyChanged = false): Promise<void> {
        const cols = Object.keys(this.values).filter(
          (k) => k !== 'id' && (!onlyChanged || this.values[k] !== this.loaded[k]),
        );
        const set = cols.map((k, i) => `${k} = $${i + 1}`).join(', ');
        await c.query(`UPDATE ${SCHEMA}.customers SET ${set} WHERE id = $${cols.length + 1}`, [
          ...cols.map((k) => this.values[k]),
          this.values.id,
        ]);
      }
    }
    const c = await client();
    try {
      const ada = await CustomerRecord.find(c, 7001);
      expect(ada.values).toEqual({ id: 7001, name: 'Ada', email: 'a***@example.org', ssn: '****' });
      ada.values.name = 'Ada King';
      expect(await failure(ada.save(c))).toEqual({ code: '42501', message: writtenBack('email') });
      expect(await real()).toEqual(REAL);
      await ada.save(c, true);
      expect(await real()).toEqual([{ ...REAL[0], name: 'Ada King' }, REAL[1]]);
    } finally {
      await c.end();
    }
  });

  it('SQLAlchemy: the unit of work saves changed columns; saving every column fails loudly', async () => {
    const url = `postgresql://app:app@${sidecar.proxy.host}:${sidecar.proxy.port}/app`;
    const script = join(import.meta.dirname, 'orm', 'sqlalchemy_flow.py');
    let out: string;
    try {
      out = (await run('python3', [script, url, SCHEMA, '7001'], { timeout: 60_000 })).stdout;
    } catch (e) {
      const err = e as { stderr?: string; message: string };
      throw new Error(
        `SQLAlchemy flow failed (are test/requirements.txt's packages installed? bash hack/ensure-test-deps.sh):\n${err.stderr ?? err.message}`,
      );
    }
    const flows = out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const shown = { email: 'a***@example.org', ssn: '****' };
    expect(flows).toEqual([
      { flow: 'changed-columns', ok: true, shown },
      { flow: 'every-column', ok: false, shown, sqlstate: '42501', message: writtenBack('email') },
      { flow: 'insert-new', ok: true, shown: {} },
    ]);
    expect(await real()).toEqual([
      { ...REAL[0], name: 'Changed by SQLAlchemy' },
      { id: 7002, name: 'New One', email: 'new.one@example.org', ssn: '111-11-1111' },
      { id: 7003, name: 'New Two', email: 'new.two@example.org', ssn: '222-22-2222' },
      REAL[1],
    ]);
  });

  it('a masked COPY TO loaded back with COPY FROM never replaces real values', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dbguard-mw-'));
    const env = { ...process.env, PGPASSWORD: 'app' };
    const psql = (sql: string, file?: string) =>
      run(
        'sh',
        [
          '-c',
          `psql -X -q -v ON_ERROR_STOP=1 -h "$1" -p "$2" -U app -d app -c "$3" ${file ? '< "$4"' : ''}`,
          'sh',
          sidecar.proxy.host,
          String(sidecar.proxy.port),
          sql,
          ...(file ? [file] : []),
        ],
        { env },
      );
    try {
      const file = join(dir, 'customers.csv');
      writeFileSync(file, (await psql(`COPY ${SCHEMA}.customers TO STDOUT WITH (FORMAT csv)`)).stdout);
      expect(readFileSync(file, 'utf8')).toBe(
        '7001,Ada,a***@example.org,****\n8001,Grace,G***@Example.NET,****\n',
      );
      // straight back: new rows only, and the keys exist
      await expect(psql(`COPY ${SCHEMA}.customers FROM STDIN WITH (FORMAT csv)`, file)).rejects.toThrow(
        /duplicate key/,
      );
      // through a staging table, then an UPDATE from it: the masked forms are refused
      await psql(`COPY ${SCHEMA}.staging FROM STDIN WITH (FORMAT csv)`, file);
      await expect(
        psql(
          `UPDATE ${SCHEMA}.customers c SET email = s.email, ssn = s.ssn FROM ${SCHEMA}.staging s WHERE s.id = c.id`,
        ),
      ).rejects.toThrow(writtenBack('email'));
      expect(await real()).toEqual(REAL);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
