/**
 * People connect with their usual clients and a token as the password: the proxy verifies it against a
 * JWKS served locally, logs in upstream with the credentials it holds, and User and Group subjects then
 * match in rules and masking exemptions. Bad tokens are refused with 28000 and an auth.failure event.
 * Also: audit events per decision kind with identity fields, metrics after a known sequence, and
 * /readyz following the upstream.
 */
import fs from 'node:fs';
import { createServer, type Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { type CryptoKey, exportJWK, generateKeyPair, type JWTPayload, SignJWT } from 'jose';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { CompiledPolicy } from '../../api/compiled.js';
import { loadPolicyFiles } from '../../policy/load.js';
import { type Sidecar, startSidecar } from '../../sidecar/runtime.js';
import { adminQuery } from '../support/admin.js';
import { type RunningCluster, startCluster } from '../support/pg-cluster.js';
import { until } from '../support/until.js';

const AUD = 'dbguard-gateway';

function compile(port: number): CompiledPolicy {
  const text = `
apiVersion: dbguard.io/v1alpha1
kind: DatabasePolicy
metadata: {name: gw, namespace: data}
spec:
  upstream: {host: 127.0.0.1, port: ${port}, sslmode: disable}
  defaultAction: Allow
  rules:
    - name: interns-read-only
      action: Deny
      match: {commands: ["INSERT", "UPDATE", "DELETE", "DROP *"], subjects: [{kind: Group, name: interns}]}
      message: "interns may only read"
    - name: no-drop
      action: Deny
      match: {commands: ["DROP *"]}
---
apiVersion: dbguard.io/v1alpha1
kind: MaskingRule
metadata: {name: pii, namespace: data}
spec:
  policyRef: {name: gw}
  columns: [{table: tok_people, column: ssn, strategy: Redact}]
  # DatabaseUser auditor: what a client may name in its startup message, which proves nothing here
  exemptSubjects: [{kind: User, name: alice@example.com}, {kind: DatabaseUser, name: auditor}]
`;
  const r = loadPolicyFiles([{ name: 'inline.yaml', text }]);
  if (!r.ok) throw new Error(r.errors.join('\n'));
  return r.compiled;
}

describe('token identity through the proxy', () => {
  const server = inject('pg');
  let jwks: Server;
  let issuer: string;
  let key: CryptoKey;
  let otherKey: CryptoKey;
  let sidecar: Sidecar;
  let dir: string;

  const now = () => Math.floor(Date.now() / 1000);
  const token = (claims: JWTPayload, k: CryptoKey = key) =>
    new SignJWT({ iss: issuer, aud: AUD, exp: now() + 300, ...claims })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .sign(k);
  const connect = async (user: string, password: string) => {
    const c = new pg.Client({
      host: sidecar.proxy.host,
      port: sidecar.proxy.port,
      user,
      password,
      database: 'app',
    });
    await c.connect();
    return c;
  };
  const audit = () =>
    fs
      .readFileSync(path.join(dir, 'audit.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-tok-'));
    const pair = await generateKeyPair('ES256', { extractable: true });
    key = pair.privateKey;
    otherKey = (await generateKeyPair('ES256', { extractable: true })).privateKey;
    const jwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
    jwks = createServer((req, res) => {
      res.setHeader('Content-Type', 'application/json');
      if (req.url === '/.well-known/openid-configuration')
        res.end(JSON.stringify({ issuer, jwks_uri: `${issuer}/jwks` }));
      else if (req.url === '/jwks') res.end(JSON.stringify({ keys: [jwk] }));
      else res.writeHead(404).end('{}');
    });
    await new Promise<void>((r) => jwks.listen(0, '127.0.0.1', () => r()));
    issuer = `http://127.0.0.1:${(jwks.address() as { port: number }).port}`;
    await adminQuery(
      server,
      `DROP TABLE IF EXISTS tok_people;
      CREATE TABLE tok_people (id int, ssn text);
      INSERT INTO tok_people VALUES (1, '987-65-4321');
      GRANT ALL ON tok_people TO app;`,
    );
    const policy = compile(server.port);
    sidecar = await startSidecar({
      listen: { host: '127.0.0.1', port: 0 },
      upstream: { host: server.host, port: server.port, sslmode: 'disable' },
      credentials: { username: 'app', password: 'app' },
      policyFiles: [],
      initialPolicy: policy,
      tokenAuth: { type: 'jwt', issuer, audiences: [AUD] },
      auditLog: path.join(dir, 'audit.jsonl'),
      workload: { serviceAccount: 'data/gateway', pod: 'gateway-0' },
      logger: { log: () => {} },
    });
  });

  afterAll(async () => {
    await sidecar?.close();
    await new Promise((r) => jwks?.close(r));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a valid token connects; User exemption and Group rules match the token claims', async () => {
    const alice = await connect(
      'alice',
      await token({ email: 'alice@example.com', email_verified: true, groups: ['analysts'] }),
    );
    expect((await alice.query('SELECT ssn FROM tok_people')).rows[0].ssn).toBe('987-65-4321');
    await alice.end();
    const bob = await connect(
      'bob',
      await token({ email: 'bob@example.com', email_verified: true, groups: ['interns'] }),
    );
    expect((await bob.query('SELECT ssn FROM tok_people')).rows[0].ssn).toBe('****');
    await expect(bob.query('DELETE FROM tok_people WHERE id = 1')).rejects.toMatchObject({
      code: '42501',
      message: 'dbguard: interns may only read (rule interns-read-only)',
    });
    await bob.end();
    // the upstream login is the proxy's: the session runs as `app` whatever user the client named
    const carol = await connect('carol', await token({ sub: 'carol' }));
    expect((await carol.query('SELECT current_user AS u')).rows[0].u).toBe('app');
    await carol.end();
  });

  it('a startup user naming an exempt DatabaseUser gets masked data; the audit says who was proven (issue 17)', async () => {
    // The reproduction: the gateway logs in upstream as `app`; the client claims `auditor`.
    const mallory = await connect(
      'auditor',
      await token({ email: 'mallory@example.com', email_verified: true }),
    );
    const r = await mallory.query('SELECT ssn, current_user AS u FROM tok_people');
    expect(r.rows[0]).toEqual({ ssn: '****', u: 'app' });
    await mallory.end();
    const events = await until('mallory session.end in the audit trail', async () => {
      await sidecar.audit!.flush();
      const mine = audit().filter((e) => e.identity.user === 'mallory@example.com');
      return mine.some((e) => e.event === 'session.end') && mine;
    });
    expect(events.some((e) => e.event === 'query' && e.decision === 'mask')).toBe(true);
    for (const e of events)
      expect(e.identity).toMatchObject({ databaseUser: 'app', claimedDatabaseUser: 'auditor' });
  });

  it('an email the issuer did not verify is not the user: no User exemption through it (issue 17)', async () => {
    const forged = await connect('mallory', await token({ sub: 'mallory', email: 'alice@example.com' }));
    expect((await forged.query('SELECT ssn FROM tok_people')).rows[0].ssn).toBe('****');
    await forged.end();
  });

  const BAD_TOKENS: [string, JWTPayload, 'other' | undefined][] = [
    ['expired', { email: 'x@example.com', exp: Math.floor(Date.now() / 1000) - 600 }, undefined],
    ['not yet valid', { email: 'x@example.com', nbf: Math.floor(Date.now() / 1000) + 600 }, undefined],
    ['wrong audience', { email: 'x@example.com', aud: 'someone-else' }, undefined],
    ['wrong issuer', { email: 'x@example.com', iss: 'https://evil.example' }, undefined],
    ['bad signature', { email: 'x@example.com' }, 'other'],
  ];
  const refuse = async (claims: JWTPayload, signer: 'other' | undefined) => {
    const t = await token(claims, signer === 'other' ? otherKey : key);
    await expect(connect('mallory', t)).rejects.toMatchObject({ code: '28000' });
  };

  it.each(BAD_TOKENS)('refuses a token that is %s with 28000', async (_what, claims, signer) => {
    await refuse(claims, signer);
  });

  it('refuses a password that is not a token, and audits every refusal', async () => {
    await sidecar.audit!.flush();
    const before = audit().filter((e) => e.event === 'auth.failure').length;
    for (const [, claims, signer] of BAD_TOKENS) await refuse(claims, signer);
    await expect(connect('mallory', 'hunter2')).rejects.toMatchObject({ code: '28000' });
    await sidecar.audit!.flush();
    const failures = audit()
      .filter((e) => e.event === 'auth.failure')
      .slice(before);
    expect(failures).toHaveLength(BAD_TOKENS.length + 1);
    // nothing was proven: the login the proxy would use, and the name the client gave as claimed
    expect(
      failures.every(
        (e) => e.identity.databaseUser === 'app' && e.identity.claimedDatabaseUser === 'mallory',
      ),
    ).toBe(true);
    expect(failures.map((e) => e.reason)).toEqual(
      expect.arrayContaining(['expired', 'bad_audience', 'bad_issuer', 'bad_signature']),
    );
    // no token text in the trail
    expect(fs.readFileSync(path.join(dir, 'audit.jsonl'), 'utf8')).not.toContain('eyJ');
  });

  it('audits one event per decision kind with the identity, and session start and end', async () => {
    const bob = await connect(
      'bob',
      await token({ email: 'bob@example.com', email_verified: true, groups: ['interns'] }),
    );
    await bob.query('SELECT 1');
    await bob.query('SELECT ssn FROM tok_people');
    await bob.query('DROP TABLE tok_people').catch(() => {});
    await bob.end();
    // the proxy writes session.end once it sees the client go: wait for that event, not for the clock
    const events = await until('bob session.end in the audit trail', async () => {
      await sidecar.audit!.flush();
      const mine = audit().filter((e) => e.identity.user === 'bob@example.com');
      return mine.some((e) => e.event === 'session.end') && mine;
    });
    const kinds = events.filter((e) => e.event === 'query').map((e) => e.decision);
    expect(kinds).toEqual(expect.arrayContaining(['allow', 'mask', 'deny']));
    expect(events.some((e) => e.event === 'session.start')).toBe(true);
    expect(events.some((e) => e.event === 'session.end')).toBe(true);
    for (const e of events) {
      expect(e.identity).toMatchObject({
        serviceAccount: 'data/gateway',
        pod: 'gateway-0',
        groups: ['interns'],
        // the user the proxy logged in as; the startup user only as claimed (issue 17)
        databaseUser: 'app',
        claimedDatabaseUser: 'bob',
      });
      expect(e.identity.clientAddr).toMatch(/^127\.0\.0\.1:\d+$/);
    }
  });
});

describe('metrics and readiness', () => {
  let cluster: RunningCluster;
  let sidecar: Sidecar;
  let metricsPort: number;

  beforeAll(async () => {
    cluster = await startCluster();
    sidecar = await startSidecar({
      listen: { host: '127.0.0.1', port: 0 },
      upstream: { host: cluster.host, port: cluster.port, sslmode: 'disable' },
      policyFiles: [],
      initialPolicy: compile(cluster.port),
      metricsListen: '127.0.0.1:0',
      logger: { log: () => {} },
    });
    metricsPort = sidecar.health!.port;
  }, 120_000);

  afterAll(async () => {
    await sidecar?.close();
    await cluster?.stop();
  });

  it('counts a known sequence of statements', async () => {
    const c = new pg.Client({
      host: sidecar.proxy.host,
      port: sidecar.proxy.port,
      user: 'postgres',
      password: 'postgres',
    });
    await c.connect();
    await c.query('CREATE TABLE tok_people (id int, ssn text)');
    for (let i = 0; i < 3; i++) await c.query('SELECT ssn FROM tok_people');
    for (let i = 0; i < 2; i++) await c.query('DROP TABLE tok_people').catch(() => {});
    await c.end();
    // the session's end is counted once the proxy sees the client go: wait for it on /metrics
    const text = await until('the session counted as ended', async () => {
      const t = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      return /dbguard_connections_active 0\b/.test(t) && t;
    });
    const value = (re: RegExp) => Number(re.exec(text)?.[1] ?? Number.NaN);
    expect(value(/dbguard_queries_total\{policy="data\/gw",decision="mask",command="SELECT"\} (\d+)/)).toBe(
      3,
    );
    expect(
      value(/dbguard_denied_queries_total\{policy="data\/gw",rule="no-drop",reason="rule"\} (\d+)/),
    ).toBe(2);
    expect(
      value(/dbguard_queries_total\{policy="data\/gw",decision="allow",command="CREATE TABLE"\} (\d+)/),
    ).toBe(1);
    expect(value(/dbguard_connections_total (\d+)/)).toBe(1);
    expect(value(/dbguard_connections_active (\d+)/)).toBe(0);
    expect(text).toContain('process_resident_memory_bytes');
  });

  it('/readyz turns false when the upstream stops and true when it returns', async () => {
    const readyz = async () => (await fetch(`http://127.0.0.1:${metricsPort}/readyz`)).status;
    expect(await readyz()).toBe(200);
    await cluster.pause();
    expect(await readyz()).toBe(503);
    const body = await (await fetch(`http://127.0.0.1:${metricsPort}/readyz`)).json();
    expect(JSON.stringify(body)).toContain('does not answer');
    await cluster.resume();
    expect(await readyz()).toBe(200);
  }, 60_000);
});
