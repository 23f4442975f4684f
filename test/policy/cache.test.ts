/**
 * The decision cache's numeric templates: texts that differ only in numeric constants share one
 * decision, and a shared decision is always the one the engine gives the text itself. Against a
 * catalog read from the real server (a masked table and a plain one).
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest';
import type { CompiledPolicy } from '../../api/compiled.js';
import { DecisionCache, numericTemplate, withText } from '../../policy/cache.js';
import type { CatalogSnapshot } from '../../policy/catalog.js';
import type { Decision } from '../../policy/decision.js';
import { judge } from '../../policy/judge.js';
import { initParser } from '../../policy/parser.js';
import { customerMasking, exempt, loadCatalog, masked, policyOf, rule, sessionOf } from './fixtures.js';

const SCHEMA = `cache_${process.pid}`;
let client: pg.Client;
let catalog: CatalogSnapshot;

const policy: CompiledPolicy = policyOf({
  rules: [
    rule('no-orders-delete', 'Deny', { commands: ['DELETE'], objects: [`${SCHEMA}.orders`] }),
    rule('no-drop', 'Deny', { commands: ['DROP *'] }),
  ],
  masking: [
    {
      name: 'shop/customer-pii',
      columns: customerMasking(SCHEMA),
      exemptSubjects: [{ kind: 'Group', name: 'pii-readers' }],
    },
  ],
});

beforeAll(async () => {
  await initParser();
  const pgInfo = inject('pg');
  client = new pg.Client({ connectionString: pgInfo.url });
  await client.connect();
  await client.query(`create schema ${SCHEMA};
    create table ${SCHEMA}.customers (id int primary key, name text, email text, ssn text, card_number text,
      salary numeric(10,2), birth_date date, customer_ref text, country text);
    create table ${SCHEMA}.orders (id int primary key, customer_id int, total numeric(10,2), note text)`);
  // as after `dbguard db install` for a proxy's login role (this test only judges; nothing runs the SQL)
  catalog = { ...(await loadCatalog(client, policy)), hashFunction: { usable: true } };
});

afterAll(async () => {
  await client?.query(`drop schema if exists ${SCHEMA} cascade`);
  await client?.end();
});

/** A decision as data, without the keys an object literal leaves undefined. */
const plain = (d: Decision) => JSON.parse(JSON.stringify(d));

describe('numericTemplate', () => {
  test('texts that differ only in numeric constants share a template; any other difference does not', () => {
    const same = [
      [
        'SELECT abalance FROM pgbench_accounts WHERE aid = 12345;',
        'SELECT abalance FROM pgbench_accounts WHERE aid = 7;',
      ],
      [
        'select * from t where a > 1.5e3 and b = $1 limit 10',
        'select * from t where a > 2.0 and b = $1 limit 99',
      ],
      ['select 1, 2.5, 3e-2, 4E+7', 'select 0009, 0.0, 12.25, 1e2'],
      ['select x::varchar(20) from t', 'select x::varchar(2147483647) from t'],
      // not plain ASCII, or a quoted identifier: the normalizer decides, with the same result
      ['select "col1" from t where id = 1', 'select "col1" from t where id = 2'],
      ['select * from café where id = 1', 'select * from café where id = 22'],
      ['select * from t where id = 0x1F', 'select * from t where id = 0x2A'],
      ['select * from t where id = 1_000', 'select * from t where id = 2_500'],
    ];
    for (const [a, b] of same) {
      expect(numericTemplate(a!), a).toBeDefined();
      expect(numericTemplate(a!), `${a} / ${b}`).toBe(numericTemplate(b!));
    }
    const different = [
      // a digit that belongs to a name or a parameter is not a constant
      ['select c1 from t1 where id = 1', 'select c2 from t1 where id = 1'],
      ['select c1 from t1 where id = 1', 'select c1 from t2 where id = 1'],
      ['select * from t where a = $1 and b = 1', 'select * from t where a = $2 and b = 1'],
      // an operator is not a number, whatever stands in the template for one
      ['select * from t where a ? 1', 'select * from t where a ? ?'],
      ['select 1', 'select 1 ; drop table t'],
      // an integer and any other number are different tokens to the grammar
      ['select x::varchar(20) from t', 'select x::varchar(2.5) from t'],
      ['select x::varchar(20) from t', 'select x::varchar(2147483648) from t'],
      ['select 1', 'select 1e0'],
      ['select * from t where id = 1', 'select * from u where id = 1'],
      ['select * from "t1" where id = 1', 'select * from "t2" where id = 1'],
    ];
    for (const [a, b] of different) expect(numericTemplate(a!), `${a} / ${b}`).not.toBe(numericTemplate(b!));
  });

  test('refuses texts that may hold another constant, a comment, or no constant at all', () => {
    for (const sql of [
      "select * from t where name = 'x' and id = 1",
      "select * from t where id = 1 and b = E'\\x41'",
      'select $$1$$, 2',
      'select $tag$a$tag$, 2',
      'select 1 /* app:checkout */',
      'select 1 -- app',
      'select 1\0',
      'select * from t where id = $1',
      'select a from t',
    ]) {
      expect(numericTemplate(sql), sql).toBeUndefined();
    }
  });
});

describe('DecisionCache with numeric templates', () => {
  test('pgbench-style texts: one judgement, then hits that carry their own text', () => {
    const cache = new DecisionCache(100);
    const ctx = sessionOf(masked, catalog);
    for (let aid = 1; aid <= 50; aid++) {
      const sql = `SELECT total FROM ${SCHEMA}.orders WHERE id = ${aid * 7919};`;
      const d = cache.judge(sql, ctx, policy);
      expect(d.sql).toBe(sql);
      expect(d.kind).toBe('allow');
    }
    expect(cache.misses).toBe(1);
    expect(cache.templateHits).toBe(49);
  });

  test('a rule denial is shared; a masking rewrite is judged per text and keeps its own constants', () => {
    const cache = new DecisionCache(100);
    const ctx = sessionOf(masked, catalog);
    const a = cache.judge(`DELETE FROM ${SCHEMA}.orders WHERE id = 1`, ctx, policy);
    const b = cache.judge(`DELETE FROM ${SCHEMA}.orders WHERE id = 2`, ctx, policy);
    expect([a.kind, a.rule, b.kind, b.rule]).toEqual([
      'deny',
      'no-orders-delete',
      'deny',
      'no-orders-delete',
    ]);
    expect(cache.templateHits).toBe(1);

    const m1 = cache.judge(`SELECT email FROM ${SCHEMA}.customers WHERE id = 101`, ctx, policy);
    const m2 = cache.judge(`SELECT email FROM ${SCHEMA}.customers WHERE id = 202`, ctx, policy);
    expect(m1.kind).toBe('mask');
    expect(m1.sql).toContain('101');
    expect(m2.sql).toContain('202');
    expect(m2.sql).not.toContain('101');
    expect(cache.templateHits).toBe(1); // the masked texts were not shared
  });

  test("more session contexts than the cache keeps ids for: none is answered with another context's decision", () => {
    // maxEntries 2 also bounds the context-id table: the third context drops it. Ids go on counting, so
    // an entry made under a dropped id (here the exempt subject's 'allow') can never answer a new one.
    const cache = new DecisionCache(2);
    const sql = `SELECT email FROM ${SCHEMA}.customers WHERE id = 1`;
    const contexts = [
      { ctx: sessionOf(exempt, catalog), kind: 'allow' },
      { ctx: sessionOf(masked, catalog), kind: 'mask' },
      { ctx: sessionOf(masked, catalog, 'other_db'), kind: 'mask' },
    ];
    for (let round = 0; round < 3; round++) {
      for (const { ctx, kind } of contexts) expect(cache.judge(sql, ctx, policy).kind).toBe(kind);
    }
  });

  test('subjects and search paths do not share templates', () => {
    const cache = new DecisionCache(100);
    const asMasked = cache.judge(
      `SELECT email FROM ${SCHEMA}.customers WHERE id = 1`,
      sessionOf(masked, catalog),
      policy,
    );
    const asExempt = cache.judge(
      `SELECT email FROM ${SCHEMA}.customers WHERE id = 2`,
      sessionOf(exempt, catalog),
      policy,
    );
    expect(asMasked.kind).toBe('mask');
    expect(asExempt.kind).toBe('allow');
    const inSchema = { ...sessionOf(masked, catalog), searchPath: ['pg_catalog', SCHEMA] };
    const plainPath = cache.judge('SELECT * FROM customers WHERE id = 3', sessionOf(masked, catalog), policy);
    const schemaPath = cache.judge('SELECT * FROM customers WHERE id = 4', inSchema, policy);
    expect(plainPath.kind).toBe('deny'); // no such relation on the default path
    expect(schemaPath.kind).toBe('mask');
    expect(cache.templateHits).toBe(0);
  });

  test('every cached decision equals the engine judging that text afresh', () => {
    // Shapes where a number could plausibly matter: positions, limits, casts, catalog OIDs, nested
    // statements, several statements, a masked table touched without its masked columns.
    const shapes = [
      (n: number) => `SELECT id, name FROM ${SCHEMA}.customers ORDER BY ${(n % 2) + 1} LIMIT ${n}`,
      (n: number) => `SELECT id FROM ${SCHEMA}.customers GROUP BY ${(n % 1) + 1} OFFSET ${n}`,
      (n: number) => `SELECT email, id FROM ${SCHEMA}.customers ORDER BY ${(n % 2) + 1}`,
      (n: number) => `SELECT ${n}::regclass, ${n}::oid`,
      (n: number) => `SELECT relname FROM pg_class WHERE oid = ${n}`,
      (n: number) => `UPDATE ${SCHEMA}.orders SET total = total * ${n}.5 WHERE id = ${n}`,
      (n: number) => `DELETE FROM ${SCHEMA}.orders WHERE id IN (${n}, ${n + 1}) RETURNING total`,
      (n: number) =>
        `WITH d AS (DELETE FROM ${SCHEMA}.orders WHERE id = ${n} RETURNING *) SELECT count(*) FROM d`,
      (n: number) => `SELECT ${n}; SELECT name FROM ${SCHEMA}.customers WHERE id = ${n}`,
      (n: number) => `EXPLAIN SELECT * FROM ${SCHEMA}.orders WHERE id = ${n}`,
      (n: number) => `SELECT pg_sleep(0.${n})`,
      (n: number) => `SET statement_timeout = ${n}`,
      (n: number) =>
        `SELECT * FROM ${SCHEMA}.orders o JOIN ${SCHEMA}.customers c ON c.id = o.customer_id WHERE o.id = ${n}`,
      (n: number) => `FETCH ${n} FROM c${n % 3}`,
      // numbers the normalizer keeps or that are not constant expressions: typmods, subscripts,
      // frames, FETCH FIRST, DISTINCT ON, sampling, and a statement after a DML one
      (n: number) => `SELECT name::varchar(${n}), id FROM ${SCHEMA}.customers WHERE id = ${n}`,
      (n: number) => `SELECT (ARRAY[1,2,3])[${(n % 3) + 1}], ${n}`,
      (n: number) =>
        `SELECT sum(total) OVER (ORDER BY id ROWS BETWEEN ${n} PRECEDING AND CURRENT ROW) FROM ${SCHEMA}.orders`,
      (n: number) => `SELECT id FROM ${SCHEMA}.orders ORDER BY ${(n % 2) + 1} FETCH FIRST ${n} ROWS ONLY`,
      (n: number) => `SELECT DISTINCT ON (${(n % 2) + 1}) id, total FROM ${SCHEMA}.orders ORDER BY 1`,
      (n: number) => `SELECT * FROM ${SCHEMA}.orders TABLESAMPLE SYSTEM (${n % 100}) REPEATABLE (${n})`,
      (n: number) => `INSERT INTO ${SCHEMA}.orders (id, customer_id, total) VALUES (${n}, ${n}, ${n}.25)`,
      (n: number) => `SELECT ${n}; FETCH ${n} FROM c1`,
      (n: number) => `SELECT id FROM ${SCHEMA}.orders GROUP BY 1 HAVING count(*) > ${n}`,
      (n: number) => `SELECT lo_get(${n})`,
    ];
    const cache = new DecisionCache(1000);
    for (const identity of [masked, exempt]) {
      const ctx = sessionOf(identity, catalog);
      for (const shape of shapes) {
        for (const n of [1, 2, 3, 17, 2_147_483_647, 4_294_967_296]) {
          const sql = shape(n);
          expect(plain(cache.judge(sql, ctx, policy)), sql).toEqual(plain(judge(sql, ctx, policy)));
        }
      }
    }
    expect(cache.templateHits).toBeGreaterThan(50);
  });
});

describe('a shared decision for another text', () => {
  test('copies every field of a Decision but the text (and the two never shared)', () => {
    // Required<Decision>: a field added to Decision must be added here too, or this file does not
    // type-check; then the loop below fails until withText copies it.
    const all: Required<Decision> = {
      kind: 'deny',
      rule: 'r',
      message: 'dbguard: m (rule r)',
      sqlstate: '42501',
      reason: 'rule',
      statements: [],
      sql: 'SELECT 1',
      maskedColumns: ['a.b.c'],
      approval: { mode: 'Wait', timeoutSeconds: 1, validForSeconds: 1 },
      enforced: true,
      effects: [],
      tags: { k: 'v' },
      refreshCatalog: true,
      lexer: { ascii: true } as Required<Decision>['lexer'],
      uncovered: [],
    };
    // decisions with these are never shared between texts (templateReusable)
    const notShared = new Set(['sql', 'approval', 'refreshCatalog']);
    const copy = withText(all, 'SELECT 2');
    expect(copy.sql).toBe('SELECT 2');
    for (const [k, v] of Object.entries(all)) {
      if (notShared.has(k)) continue;
      expect((copy as unknown as Record<string, unknown>)[k], k).toBe(v);
    }
  });
});
