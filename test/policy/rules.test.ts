/**
 * Rules (contract §1): DROP blocked under disguise, withoutWhere, subjects, first match, default
 * action, approval, DryRun. Pure: hand-made catalog.
 */
import { beforeAll, describe, expect, test } from 'vitest';
import type { CompiledPolicy } from '../../api/compiled.js';
import { parseCatalog } from '../../policy/catalog.js';
import type { Identity } from '../../policy/identity.js';
import { judge } from '../../policy/judge.js';
import { initParser } from '../../policy/parser.js';
import { commandMatches, objectMatches } from '../../policy/rules.js';
import { policyOf, rule } from './fixtures.js';

const catalog = parseCatalog([
  ['path', 'pg_catalog', '1', null, null, null, null, null],
  ['path', 'public', '2', null, null, null, null, null],
  ['schema', 'public', null, null, null, null, null, null],
  ['schema', 'audit', null, null, null, null, null, null],
  ['rel', 'public', 'orders', 'r', null, null, null, null],
  ['rel', 'audit', 'audit_log', 'r', null, null, null, null],
  ['rel', 'public', 'audit_log', 'r', null, null, null, null],
  ['func', 'public', 'order_total', null, null, null, null, null],
  ['version', 'v1', null, null, null, null, null, null],
]);

const dev: Identity = { groups: ['developers'], databaseUser: 'app', serviceAccount: 'shop/checkout' };
const dba: Identity = { groups: ['dba'], databaseUser: 'admin', user: 'alice@example.com' };
const ctxOf = (identity: Identity) => ({
  identity,
  database: 'app',
  searchPath: ['pg_catalog', 'public'],
  catalog,
});

const policy: CompiledPolicy = policyOf({
  rules: [
    rule('dba-anything', 'Allow', { subjects: [{ kind: 'Group', name: 'dba' }] }),
    rule(
      'no-destructive-ddl',
      'Deny',
      { commands: ['DROP *', 'TRUNCATE TABLE', 'ALTER *'] },
      'Schema changes go through migrations.',
    ),
    rule('bulk-deletes', 'RequireApproval', { commands: ['DELETE', 'UPDATE'], withoutWhere: true }),
    rule('audit-read-only', 'Deny', {
      commands: ['INSERT', 'UPDATE', 'DELETE', 'MERGE'],
      objects: ['*.audit_log'],
    }),
    rule('checkout-sa', 'Allow', {
      subjects: [{ kind: 'ServiceAccount', name: 'checkout', namespace: 'shop' }],
    }),
  ],
  defaultAction: 'Deny',
  functionsAllow: ['public.order_total'],
});
policy.rules[2]!.approval = { mode: 'Wait', timeoutSeconds: 300, validForSeconds: 3600 };

beforeAll(async () => {
  await initParser();
});

describe('pattern matching', () => {
  test.each([
    ['DROP *', 'DROP TABLE', true],
    ['DROP *', 'DROP', false],
    ['drop *', 'DROP SCHEMA', true],
    ['*', 'SELECT', true],
    ['TRUNCATE TABLE', 'TRUNCATE TABLE', true],
    ['ALTER *', 'ALTER TABLE', true],
    ['SELECT', 'SELECT INTO', false],
  ] as const)('command %s ~ %s → %s', (p, t, want) => expect(commandMatches(p, t)).toBe(want));
  test.each([
    ['public.*', 'public.orders', true],
    ['public.*', 'audit.orders', false],
    ['*.audit_log', 'audit.audit_log', true],
    ['*', 'x.y', true],
    ['public.ord*', 'public.orders', true],
    ['audit_log', 'audit.audit_log', true],
    ['public.orders', 'public.*', true],
    ['audit.*', 'public.*', false],
  ] as const)('object %s ~ %s → %s', (p, o, want) => expect(objectMatches(p, o)).toBe(want));
});

describe('DROP is blocked under disguise', () => {
  test.each([
    'DROP TABLE orders',
    'drop table orders',
    'DrOp TaBlE "orders"',
    '/* harmless */ drop /* really */ table -- yes\n orders',
    'drop table if exists public.orders cascade',
    'select 1; drop table orders',
    'select 1; select 2; DROP SCHEMA public CASCADE',
    'drop view if exists v cascade',
    "do $$ begin execute 'drop table orders'; end $$",
    "DO LANGUAGE plpgsql $x$BEGIN EXECUTE format('DR' || 'OP TABLE %I', 'orders'); END$x$",
    'call drop_everything()',
    'select nosuch_helper_that_drops()',
    'truncate orders',
    'alter table orders rename to o2',
    'explain analyze create table x as select 1; drop table x',
  ])('%s', (sql) => {
    const d = judge(sql, ctxOf(dev), policy);
    expect(d.kind).toBe('deny');
    expect(d.sqlstate).toBe('42501');
    expect(d.rule).toBe('no-destructive-ddl');
    expect(d.message).toBe('dbguard: Schema changes go through migrations. (rule no-destructive-ddl)');
  });

  test('CTEs cannot hide a destructive statement behind SELECT', () => {
    const d = judge(
      'with d as (delete from audit_log where id = 1 returning *) select * from d',
      ctxOf(dev),
      policy,
    );
    expect(d).toMatchObject({ kind: 'deny', rule: 'audit-read-only' });
  });
});

describe('withoutWhere, approval, objects', () => {
  test('DELETE/UPDATE without WHERE need approval', () => {
    for (const sql of [
      'delete from orders',
      'update orders set x = 1',
      'with d as (delete from orders returning 1) select 1',
    ]) {
      const d = judge(sql, ctxOf(dev), policy);
      expect(d.kind, sql).toBe('approval');
      expect(d.rule).toBe('bulk-deletes');
      expect(d.approval).toEqual({ mode: 'Wait', timeoutSeconds: 300, validForSeconds: 3600 });
    }
  });
  test('with a WHERE clause that bounds the rows the checkout service account is allowed', () => {
    expect(judge('delete from orders where id = 1', ctxOf(dev), policy).kind).toBe('allow');
  });
  test('a constant-true condition and MERGE without a bound need approval too (issue 23)', () => {
    for (const sql of [
      'delete from orders where true',
      'update orders set x = 1 where 1 = 1',
      'delete from orders where id = 5 or true',
      'merge into orders o using (select 1) s on true when matched then delete',
      'merge into orders o using (select 1) s on true when matched then update set x = 1',
    ])
      expect(judge(sql, ctxOf(dev), policy), sql).toMatchObject({ kind: 'approval', rule: 'bulk-deletes' });
  });
  test('objects pattern *.audit_log catches any schema and resolved names', () => {
    expect(judge('insert into audit_log values (1)', ctxOf(dev), policy).rule).toBe('audit-read-only');
    expect(judge('insert into audit.audit_log values (1)', ctxOf(dev), policy).rule).toBe('audit-read-only');
    expect(judge('select * from audit.audit_log', ctxOf(dev), policy).kind).toBe('allow');
  });
  test('deny beats approval across statements of one text', () => {
    const d = judge('delete from orders; drop table orders', ctxOf(dev), policy);
    expect(d).toMatchObject({ kind: 'deny', rule: 'no-destructive-ddl' });
  });
  test('an allowed user-defined function is not opaque; others are', () => {
    expect(judge('select order_total(1)', ctxOf(dev), policy).kind).toBe('allow');
    expect(judge('select evil_fn(1)', ctxOf(dev), policy).kind).toBe('deny');
  });
});

describe('subjects, first match, default action', () => {
  test('first match wins: dba group is allowed to DROP', () => {
    expect(judge('drop table orders', ctxOf(dba), policy).kind).toBe('allow');
  });
  test('no rule matches → defaultAction Deny with (rule default)', () => {
    const other: Identity = { groups: [], databaseUser: 'app', serviceAccount: 'shop/other' };
    const d = judge('select 1', ctxOf(other), policy);
    expect(d).toMatchObject({ kind: 'deny', sqlstate: '42501' });
    expect(d.rule).toBeUndefined();
    expect(d.message).toBe('dbguard: statement denied by policy (rule default)');
  });
  test('each subject kind matches its identity field', () => {
    const p = (s: Parameters<typeof rule>[2]['subjects']) =>
      policyOf({ rules: [rule('r', 'Deny', { subjects: s })] });
    const id: Identity = { serviceAccount: 'ns/sa', user: 'u@x', groups: ['g1', 'g2'], databaseUser: 'db' };
    const c = ctxOf(id);
    expect(judge('select 1', c, p([{ kind: 'ServiceAccount', name: 'sa', namespace: 'ns' }])).kind).toBe(
      'deny',
    );
    expect(judge('select 1', c, p([{ kind: 'ServiceAccount', name: 'sa', namespace: 'other' }])).kind).toBe(
      'allow',
    );
    expect(judge('select 1', c, p([{ kind: 'User', name: 'u@x' }])).kind).toBe('deny');
    expect(judge('select 1', c, p([{ kind: 'Group', name: 'g2' }])).kind).toBe('deny');
    expect(judge('select 1', c, p([{ kind: 'Group', name: 'g3' }])).kind).toBe('allow');
    expect(judge('select 1', c, p([{ kind: 'DatabaseUser', name: 'db' }])).kind).toBe('deny');
    expect(judge('select 1', c, p([{ kind: 'User', name: 'db' }])).kind).toBe('allow');
  });
});

describe('DryRun', () => {
  test('the decision is computed but not enforced; the original SQL is forwarded', () => {
    const p = { ...policy, enforcement: 'DryRun' as const };
    const d = judge('drop table orders', ctxOf(dev), p);
    expect(d).toMatchObject({
      kind: 'deny',
      rule: 'no-destructive-ddl',
      enforced: false,
      sql: 'drop table orders',
    });
    expect(judge('select 1', ctxOf(dev), policy).enforced).toBe(true);
  });
});
