/**
 * TLS from the proxy to the upstream, per sslmode, against a TLS-enabled PostgreSQL started for
 * this file with a certificate made by openssl. Also shows SCRAM relayed over an upstream TLS
 * connection: the server offers SCRAM-SHA-256-PLUS, which the proxy must not pass on.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SslMode } from '../../api/types.js';
import { type RunningCluster, startCluster } from '../support/pg-cluster.js';
import { issueCert, makeCa, serverKeyFor } from '../support/tls.js';
import { startTestProxy, via } from './helpers.js';

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
  });
}, 120_000);

afterAll(async () => {
  await cluster?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

async function sslInUse(sslmode: SslMode, host: string, ca?: string): Promise<boolean> {
  const p = await startTestProxy({
    upstream: { host, port: cluster.port, sslmode, ...(ca ? { caPem: ca } : {}) },
  });
  try {
    const c = new pg.Client({ ...via(p), user: 'app', password: 'app', database: 'app' });
    await c.connect();
    const r = await c.query('select ssl from pg_stat_ssl where pid = pg_backend_pid()');
    await c.end();
    return r.rows[0].ssl;
  } finally {
    await p.close();
  }
}

async function refusal(sslmode: SslMode, host: string, ca?: string): Promise<string> {
  const p = await startTestProxy({
    upstream: { host, port: cluster.port, sslmode, ...(ca ? { caPem: ca } : {}) },
  });
  try {
    const c = new pg.Client({ ...via(p), user: 'app', password: 'app', database: 'app' });
    c.on('error', () => {});
    const err = await c.connect().then(
      () => null,
      (e: Error & { code?: string }) => e,
    );
    expect(err).not.toBeNull();
    expect(err!.code).toBe('08006');
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
