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
    expect(r.rows[0].enc).toBe('scram-sha-256');
    // the roles the tests log in as have SCRAM verifiers, and TCP logins are checked with SCRAM
    const roles = await c.query(`select rolname, rolpassword from pg_authid where rolname = 'app'`);
    expect(roles.rows[0].rolpassword).toMatch(/^SCRAM-SHA-256\$/);
    // the line that TCP logins of ordinary roles from 127.0.0.1 meet is scram-sha-256
    const hba = await c.query(
      `select auth_method from pg_hba_file_rules
        where type = 'host' and address = '127.0.0.1' and 'all' = any(user_name)`,
    );
    expect(hba.rows.map((x) => x.auth_method)).toEqual(['scram-sha-256']);
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
