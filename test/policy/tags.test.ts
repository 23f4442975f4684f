/**
 * Command tags for a few hundred statements, checked two ways: against the tag expected from
 * PostgreSQL's cmdtaglist.h, and, for those that can run inside a rolled-back transaction, against
 * the tag the real server sends in CommandComplete.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest';
import { analyzeStatement } from '../../policy/analyze.js';
import { initParser, parseText } from '../../policy/parser.js';

const S = 'tg_' + process.pid;

/** [statement, expected tag, runs on the server inside a transaction block] */
const CASES: [string, string, boolean?][] = [
  ['SELECT 1', 'SELECT', true],
  ['select * from t', 'SELECT', true],
  ['TABLE t', 'SELECT', true],
  ['VALUES (1), (2)', 'SELECT', true],
  ['WITH x AS (SELECT 1) SELECT * FROM x', 'SELECT', true],
  [
    'WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r',
    'SELECT',
    true,
  ],
  ['WITH d AS (DELETE FROM t WHERE a = 1 RETURNING *) SELECT * FROM d', 'SELECT', true],
  ['SELECT a INTO newt FROM t', 'SELECT', true],
  ['select a from t union select b from u', 'SELECT', true],
  ['select a from t intersect all select b from u', 'SELECT', true],
  ['select a from t except select b from u order by 1', 'SELECT', true],
  ['select a, count(*) from t group by grouping sets ((a), ())', 'SELECT', true],
  ['select a, rank() over (partition by b order by a) from t', 'SELECT', true],
  ['select * from t order by a fetch first 2 rows with ties', 'SELECT', true],
  ['select * from t tablesample system (50)', 'SELECT', true],
  ['select * from rows from (generate_series(1,3), generate_series(1,2)) as x(a, b)', 'SELECT', true],
  ['select * from t, lateral (select * from u where u.b = t.a) l', 'SELECT', true],
  ['select * from t for update', 'SELECT', true],
  ['select * from t for no key update skip locked', 'SELECT', true],
  ["select E'a\\nb', $$x$$, $tag$y$tag$", 'SELECT', true],
  ['select "Mixed"."Col" from (select 1 as "Col") "Mixed"', 'SELECT', true],
  ['select é from (select 1 as é) x', 'SELECT', true],
  ['INSERT INTO t VALUES (10, 2)', 'INSERT', true],
  ['insert into t (a) select b + 100 from u', 'INSERT', true],
  ['insert into t values (1, 2) on conflict do nothing', 'INSERT', true],
  ['insert into t values (11, 2) returning *', 'INSERT', true],
  ['insert into u default values', 'INSERT', true],
  ['UPDATE t SET b = 2', 'UPDATE', true],
  ['update t set b = u.b from u where u.b = t.a', 'UPDATE', true],
  ['update t set (a, b) = (select 1, 2) where a = 1', 'UPDATE', true],
  ['DELETE FROM t', 'DELETE', true],
  ['delete from t using u where u.b = t.a', 'DELETE', true],
  [
    'merge into t using u on t.a = u.b when matched then update set b = 1 when not matched then insert values (u.b, 0)',
    'MERGE',
    true,
  ],
  ['merge into t using u on t.a = u.b when matched then delete', 'MERGE', true],
  ['COPY t TO STDOUT', 'COPY', false],
  ['copy (select 1) to stdout with (format csv)', 'COPY', false],
  ['copy t from stdin', 'COPY', false],
  ['TRUNCATE t', 'TRUNCATE TABLE', true],
  ['truncate table t, u restart identity cascade', 'TRUNCATE TABLE', true],
  ['DROP TABLE u', 'DROP TABLE', true],
  ['drop table if exists nope cascade', 'DROP TABLE', true],
  ['drop view v', 'DROP VIEW', true],
  ['drop materialized view if exists mv', 'DROP MATERIALIZED VIEW', true],
  ['drop index if exists ti', 'DROP INDEX', true],
  ['drop sequence if exists sq', 'DROP SEQUENCE', true],
  ['drop schema if exists nope_schema cascade', 'DROP SCHEMA', true],
  ['drop function if exists nope_fn()', 'DROP FUNCTION', true],
  ['drop procedure if exists nope_proc()', 'DROP PROCEDURE', true],
  ['drop routine if exists nope_r()', 'DROP ROUTINE', true],
  ['drop aggregate if exists nope_agg(int)', 'DROP AGGREGATE', true],
  ['drop operator if exists === (int, int)', 'DROP OPERATOR', true],
  ['drop type if exists nope_type', 'DROP TYPE', true],
  ['drop domain if exists nope_domain', 'DROP DOMAIN', true],
  ['drop trigger if exists nope_trg on t', 'DROP TRIGGER', true],
  ['drop rule if exists nope_rule on t', 'DROP RULE', true],
  ['drop policy if exists nope_pol on t', 'DROP POLICY', true],
  ['drop extension if exists nope_ext', 'DROP EXTENSION', true],
  ['drop foreign table if exists nope_ft', 'DROP FOREIGN TABLE', true],
  ['drop collation if exists nope_coll', 'DROP COLLATION', true],
  ['drop conversion if exists nope_conv', 'DROP CONVERSION', true],
  ['drop statistics if exists nope_stat', 'DROP STATISTICS', true],
  ['drop text search configuration if exists nope_tsc', 'DROP TEXT SEARCH CONFIGURATION', true],
  ['drop text search dictionary if exists nope_tsd', 'DROP TEXT SEARCH DICTIONARY', true],
  ['drop publication if exists nope_pub', 'DROP PUBLICATION', true],
  ['drop server if exists nope_srv', 'DROP SERVER', true],
  ['drop event trigger if exists nope_evt', 'DROP EVENT TRIGGER', true],
  ['drop cast if exists (int as nope_type)', 'DROP CAST', false],
  ['drop access method if exists nope_am', 'DROP ACCESS METHOD', true],
  ['drop owned by current_user', 'DROP OWNED', false],
  ['drop role if exists nope_role_x', 'DROP ROLE', true],
  ['drop database if exists nope_db', 'DROP DATABASE', false],
  ['drop tablespace if exists nope_ts', 'DROP TABLESPACE', false],
  ['drop subscription if exists nope_sub', 'DROP SUBSCRIPTION', true],
  ['drop user mapping if exists for current_user server nope_srv', 'DROP USER MAPPING', false],
  ['drop language if exists nope_lang', 'DROP LANGUAGE', true],
  ['drop transform if exists for int language sql', 'DROP TRANSFORM', false],
  ['drop operator class if exists nope_opc using btree', 'DROP OPERATOR CLASS', false],
  ['drop operator family if exists nope_opf using btree', 'DROP OPERATOR FAMILY', false],
  ['drop foreign data wrapper if exists nope_fdw', 'DROP FOREIGN DATA WRAPPER', true],
  ['ALTER TABLE t ADD COLUMN c int', 'ALTER TABLE', true],
  ['alter table t rename column b to bb', 'ALTER TABLE', true],
  ['alter table t rename to t2', 'ALTER TABLE', true],
  ['alter table t set schema public', 'ALTER TABLE', true],
  ['alter table t owner to current_user', 'ALTER TABLE', true],
  ['alter table u alter column b type bigint using b::bigint', 'ALTER TABLE', true],
  ['alter table t add constraint tc check (a > 0) not valid', 'ALTER TABLE', true],
  ['alter table t rename constraint t_pkey to t_pk', 'ALTER TABLE', true],
  ['alter view v rename to v2', 'ALTER VIEW', true],
  ['alter view v set schema public', 'ALTER VIEW', true],
  ['alter view v rename column a to aa', 'ALTER VIEW', true],
  ['alter index ti rename to ti2', 'ALTER INDEX', true],
  ['alter index ti set (fillfactor = 70)', 'ALTER INDEX', true],
  ['alter sequence sq restart', 'ALTER SEQUENCE', true],
  ['alter sequence sq rename to sq2', 'ALTER SEQUENCE', true],
  ['alter materialized view mv rename to mv2', 'ALTER MATERIALIZED VIEW', true],
  ['alter function f(int) rename to f2', 'ALTER FUNCTION', true],
  ['alter function f(int) immutable', 'ALTER FUNCTION', true],
  ['alter function f(int) owner to current_user', 'ALTER FUNCTION', true],
  ['alter schema sc rename to sc2', 'ALTER SCHEMA', true],
  ["alter type ty add value 'c'", 'ALTER TYPE', false],
  ['alter type ty rename to ty2', 'ALTER TYPE', true],
  ['alter domain dm set default 1', 'ALTER DOMAIN', true],
  ["alter database postgres set work_mem = '4MB'", 'ALTER DATABASE', false],
  ["alter role current_user set work_mem = '4MB'", 'ALTER ROLE', false],
  ["alter system set work_mem = '4MB'", 'ALTER SYSTEM', false],
  ['alter default privileges grant select on tables to public', 'ALTER DEFAULT PRIVILEGES', true],
  ['alter trigger trg on t rename to trg2', 'ALTER TRIGGER', true],
  ['alter policy pol on t rename to pol2', 'ALTER POLICY', true],
  ['alter rule r1 on u rename to r2', 'ALTER RULE', true],
  ['alter statistics st rename to st2', 'ALTER STATISTICS', true],
  ['alter aggregate ag(int) rename to ag2', 'ALTER AGGREGATE', true],
  ['alter operator === (int, int) owner to current_user', 'ALTER OPERATOR', true],
  ['alter table if exists nope_t add column x int', 'ALTER TABLE', true],
  ['alter foreign table if exists nope_ft add column x int', 'ALTER FOREIGN TABLE', true],
  ['alter text search configuration tsc rename to tsc2', 'ALTER TEXT SEARCH CONFIGURATION', true],
  ['alter large object 1 owner to current_user', 'ALTER LARGE OBJECT', false],
  ['alter collation coll rename to coll2', 'ALTER COLLATION', false],
  ['alter extension plpgsql update', 'ALTER EXTENSION', false],
  ['alter publication pub owner to current_user', 'ALTER PUBLICATION', false],
  ['alter event trigger evt disable', 'ALTER EVENT TRIGGER', false],
  ['alter procedure p() rename to p2', 'ALTER PROCEDURE', true],
  ['alter routine f(int) rename to f3', 'ALTER ROUTINE', true],
  ['alter tablespace pg_default set (seq_page_cost = 1)', 'ALTER TABLESPACE', false],
  ["alter server srv options (add x '1')", 'ALTER SERVER', false],
  ['CREATE TABLE c1 (a int)', 'CREATE TABLE', true],
  ['create temp table c2 (a int primary key, b text default now()::text)', 'CREATE TABLE', true],
  ['create table c3 (like t including all)', 'CREATE TABLE', true],
  ['create unlogged table if not exists c4 (a int)', 'CREATE TABLE', true],
  ['create table c5 (a int) partition by range (a)', 'CREATE TABLE', true],
  ['CREATE TABLE c6 AS SELECT * FROM t', 'CREATE TABLE AS', true],
  ['create table c7 as select 1 with no data', 'CREATE TABLE AS', true],
  ['create materialized view mv2 as select * from t', 'CREATE MATERIALIZED VIEW', true],
  ['create view v3 as select * from t', 'CREATE VIEW', true],
  ['create or replace view v4 as select 1 as x', 'CREATE VIEW', true],
  ['create recursive view v5 (n) as select 1', 'CREATE VIEW', true],
  ['CREATE INDEX ON t (a)', 'CREATE INDEX', true],
  ['create unique index ti3 on t using btree (a) where b > 0', 'CREATE INDEX', true],
  ['create index concurrently ti4 on t (b)', 'CREATE INDEX', false],
  ['create schema sc3', 'CREATE SCHEMA', true],
  ['create schema sc4 create table x (a int) create view y as select 1', 'CREATE SCHEMA', true],
  ['create sequence sq3', 'CREATE SEQUENCE', true],
  ['create function f3() returns int language sql as $$select 1$$', 'CREATE FUNCTION', true],
  [
    'create or replace function f4(x int) returns int language plpgsql as $$begin return x; end$$',
    'CREATE FUNCTION',
    true,
  ],
  ['create procedure p3() language sql as $$select 1$$', 'CREATE PROCEDURE', true],
  ['create aggregate ag3(int) (sfunc = int4pl, stype = int)', 'CREATE AGGREGATE', true],
  ['create operator ==== (leftarg = int, rightarg = int, function = int4eq)', 'CREATE OPERATOR', true],
  ['create type ty3 as (a int, b text)', 'CREATE TYPE', true],
  ["create type ty4 as enum ('a')", 'CREATE TYPE', true],
  ['create type ty5 as range (subtype = float8)', 'CREATE TYPE', true],
  ['create type ty6', 'CREATE TYPE', true],
  ['create domain dm3 as int check (value > 0)', 'CREATE DOMAIN', true],
  ['create trigger trg3 before insert on t for each row execute function trgf()', 'CREATE TRIGGER', true],
  ['create rule r3 as on insert to t do also notify t', 'CREATE RULE', true],
  ['create policy pol3 on t using (a > 0)', 'CREATE POLICY', true],
  ['create extension if not exists plpgsql', 'CREATE EXTENSION', true],
  ['create statistics st3 on a, b from t', 'CREATE STATISTICS', true],
  ['create text search configuration tsc3 (copy = english)', 'CREATE TEXT SEARCH CONFIGURATION', true],
  ['create text search dictionary tsd3 (template = simple)', 'CREATE TEXT SEARCH DICTIONARY', true],
  ["create collation coll3 (locale = 'C')", 'CREATE COLLATION', true],
  ['create cast (int as ty2) with inout', 'CREATE CAST', false],
  ["create conversion conv3 for 'LATIN1' to 'UTF8' from iso8859_1_to_utf8", 'CREATE CONVERSION', true],
  ['create publication pub3', 'CREATE PUBLICATION', true],
  ['create foreign data wrapper fdw3', 'CREATE FOREIGN DATA WRAPPER', false],
  ['create server srv3 foreign data wrapper fdw3', 'CREATE SERVER', false],
  ['create foreign table ft3 (a int) server srv3', 'CREATE FOREIGN TABLE', false],
  ['create user mapping for current_user server srv3', 'CREATE USER MAPPING', false],
  ['import foreign schema x from server srv3 into public', 'IMPORT FOREIGN SCHEMA', false],
  ['create event trigger evt3 on ddl_command_start execute function evtf()', 'CREATE EVENT TRIGGER', false],
  ['create access method am3 type table handler heap_tableam_handler', 'CREATE ACCESS METHOD', true],
  ['create role r_x', 'CREATE ROLE', true],
  ['create user u_x', 'CREATE ROLE', true],
  ['create group g_x', 'CREATE ROLE', true],
  ["alter user current_user set work_mem = '1MB'", 'ALTER ROLE', false],
  ['create database db_x', 'CREATE DATABASE', false],
  ["create tablespace ts_x location '/nope'", 'CREATE TABLESPACE', false],
  ['create language plpgsql_x handler plpgsql_call_handler', 'CREATE LANGUAGE', false],
  ['create operator class opc3 for type int using btree as operator 1 <', 'CREATE OPERATOR CLASS', false],
  ['create operator family opf3 using btree', 'CREATE OPERATOR FAMILY', true],
  ["create subscription sub3 connection '' publication p", 'CREATE SUBSCRIPTION', false],
  ['create transform for int language sql (from sql with function f(internal))', 'CREATE TRANSFORM', false],
  ['GRANT SELECT ON t TO public', 'GRANT', true],
  ['grant all on all tables in schema public to public', 'GRANT', true],
  ['REVOKE SELECT ON t FROM public', 'REVOKE', true],
  ['grant pg_read_all_data to current_user', 'GRANT ROLE', false],
  ['revoke pg_read_all_data from current_user', 'REVOKE ROLE', false],
  ['reassign owned by current_user to current_user', 'REASSIGN OWNED', false],
  ["comment on table t is 'x'", 'COMMENT', true],
  ['comment on column t.a is null', 'COMMENT', true],
  ["security label on table t is 'x'", 'SECURITY LABEL', false],
  ['DO $$BEGIN NULL; END$$', 'DO', true],
  ['do language plpgsql $$begin perform 1; end$$', 'DO', true],
  ['CALL p()', 'CALL', true],
  ['SET search_path = public', 'SET', true],
  ["set local work_mem = '4MB'", 'SET', true],
  ['set session characteristics as transaction read only', 'SET', true],
  ["set time zone 'UTC'", 'SET', true],
  ['set role none', 'SET', true],
  ['set transaction isolation level serializable', 'SET', false],
  ['set constraints all deferred', 'SET CONSTRAINTS', true],
  ['RESET search_path', 'RESET', true],
  ['reset all', 'RESET', true],
  ['SHOW search_path', 'SHOW', true],
  ['show all', 'SHOW', true],
  ['BEGIN', 'BEGIN', false],
  ['begin isolation level repeatable read', 'BEGIN', false],
  ['start transaction', 'START TRANSACTION', false],
  ['COMMIT', 'COMMIT', false],
  ['commit and chain', 'COMMIT', false],
  ['end', 'COMMIT', false],
  ['ROLLBACK', 'ROLLBACK', false],
  ['abort', 'ROLLBACK', false],
  ['savepoint s1', 'SAVEPOINT', true],
  ['release savepoint s1', 'RELEASE', false],
  ['rollback to savepoint s1', 'ROLLBACK', false],
  ["prepare transaction 'x'", 'PREPARE TRANSACTION', false],
  ["commit prepared 'x'", 'COMMIT PREPARED', false],
  ["rollback prepared 'x'", 'ROLLBACK PREPARED', false],
  ['PREPARE q AS SELECT * FROM t WHERE a = $1', 'PREPARE', true],
  ['prepare q2 (int) as delete from t where a = $1', 'PREPARE', true],
  ['EXECUTE q(1)', 'EXECUTE', false],
  ['deallocate q', 'DEALLOCATE', false],
  ['deallocate all', 'DEALLOCATE ALL', true],
  ['DECLARE c CURSOR FOR SELECT * FROM t', 'DECLARE CURSOR', true],
  ['declare c2 binary scroll cursor with hold for select 1', 'DECLARE CURSOR', true],
  ['FETCH 10 FROM c', 'FETCH', false],
  ['fetch all in c', 'FETCH', false],
  ['move next in c', 'MOVE', false],
  ['close c', 'CLOSE CURSOR', false],
  ['close all', 'CLOSE CURSOR ALL', true],
  ['EXPLAIN SELECT * FROM t', 'EXPLAIN', true],
  ['explain (analyze, buffers) delete from t', 'EXPLAIN', true],
  ['explain analyze create table c8 as select 1', 'EXPLAIN', true],
  ['VACUUM t', 'VACUUM', false],
  ['vacuum (verbose, analyze) t', 'VACUUM', false],
  ['ANALYZE t', 'ANALYZE', true],
  ['analyze verbose t (a)', 'ANALYZE', true],
  ['cluster t using t_pkey', 'CLUSTER', true],
  ['reindex table t', 'REINDEX', true],
  ['refresh materialized view mv', 'REFRESH MATERIALIZED VIEW', true],
  ['LOCK TABLE t IN ACCESS EXCLUSIVE MODE', 'LOCK TABLE', true],
  ['lock t, u', 'LOCK TABLE', true],
  ['LISTEN ch', 'LISTEN', true],
  ['unlisten *', 'UNLISTEN', true],
  ["NOTIFY ch, 'x'", 'NOTIFY', true],
  ["load 'plpgsql'", 'LOAD', false],
  ['checkpoint', 'CHECKPOINT', false],
  ['discard all', 'DISCARD ALL', false],
  ['discard plans', 'DISCARD PLANS', true],
  ['discard temp', 'DISCARD TEMP', true],
  ['discard sequences', 'DISCARD SEQUENCES', true],
  ["select set_config('search_path', 'public', false)", 'SELECT', true],
  ["select * from json_table('[1,2]'::jsonb, '$[*]' columns (x int path '$')) jt", 'SELECT', false],
  ['select U&"\\0061" from (select 1 as a) x', 'SELECT', true],
  ['/* leading */ select 1 -- trailing', 'SELECT', true],
  ['sElEcT/**/1', 'SELECT', true],
];

let client: pg.Client;
let lastTag = '';

beforeAll(async () => {
  await initParser();
  // a database of its own: the statements name schemas and objects freely
  const admin = new pg.Client({ connectionString: inject('pg').url });
  await admin.connect();
  await admin.query(`drop database if exists ${S}`);
  await admin.query(`create database ${S}`);
  await admin.end();
  const url = new URL(inject('pg').url);
  url.pathname = '/' + S;
  client = new pg.Client({ connectionString: url.toString() });
  await client.connect();
  // pg exposes only the first word of the tag; read the full CommandComplete text
  (client as any).connection.on('commandComplete', (m: { text: string }) => {
    lastTag = m.text;
  });
  await client.query(`drop schema if exists ${S} cascade; create schema ${S}; set search_path = ${S}, public;
    create table t (a int primary key, b int); create table u (b int); insert into t values (1, 1), (2, 2); insert into u values (1);
    create view v as select * from t; create materialized view mv as select * from t; create index ti on t (b);
    create sequence sq; create function f(int) returns int language sql as 'select 1';
    create procedure p() language sql as 'select 1'; create schema sc; create type ty as enum ('a', 'b');
    create domain dm as int; create function trgf() returns trigger language plpgsql as 'begin return new; end';
    create trigger trg before insert on t for each row execute function trgf();
    create policy pol on t using (true); create rule r1 as on update to u do also notify u;
    create statistics st on a, b from t; create aggregate ag(int) (sfunc = int4pl, stype = int);
    create operator === (leftarg = int, rightarg = int, function = int4eq);
    create text search configuration tsc (copy = english);`);
});

afterAll(async () => {
  await client?.end();
  const admin = new pg.Client({ connectionString: inject('pg').url });
  await admin.connect();
  await admin.query(`drop database if exists ${S} with (force)`);
  await admin.end();
});

/**
 * Where CommandComplete differs from the statement's tag: CREATE TABLE AS and CREATE MATERIALIZED
 * VIEW that store rows complete as `SELECT n` (the executor's tag). Rules match the statement's tag
 * (CreateCommandTag, as event triggers and pg_stat_statements name it); documented in docs/policy.md.
 */
const SERVER_SAYS_SELECT = new Set([
  'CREATE TABLE c6 AS SELECT * FROM t',
  'create materialized view mv2 as select * from t',
]);

/** Strip the row counts: `INSERT 0 1` → `INSERT`, `SELECT 2` → `SELECT`, `FETCH 3` → `FETCH`. */
function tagOnly(t: string): string {
  return t.replace(/( \d+)+$/, '');
}

describe('command tags', () => {
  test('parser tag matches the expected tag for every statement', () => {
    const wrong: string[] = [];
    for (const [sql, tag] of CASES) {
      const p = parseText(sql);
      const got = analyzeStatement(0, p.statements[0]!.stmt, 0, 0).command;
      if (got !== tag) wrong.push(`${sql}: got ${got}, want ${tag}`);
    }
    expect(wrong).toEqual([]);
    expect(CASES.length).toBeGreaterThan(250);
  });

  test('the real server reports the same tags (statements run in a rolled-back transaction)', async () => {
    const mismatches: string[] = [];
    let ran = 0;
    for (const [sql, tag, runs] of CASES) {
      if (!runs) continue;
      await client.query('BEGIN');
      try {
        lastTag = '';
        await client.query(sql);
        ran++;
        const want = SERVER_SAYS_SELECT.has(sql) ? 'SELECT' : tag;
        if (tagOnly(lastTag) !== want) mismatches.push(`${sql}: server ${lastTag}, want ${tag}`);
      } catch (e) {
        mismatches.push(`${sql}: server error ${(e as Error).message}`);
      } finally {
        await client.query('ROLLBACK');
      }
    }
    expect(mismatches).toEqual([]);
    expect(ran).toBeGreaterThan(150);
  });
});
