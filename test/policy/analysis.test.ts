/**
 * Table tests of the analysis (pure, no server): objects touched, UPDATE/DELETE without WHERE,
 * opaque statements, session effects, multi-statement search_path, parse errors, normalization
 * and sqlcommenter tags. The catalog is a hand-made snapshot (parseCatalog rows).
 */
import { beforeAll, describe, expect, test } from 'vitest';
import { parseCatalog } from '../../policy/catalog.js';
import type { SessionEffect } from '../../policy/decision.js';
import { judge } from '../../policy/judge.js';
import { initParser } from '../../policy/parser.js';
import type { SessionContext } from '../../policy/resolve.js';
import { policyOf } from './fixtures.js';

const rel = (s: string, n: string, k = 'r') => ['rel', s, n, k, null, null, null, null];
const catalog = parseCatalog([
  ['path', 'pg_catalog', '1', null, null, null, null, null],
  ['path', 'app', '2', null, null, null, null, null],
  ['path', 'public', '3', null, null, null, null, null],
  ['user', 'alice', null, null, null, null, null, null],
  ...['pg_catalog', 'app', 'public', 'other', 'Mixed'].map((s) => [
    'schema',
    s,
    null,
    null,
    null,
    null,
    null,
    null,
  ]),
  rel('app', 'orders'),
  rel('public', 'orders'),
  rel('public', 'customers'),
  rel('public', 'audit_log'),
  rel('other', 'orders'),
  rel('other', 'audit_log'),
  rel('Mixed', 'CaseTable'),
  rel('public', 'v_orders', 'v'),
  rel('pg_catalog', 'pg_class'),
  ['func', 'public', 'order_total', null, null, null, null, null],
  ['func', 'public', 'purge', null, null, null, null, null],
  ['op', 'public', '===', null, null, null, null, null],
  ['version', '1:2:3', null, null, null, null, null, null],
]);

const ctx: SessionContext = {
  identity: { groups: [], databaseUser: 'alice' },
  database: 'app',
  searchPath: ['pg_catalog', 'app', 'public'],
  catalog,
};
const policy = policyOf({ functionsAllow: ['public.order_total'] });
const facts = (sql: string, c: SessionContext = ctx) => judge(sql, c, policy);

beforeAll(async () => {
  await initParser();
});

/** [sql, objects (sorted, per statement concatenated)] */
const OBJECTS: [string, string[]][] = [
  ['select * from orders', ['app.orders']],
  ['select * from public.orders o join customers c on c.id = o.cid', ['public.customers', 'public.orders']],
  ['select * from orders where id in (select id from other.orders)', ['app.orders', 'other.orders']],
  ['select (select max(id) from audit_log) from customers', ['public.audit_log', 'public.customers']],
  ['with x as (select * from customers) select * from x', ['public.customers']],
  ['with orders as (select 1) select * from orders', []],
  [
    'with recursive r as (select 1 union all select * from r) select * from r, audit_log',
    ['public.audit_log'],
  ],
  ['with d as (delete from audit_log returning *) select * from d', ['public.audit_log']],
  ['with orders as (select * from orders) select * from orders', ['app.orders']],
  ['insert into audit_log select * from customers', ['public.audit_log', 'public.customers']],
  ['update orders set x = c.x from customers c where c.id = orders.cid', ['app.orders', 'public.customers']],
  ['delete from orders using other.audit_log a where a.id = orders.id', ['app.orders', 'other.audit_log']],
  [
    'merge into orders o using customers c on o.id = c.id when matched then delete',
    ['app.orders', 'public.customers'],
  ],
  ['copy customers to stdout', ['public.customers']],
  ['copy (select * from audit_log) to stdout', ['public.audit_log']],
  ['drop table orders, other.audit_log, nope', ['app.nope', 'app.orders', 'other.audit_log']],
  ['drop view v_orders', ['public.v_orders']],
  ['drop schema other cascade', ['other.*']],
  ['truncate orders, customers', ['app.orders', 'public.customers']],
  ['lock table audit_log', ['public.audit_log']],
  ['grant select on customers, other.orders to bob', ['other.orders', 'public.customers']],
  ['grant select on all tables in schema public to bob', ['public.*']],
  ['alter table customers add column x int', ['public.customers']],
  ['create index on audit_log (id)', ['public.audit_log']],
  ['create table newt (a int references customers (id))', ['app.newt', 'public.customers']],
  ['create temp table tt (a int)', ['pg_temp.tt']],
  ['create table c2 as select * from customers', ['app.c2', 'public.customers']],
  ['explain analyze delete from audit_log', ['public.audit_log']],
  ['prepare p as select * from customers', ['public.customers']],
  ['declare c cursor for select * from other.orders', ['other.orders']],
  ['comment on column customers.email is null', ['public.customers']],
  ['vacuum analyze audit_log', ['public.audit_log']],
  ['select * from "Mixed"."CaseTable"', ['Mixed.CaseTable']],
  ['select * from ORDERS', ['app.orders']],
  ['select * from "ORDERS"', ['app.ORDERS']],
  ['select * from pg_class', ['pg_catalog.pg_class']],
  ['select * from pg_temp.x', ['pg_temp.x']],
  [
    'select * from orders, lateral (select * from customers where id = orders.cid) l',
    ['app.orders', 'public.customers'],
  ],
  ['select * from customers tablesample bernoulli (5)', ['public.customers']],
  ['select * from rows from (generate_series(1, 2)) g', []],
  ['select * from (values (1)) v(a) join audit_log on true', ['public.audit_log']],
  ['select * from orders for update of orders', ['app.orders']],
  ["select $q$ from customers $q$, E'drop table x' from audit_log", ['public.audit_log']],
  ['select 1; select * from customers; drop table audit_log', ['public.audit_log', 'public.customers']],
  ["select * from json_table('[1]'::jsonb, '$[*]' columns (x int path '$')) jt, orders", ['app.orders']],
];

describe('objects touched', () => {
  test.each(OBJECTS)('%s', (sql, want) => {
    const d = facts(sql);
    expect(d.kind, d.message).not.toBe('deny');
    expect([...new Set(d.statements.flatMap((s) => s.objects))].sort()).toEqual([...want].sort());
  });
});

describe('UPDATE/DELETE without WHERE', () => {
  test.each([
    ['delete from orders', true],
    ['update orders set x = 1', true],
    // a condition that reads no column of the target bounds nothing (issue 23: stricter than pg-safeupdate)
    ['delete from orders where true', true],
    ['delete from orders where 1 = 1', true],
    ["update orders set x = 1 where 'a' = 'a'", true],
    ['delete from orders where not false', true],
    ['delete from orders where id = 5 or true', true],
    ['delete from orders where id = 5 or 1 = 1', true],
    ['delete from orders where id = 5 and true', false],
    ['delete from orders o where o.id = 5 or o.id = 6', false],
    ['delete from orders where exists (select 1)', true],
    ['merge into orders o using (select 1) s on true when matched then delete', true],
    ['merge into orders o using customers c on c.id = 1 when matched then update set x = 1', true],
    ['merge into orders o using customers c on true when matched and o.id = 1 then delete', false],
    ['merge into orders o using customers c on o.id = c.id when not matched by source then delete', true],
    ['merge into orders o using customers c on true when not matched then insert values (1)', false],
    ['update orders set x = 1 where id = 1', false],
    ['with d as (delete from orders returning *) select * from d', true],
    ['with d as (delete from orders where id = 1 returning *) select * from d', false],
    ['explain analyze delete from orders', true],
    ['prepare p as update orders set x = 1', true],
    ['delete from orders where current of c', false],
    ['select * from orders', false],
    ['merge into orders o using customers c on o.id = c.id when matched then delete', false],
  ] as const)('%s → %s', (sql, want) => {
    expect(facts(sql).statements[0]!.withoutWhere).toBe(want);
  });
});

describe('opaque statements', () => {
  test.each([
    ['do $$begin execute $x$drop table orders$x$; end$$', true],
    ['call purge()', true],
    ['select purge()', true],
    ['select public.purge()', true],
    ['select order_total(1)', false],
    ['select public.order_total(1)', false],
    ['select lower(name), count(*), now() from orders group by 1', false],
    ["select query_to_xml('select 1', true, false, '')", true],
    ['select nosuchfunction()', true],
    ['select 1 === 2', true],
    ['select 1 operator(public.===) 2', true],
    ['select 1 + 2, 3 between 1 and 4', false],
  ] as const)('%s → %s', (sql, want) => {
    expect(facts(sql).statements[0]!.opaque).toBe(want);
  });
});

describe('session effects', () => {
  const eff = (sql: string): SessionEffect[] => facts(sql).effects;
  test.each([
    ['set search_path = other, public', [{ kind: 'search_path', value: ['other', 'public'], local: false }]],
    [
      'set search_path to \'a\', "B", "$user"',
      [{ kind: 'search_path', value: ['a', 'B', '$user'], local: false }],
    ],
    ['set local search_path = other', [{ kind: 'search_path', value: ['other'], local: true }]],
    ['set search_path to default', [{ kind: 'search_path', value: 'reset', local: false }]],
    ['reset search_path', [{ kind: 'search_path', value: 'reset', local: false }]],
    [
      "select set_config('search_path', 'other, \"X\"', true)",
      [{ kind: 'search_path', value: ['other', 'X'], local: true }],
    ],
    ["select set_config('search_path', current_setting('x'), false)", [{ kind: 'unknown-state' }]],
    ['discard all', [{ kind: 'unknown-state' }, { kind: 'catalog-changed' }]],
    ['set role bob', [{ kind: 'unknown-state' }]],
    ['create table z (a int)', [{ kind: 'catalog-changed' }]],
    ['select 1 into z2', [{ kind: 'catalog-changed' }]],
    ['begin', [{ kind: 'transaction', op: 'begin' }]],
    ['start transaction read only', [{ kind: 'transaction', op: 'begin' }]],
    ['commit', [{ kind: 'transaction', op: 'commit' }]],
    [
      'commit and chain',
      [
        { kind: 'transaction', op: 'commit' },
        { kind: 'transaction', op: 'begin' },
      ],
    ],
    ['rollback', [{ kind: 'transaction', op: 'rollback' }]],
    ['savepoint a', [{ kind: 'transaction', op: 'savepoint' }]],
    ['rollback to a', [{ kind: 'transaction', op: 'rollback-to' }]],
    ['release a', [{ kind: 'transaction', op: 'release' }]],
    ['select * from orders', []],
    ['set work_mem = 1000', []],
  ] as const)('%s', (sql, want) => {
    expect(eff(sql)).toEqual(want);
  });

  test('opaque statements: unknown state and catalog changed', () => {
    expect(eff('do $$begin null; end$$')).toEqual([{ kind: 'unknown-state' }, { kind: 'catalog-changed' }]);
    expect(eff('select purge()')).toEqual([{ kind: 'unknown-state' }, { kind: 'catalog-changed' }]);
  });
});

describe('multi-statement texts', () => {
  test('predicted search_path applies to the statements after SET', () => {
    const d = facts('select * from orders; set search_path = other, public; select * from orders, audit_log');
    expect(d.statements.map((s) => s.objects)).toEqual([
      ['app.orders'],
      [],
      ['other.orders', 'other.audit_log'],
    ]);
  });
  test('set_config with a literal is predicted too', () => {
    const d = facts("select set_config('search_path', 'public', false); select * from orders");
    expect(d.statements[1]!.objects).toEqual(['public.orders']);
  });
  test('commands, normalized statements and fingerprints per statement', () => {
    const d = facts(
      "SELECT * FROM orders WHERE id = 42 /* secret 123 */; DELETE FROM audit_log WHERE note = 'x'",
    );
    expect(d.statements.map((s) => s.command)).toEqual(['SELECT', 'DELETE']);
    expect(d.statements[0]!.normalized).toBe('SELECT * FROM orders WHERE id = $1');
    expect(d.statements[1]!.normalized).toBe('DELETE FROM audit_log WHERE note = $1');
    expect(d.statements[0]!.fingerprint).toMatch(/^[0-9a-f]{16}$/);
    expect(facts('select * from orders where id = 7').statements[0]!.fingerprint).toBe(
      d.statements[0]!.fingerprint,
    );
  });
  test('inner commands of data-modifying CTEs, EXPLAIN and PREPARE', () => {
    expect(facts('with d as (delete from orders returning *) select 1').statements[0]!.innerCommands).toEqual(
      ['DELETE'],
    );
    expect(facts('explain analyze update orders set x = 1').statements[0]!.innerCommands).toEqual(['UPDATE']);
    expect(facts('prepare p as delete from orders').statements[0]!.innerCommands).toEqual(['DELETE']);
  });
});

describe('parse errors, comments, tags', () => {
  test('unparseable text is denied with 42601', () => {
    const d = facts('selec * from orders');
    expect(d).toMatchObject({ kind: 'deny', sqlstate: '42601' });
    expect(d.message).toBe('dbguard: statement does not parse: syntax error at or near "selec"');
  });
  test('one bad statement denies the whole text', () => {
    expect(facts('select 1; drop tabel x').kind).toBe('deny');
  });
  test('empty and comment-only texts are allowed with no statements', () => {
    expect(facts('').statements).toEqual([]);
    expect(facts('/* nothing */ -- here').kind).toBe('allow');
  });
  test('sqlcommenter tags from a trailing or leading comment, url-decoded', () => {
    const d = facts(
      "select * from orders /*traceparent='00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',route='%2Fapi%2Forders'*/",
    );
    expect(d.tags).toEqual({
      traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
      route: '/api/orders',
    });
    expect(facts("/*app='x%20y'*/ select 1").tags).toEqual({ app: 'x y' });
    expect(facts('select 1 /* plain comment */').tags).toBeUndefined();
    expect(d.statements[0]!.normalized).toBe('select * from orders');
  });
});
