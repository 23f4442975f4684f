import { execFileSync } from 'node:child_process';
import pg from 'pg';
import { describe, expect, inject, it } from 'vitest';

describe('test harness', () => {
  const server = inject('pg');
  it('serves a real PostgreSQL with SCRAM on TCP', async () => {
    const c = new pg.Client({
      host: server.host,
      port: server.port,
      user: server.user,
      password: server.password,
      database: server.database,
    });
    await c.connect();
    const r = await c.query('select version() as v, current_setting($1) as enc', ['password_encryption']);
    expect(r.rows[0].v).toMatch(/^PostgreSQL \d+/);
    await c.end();
  });
  it('refuses a wrong password with 28P01', async () => {
    const c = new pg.Client({
      host: server.host,
      port: server.port,
      user: 'app',
      password: 'wrong',
      database: 'app',
    });
    await expect(c.connect()).rejects.toMatchObject({ code: '28P01' });
  });
  it('psql reaches it', () => {
    const out = execFileSync(
      'psql',
      ['-X', '-At', '-c', 'select 40+2', `postgres://app:app@${server.host}:${server.port}/app`],
      { encoding: 'utf8' },
    );
    expect(out.trim()).toBe('42');
  });
});
