/**
 * libpq over TLS to the proxy, the proxy over TLS to a PostgreSQL that offers SCRAM-SHA-256-PLUS:
 * the path of a gateway on the network. Channel binding ties SCRAM to one TLS connection and two of
 * them meet at the proxy, so it cannot cross it in relay mode (sidecar/README.md). What a user gets:
 * channel_binding=disable works, the default (prefer) and require are refused with a line that says
 * what to do, and credentials mode (the proxy logs in itself) works with the default.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningCluster, startCluster } from '../support/pg-cluster.js';
import { issueCert, makeCa, serverKeyFor } from '../support/tls.js';
import { startTestProxy, type TestProxy } from './helpers.js';

const execFileAsync = promisify(execFile);

let cluster: RunningCluster;
let dir: string;
let relay: TestProxy;
let credentials: TestProxy;
let caFile: string;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-tls2-'));
  fs.chmodSync(dir, 0o755);
  const ca = makeCa(dir, 'ca', 'dbguard test CA');
  const server = issueCert(dir, 'server', 'localhost', 'DNS:localhost,IP:127.0.0.1', ca);
  serverKeyFor(server);
  caFile = ca.cert;
  cluster = await startCluster({
    settings: {
      ssl: 'on',
      ssl_cert_file: `'${server.cert}'`,
      ssl_key_file: `'${server.key}'`,
      max_connections: 20,
      shared_buffers: "'16MB'",
    },
  });
  const common = {
    tls: { cert: fs.readFileSync(server.cert), key: fs.readFileSync(server.key) },
  };
  const upstream = {
    host: 'localhost',
    port: cluster.port,
    sslmode: 'verify-full' as const,
    caPem: fs.readFileSync(ca.cert, 'utf8'),
  };
  relay = await startTestProxy({ ...common, upstream });
  credentials = await startTestProxy({
    ...common,
    upstream,
    upstreamCredentials: { username: 'app', password: 'app' },
  });
}, 120_000);

afterAll(async () => {
  await relay?.close();
  await credentials?.close();
  await cluster?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

async function psql(port: number, extra: string) {
  const conn = `host=localhost port=${port} user=app password=app dbname=app sslmode=verify-full sslrootcert=${caFile} ${extra}`;
  return execFileAsync(
    'psql',
    ['-X', '-At', '-c', 'select ssl from pg_stat_ssl where pid = pg_backend_pid()', conn],
    { encoding: 'utf8' },
  ).then(
    (r) => ({ ok: true as const, out: r.stdout.trim(), err: r.stderr }),
    (e: { stdout?: string; stderr?: string }) => ({
      ok: false as const,
      out: e.stdout ?? '',
      err: e.stderr ?? '',
    }),
  );
}

describe('TLS on both sides of the proxy with SCRAM', () => {
  it('relay: channel_binding=disable works, TLS upstream too', async () => {
    const r = await psql(relay.port, 'channel_binding=disable');
    expect(r).toMatchObject({ ok: true, out: 't' });
  });

  it('relay: the default channel_binding=prefer is refused with a line that says what to do', async () => {
    const r = await psql(relay.port, '');
    expect(r.ok).toBe(false);
    expect(r.err).toMatch(/channel binding/i);
    expect(r.err).toContain('channel_binding=disable');
  });

  it('relay: channel_binding=require fails at the client (the proxy offers no SCRAM-SHA-256-PLUS)', async () => {
    const r = await psql(relay.port, 'channel_binding=require');
    expect(r.ok).toBe(false);
    expect(r.err).toMatch(/channel binding/i);
  });

  it('credentials mode: the default libpq settings work over TLS on both sides', async () => {
    const r = await psql(credentials.port, '');
    expect(r).toMatchObject({ ok: true, out: 't' });
  });
});
