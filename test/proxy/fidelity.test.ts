/**
 * Same answers through the proxy as directly: each scenario runs against the server and against
 * an allow-all proxy in front of it, with real clients (pg, postgres.js), and the results must match.
 */
import crypto from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  cstring,
  direct,
  int16,
  int32,
  msg,
  pgClient,
  pgjs,
  RawConn,
  startTestProxy,
  type Target,
  type TestProxy,
  uniq,
  via,
} from './helpers.js';

let proxy: TestProxy;
beforeAll(async () => {
  proxy = await startTestProxy();
});
afterAll(async () => {
  await proxy.close();
});

/** Runs the scenario directly and through the proxy; returns both results. */
async function both<R>(scenario: (t: Target, label: string) => Promise<R>): Promise<[R, R]> {
  const a = await scenario(direct(), 'direct');
  const b = await scenario(via(proxy), 'proxy');
  return [a, b];
}

async function errorOf(p: Promise<unknown>): Promise<Record<string, unknown>> {
  try {
    await p;
  } catch (e) {
    const err = e as Record<string, unknown>;
    return { code: err.code, message: err.message, detail: err.detail, severity: err.severity };
  }
  throw new Error('expected an error');
}

describe('results', () => {
  it('a 300,000-row result arrives complete and identical', async () => {
    const [a, b] = await both(async (t) => {
      const c = await pgClient(t);
      const r = await c.query({
        text: 'select g, md5(g::text) as h from generate_series(1, 300000) g',
        rowMode: 'array',
      });
      await c.end();
      const hash = crypto.createHash('sha256');
      for (const row of r.rows) hash.update(`${row[0]}|${row[1]}\n`);
      return { n: r.rowCount, hash: hash.digest('hex') };
    });
    expect(a.n).toBe(300000);
    expect(b).toEqual(a);
  });

  it('typed parameters and binary results (pg with types and binary, postgres.js)', async () => {
    const [a, b] = await both(async (t) => {
      const c = new pg.Client({
        host: t.host,
        port: t.port,
        user: 'app',
        password: 'app',
        database: 'app',
        types: {
          getTypeParser: (oid: number, format?: string) =>
            oid === 1700 ? (v: string) => `numeric:${v}` : pg.types.getTypeParser(oid, format as 'text'),
        },
      });
      await c.connect();
      const text = await c.query(
        'select $1::numeric as n, $2::bytea as b, $3::int[] as arr, $4::jsonb as j',
        ['12.50', Buffer.from([0, 1, 2, 255]), [1, 2, 3], { k: 'v' }],
      );
      // binary result format (pg's types lack the flag, the client supports it)
      const bin = await c.query({
        text: 'select 42::int4 as i, 7::int8 as l, $1::text as s',
        values: ['é'],
        binary: true,
      } as pg.QueryConfig);
      await c.end();
      const sql = pgjs(t);
      const [row] =
        await sql`select ${Buffer.from('abc')}::bytea as b, ${[1, 2]}::int[] as a, ${new Date(0)}::timestamptz as ts,
        ${'x'}::text as s, ${'123456789012'}::int8 as big, ${true}::bool as flag`;
      await sql.end();
      return {
        text: text.rows,
        bin: bin.rows.map((r) => ({ i: String(r.i), l: String(r.l), s: String(r.s) })),
        pgjs: {
          ...row,
          b: Buffer.from(row!.b).toString('hex'),
          ts: (row!.ts as Date).toISOString(),
          big: String(row!.big),
        },
      };
    });
    expect(a.text[0].n).toBe('numeric:12.50');
    expect(b).toEqual(a);
  });
});

describe('errors and transactions', () => {
  it('errors carry the same SQLSTATE and detail, and the session stays usable', async () => {
    const table = uniq('err');
    const [a, b] = await both(async (t, label) => {
      const c = await pgClient(t);
      await c.query(`create table ${table}_${label} (id int primary key)`);
      await c.query(`insert into ${table}_${label} values (1)`);
      const div = await errorOf(c.query('select 1/0'));
      const dup = await errorOf(c.query(`insert into ${table}_${label} values ($1)`, [1]));
      const syntax = await errorOf(c.query('selec 1'));
      const after = await c.query('select 1 as ok');
      await c.query(`drop table ${table}_${label}`);
      await c.end();
      return {
        div,
        dup: { ...dup, message: String(dup.message).replace(`_${label}`, '') } as Record<string, unknown>,
        syntax,
        ok: after.rows[0].ok,
      };
    });
    expect(a.div.code).toBe('22012');
    expect(a.dup.code).toBe('23505');
    expect(a.syntax.code).toBe('42601');
    expect(b).toEqual(a);
  });

  it('commit, rollback and aborted transactions (25P02) behave the same', async () => {
    const table = uniq('tx');
    const [a, b] = await both(async (t, label) => {
      const name = `${table}_${label}`;
      const c = await pgClient(t);
      await c.query(`create table ${name} (id int)`);
      await c.query('begin');
      await c.query(`insert into ${name} values (1)`);
      await c.query('commit');
      await c.query('begin');
      await c.query(`insert into ${name} values (2)`);
      await c.query('rollback');
      await c.query('begin');
      await c.query(`insert into ${name} values (3)`);
      const failed = await errorOf(c.query('select nonexistent_column'));
      const aborted = await errorOf(c.query('select 1'));
      const commit = await c.query('commit');
      const rows = await c.query(`select id from ${name} order by id`);
      await c.query(`drop table ${name}`);
      await c.end();
      return { failed: failed.code, aborted, commitTag: commit.command, ids: rows.rows.map((r) => r.id) };
    });
    expect(a.aborted.code).toBe('25P02');
    expect(a.commitTag).toBe('ROLLBACK');
    expect(a.ids).toEqual([1]);
    expect(b).toEqual(a);
  });
});

describe('asynchronous messages', () => {
  it('notices reach the client', async () => {
    const [a, b] = await both(async (t) => {
      const c = await pgClient(t);
      const notices: string[] = [];
      c.on('notice', (n) => notices.push(`${n.severity}:${n.code}:${n.message}`));
      await c.query(`do $$ begin raise notice 'hello %', 42; raise warning 'careful'; end $$`);
      await c.end();
      return notices;
    });
    expect(a).toEqual(['NOTICE:00000:hello 42', 'WARNING:01000:careful']);
    expect(b).toEqual(a);
  });

  it('LISTEN/NOTIFY through the proxy, from the proxy and from a direct session', async () => {
    const channel = uniq('chan');
    const listener = await pgClient(via(proxy));
    const got: string[] = [];
    const arrived = new Promise<void>((resolve) => {
      listener.on('notification', (n) => {
        got.push(`${n.channel}:${n.payload}`);
        if (got.length === 2) resolve();
      });
    });
    await listener.query(`listen ${channel}`);
    const sender = await pgClient(via(proxy));
    await sender.query(`select pg_notify($1, 'via-proxy')`, [channel]);
    const d = await pgClient(direct());
    await d.query(`notify ${channel}, 'direct'`);
    await Promise.race([
      arrived,
      new Promise((_, rej) => setTimeout(() => rej(new Error('no notification')), 10_000)),
    ]);
    expect(got.sort()).toEqual([`${channel}:direct`, `${channel}:via-proxy`]);
    await Promise.all([listener.end(), sender.end(), d.end()]);
  });
});

describe('raw protocol details', () => {
  it('FunctionCall, ParameterStatus and EmptyQueryResponse pass through as directly', async () => {
    const [a, b] = await both(async (t) => {
      const { conn } = await RawConn.login(t);
      const out: string[] = [];
      // int4abs(-5) (oid 1251), text argument and result
      conn.send(
        msg(
          'F',
          Buffer.concat([int32(1251), int16(1), int16(0), int16(1), int32(2), Buffer.from('-5'), int16(0)]),
        ),
      );
      const f = await conn.readUntil('Z');
      out.push(f.map((m) => m.type).join(''), f[0]!.body.toString('latin1', 4));
      conn.send(msg('Q', cstring(`set application_name = 'dbguard-test'`)));
      const s = await conn.readUntil('Z');
      out.push(s.map((m) => m.type).join(''), s[1]!.body.toString('latin1'));
      conn.send(msg('Q', cstring('')));
      out.push((await conn.readUntil('Z')).map((m) => m.type).join(''));
      conn.close();
      return out;
    });
    expect(a).toEqual(['VZ', '5', 'CSZ', 'application_name\0dbguard-test\0', 'IZ']);
    expect(b).toEqual(a);
  });
});

describe('load', () => {
  it('500 pipelined queries from postgres.js on one connection', async () => {
    const [a, b] = await both(async (t) => {
      const sql = pgjs(t, { max: 1 });
      const results = await Promise.all(
        Array.from({ length: 500 }, (_, i) => sql`select ${i}::int as n, repeat('x', ${i % 50}) as pad`),
      );
      await sql.end();
      return results.map((r) => `${r[0]!.n}:${r[0]!.pad.length}`);
    });
    expect(a).toHaveLength(500);
    expect(b).toEqual(a);
  });

  it('200 concurrent connections', async () => {
    const clients = await Promise.all(Array.from({ length: 200 }, () => pgClient(via(proxy))));
    expect(proxy.activeSessions).toBe(200);
    const pids = await Promise.all(
      clients.map((c) => c.query('select pg_backend_pid() as pid, pg_sleep(0.05)')),
    );
    expect(new Set(pids.map((r) => r.rows[0].pid)).size).toBe(200);
    await Promise.all(clients.map((c) => c.end()));
    for (let i = 0; i < 100 && proxy.activeSessions > 0; i++) await new Promise((r) => setTimeout(r, 50));
    expect(proxy.activeSessions).toBe(0);
  });
});
