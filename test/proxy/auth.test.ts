/**
 * Start-up and authentication through the proxy: relayed SCRAM, MD5, cleartext and trust; wrong
 * passwords refused with 28P01; the proxy's own upstream login (credentials mode); protocol 3.2
 * negotiation; the proxy's own cancel keys; TLS to clients with a certificate made by openssl.
 */
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuthFailureEvent } from '../../sidecar/decision-point.js';
import { allowAll } from '../../sidecar/decision-point.js';
import { filterSaslMechanisms } from '../../sidecar/protocol/codec.js';
import { errorFields, pgClient, RawConn, startTestProxy, type TestProxy, via } from './helpers.js';

const execFileAsync = promisify(execFile);
const authFailures: AuthFailureEvent[] = [];
let proxy: TestProxy;
beforeAll(async () => {
  proxy = await startTestProxy({ decisionPoint: { ...allowAll, authFailure: (e) => authFailures.push(e) } });
});
afterAll(async () => {
  await proxy.close();
});

async function loginError(user: string, password: string): Promise<string | undefined> {
  const c = new pg.Client({ host: proxy.host, port: proxy.port, user, password, database: 'app' });
  try {
    await c.connect();
    await c.end();
    return undefined;
  } catch (e) {
    return (e as { code?: string }).code;
  }
}

describe('relayed authentication', () => {
  it.each([
    ['app', 'app'],
    ['md5user', 'md5pass'],
    ['plainuser', 'plainpass'],
    ['trustuser', 'anything'],
  ])('%s logs in with the right password', async (user, password) => {
    const c = await pgClient(via(proxy), user, password);
    const r = await c.query('select current_user as u');
    expect(r.rows[0].u).toBe(user);
    await c.end();
  });

  it.each([
    ['app (SCRAM)', 'app'],
    ['md5user (MD5)', 'md5user'],
    ['plainuser (cleartext)', 'plainuser'],
  ])('%s with a wrong password is refused with 28P01', async (_label, user) => {
    authFailures.length = 0;
    expect(await loginError(user, 'wrong')).toBe('28P01');
    expect(authFailures).toHaveLength(1);
    expect(authFailures[0]).toMatchObject({ user, database: 'app', sqlstate: '28P01' });
    // The refused login must not leave a session behind.
    expect(proxy.activeSessions).toBe(0);
  });

  it('an unknown database is refused with the server error', async () => {
    const c = new pg.Client({
      host: proxy.host,
      port: proxy.port,
      user: 'app',
      password: 'app',
      database: 'no_such_db',
    });
    await expect(c.connect()).rejects.toMatchObject({ code: '3D000' });
  });

  it('strips SCRAM-SHA-256-PLUS from the offered mechanisms', () => {
    const offered = Buffer.from('SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0');
    const { mechanisms, encoded } = filterSaslMechanisms(offered);
    expect(mechanisms).toEqual(['SCRAM-SHA-256']);
    expect(encoded.toString()).toBe('SCRAM-SHA-256\0\0');
  });

  it('refuses replication connections', async () => {
    const conn = await RawConn.open(via(proxy));
    const { startupMessage } = await import('./helpers.js');
    conn.send(startupMessage({ user: 'app', database: 'app', replication: 'database' }));
    const msgs = await conn.readToClose();
    expect(msgs[0]?.type).toBe('E');
    expect(errorFields(msgs[0]!.body).C).toBe('28000');
  });
});

describe('protocol negotiation and cancel keys', () => {
  it('protocol 3.2 is negotiated down by a 3.0 server and the key is 4 bytes', async () => {
    const { conn, messages } = await RawConn.login(via(proxy), (3 << 16) | 2, { '_pq_.dbguard_test': 'on' });
    const v = messages.find((m) => m.type === 'v');
    expect(v).toBeDefined();
    expect(v!.body.readInt32BE(0)).toBe(3 << 16); // newest version the server supports: 3.0
    expect(v!.body.toString('latin1')).toContain('_pq_.dbguard_test');
    const k = messages.find((m) => m.type === 'K')!;
    expect(k.body.length).toBe(8);
    conn.close();
  });

  it('the client gets the proxy key, never the server one', async () => {
    const { conn, messages } = await RawConn.login(via(proxy));
    const k = messages.find((m) => m.type === 'K')!;
    const proxyPid = k.body.readInt32BE(0);
    const { msg, cstring } = await import('./helpers.js');
    conn.send(msg('Q', cstring('select pg_backend_pid()')));
    const rows = await conn.readUntil('Z');
    const dataRow = rows.find((m) => m.type === 'D')!;
    const serverPid = Number(dataRow.body.toString('utf8', 6));
    expect(serverPid).toBeGreaterThan(0);
    expect(proxyPid).not.toBe(serverPid);
    conn.close();
  });
});

describe('credentials mode (the proxy logs in upstream)', () => {
  it.each([
    ['app', 'app'],
    ['md5user', 'md5pass'],
    ['plainuser', 'plainpass'],
  ])('logs in upstream as %s; the client needs no password', async (username, password) => {
    const p = await startTestProxy({ upstreamCredentials: { username, password } });
    try {
      const c = new pg.Client({ host: p.host, port: p.port, user: username, database: 'app' });
      await c.connect();
      const r = await c.query('select current_user as u');
      expect(r.rows[0].u).toBe(username);
      await c.end();
    } finally {
      await p.close();
    }
  });

  it('wrong proxy credentials refuse the client and report the failure', async () => {
    const failures: AuthFailureEvent[] = [];
    const p = await startTestProxy({
      upstreamCredentials: { username: 'app', password: 'wrong' },
      decisionPoint: { ...allowAll, authFailure: (e) => failures.push(e) },
    });
    try {
      const c = new pg.Client({ host: p.host, port: p.port, user: 'app', database: 'app' });
      await expect(c.connect()).rejects.toMatchObject({ code: '28P01' });
      expect(failures[0]).toMatchObject({ user: 'app', loginUser: 'app', sqlstate: '28P01' });
    } finally {
      await p.close();
    }
  });

  it('refuses a startup user other than the credentials user: loopback trust proves no name', async () => {
    const failures: AuthFailureEvent[] = [];
    const p = await startTestProxy({
      upstreamCredentials: { username: 'app', password: 'app' },
      decisionPoint: { ...allowAll, authFailure: (e) => failures.push(e) },
    });
    try {
      const c = new pg.Client({ host: p.host, port: p.port, user: 'someone', database: 'app' });
      await expect(c.connect()).rejects.toMatchObject({
        code: '28000',
        message: expect.stringMatching(/logs in to the database as "app".*cannot prove the user "someone"/),
      });
      expect(failures[0]).toMatchObject({ user: 'someone', loginUser: 'app', sqlstate: '28000' });
    } finally {
      await p.close();
    }
  });
});

describe('TLS to clients', () => {
  let dir: string;
  let tlsProxy: TestProxy;
  const tlsSeen: boolean[] = [];
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-tls-'));
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=DNS:localhost,IP:127.0.0.1',
        '-keyout',
        path.join(dir, 'key.pem'),
        '-out',
        path.join(dir, 'cert.pem'),
      ],
      { stdio: 'pipe' },
    );
    tlsProxy = await startTestProxy({
      decisionPoint: { ...allowAll, sessionReady: (sess) => void tlsSeen.push(sess.clientTls) },
      tls: {
        cert: fs.readFileSync(path.join(dir, 'cert.pem')),
        key: fs.readFileSync(path.join(dir, 'key.pem')),
      },
    });
  });
  afterAll(async () => {
    await tlsProxy?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('psql connects with sslmode=verify-full against the generated CA', async () => {
    // Asynchronous: the proxy runs in this process and must keep serving while psql runs.
    const { stdout: out } = await execFileAsync(
      'psql',
      [
        '-X',
        '-At',
        '-c',
        'select 7*6',
        '-c',
        '\\conninfo',
        `host=localhost port=${tlsProxy.port} user=app password=app dbname=app sslmode=verify-full sslrootcert=${path.join(dir, 'cert.pem')}`,
      ],
      { encoding: 'utf8' },
    );
    expect(out).toContain('42');
    expect(out).toMatch(/SSL connection/);
  });

  it('pg connects with TLS and the session reports it; plain clients still work', async () => {
    const c = new pg.Client({
      host: '127.0.0.1',
      port: tlsProxy.port,
      user: 'app',
      password: 'app',
      database: 'app',
      ssl: { ca: fs.readFileSync(path.join(dir, 'cert.pem')), servername: 'localhost' },
    });
    tlsSeen.length = 0;
    await c.connect();
    expect((await c.query('select 1 as one')).rows[0].one).toBe(1);
    await c.end();
    const plain = await pgClient(via(tlsProxy));
    expect((await plain.query('select 2 as two')).rows[0].two).toBe(2);
    await plain.end();
    expect(tlsSeen).toEqual([true, false]);
  });

  it('a proxy without a certificate declines TLS, and sslmode=require fails', async () => {
    await expect(
      execFileAsync('psql', [
        '-X',
        '-At',
        '-c',
        'select 1',
        `host=127.0.0.1 port=${proxy.port} user=app password=app dbname=app sslmode=require`,
      ]),
    ).rejects.toThrow(/does not support SSL/);
  });
});
