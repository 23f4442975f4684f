/**
 * TLS from the proxy to the upstream, per sslmode, against a TLS-enabled PostgreSQL started for
 * this file with a certificate made by openssl, and against the shared test server, which has no
 * TLS: every mode against both, as libpq means it, including the fall-backs of allow and prefer
 * (pg_hba.conf here refuses role `tlsonly` without TLS and role `plainonly` with it). Also shows
 * SCRAM relayed over an upstream TLS connection: the server offers SCRAM-SHA-256-PLUS, which the
 * proxy must not pass on.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SslMode } from '../../api/types.js';
import { encodeError } from '../../sidecar/protocol/codec.js';
import { type Sidecar, startSidecar } from '../../sidecar/runtime.js';
import { queryOnce } from '../support/admin.js';
import { type RunningCluster, startCluster } from '../support/pg-cluster.js';
import { issueCert, makeCa, serverKeyFor } from '../support/tls.js';
import { server, startTestProxy, via } from './helpers.js';

let cluster: RunningCluster;
let dir: string;
let caPem: string;
let otherCaPem: string;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-uptls-'));
  fs.chmodSync(dir, 0o755);
  // A CA, and a server certificate for DNS:localhost (not for 127.0.0.1) signed by it; another CA.
  const caFiles = makeCa(dir, 'ca', 'dbguard test CA');
  const server = issueCert(dir, 'server', 'localhost', 'DNS:localhost', caFiles);
  makeCa(dir, 'other', 'other CA');
  serverKeyFor(server);
  caPem = fs.readFileSync(path.join(dir, 'ca.crt'), 'utf8');
  otherCaPem = fs.readFileSync(path.join(dir, 'other.crt'), 'utf8');
  cluster = await startCluster({
    settings: {
      ssl: 'on',
      ssl_cert_file: `'${server.cert}'`,
      ssl_key_file: `'${server.key}'`,
      max_connections: 20,
      shared_buffers: "'16MB'",
    },
    hbaFirst: ['hostnossl all tlsonly 127.0.0.1/32 reject', 'hostssl all plainonly 127.0.0.1/32 reject'],
    setupSql: `
      CREATE ROLE tlsonly LOGIN PASSWORD 'tlsonly';
      CREATE ROLE plainonly LOGIN PASSWORD 'plainonly';
      GRANT ALL ON DATABASE app TO tlsonly, plainonly;`,
  });
}, 120_000);

afterAll(async () => {
  await cluster?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

interface Via {
  /** default: this file's TLS server */
  port?: number;
  /** default app */
  user?: string;
}

/** Whether the proxy's session with the server runs over TLS; within 5 s (the old `prefer` hung). */
async function sslInUse(
  sslmode: SslMode | undefined,
  host: string,
  ca?: string,
  to: Via = {},
): Promise<boolean> {
  const p = await startTestProxy({
    upstream: {
      host,
      port: to.port ?? cluster.port,
      ...(sslmode ? { sslmode } : {}),
      ...(ca ? { caPem: ca } : {}),
    },
  });
  try {
    const user = to.user ?? 'app';
    const c = new pg.Client({
      ...via(p),
      user,
      password: user,
      database: 'app',
      connectionTimeoutMillis: 5000,
    });
    await c.connect();
    const r = await c.query('select ssl from pg_stat_ssl where pid = pg_backend_pid()');
    await c.end();
    return r.rows[0].ssl;
  } finally {
    await p.close();
  }
}

/** The proxy's reason for refusing the client (08006, or the server's own refusal, 28000). */
async function refusal(
  sslmode: SslMode,
  host: string,
  ca?: string,
  to: Via = {},
  code = '08006',
): Promise<string> {
  const p = await startTestProxy({
    upstream: { host, port: to.port ?? cluster.port, sslmode, ...(ca ? { caPem: ca } : {}) },
  });
  try {
    const user = to.user ?? 'app';
    const c = new pg.Client({
      ...via(p),
      user,
      password: user,
      database: 'app',
      connectionTimeoutMillis: 5000,
    });
    c.on('error', () => {});
    const err = await c.connect().then(
      () => null,
      (e: Error & { code?: string }) => e,
    );
    expect(err).not.toBeNull();
    expect(err!.code).toBe(code);
    if (code !== '08006') return err!.message;
    return String(p.logs.find((l) => l.msg === 'upstream connection failed')?.fields?.error);
  } finally {
    await p.close();
  }
}

describe('upstream sslmode', () => {
  it('disable: plain; prefer and require: TLS (SCRAM relayed over it)', async () => {
    expect(await sslInUse('disable', '127.0.0.1')).toBe(false);
    expect(await sslInUse('prefer', '127.0.0.1')).toBe(true);
    expect(await sslInUse('require', '127.0.0.1')).toBe(true);
  });

  it('verify-ca accepts the right CA and refuses another', async () => {
    expect(await sslInUse('verify-ca', '127.0.0.1', caPem)).toBe(true);
    expect(await refusal('verify-ca', '127.0.0.1', otherCaPem)).toMatch(/TLS to upstream failed/);
  });

  it('verify-full checks the host name', async () => {
    expect(await sslInUse('verify-full', 'localhost', caPem)).toBe(true);
    expect(await refusal('verify-full', '127.0.0.1', caPem)).toMatch(
      /IP: 127\.0\.0\.1|not in the cert|Hostname\/IP/i,
    );
  });

  it('cancel requests reach the server over TLS too', async () => {
    const p = await startTestProxy({
      upstream: { host: '127.0.0.1', port: cluster.port, sslmode: 'require' },
    });
    const sql = postgres({ ...via(p), user: 'app', password: 'app', database: 'app', max: 1 });
    await sql`select 1`;
    const q = sql`select pg_sleep(20)`;
    setTimeout(() => q.cancel(), 300);
    const t0 = Date.now();
    await expect(q).rejects.toMatchObject({ code: '57014' });
    expect(Date.now() - t0).toBeLessThan(5000);
    await sql.end();
    await p.close();
  });

  it('credentials mode logs in with SCRAM over upstream TLS', async () => {
    const p = await startTestProxy({
      upstream: { host: 'localhost', port: cluster.port, sslmode: 'verify-full', caPem },
      upstreamCredentials: { username: 'app', password: 'app' },
    });
    const c = new pg.Client({ ...via(p), user: 'app', database: 'app' });
    await c.connect();
    const r = await c.query('select current_user as u, ssl from pg_stat_ssl where pid = pg_backend_pid()');
    expect(r.rows[0]).toEqual({ u: 'app', ssl: true });
    await c.end();
    await p.close();
  });
});

describe('sslmode as libpq: every mode against a server with TLS and one without', () => {
  const plain = (): Via => ({ port: server().port });

  it('disable and allow: plain text on both', async () => {
    expect(await sslInUse('disable', '127.0.0.1')).toBe(false);
    expect(await sslInUse('allow', '127.0.0.1')).toBe(false);
    expect(await sslInUse('disable', '127.0.0.1', undefined, plain())).toBe(false);
    expect(await sslInUse('allow', '127.0.0.1', undefined, plain())).toBe(false);
  });

  it("prefer, the default: TLS where offered, plain text on 'N' at once", async () => {
    expect(await sslInUse('prefer', '127.0.0.1', undefined, plain())).toBe(false);
    expect(await sslInUse(undefined, '127.0.0.1', undefined, plain())).toBe(false);
    expect(await sslInUse(undefined, '127.0.0.1')).toBe(true);
  });

  it('require, verify-ca, verify-full: TLS or a clear refusal, never plain text', async () => {
    expect(await sslInUse('require', '127.0.0.1')).toBe(true);
    expect(await sslInUse('verify-ca', '127.0.0.1', caPem)).toBe(true);
    expect(await sslInUse('verify-full', 'localhost', caPem)).toBe(true);
    for (const [mode, host] of [
      ['require', '127.0.0.1'],
      ['verify-ca', '127.0.0.1'],
      ['verify-full', 'localhost'],
    ] as const) {
      expect(await refusal(mode, host, caPem, plain())).toBe(
        `upstream does not support TLS (sslmode=${mode})`,
      );
    }
  });

  it('allow: a plain start-up the server refuses is tried once more over TLS', async () => {
    expect(await sslInUse('allow', '127.0.0.1', undefined, { user: 'tlsonly' })).toBe(true);
    // disable has no second try: the server's own refusal reaches the client
    expect(await refusal('disable', '127.0.0.1', undefined, { user: 'tlsonly' }, '28000')).toMatch(
      /pg_hba\.conf rejects connection .*no encryption/,
    );
  });

  it('prefer: a start-up refused over TLS, or a failed handshake, is tried once more in plain text', async () => {
    expect(await sslInUse('prefer', '127.0.0.1', undefined, { user: 'plainonly' })).toBe(false);
    expect(await refusal('require', '127.0.0.1', undefined, { user: 'plainonly' }, '28000')).toMatch(
      /pg_hba\.conf rejects connection .*SSL encryption/,
    );
    // As libpq with a root certificate: the chain is verified in every mode; prefer falls back.
    expect(await sslInUse('prefer', '127.0.0.1', otherCaPem)).toBe(false);
    expect(await refusal('require', '127.0.0.1', otherCaPem)).toMatch(/TLS to upstream failed/);
  });

  it("an 'E' answer to the SSL request is reported, not retried", async () => {
    const fake = net.createServer((s) => {
      s.once('data', () =>
        s.end(encodeError({ severity: 'FATAL', sqlstate: '53300', message: 'could not fork' })),
      );
    });
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
    try {
      const port = (fake.address() as net.AddressInfo).port;
      expect(await refusal('prefer', '127.0.0.1', undefined, { port })).toBe(
        'upstream refused the connection: could not fork',
      );
    } finally {
      fake.close();
    }
  });

  it('a sidecar with no policy and the default sslmode refuses at once (42501), it does not hang', async () => {
    const s: Sidecar = await startSidecar({
      listen: { host: '127.0.0.1', port: 0 },
      upstream: { host: server().host, port: server().port },
      operator: { url: 'http://127.0.0.1:9' },
      policyName: 'shop/orders',
      logger: { log: () => {} },
    });
    try {
      const t0 = Date.now();
      await expect(
        queryOnce(
          { host: s.proxy.host, port: s.proxy.port, user: 'app', password: 'app', database: 'app' },
          'SELECT 1',
        ),
      ).rejects.toMatchObject({ code: '42501', message: expect.stringContaining('no policy is loaded') });
      expect(Date.now() - t0).toBeLessThan(5000);
    } finally {
      await s.close();
    }
  });
});
