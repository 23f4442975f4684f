/**
 * Issue #18 item 2, as attacks: clients that never authenticate must not hold database backends
 * (token and credentials modes open the upstream connection only after the client's proof), and one
 * address that keeps failing its logins is refused for a while with a clear error.
 */
import fs from 'node:fs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adminQuery } from '../support/admin.js';
import {
  errorFields,
  RawConn,
  type RawMessage,
  server,
  startTestProxy,
  startupMessage,
  uniq,
} from './helpers.js';

const ROLE = uniq('gate');
const PASSWORD = 'gate-password';
const TOKEN = 'the-right-token';

const clientAuth = async (password: string) => {
  if (password !== TOKEN) throw Object.assign(new Error('token refused'), { reason: 'invalid_token' });
  return new Map<string, unknown>();
};

/**
 * Backends of the server logged in, or logging in, as `role`. pg_stat_activity of PostgreSQL 15 lists a
 * backend only once it has authenticated, so the server's processes are counted too: each backend's
 * process title names its user ("postgres: ROLE app 127.0.0.1(port) authentication").
 */
async function backendsOf(role: string): Promise<{ statActivity: number; processes: number }> {
  const s = server();
  const admin = new pg.Client({
    host: s.host,
    port: s.port,
    user: s.user,
    password: s.password,
    database: 'app',
  });
  await admin.connect();
  let r: pg.QueryResult;
  let postmaster: number;
  try {
    r = await admin.query(
      `SELECT pg_backend_pid() AS me, (SELECT count(*) FROM pg_stat_activity WHERE usename = '${role}')::int AS n`,
    );
    // the parent of this admin connection's backend (field 4 of /proc/PID/stat)
    postmaster = Number(fs.readFileSync(`/proc/${r.rows[0].me}/stat`, 'utf8').split(') ')[1]!.split(' ')[1]);
  } finally {
    await admin.end();
  }
  let processes = 0;
  for (const pid of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (Number(stat.split(') ')[1]!.split(' ')[1]) !== postmaster) continue;
      const title = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (title.includes(` ${role} `)) processes++;
    } catch {
      /* the process ended meanwhile */
    }
  }
  return { statActivity: r.rows[0].n as number, processes };
}

/** Opens a raw connection, sends a start-up packet, returns the first message the proxy answers. */
async function startupOnly(port: number, user: string): Promise<{ conn: RawConn; first: RawMessage | null }> {
  const conn = await RawConn.open({ host: '127.0.0.1', port });
  conn.send(startupMessage({ user, database: 'app' }));
  return { conn, first: await conn.next(20_000) };
}

async function login(port: number, user: string, password: string): Promise<string> {
  const c = new pg.Client({ host: '127.0.0.1', port, user, password, database: 'app' });
  c.on('error', () => {});
  try {
    await c.connect();
    await c.query('SELECT 1');
    await c.end();
    return 'ok';
  } catch (err) {
    const e = err as { code?: string; message: string };
    return `${e.code ?? 'error'} ${e.message}`;
  }
}

beforeAll(async () => {
  await adminQuery(server(), `CREATE ROLE ${ROLE} LOGIN PASSWORD '${PASSWORD}'`);
});
afterAll(async () => {
  await adminQuery(
    server(),
    `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '${ROLE}'; DROP ROLE ${ROLE}`,
  );
});

describe('authenticate before touching the database', () => {
  it('1,000 start-ups that never send their token hold no PostgreSQL backend', async () => {
    const proxy = await startTestProxy({
      upstreamCredentials: { username: ROLE, password: PASSWORD },
      clientAuth,
      authTimeoutMs: 120_000,
    });
    const conns: RawConn[] = [];
    try {
      const before = await backendsOf(ROLE);
      expect(before).toEqual({ statActivity: 0, processes: 0 });
      for (let i = 0; i < 1000; i += 50) {
        const batch = await Promise.all(Array.from({ length: 50 }, () => startupOnly(proxy.port, ROLE)));
        for (const { conn, first } of batch) {
          conns.push(conn);
          // every one is asked for its password (the token): it is mid-authentication, not refused
          expect(first?.type).toBe('R');
          expect(first?.body.readInt32BE(0)).toBe(3);
        }
      }
      expect(conns.filter((c) => !c.closed)).toHaveLength(1000);
      expect(await backendsOf(ROLE)).toEqual({ statActivity: 0, processes: 0 });
      // A client that proves itself still gets through, and only it holds a backend.
      const c = new pg.Client({
        host: '127.0.0.1',
        port: proxy.port,
        user: ROLE,
        password: TOKEN,
        database: 'app',
      });
      await c.connect();
      expect((await c.query('SELECT current_user AS u')).rows[0].u).toBe(ROLE);
      expect(await backendsOf(ROLE)).toEqual({ statActivity: 1, processes: 1 });
      await c.end();
    } finally {
      for (const c of conns) c.close();
      await proxy.close();
    }
  });
});

describe('failed logins per client address', () => {
  it('token mode: after N failures the address is refused, even with the right token, until the window passes', async () => {
    const proxy = await startTestProxy({
      upstreamCredentials: { username: ROLE, password: PASSWORD },
      clientAuth,
      loginFailureLimit: 3,
      loginFailureWindowMs: 1500,
    });
    try {
      expect(await login(proxy.port, ROLE, TOKEN)).toBe('ok');
      for (let i = 0; i < 3; i++) {
        expect(await login(proxy.port, ROLE, 'guess')).toMatch(/^28000 dbguard: token authentication failed/);
      }
      const refused = await login(proxy.port, ROLE, TOKEN);
      expect(refused).toMatch(
        /^28000 dbguard: too many failed logins from 127\.0\.0\.1 \(3 within 2s\); try again in [12]s$/,
      );
      // the refusal comes before the token is asked for: a guess is not even read
      const { conn, first } = await startupOnly(proxy.port, ROLE);
      expect(first?.type).toBe('E');
      expect(errorFields(first!.body).M).toMatch(/too many failed logins/);
      conn.close();
      await new Promise((r) => setTimeout(r, 1600));
      expect(await login(proxy.port, ROLE, TOKEN)).toBe('ok');
    } finally {
      await proxy.close();
    }
  });

  it('relay mode: wrong passwords checked by the server count too', async () => {
    const proxy = await startTestProxy({ loginFailureLimit: 2, loginFailureWindowMs: 60_000 });
    try {
      expect(await login(proxy.port, ROLE, 'wrong')).toMatch(/^28P01 /);
      expect(await login(proxy.port, ROLE, 'wrong')).toMatch(/^28P01 /);
      expect(await login(proxy.port, ROLE, PASSWORD)).toMatch(/^28000 dbguard: too many failed logins/);
      expect(
        proxy.logs.some((l) => l.msg === 'login refused: too many failed logins from this address'),
      ).toBe(true);
    } finally {
      await proxy.close();
    }
  });

  it("failures that are not the client's proof do not count: the proxy's own login, a database that does not exist", async () => {
    const badCreds = await startTestProxy({
      upstreamCredentials: { username: ROLE, password: 'not-the-password' },
      loginFailureLimit: 2,
    });
    const relay = await startTestProxy({ loginFailureLimit: 2 });
    try {
      for (let i = 0; i < 4; i++) {
        expect(await login(badCreds.port, ROLE, 'x')).toMatch(/^28P01 dbguard: the proxy could not log in/);
        const c = new pg.Client({
          host: '127.0.0.1',
          port: relay.port,
          user: ROLE,
          password: PASSWORD,
          database: 'nope',
        });
        await expect(c.connect()).rejects.toMatchObject({ code: '3D000' });
      }
    } finally {
      await badCreds.close();
      await relay.close();
    }
  });
});
