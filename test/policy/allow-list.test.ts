/**
 * Allow-lists and the (privilege, object) model (issues 25 and 23), against the real server:
 *
 * - the pairs the engine computes for a statement are the privileges PostgreSQL itself checks: for
 *   every statement and every (privilege, relation), a role that lacks only that privilege gets
 *   `permission denied for table X` exactly when the model says the statement exercises it;
 * - with that truth, an allow-list missing one pair refuses the statement and names the pair, and a
 *   Deny rule on one pair matches exactly the statements that exercise it;
 * - the reproductions (join, comma join, scalar sub-select, writable CTE under an Allow-SELECT
 *   rule) and reads through views, views over views and temporary views.
 */
import { execFileSync } from 'node:child_process';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest';
import type { CompiledPolicy } from '../../api/compiled.js';
import type { CatalogSnapshot } from '../../policy/catalog.js';
import type { Decision } from '../../policy/decision.js';
import { flattenExercises } from '../../policy/exercises.js';
import type { Identity } from '../../policy/identity.js';
import { judge } from '../../policy/judge.js';
import { initParser } from '../../policy/parser.js';
import { loadCatalog, policyOf, rule } from './fixtures.js';

const DB = `allow_list_${process.pid}`;
const ROLE_PREFIX = `al${process.pid}`;
const who: Identity = { groups: [], databaseUser: 'app', serviceAccount: 'shop/reporting' };

const SETUP = `
create table customers (id int primary key, name text, email text, ssn text);
create table orders (id int primary key, customer_id int, total int, note text);
create table items (id int primary key, order_id int, qty int);
create table audit (id int, what text);
create view customer_contacts as select id, email from customers;
create view contacts_v2 as select * from customer_contacts;
create view order_view as select o.id, o.total, c.name from orders o join customers c on c.id = o.customer_id;
create view inv_contacts with (security_invoker = true) as select id, email from customers;
create view inv_v2 with (security_invoker = true) as select * from inv_contacts;
create materialized view customer_mv as select id, ssn from customers;
create function order_total(int) returns int language sql as 'select $1';
create table events (id int, at date, what text) partition by range (at);
create table events_2024 partition of events for values from ('2024-01-01') to ('2025-01-01');
create table events_2025 partition of events for values from ('2025-01-01') to ('2026-01-01');
create table notes (id int, body text);
create rule notes_log as on delete to notes do also insert into audit values (old.id, 'note deleted');
insert into customers values (1, 'Ada', 'ada@example.org', '123-45-6789'), (2, 'Grace', 'grace@example.com', '234-56-7890');
insert into orders values (10, 1, 5, 'n1'), (11, 2, 7, 'n2');
insert into items values (100, 10, 1);
`;

/** Relations whose privileges the comparison covers (invoker views: the server checks the caller under them). */
const RELATIONS = ['customers', 'orders', 'items', 'audit', 'inv_contacts', 'inv_v2'];
const PRIVILEGES = ['SELECT', 'INSERT', 'UPDATE', 'DELETE'];

/** Statements whose privileges the model must compute exactly as the server checks them. */
const COMPARED: { sql: string; psql?: boolean }[] = [
  // the reproductions
  { sql: 'select c.ssn from orders o join customers c on c.id = o.customer_id' },
  { sql: 'select ssn from customers, orders' },
  { sql: 'select (select ssn from customers limit 1) from orders' },
  { sql: 'with d as (delete from orders where id = 999 returning 1) select count(*) from orders' },
  // sub-selects in every clause
  { sql: 'select * from orders where customer_id in (select id from customers)' },
  { sql: 'select * from orders where exists (select 1 from items where items.order_id = orders.id)' },
  {
    sql: 'select customer_id from orders group by customer_id having count(*) > (select count(*) from items)',
  },
  { sql: 'select * from orders order by (select max(qty) from items)' },
  { sql: 'select * from orders limit (select count(*) from items)' },
  { sql: 'select * from orders o join items i on i.qty = (select count(*) from customers)' },
  { sql: 'select * from orders o, lateral (select * from items i where i.order_id = o.id) x' },
  { sql: 'select * from orders where note = any (select email from customers)' },
  { sql: 'values ((select ssn from customers limit 1))' },
  // CTEs, set operations, TABLE
  { sql: 'with c as (select * from customers) select * from orders, c' },
  {
    sql: 'with recursive r(n) as (select 1 union all select n + 1 from r where n < 3) select * from r, orders',
  },
  { sql: 'select id from orders union select id from customers' },
  { sql: 'select id from orders intersect select order_id from items except select id from audit' },
  { sql: 'table orders' },
  // row locks
  { sql: 'select * from orders for update' },
  { sql: 'select * from orders o, items i where i.order_id = o.id for share of i' },
  { sql: 'select * from orders o join (select * from items) x on x.order_id = o.id for no key update of x' },
  { sql: 'select * from orders where exists (select 1 from items for key share)' },
  // writes: target reads, RETURNING, INSERT ... SELECT, ON CONFLICT, MERGE, writable CTEs
  { sql: 'insert into audit select id, note from orders' },
  { sql: "insert into audit values (1, 'x') returning id" },
  { sql: "insert into audit values (1, 'x') returning 1" },
  { sql: 'update orders set total = 1' },
  { sql: 'update orders set total = total + 1 where id = 10 returning id' },
  { sql: 'update orders set total = 1 from customers where customers.id = 1' },
  { sql: 'update orders set note = (select name from customers where id = 1) where id = 10' },
  { sql: 'delete from orders where customer_id in (select id from customers)' },
  { sql: 'delete from orders where true' },
  { sql: 'delete from orders using customers where customers.id = orders.customer_id' },
  { sql: "insert into orders values (10, 1, 1, 'x') on conflict (id) do update set total = excluded.total" },
  { sql: "insert into orders values (10, 1, 1, 'x') on conflict do nothing" },
  { sql: 'merge into orders o using customers c on o.customer_id = c.id when matched then delete' },
  {
    sql: 'merge into orders o using customers c on o.customer_id = c.id when matched then update set total = 0 when not matched then insert values (99, c.id, 0, null)',
  },
  { sql: 'merge into orders using (select 1 as x) s on true when matched then delete' },
  {
    sql: 'merge into orders o using items i on i.order_id = 10 when not matched then insert values (99, 1, i.qty)',
  },
  {
    sql: 'with u as (update orders set total = 0 where id = 10 returning *) insert into audit select id, note from u',
  },
  { sql: 'with w as (insert into audit values (1, null) returning *) select * from w' },
  // views the server checks as the caller (security_invoker), and views over them
  { sql: 'select * from inv_contacts' },
  { sql: 'select * from inv_v2' },
  { sql: 'select * from orders join inv_v2 on inv_v2.id = orders.customer_id' },
  { sql: "update inv_contacts set email = 'x' where id = 1" },
  // functions, cursors, EXPLAIN, CREATE TABLE AS, COPY
  { sql: 'select order_total(total) from orders' },
  { sql: 'declare c cursor for select * from orders join customers on customers.id = orders.customer_id' },
  { sql: 'explain select * from items, customers' },
  { sql: 'create temp table t_copy as select * from customers' },
  { sql: 'copy orders to stdout', psql: true },
  { sql: 'copy (select * from customers) to stdout', psql: true },
  { sql: 'copy audit from stdin', psql: true },
];

let su: pg.Client;
let app: pg.Client;
let catalog: CatalogSnapshot;
let suUrl: string;
const roles = new Map<string, string>();
const roleOf = (p: string, r: string) => roles.get(`${p} ${r}`)!;

/** `cat` null: no catalog snapshot at all. */
function judged(sql: string, p: CompiledPolicy, cat: CatalogSnapshot | null = catalog): Decision {
  return judge(
    sql,
    {
      identity: who,
      database: DB,
      searchPath: cat?.searchPath ?? ['pg_catalog', 'public'],
      ...(cat ? { catalog: cat } : {}),
    },
    { ...p, functionsAllow: ['public.order_total'] },
  );
}

/** The model's (privilege, relation) pairs within the compared universe, as `PRIV rel` (`direct`: not through a view). */
function modelPairs(sql: string, direct = false): string[] {
  const d = judged(sql, policyOf());
  const out = new Set<string>();
  for (const s of d.statements)
    for (const e of flattenExercises(s.exercises ?? [])) {
      if (direct && e.through) continue;
      const rel = e.object?.replace(/^public\./, '');
      if (rel && PRIVILEGES.includes(e.privilege) && RELATIONS.includes(rel))
        out.add(`${e.privilege} ${rel}`);
    }
  return [...out].sort();
}

/** What the server checks: run as each role lacking one privilege; `permission denied for <rel>` names it. */
async function serverPairs(sql: string, psql: boolean): Promise<string[]> {
  const out: string[] = [];
  for (const p of PRIVILEGES)
    for (const r of RELATIONS) {
      const role = roleOf(p, r);
      let message = '';
      if (psql) {
        try {
          execFileSync(
            'psql',
            [suUrl, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-c', `set role ${role}`, '-c', sql],
            {
              encoding: 'utf8',
              stdio: ['pipe', 'pipe', 'pipe'],
              input: '\\.\n',
            },
          );
        } catch (e) {
          message = String((e as { stderr?: string }).stderr ?? '');
        }
      } else {
        try {
          await su.query(`begin; set local role ${role}; ${sql}`);
        } catch (e) {
          message = (e as Error).message;
        } finally {
          await su.query('rollback');
        }
      }
      const m = /permission denied for (?:table|view|materialized view) (\w+)/.exec(message);
      if (m) {
        expect(m[1], `${sql} as ${role}: ${message}`).toBe(r);
        out.push(`${p} ${r}`);
      } else {
        expect(message, `${sql} as ${role}`).toBe('');
      }
    }
  return out.sort();
}

beforeAll(async () => {
  await initParser();
  const { url } = inject('pg');
  const root = new pg.Client({ connectionString: url });
  await root.connect();
  await root.query(`drop database if exists ${DB}`);
  await root.query(`create database ${DB} owner app`);
  await root.end();
  const u = new URL(url);
  u.pathname = `/${DB}`;
  suUrl = u.toString();
  su = new pg.Client({ connectionString: suUrl });
  await su.connect();
  const a = new URL(suUrl);
  a.username = 'app';
  a.password = 'app';
  app = new pg.Client({ connectionString: a.toString() });
  await app.connect();
  await app.query(SETUP);
  for (const p of PRIVILEGES)
    for (const r of RELATIONS) {
      const role = `${ROLE_PREFIX}_${p}_${r}`.toLowerCase();
      roles.set(`${p} ${r}`, role);
      await su.query(`drop role if exists ${role}; create role ${role} nologin;
        grant usage, create on schema public to ${role};
        grant all on all tables in schema public to ${role};
        revoke ${p} on ${r} from ${role}`);
    }
  catalog = await loadCatalog(app, policyOf());
}, 60_000);

afterAll(async () => {
  await app?.end();
  await su?.end();
  const c = new pg.Client({ connectionString: inject('pg').url });
  await c.connect();
  await c.query(`drop database if exists ${DB} with (force)`);
  for (const role of roles.values()) await c.query(`drop role if exists ${role}`);
  await c.end();
});

describe('the catalog snapshot knows what views read', () => {
  test('views, views over views, materialized views; not tables', () => {
    const reads = (v: string) =>
      catalog.viewReads
        .get(`public\u0000${v}`)
        ?.map((r) => r.name)
        .sort();
    expect(reads('customer_contacts')).toEqual(['customers']);
    expect(reads('contacts_v2')).toEqual(['customer_contacts']);
    expect(reads('order_view')).toEqual(['customers', 'orders']);
    expect(reads('customer_mv')).toEqual(['customers']);
    expect(reads('customers')).toBeUndefined();
    expect(catalog.ruleTargets.get('public\u0000notes')).toEqual([
      { event: 'DELETE', schema: 'public', name: 'audit' },
    ]);
  });
});

describe('the pairs a statement exercises are the privileges PostgreSQL checks', () => {
  test.each(COMPARED.map((c) => [c.sql, c] as const))('%s', async (sql, c) => {
    const truth = await serverPairs(sql, !!c.psql);
    expect(modelPairs(sql)).toEqual(truth);
    expect(truth.length, 'every compared statement exercises something').toBeGreaterThan(0);
    const direct = modelPairs(sql, true);

    for (const p of PRIVILEGES)
      for (const r of RELATIONS) {
        const exercised = truth.includes(`${p} ${r}`);
        // an allow-list permitting everything but this one pair (an allowed view covers what it reads)
        const others = [...catalog.relations.get('public')!.keys()]
          .filter((x) => x !== r)
          .map((x) => `public.${x}`);
        const allowList = policyOf({
          defaultAction: 'Deny',
          rules: [
            rule('everything-else', 'Allow', { objects: [...others, 'public.order_total', 'pg_temp*.*'] }),
            rule('all-but-one', 'Allow', {
              commands: [...PRIVILEGES.filter((x) => x !== p), 'MERGE', 'EXPLAIN', 'DECLARE CURSOR', 'COPY'],
              objects: [`public.${r}`],
            }),
          ],
        });
        const d = judged(sql, allowList);
        const named = direct.includes(`${p} ${r}`);
        expect(d.kind === 'deny', `allow-list without ${p} on ${r}: ${d.message}`).toBe(named);
        if (named) {
          expect(d.uncovered).toContainEqual(
            expect.objectContaining({ privilege: p, object: `public.${r}` }),
          );
          expect(d.message).toContain(`${p} on public.${r}`);
        }
        // a Deny rule on that one pair, under defaultAction Allow
        const denyOne = policyOf({
          rules: [rule('deny-one', 'Deny', { commands: [p], objects: [`public.${r}`] })],
        });
        expect(judged(sql, denyOne).kind === 'deny', `deny ${p} on ${r}`).toBe(exercised);
      }
  });
});

const ordersReaders = policyOf({
  defaultAction: 'Deny',
  rules: [rule('orders-readers', 'Allow', { commands: ['SELECT'], objects: ['public.orders'] })],
});

describe('issue 25: an Allow rule permits only the pairs it names', () => {
  test.each([
    ['select c.ssn from orders o join customers c on c.id = o.customer_id', 'SELECT on public.customers'],
    ['select ssn from customers, orders', 'SELECT on public.customers'],
    ['select (select ssn from customers limit 1) from orders', 'SELECT on public.customers'],
    [
      'with d as (delete from orders where id = 10 returning 1) select count(*) from orders',
      'DELETE on public.orders',
    ],
    [
      'select * from orders where exists (select 1 from customers where ssn like $$1%$$)',
      'SELECT on public.customers',
    ],
    ['select id from orders union all select id from customers', 'SELECT on public.customers'],
    ['table orders; table customers', 'SELECT on public.customers'],
    ['update orders set total = 0 where id = 10 returning total', 'UPDATE on public.orders'],
    ['insert into audit select id, note from orders', 'INSERT on public.audit'],
    ['copy orders to stdout', 'COPY on public.orders'],
    ['declare c cursor for select * from orders', 'DECLARE CURSOR on public.orders'],
    [
      'prepare p as select * from orders o join customers c on c.id = o.customer_id',
      'PREPARE on public.orders',
    ],
    ['select order_total(total) from orders', 'EXECUTE on public.order_total'],
    ['select * from order_view', 'SELECT on public.order_view'],
    ['do $$ begin perform 1; end $$', 'what DO block may do'],
    ['select * from orders, customer_mv', 'SELECT on public.customer_mv'],
  ])('%s is refused: no rule allows %s', (sql, pair) => {
    const d = judged(sql, { ...ordersReaders, functionsAllow: ['public.order_total'] });
    expect(d).toMatchObject({ kind: 'deny', sqlstate: '42501' });
    expect(d.rule).toBeUndefined();
    expect(d.message).toMatch(/^dbguard: statement denied by policy: no rule allows .+ \(rule default\)$/);
    expect(d.message).toContain(pair);
    expect(d.message).not.toMatch(/123-45|ada@/);
  });

  test('what it names is allowed, and the audit names the rule', () => {
    for (const sql of [
      'select count(*) from orders',
      'table orders',
      'select * from orders o join orders p on p.id = o.id',
    ]) {
      const d = judged(sql, ordersReaders);
      expect(d, sql).toMatchObject({ kind: 'allow', rule: 'orders-readers' });
    }
  });

  test('a statement that names no relation needs a rule without objects, except a SELECT of constants', () => {
    // a pool's health check reads nothing and calls nothing: a rule allowing some reads allows it
    for (const sql of ['select 1', 'SELECT 1 AS ok', 'values (1, 2)', 'select (select 1) + 2'])
      expect(judged(sql, ordersReaders), sql).toMatchObject({ kind: 'allow', rule: 'orders-readers' });
    // anything else without a relation is a command on no object: only a rule without objects permits it
    for (const sql of ['select now()', "select nextval('orders_seq')", 'set application_name = x', 'begin'])
      expect(judged(sql, ordersReaders), sql).toMatchObject({
        kind: 'deny',
        message: 'dbguard: statement denied by policy (rule default)',
      });
    expect(judged('select pg_terminate_backend(1)', ordersReaders).uncovered).toEqual([
      { privilege: 'SELECT', object: null },
    ]);
    // a Deny naming objects does not match a statement that reads none
    const noOrders = policyOf({
      rules: [rule('no-orders', 'Deny', { commands: ['SELECT'], objects: ['public.orders'] })],
    });
    expect(judged('select 1', noOrders).kind).toBe('allow');
    const withSession = {
      ...ordersReaders,
      rules: [
        ...ordersReaders.rules,
        rule('session', 'Allow', { commands: ['SET', 'SHOW', 'BEGIN', 'COMMIT'] }),
      ],
    };
    expect(judged('set application_name = x', withSession).kind).toBe('allow');
    expect(judged('select now()', withSession).kind).toBe('deny');
  });

  test('allowing every pair of the join allows it; the writable CTE needs DELETE on orders', () => {
    const both = policyOf({
      defaultAction: 'Deny',
      rules: [
        rule('orders', 'Allow', { commands: ['SELECT'], objects: ['public.orders'] }),
        rule('customers', 'Allow', { commands: ['SELECT'], objects: ['public.customers'] }),
      ],
    });
    expect(judged('select c.ssn from orders o join customers c on c.id = o.customer_id', both).kind).toBe(
      'allow',
    );
    expect(
      judged('with d as (delete from orders where id = 10 returning 1) select 1', both).uncovered,
    ).toEqual([{ privilege: 'DELETE', object: 'public.orders' }]);
  });

  test('opaque statements: only an Allow rule wide in commands and objects covers them', () => {
    const narrow = policyOf({
      defaultAction: 'Deny',
      rules: [rule('a', 'Allow', { commands: ['*'], objects: ['public.*'] })],
    });
    const wide = policyOf({ defaultAction: 'Deny', rules: [rule('a', 'Allow', { commands: ['*'] })] });
    for (const sql of ['do $$ begin null; end $$', 'select evil_fn(1) from orders', 'call p()']) {
      expect(judged(sql, narrow).kind, sql).toBe('deny');
      expect(judged(sql, wide).kind, sql).toBe('allow');
    }
  });

  test('rule order keeps its meaning for Deny: an earlier Allow on another pair does not help', () => {
    const p = policyOf({
      rules: [
        rule('orders-ok', 'Allow', { commands: ['SELECT'], objects: ['public.orders'] }),
        rule('no-customers', 'Deny', { commands: ['SELECT'], objects: ['public.customers'] }),
      ],
    });
    expect(judged('select * from orders join customers on true', p)).toMatchObject({
      kind: 'deny',
      rule: 'no-customers',
    });
    expect(judged('select * from orders', p)).toMatchObject({ kind: 'allow', rule: 'orders-ok' });
  });
});

describe('views are not a way around a rule', () => {
  const noCustomers = policyOf({
    rules: [rule('no-customers', 'Deny', { commands: ['SELECT'], objects: ['public.customers'] })],
  });

  test.each([
    'select * from customer_contacts',
    'select * from contacts_v2',
    'select o.id, c.email from orders o join customer_contacts c on c.id = o.customer_id',
    'select * from order_view',
    'select * from customer_mv',
    'create temp view tv as select * from customer_contacts; select * from tv',
    'with x as (select * from contacts_v2) select * from x',
    'copy customer_contacts to stdout',
    "update customer_contacts set email = 'x' where id = 1",
  ])('a Deny on the table matches %s', (sql) => {
    expect(judged(sql, noCustomers)).toMatchObject({ kind: 'deny', rule: 'no-customers' });
  });

  test('a temporary view from an earlier statement of the session, found in the snapshot', async () => {
    await app.query('create temp view tv_session as select * from contacts_v2');
    try {
      const cat = await loadCatalog(app, policyOf());
      expect(judged('select * from tv_session', noCustomers, cat)).toMatchObject({
        kind: 'deny',
        rule: 'no-customers',
      });
      expect(judged('select * from orders', noCustomers, cat).kind).toBe('allow');
    } finally {
      await app.query('drop view tv_session');
    }
  });

  test('an Allow rule naming the view makes it the interface: it covers what the view reads', () => {
    const viaView = policyOf({
      rules: [
        rule('contacts-interface', 'Allow', { commands: ['SELECT'], objects: ['public.customer_contacts'] }),
        ...noCustomers.rules,
      ],
    });
    expect(judged('select * from customer_contacts', viaView)).toMatchObject({
      kind: 'allow',
      rule: 'contacts-interface',
    });
    expect(judged('select * from contacts_v2', viaView).kind).toBe('allow');
    expect(judged('select * from customers', viaView)).toMatchObject({ kind: 'deny', rule: 'no-customers' });
    expect(judged('select * from order_view', viaView)).toMatchObject({ kind: 'deny', rule: 'no-customers' });
    // the same under an allow-list: the view is enough, the table itself stays closed
    const allowList = policyOf({ defaultAction: 'Deny', rules: [viaView.rules[0]!] });
    expect(judged('select * from customer_contacts', allowList).kind).toBe('allow');
    expect(judged('select * from customers', allowList).uncovered).toEqual([
      { privilege: 'SELECT', object: 'public.customers' },
    ]);
    expect(judged('select * from contacts_v2', allowList).uncovered).toEqual([
      { privilege: 'SELECT', object: 'public.contacts_v2' },
    ]);
  });

  test('without a catalog snapshot a relation may be a view over anything: refused for object rules', () => {
    expect(judged('select * from customer_contacts', noCustomers, null)).toMatchObject({
      kind: 'deny',
      rule: 'no-customers',
      message:
        'dbguard: statement denied by policy: without a catalog snapshot a relation may be a view over what this rule denies (rule no-customers)',
    });
    expect(judged('select * from orders', noCustomers, null).kind).toBe('deny');
    // an Allow rule naming the relation covers whatever it reads: no snapshot needed
    expect(judged('select * from orders', ordersReaders, null)).toMatchObject({
      kind: 'allow',
      rule: 'orders-readers',
    });
    // system catalogs are not views over user tables
    expect(judged('select * from pg_catalog.pg_class', noCustomers, null).kind).toBe('allow');
    expect(judged('select 1', noCustomers, null).kind).toBe('allow');
    // with the snapshot, that relation is seen for what it is
    expect(judged('select * from orders', noCustomers).kind).toBe('allow');
  });

  test('a relation the snapshot does not know (created since) asks for a refresh', () => {
    const d = judged('select * from created_since', noCustomers);
    expect(d).toMatchObject({ kind: 'deny', rule: 'no-customers', refreshCatalog: true });
    const approve = policyOf({
      rules: [
        rule('approve-order-deletes', 'RequireApproval', {
          commands: ['DELETE'],
          objects: ['public.orders'],
        }),
      ],
    });
    expect(judged('delete from created_since where id = 1', approve)).toMatchObject({
      kind: 'approval',
      refreshCatalog: true,
    });
    expect(judged('delete from orders where id = 1', approve).refreshCatalog).toBeUndefined();
  });
});

describe('inheritance and partitions', () => {
  test('reading or writing a parent without ONLY exercises its partitions; an Allow on the parent covers them', () => {
    expect(
      catalog.children
        .get('public\u0000events')
        ?.map((c) => c.name)
        .sort(),
    ).toEqual(['events_2024', 'events_2025']);
    const no2024 = policyOf({
      rules: [rule('no-2024', 'Deny', { commands: ['SELECT', 'DELETE'], objects: ['public.events_2024'] })],
    });
    for (const sql of [
      'select * from events',
      'select count(*) from orders, events',
      "delete from events where what = 'x'",
    ])
      expect(judged(sql, no2024), sql).toMatchObject({ kind: 'deny', rule: 'no-2024' });
    for (const sql of ['select * from only events', 'select * from events_2025'])
      expect(judged(sql, no2024).kind, sql).toBe('allow');
    const eventsOnly = policyOf({
      defaultAction: 'Deny',
      rules: [rule('events', 'Allow', { commands: ['SELECT'], objects: ['public.events'] })],
    });
    expect(judged('select * from events', eventsOnly).kind).toBe('allow');
    expect(judged('select * from events_2024', eventsOnly).uncovered).toEqual([
      { privilege: 'SELECT', object: 'public.events_2024' },
    ]);
  });
});

describe('rewrite rules on tables', () => {
  test('a DELETE on a table whose rule inserts elsewhere exercises that insert', () => {
    const noAudit = policyOf({
      rules: [rule('no-audit-writes', 'Deny', { commands: ['INSERT'], objects: ['public.audit'] })],
    });
    expect(judged('delete from notes where id = 1', noAudit)).toMatchObject({
      kind: 'deny',
      rule: 'no-audit-writes',
    });
    expect(judged("insert into notes values (1, 'x')", noAudit).kind).toBe('allow');
    // an Allow rule naming the table covers what its rules do, as for views
    const notesOnly = policyOf({
      defaultAction: 'Deny',
      rules: [rule('notes', 'Allow', { commands: ['SELECT', 'DELETE'], objects: ['public.notes'] })],
    });
    expect(judged('delete from notes where id = 1', notesOnly).kind).toBe('allow');
  });
});

describe('issue 23 item 5: rules see what a statement does, not only its tag', () => {
  test.each([
    ['merge into orders using (select 1) s on true when matched then delete', 'DELETE'],
    [
      'merge into orders o using customers c on o.customer_id = c.id when matched then update set total = 0',
      'UPDATE',
    ],
    ["insert into orders values (10, 1, 1, 'x') on conflict (id) do update set note = 'y'", 'UPDATE'],
    ['copy orders from stdin', 'INSERT'],
    ['explain analyze delete from orders where id = 1', 'DELETE'],
    ['prepare p as update orders set total = 1 where id = $1', 'UPDATE'],
    ['create rule r as on insert to audit do also delete from orders where id = new.id', 'DELETE'],
  ])('%s matches a rule on %s', (sql, command) => {
    const p = policyOf({
      rules: [rule('no-writes', 'Deny', { commands: [command], objects: ['public.orders'] })],
    });
    expect(judged(sql, p)).toMatchObject({ kind: 'deny', rule: 'no-writes' });
  });

  test.each([
    'copy orders to stdout',
    'update audit set what = (select note from orders limit 1) where id = 1',
    'update orders set total = 1 where id = 10 returning total',
    'insert into audit select id, note from orders',
    'merge into audit a using orders o on a.id = o.id when matched then delete',
    'with x as (select * from orders) update audit set what = x.note from x where audit.id = x.id returning x.note',
    'create table stolen as select * from orders',
  ])('a Deny on reading orders matches %s', (sql) => {
    const p = policyOf({
      rules: [rule('no-orders', 'Deny', { commands: ['SELECT'], objects: ['public.orders'] })],
    });
    expect(judged(sql, p)).toMatchObject({ kind: 'deny', rule: 'no-orders' });
  });

  test('but not writes that read nothing of it', () => {
    const p = policyOf({
      rules: [rule('no-orders', 'Deny', { commands: ['SELECT'], objects: ['public.orders'] })],
    });
    for (const sql of [
      "insert into orders values (12, 1, 1, 'x')",
      'update orders set total = 0',
      'delete from orders where true',
    ])
      expect(judged(sql, p).kind, sql).toBe('allow');
  });
});
