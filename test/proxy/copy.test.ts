/**
 * COPY in and out through the proxy, with psql's \copy and postgres.js streams: the round trip
 * gives the same bytes as directly, large enough that CopyData crosses many socket reads.
 */
import { execFile } from 'node:child_process';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  cstring,
  direct,
  errorFields,
  msg,
  pgClient,
  pgjs,
  RawConn,
  startTestProxy,
  type Target,
  type TestProxy,
  uniq,
  url,
  via,
} from './helpers.js';

let proxy: TestProxy;
const table = uniq('copyt');
beforeAll(async () => {
  proxy = await startTestProxy();
  const c = await pgClient(direct());
  await c.query(`create table ${table} (id int, label text, note text)`);
  await c.query(`grant all on ${table} to trustuser`); // the raw-protocol tests log in as trustuser
  await c.end();
});
afterAll(async () => {
  const c = await pgClient(direct());
  await c.query(`drop table if exists ${table}`);
  await c.end();
  await proxy.close();
});

const lines = (n: number, tag: string) =>
  Array.from({ length: n }, (_, i) => `${i}\t${tag}-${i}\t${'é'.repeat(i % 7)}x\\ty`).join('\n') + '\n';

function psql(t: Target, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      'psql',
      ['-X', '-q', '-v', 'ON_ERROR_STOP=1', ...args, url(t)],
      { maxBuffer: 64 << 20 },
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
    );
    if (input !== undefined) child.stdin!.end(input);
  });
}

describe('COPY', () => {
  it('psql \\copy in and out round-trips 50,000 rows through the proxy exactly as directly', async () => {
    const data = lines(50_000, 'psql');
    const results: string[] = [];
    for (const [t, tag] of [
      [direct(), 'direct'],
      [via(proxy), 'proxy'],
    ] as const) {
      await psql(t, ['-c', `truncate ${table}`]);
      await psql(t, ['-c', `\\copy ${table} from stdin`], data);
      const out = await psql(t, ['-c', `\\copy (select * from ${table} order by id) to stdout`]);
      results.push(out);
      expect(out, tag).toBe(data);
    }
    expect(results[1]).toBe(results[0]);
  });

  it('postgres.js writable and readable COPY streams', async () => {
    const data = lines(20_000, 'pgjs');
    const outs: string[] = [];
    for (const t of [direct(), via(proxy)]) {
      const sql = pgjs(t);
      await sql.unsafe(`truncate ${table}`);
      const writable = await sql.unsafe(`copy ${table} from stdin`).writable();
      await pipeline(Readable.from([data.slice(0, 100_000), data.slice(100_000)]), writable);
      const readable = await sql.unsafe(`copy (select * from ${table} order by id) to stdout`).readable();
      const chunks: Buffer[] = [];
      await pipeline(
        readable,
        new Writable({
          write(chunk, _enc, cb) {
            chunks.push(Buffer.from(chunk));
            cb();
          },
        }),
      );
      outs.push(Buffer.concat(chunks).toString('utf8'));
      const [{ n }] = await sql.unsafe(`select count(*)::int as n from ${table}`);
      expect(n).toBe(20_000);
      await sql.end();
    }
    expect(outs[0]).toBe(data);
    expect(outs[1]).toBe(outs[0]);
  });

  it('bad COPY data fails with the server error and the session stays usable', async () => {
    const err = await psql(via(proxy), ['-c', `\\copy ${table} from stdin`], 'not-a-number\tx\ty\n').catch(
      (e: Error) => e.message,
    );
    expect(err).toMatch(/invalid input syntax for type integer/);
    // the same session, after the failed COPY, answers the next statement (raw protocol)
    const { conn } = await RawConn.login(via(proxy));
    conn.send(msg('Q', cstring(`copy ${table} from stdin`)));
    expect((await conn.readUntil('G'))[0]!.type).toBe('G');
    conn.send(Buffer.concat([msg('d', Buffer.from('not-a-number\tx\ty\n')), msg('c')]));
    const res = await conn.readUntil('Z');
    expect(errorFields(res.find((m) => m.type === 'E')!.body).M).toMatch(
      /invalid input syntax for type integer/,
    );
    conn.send(msg('Q', cstring('select 1')));
    const after = await conn.readUntil('Z');
    expect(after.map((m) => m.type).join('')).toBe('TDCZ');
    expect(after[1]!.body.subarray(6).toString()).toBe('1');
    conn.close();
  });

  it('CopyFail from the client aborts the COPY (raw protocol)', async () => {
    const { conn } = await RawConn.login(via(proxy));
    conn.send(msg('Q', cstring('create temp table ct (id int, label text, note text)')));
    await conn.readUntil('Z');
    conn.send(msg('Q', cstring('copy ct from stdin')));
    const [g] = await conn.readUntil('G');
    expect(g!.type).toBe('G');
    conn.send(Buffer.concat([msg('d', Buffer.from('1\ta\tb\n')), msg('f', cstring('client gave up'))]));
    const res = await conn.readUntil('Z');
    const e = res.find((m) => m.type === 'E')!;
    expect(errorFields(e.body).C).toBe('57014');
    expect(errorFields(e.body).M).toContain('client gave up');
    conn.send(msg('Q', cstring('select 1')));
    expect((await conn.readUntil('Z')).map((m) => m.type).join('')).toBe('TDCZ');
    conn.close();
  });
});
