/**
 * Security of the deployment path (issue #10): TLS from clients with a configured certificate and
 * `verify-full` to an upstream whose CA this test generates, both at once through a governed proxy;
 * and no secret (passwords right or wrong, tokens, proxy credentials, masking salts) in any line the
 * proxy logs or audits, under a workload that exercises every authentication path and failure.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  compilePolicy,
  type GovernedProxy,
  memoryLogger,
  reliabilityPolicyYaml,
  reliabilitySchemaSql,
  startGovernedProxy,
} from '../../bench/reliability/support.js';
import { STATE_TOKEN_IDENTITY } from '../../sidecar/governor.js';
import { adminQuery } from '../support/admin.js';
import { type RunningCluster, startCluster } from '../support/pg-cluster.js';
import { issueCert, makeCa, serverKeyFor } from '../support/tls.js';

const secret = (what: string) => `${what}-${crypto.randomBytes(6).toString('hex')}`;
const SECRETS = {
  proxyPassword: secret('ProxyPw'),
  wrongPassword: secret('WrongPw'),
  token: secret('Tok'),
  wrongToken: secret('BadTok'),
  salt: secret('Salt'),
};
const schema = `rels_${process.pid}_${Math.random().toString(36).slice(2, 7)}`;

let dir: string;
let cluster: RunningCluster;
let ca: string;
let proxyCert: { cert: string; key: string };

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-relsec-'));
  fs.chmodSync(dir, 0o755);
  const caFiles = makeCa(dir, 'ca', 'dbguard reliability CA');
  ca = fs.readFileSync(caFiles.cert, 'utf8');
  const server = issueCert(dir, 'server', 'localhost', 'DNS:localhost', caFiles);
  const proxy = issueCert(dir, 'proxy', 'dbguard-proxy', 'DNS:localhost,IP:127.0.0.1', caFiles);
  proxyCert = { cert: fs.readFileSync(proxy.cert, 'utf8'), key: fs.readFileSync(proxy.key, 'utf8') };
  serverKeyFor(server);
  cluster = await startCluster({
    settings: {
      ssl: 'on',
      ssl_cert_file: `'${server.cert}'`,
      ssl_key_file: `'${server.key}'`,
      max_connections: 30,
      shared_buffers: "'16MB'",
    },
    setupSql: `CREATE ROLE relsec LOGIN PASSWORD '${SECRETS.proxyPassword}';`,
  });
  await adminQuery(
    cluster,
    `${reliabilitySchemaSql(schema, 5, SECRETS.salt)} GRANT USAGE ON SCHEMA ${schema} TO relsec; GRANT ALL ON ALL TABLES IN SCHEMA ${schema} TO relsec;`,
  );
}, 120_000);

afterAll(async () => {
  await cluster?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const policyFor = () =>
  compilePolicy(reliabilityPolicyYaml({ schema, upstreamPort: cluster.port, salt: SECRETS.salt }));

describe('TLS on both sides', () => {
  let gp: GovernedProxy;
  beforeAll(async () => {
    gp = await startGovernedProxy({
      policy: policyFor(),
      // verify-full: the chain against the generated CA and the name `localhost` against the certificate
      upstream: { host: 'localhost', port: cluster.port, sslmode: 'verify-full', caPem: ca },
      tls: proxyCert,
      logger: memoryLogger(),
    });
  });
  afterAll(async () => gp.close());

  it('a client verifying the proxy certificate, the proxy verifying the server: TLS end to end, masking on', async () => {
    const c = new pg.Client({
      host: '127.0.0.1',
      port: gp.proxy.port,
      user: 'app',
      password: 'app',
      database: 'app',
      ssl: { ca, rejectUnauthorized: true },
    });
    await c.connect();
    const upstreamTls = await c.query('SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
    expect(upstreamTls.rows[0]).toMatchObject({ ssl: true, version: expect.stringMatching(/^TLSv1\.[23]$/) });
    expect((await c.query(`SELECT ssn FROM ${schema}.customers WHERE id = 1`)).rows[0].ssn).toBe('****');
    await c.end();
    const start = (await gp.auditEvents()).find((e) => e.event === 'session.start');
    expect(start).toMatchObject({ tls: true });
  });

  it('a client that does not trust the proxy certificate refuses it; a server name mismatch is refused by the proxy', async () => {
    const untrusting = new pg.Client({
      host: '127.0.0.1',
      port: gp.proxy.port,
      user: 'app',
      password: 'app',
      database: 'app',
      ssl: { rejectUnauthorized: true },
    });
    untrusting.on('error', () => {});
    await expect(untrusting.connect()).rejects.toThrow(/self[- ]signed|unable to (get|verify)/i);

    // 127.0.0.1 is not a name in the server certificate: verify-full must refuse it.
    const wrongName = await startGovernedProxy({
      policy: policyFor(),
      upstream: { host: '127.0.0.1', port: cluster.port, sslmode: 'verify-full', caPem: ca },
      logger: memoryLogger(),
    });
    try {
      const c = new pg.Client({
        host: '127.0.0.1',
        port: wrongName.proxy.port,
        user: 'app',
        password: 'app',
        database: 'app',
      });
      c.on('error', () => {});
      await expect(c.connect()).rejects.toMatchObject({
        code: '08006',
        message: expect.stringMatching(/altnames|IP: 127\.0\.0\.1/),
      });
    } finally {
      await wrongName.close();
    }
  });
});

describe('no secret in any log or audit line', () => {
  it('passwords (relayed, wrong, the proxy own), tokens and salts never appear', async () => {
    const relayLog = memoryLogger();
    const relay = await startGovernedProxy({
      policy: policyFor(),
      upstream: { host: 'localhost', port: cluster.port, sslmode: 'verify-full', caPem: ca },
      logger: relayLog,
    });
    // Credentials mode with token authentication: the proxy holds the upstream password.
    const credLog = memoryLogger();
    const cred = await startGovernedProxy({
      policy: policyFor(),
      upstream: { host: 'localhost', port: cluster.port, sslmode: 'verify-full', caPem: ca },
      upstreamCredentials: { username: 'relsec', password: SECRETS.proxyPassword },
      clientAuth: async (password) => {
        if (password !== SECRETS.token)
          throw Object.assign(new Error('token refused'), { reason: 'invalid_token' });
        return new Map<string, unknown>([[STATE_TOKEN_IDENTITY, { user: 'alice', groups: ['developers'] }]]);
      },
      logger: credLog,
    });
    // The proxy with the wrong stored password (its own login fails).
    const badCredLog = memoryLogger();
    const badCred = await startGovernedProxy({
      policy: policyFor(),
      upstream: { host: 'localhost', port: cluster.port, sslmode: 'verify-full', caPem: ca },
      upstreamCredentials: { username: 'relsec', password: SECRETS.wrongPassword },
      logger: badCredLog,
    });
    try {
      const attempt = async (port: number, user: string, password: string, sql?: string) => {
        const c = new pg.Client({ host: '127.0.0.1', port, user, password, database: 'app' });
        c.on('error', () => {});
        try {
          await c.connect();
          if (sql) await c.query(sql).catch(() => {});
          await c.end();
          return 'ok';
        } catch (err) {
          return (err as { code?: string }).code ?? 'error';
        }
      };
      const hashed = `SELECT customer_ref FROM ${schema}.customers`;
      // Relayed: SCRAM, MD5 and cleartext (the cleartext password crosses the proxy), right and wrong.
      expect(await attempt(relay.proxy.port, 'app', 'app', hashed)).toBe('ok');
      expect(await attempt(relay.proxy.port, 'md5user', 'md5pass', 'SELECT 1')).toBe('ok');
      expect(await attempt(relay.proxy.port, 'plainuser', 'plainpass', 'SELECT 1')).toBe('ok');
      expect(await attempt(relay.proxy.port, 'app', SECRETS.wrongPassword)).toBe('28P01');
      expect(await attempt(relay.proxy.port, 'md5user', SECRETS.wrongPassword)).toBe('28P01');
      expect(await attempt(relay.proxy.port, 'plainuser', SECRETS.wrongPassword)).toBe('28P01');
      // Credentials mode: a right and a wrong token; statements that fail with server details.
      expect(await attempt(cred.proxy.port, 'app', SECRETS.token, hashed)).toBe('ok');
      expect(await attempt(cred.proxy.port, 'app', SECRETS.token, `SELECT '${SECRETS.salt}'::int`)).toBe(
        'ok',
      );
      expect(await attempt(cred.proxy.port, 'app', SECRETS.wrongToken)).toBe('28000');
      expect(await attempt(badCred.proxy.port, 'relsec', 'whatever')).toBe('28P01');
      // Flush before reading: buffered audit lines are searched too.
      await Promise.all([relay.audit.flush(), cred.audit.flush(), badCred.audit.flush()]);
      const auditText = [relay.auditFile, cred.auditFile, badCred.auditFile].map((f) =>
        fs.readFileSync(f, 'utf8'),
      );
      // the statements above are in the audit files (so the search below reads what they left)
      expect(auditText[1]).toContain('"event":"query"');
      expect(auditText[0]).toContain('"event":"auth.failure"');
      const everything = [relayLog.text(), credLog.text(), badCredLog.text(), ...auditText];
      const lines = everything.join('\n').split('\n').filter(Boolean);
      expect(lines.length).toBeGreaterThan(20);
      for (const [name, value] of Object.entries({
        ...SECRETS,
        md5pass: 'md5pass',
        plainpass: 'plainpass',
      })) {
        const hits = lines.filter((l) => l.includes(value));
        expect(hits, `${name} appears in logs`).toEqual([]);
      }
      // Refusals are still visible, without the secret: that is what an operator needs.
      expect(
        credLog.lines.some(
          (l) => l.msg === 'login refused' && /token refused/.test(String(l.fields?.reason)),
        ),
      ).toBe(true);
      expect(badCredLog.lines.some((l) => l.msg === 'login refused')).toBe(true);
    } finally {
      await Promise.all([relay.close(), cred.close(), badCred.close()]);
    }
  });
});
