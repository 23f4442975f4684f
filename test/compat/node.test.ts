/**
 * Compatibility matrix, Node family (issue 23 item 1): node-postgres (`pg`, simple and extended
 * protocol, `pg-cursor` portals) and postgres.js (its default named prepared statements, reused across
 * executions), each as a masked and as an exempt subject through a proxy with masking and a Deny rule.
 */
import { readFileSync } from 'node:fs';
import pg from 'pg';
import Cursor from 'pg-cursor';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  type CompatProxy,
  credentials,
  DENY_MESSAGE,
  expectedRows,
  expectNoLeak,
  Matrix,
  runRow,
  SUBJECTS,
  startCompatProxy,
} from './fixture.js';

const SCHEMA = 'compat_node';
// read from node_modules: pg-cursor's exports do not include its package.json
const version = (name: string): string =>
  JSON.parse(readFileSync(new URL(`../../node_modules/${name}/package.json`, import.meta.url), 'utf8'))
    .version;
const matrix = new Matrix('Node');

describe('Node clients through the proxy', () => {
  const server = inject('pg');
  let proxy: CompatProxy;

  beforeAll(async () => {
    proxy = await startCompatProxy(server, SCHEMA);
  });
  afterAll(async () => {
    await proxy?.sidecar.close();
    matrix.print();
  });

  for (const subject of SUBJECTS) {
    it(`pg ${version('pg')} + pg-cursor ${version('pg-cursor')} as the ${subject} subject`, async () => {
      const c = new pg.Client({
        host: proxy.host,
        port: proxy.port,
        database: 'app',
        ...credentials(subject),
      });
      await c.connect();
      try {
        const seen: string[] = [];
        await runRow(matrix, `pg ${version('pg')}, pg-cursor ${version('pg-cursor')}`, subject, {
          works: async () => {
            expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
            expect((await c.query('SELECT $1::int * 2 AS d', [21])).rows).toEqual([{ d: 42 }]);
          },
          masking: async () => {
            const simple = await c.query(`SELECT id, name, email, ssn FROM ${SCHEMA}.customers ORDER BY id`);
            const extended = await c.query(
              `SELECT id, name, email, ssn FROM ${SCHEMA}.customers WHERE id >= $1 ORDER BY id`,
              [0],
            );
            const named = await c.query({
              name: 'compat-customers',
              text: `SELECT id, name, email, ssn FROM ${SCHEMA}.customers WHERE id = ANY($1) ORDER BY id`,
              values: [[1, 2]],
            });
            // a portal read in batches of one row: Execute with a row limit, then PortalSuspended
            const cursor = c.query(
              new Cursor(
                `SELECT id, name, email, ssn FROM ${SCHEMA}.customers WHERE id > $1 ORDER BY id`,
                [0],
              ),
            );
            const fromCursor = [
              ...(await cursor.read(1)),
              ...(await cursor.read(1)),
              ...(await cursor.read(1)),
            ];
            await cursor.close();
            for (const r of [simple.rows, extended.rows, named.rows, fromCursor]) {
              seen.push(JSON.stringify(r));
              expect(r).toEqual(expectedRows(subject));
            }
            if (subject === 'masked') expectNoLeak(seen.join('\n'));
          },
          denial: async () => {
            const err = await c.query(`DROP TABLE ${SCHEMA}.victim`).catch((e: pg.DatabaseError) => e);
            expect({ code: (err as pg.DatabaseError).code, message: (err as Error).message }).toEqual({
              code: '42501',
              message: DENY_MESSAGE,
            });
            const inTx = await c
              .query('BEGIN')
              .then(() => c.query(`DROP TABLE ${SCHEMA}.victim`).catch((e) => e));
            expect((inTx as pg.DatabaseError).code).toBe('42501');
            await c.query('ROLLBACK');
            expect((await c.query(`SELECT count(*)::int AS n FROM ${SCHEMA}.victim`)).rows).toEqual([
              { n: 0 },
            ]);
          },
        });
      } finally {
        await c.end();
      }
    });

    it(`postgres.js ${version('postgres')} (prepared statements) as the ${subject} subject`, async () => {
      const sql = postgres({
        host: proxy.host,
        port: proxy.port,
        database: 'app',
        ...credentials(subject),
        max: 1,
      });
      try {
        await runRow(matrix, `postgres (postgres.js) ${version('postgres')}`, subject, {
          works: async () => {
            expect(await sql`SELECT 1 AS one`).toEqual([{ one: 1 }]);
            expect(await sql`SELECT ${21}::int * 2 AS d`).toEqual([{ d: 42 }]);
          },
          masking: async () => {
            const seen: string[] = [];
            // the same tagged query run 6 times: postgres.js prepares it once (named statement) and
            // reuses it, so the later executions are Bind/Execute on a statement parsed long before
            for (let i = 0; i < 6; i++) {
              const rows =
                await sql`SELECT id, name, email, ssn FROM ${sql(SCHEMA)}.customers WHERE id > ${0} ORDER BY id`;
              seen.push(JSON.stringify(rows));
              expect([...rows]).toEqual(expectedRows(subject));
            }
            const unsafe = await sql.unsafe(
              `SELECT id, name, email, ssn FROM ${SCHEMA}.customers ORDER BY id`,
            );
            seen.push(JSON.stringify(unsafe));
            expect([...unsafe]).toEqual(expectedRows(subject));
            const cursorRows: unknown[] = [];
            await sql`SELECT id, name, email, ssn FROM ${sql(SCHEMA)}.customers ORDER BY id`.cursor(
              1,
              (rows) => {
                cursorRows.push(...rows);
              },
            );
            seen.push(JSON.stringify(cursorRows));
            expect(cursorRows).toEqual(expectedRows(subject));
            if (subject === 'masked') expectNoLeak(seen.join('\n'));
          },
          denial: async () => {
            const err = (await sql
              .unsafe(`DROP TABLE ${SCHEMA}.victim`)
              .catch((e) => e)) as postgres.PostgresError;
            expect({ code: err.code, message: err.message }).toEqual({
              code: '42501',
              message: DENY_MESSAGE,
            });
            const prepared = (await sql`DROP TABLE ${sql(SCHEMA)}.victim`.catch(
              (e) => e,
            )) as postgres.PostgresError;
            expect(prepared.code).toBe('42501');
            expect(await sql`SELECT count(*)::int AS n FROM ${sql(SCHEMA)}.victim`).toEqual([{ n: 0 }]);
          },
        });
      } finally {
        await sql.end();
      }
    });
  }
});
