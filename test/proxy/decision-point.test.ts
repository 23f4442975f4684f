/**
 * The decision point: rejects delivered with PostgreSQL's own error semantics (a transaction block
 * is aborted, an extended-query pipeline is discarded until Sync), rewrites, asynchronous verdicts
 * kept in order, FunctionCall, completion events, error scrubbing and internal queries.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CompletedEvent, DecisionPoint, SessionHandle, Verdict } from '../../sidecar/decision-point.js';
import {
  cstring,
  direct,
  errorFields,
  int16,
  int32,
  msg,
  pgClient,
  pgjs,
  RawConn,
  type RawMessage,
  startTestProxy,
  type TestProxy,
  uniq,
  via,
} from './helpers.js';

const completed: CompletedEvent[] = [];
const internalResults: { sql: string; result?: unknown; error?: string }[] = [];
const idleCalls: { tx: string; safe: boolean }[] = [];
let failInternalInBlock = false;

const deny: Verdict = {
  action: 'reject',
  sqlstate: '42501',
  message: 'dbguard: not allowed (rule test)',
  hint: 'ask',
};

const dp: DecisionPoint = {
  async sessionReady(s) {
    const r = await s.internalQuery('select current_setting($$search_path$$) as sp, current_user as u');
    s.state.set('searchPath', r.rows[0]![0]);
    s.state.set('fields', r.fields);
  },
  judge(sql, s, via) {
    if (sql.includes('judge_throws')) throw new Error('boom');
    if (sql.includes('forbidden')) return deny;
    if (sql.includes('needs_catalog')) {
      return s.internalQuery(`select count(*) from pg_class where relname = 'pg_class'`).then(
        (r) => {
          internalResults.push({ sql, result: r.rows });
          return { action: 'forward', sql };
        },
        (err: Error) => {
          internalResults.push({ sql, error: err.message });
          return deny;
        },
      );
    }
    const out: Verdict = { action: 'forward', sql: sql.replace(/rewrite_me/g, 'rewritten') };
    if (sql.includes('slow')) return new Promise((r) => setTimeout(() => r(out), 20 + Math.random() * 30));
    void via;
    return out;
  },
  judgeFunctionCall: () => deny,
  idle(s: SessionHandle, info) {
    idleCalls.push({ tx: s.txStatus, safe: info.safePoint });
    if (failInternalInBlock && s.txStatus === 'T' && info.safePoint) {
      failInternalInBlock = false;
      return s.internalQuery('select 1/0').then(
        () => {},
        (err: Error) => void internalResults.push({ sql: 'select 1/0', error: err.message }),
      );
    }
  },
  backendNotice(fields) {
    if (fields.has('D')) fields.set('D', '[scrubbed]');
    return fields;
  },
  completed: (e) => void completed.push(e),
};

let proxy: TestProxy;
const table = uniq('dp');
beforeAll(async () => {
  proxy = await startTestProxy({ decisionPoint: dp });
  const c = await pgClient(direct());
  await c.query(`create table ${table} (id int primary key, v text)`);
  await c.query(`grant all on ${table} to trustuser`);
  await c.end();
});
afterAll(async () => {
  await proxy.close();
  const c = await pgClient(direct());
  await c.query(`drop table if exists ${table}`);
  await c.end();
});

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
    return undefined;
  } catch (e) {
    return (e as { code?: string }).code;
  }
}

const types = (ms: RawMessage[]) => ms.map((m) => m.type).join('');

describe('reject verdicts', () => {
  it('a rejected query fails with the verdict error and the session stays usable', async () => {
    const c = await pgClient(via(proxy));
    const err = await c.query('select 1 as forbidden').catch((e) => e);
    expect(err).toMatchObject({
      code: '42501',
      message: 'dbguard: not allowed (rule test)',
      hint: 'ask',
      severity: 'ERROR',
    });
    expect((await c.query('select 1 as ok')).rows[0].ok).toBe(1);
    await c.end();
  });

  it('inside BEGIN, a reject aborts the transaction: 25P02 after it, COMMIT reports ROLLBACK, the row is not there', async () => {
    const c = await pgClient(via(proxy));
    await c.query('begin');
    await c.query(`insert into ${table} values (1, 'in-tx')`);
    expect(await codeOf(c.query('select 1 as forbidden'))).toBe('42501');
    expect(await codeOf(c.query('select 1'))).toBe('25P02');
    const commit = await c.query('commit');
    expect(commit.command).toBe('ROLLBACK');
    const rows = await c.query(`select * from ${table} where id = 1`);
    expect(rows.rowCount).toBe(0);
    await c.end();
  });

  it('a multi-statement query with one denied statement runs none of them', async () => {
    const c = await pgClient(via(proxy));
    expect(await codeOf(c.query(`insert into ${table} values (2, 'multi'); select 'forbidden'`))).toBe(
      '42501',
    );
    expect((await c.query(`select * from ${table} where id = 2`)).rowCount).toBe(0);
    await c.end();
  });

  it('via Parse, the pipeline is discarded until Sync, then the next one works', async () => {
    const { conn } = await RawConn.login(via(proxy));
    const parse = (name: string, sql: string) =>
      msg('P', Buffer.concat([cstring(name), cstring(sql), int16(0)]));
    const bind = (portal: string, stmt: string) =>
      msg('B', Buffer.concat([cstring(portal), cstring(stmt), int16(0), int16(0), int16(0)]));
    const execute = (portal: string) => msg('E', Buffer.concat([cstring(portal), int32(0)]));
    const sync = msg('S');
    conn.send(
      Buffer.concat([
        parse('', `insert into ${table} values (3, 'before')`),
        bind('', ''),
        execute(''),
        parse('s1', `select 'forbidden'`),
        bind('', 's1'),
        execute(''),
        parse('s2', 'select 2'),
        bind('', 's2'),
        execute(''),
        sync,
      ]),
    );
    const res = await conn.readUntil('Z');
    // ParseComplete, BindComplete, CommandComplete of the insert; then the verdict error; nothing more until Sync.
    expect(types(res)).toBe('12CEZ');
    const e = errorFields(res[3]!.body);
    expect(e).toMatchObject({ S: 'ERROR', C: '42501', M: 'dbguard: not allowed (rule test)' });
    expect(res[4]!.body.toString()).toBe('I'); // implicit transaction rolled back: the insert is gone
    // s1 was never created (the server saw the denial statement fail), s2 was discarded
    conn.send(Buffer.concat([bind('', 's2'), execute(''), sync]));
    const res2 = await conn.readUntil('Z');
    expect(types(res2)).toBe('EZ');
    expect(errorFields(res2[0]!.body).C).toBe('26000');
    conn.send(Buffer.concat([parse('s2', 'select 2'), bind('', 's2'), execute(''), sync]));
    expect(types(await conn.readUntil('Z'))).toBe('12DCZ');
    conn.close();
    const c = await pgClient(via(proxy));
    expect((await c.query(`select * from ${table} where id = 3`)).rowCount).toBe(0);
    await c.end();
  });

  it('a rejected Parse inside a transaction block aborts it (state E)', async () => {
    const { conn } = await RawConn.login(via(proxy));
    conn.send(msg('Q', cstring('begin')));
    await conn.readUntil('Z');
    conn.send(
      Buffer.concat([
        msg('P', Buffer.concat([cstring(''), cstring('select forbidden'), int16(0)])),
        msg('S'),
      ]),
    );
    const res = await conn.readUntil('Z');
    expect(types(res)).toBe('EZ');
    expect(res[1]!.body.toString()).toBe('E');
    conn.send(msg('Q', cstring('rollback')));
    await conn.readUntil('Z');
    conn.close();
  });

  it('pg (extended protocol) gets the reject too', async () => {
    const c = await pgClient(via(proxy));
    expect(await codeOf(c.query('select $1::text as forbidden', ['x']))).toBe('42501');
    expect((await c.query('select $1::int + 1 as n', [1])).rows[0].n).toBe(2);
    await c.end();
  });

  it('a FunctionCall is judged: rejected with ErrorResponse + ReadyForQuery, aborting a block', async () => {
    const { conn } = await RawConn.login(via(proxy));
    conn.send(msg('Q', cstring('begin')));
    await conn.readUntil('Z');
    // FunctionCall of int4abs (oid 1251) with one text argument '5'
    conn.send(
      msg(
        'F',
        Buffer.concat([int32(1251), int16(1), int16(0), int16(1), int32(1), Buffer.from('5'), int16(0)]),
      ),
    );
    const res = await conn.readUntil('Z');
    expect(types(res)).toBe('EZ');
    expect(errorFields(res[0]!.body).C).toBe('42501');
    expect(res[1]!.body.toString()).toBe('E');
    conn.close();
  });

  it('a judge that throws fails closed with XX000', async () => {
    const c = await pgClient(via(proxy));
    expect(await codeOf(c.query('select 1 as judge_throws'))).toBe('XX000');
    expect(proxy.logs.some((l) => l.msg === 'decision point hook failed' && l.fields?.hook === 'judge')).toBe(
      true,
    );
    await c.end();
  });
});

describe('forward verdicts', () => {
  it('rewrites are sent upstream for Query and Parse', async () => {
    const c = await pgClient(via(proxy));
    expect((await c.query(`select 'rewrite_me' as v`)).rows[0].v).toBe('rewritten');
    expect((await c.query(`select $1::text || 'rewrite_me' as v`, ['x'])).rows[0].v).toBe('xrewritten');
    await c.end();
  });

  it('asynchronous verdicts keep pipelined statements in order', async () => {
    const sql = pgjs(via(proxy));
    const res = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        i % 3 === 0 ? sql`select ${i}::int as n, 'slow' as s` : sql`select ${i}::int as n`,
      ),
    );
    expect(res.map((r) => r[0]!.n)).toEqual(Array.from({ length: 60 }, (_, i) => i));
    await sql.end();
  });
});

describe('session hooks', () => {
  it('sessionReady ran an internal query whose result never reached the client', async () => {
    let handle: SessionHandle | undefined;
    const p = await startTestProxy({
      decisionPoint: {
        ...dp,
        sessionReady: async (s) => {
          handle = s;
          await dp.sessionReady!(s);
        },
      },
    });
    const c = await pgClient(via(p));
    expect((await c.query('select 5 as five')).rows[0].five).toBe(5);
    expect(handle!.state.get('searchPath')).toBe('"$user", public');
    expect(handle!.state.get('fields')).toEqual(['sp', 'u']);
    expect(handle!.user).toBe('app');
    expect(handle!.database).toBe('app');
    expect(handle!.serverParams.get('server_version')).toMatch(/^\d+/);
    await c.query({ name: 'named_stmt', text: 'select $1::int as x', values: [1] });
    expect(handle!.statements.get('named_stmt')).toEqual({
      sql: 'select $1::int as x',
      forwardedSql: 'select $1::int as x',
    });
    await c.end();
    await p.close();
  });

  it('an internal query from judge waits for the pipelined statements before it', async () => {
    internalResults.length = 0;
    const { conn } = await RawConn.login(via(proxy));
    conn.send(
      Buffer.concat([
        msg('Q', cstring('select pg_sleep(0.2)')),
        msg('Q', cstring(`select 'needs_catalog' as v`)),
      ]),
    );
    const a = await conn.readUntil('Z');
    const b = await conn.readUntil('Z');
    expect(types(a)).toBe('TDCZ');
    expect(types(b)).toBe('TDCZ');
    expect(internalResults).toEqual([{ sql: `select 'needs_catalog' as v`, result: [['1']] }]);
    conn.close();
  });

  it('an internal query that fails inside a block does not abort the client transaction', async () => {
    internalResults.length = 0;
    const c = await pgClient(via(proxy));
    await c.query('begin');
    failInternalInBlock = true;
    await c.query(`insert into ${table} values (10, 'kept')`);
    // the idle hook ran `select 1/0` inside the block, within a savepoint
    await c.query(`insert into ${table} values (11, 'kept')`);
    await c.query('commit');
    expect(internalResults[0]).toMatchObject({ sql: 'select 1/0' });
    expect(internalResults[0]!.error).toMatch(/division by zero/);
    expect((await c.query(`select id from ${table} where id in (10, 11) order by id`)).rows).toEqual([
      { id: 10 },
      { id: 11 },
    ]);
    await c.end();
  });

  it('an internal query inside an unsynced pipeline is refused, not deadlocked', async () => {
    internalResults.length = 0;
    const { conn } = await RawConn.login(via(proxy));
    const parse = (sql: string) => msg('P', Buffer.concat([cstring(''), cstring(sql), int16(0)]));
    conn.send(Buffer.concat([parse('select 1'), msg('H'), parse(`select 'needs_catalog'`), msg('S')]));
    const res = await conn.readUntil('Z');
    expect(types(res)).toBe('1EZ');
    expect(internalResults[0]!.error).toMatch(/safe point/);
    conn.close();
  });

  it('completed events: one per statement, with tag, row count, errors and rejections', async () => {
    completed.length = 0;
    const c = await pgClient(via(proxy));
    await c.query('select 1; select 2 union all select 3');
    await c.query('select $1::int', [7]);
    await c.query('select 1/0').catch(() => {});
    await c.query('select 1 as forbidden').catch(() => {});
    await c.end();
    const summary = completed.map((e) => ({
      via: e.via,
      tag: e.commandTag,
      rows: e.rowCount,
      code: e.sqlstate,
      rej: e.rejected ?? false,
    }));
    expect(summary).toEqual([
      { via: 'query', tag: 'SELECT 1', rows: 1, code: undefined, rej: false },
      { via: 'query', tag: 'SELECT 2', rows: 2, code: undefined, rej: false },
      { via: 'parse', tag: 'SELECT 1', rows: 1, code: undefined, rej: false },
      { via: 'query', tag: undefined, rows: undefined, code: '22012', rej: false },
      { via: 'query', tag: undefined, rows: undefined, code: '42501', rej: true },
    ]);
    expect(completed[2]!.sql).toBe('select $1::int');
    expect(completed.every((e) => e.durationMs >= 0)).toBe(true);
  });

  it('backendNotice scrubs error details before they reach the client', async () => {
    const c = await pgClient(via(proxy));
    await c.query(`insert into ${table} values (20, 'secret-value')`);
    const err = await c.query(`insert into ${table} values (20, 'x')`).catch((e) => e);
    expect(err.code).toBe('23505');
    expect(err.detail).toBe('[scrubbed]');
    await c.end();
  });

  it('idle runs at every ReadyForQuery with the transaction status', async () => {
    idleCalls.length = 0;
    const c = new pg.Client({
      host: proxy.host,
      port: proxy.port,
      user: 'app',
      password: 'app',
      database: 'app',
    });
    await c.connect();
    await c.query('begin');
    await c.query('select 1');
    await c.query('rollback');
    await c.end();
    expect(idleCalls.map((x) => x.tx)).toEqual(['T', 'T', 'I']);
    expect(idleCalls.every((x) => x.safe)).toBe(true);
  });
});
