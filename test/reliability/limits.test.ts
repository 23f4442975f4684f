/**
 * Limits of one proxy (issue #10): maximum connections (53300 beyond it, CancelRequests still get
 * through), client idle timeouts (57P05 / 25P03, never during a running statement), maximum message
 * size, and clear errors for nonsensical settings.
 */
import net from 'node:net';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  compilePolicy,
  type GovernedProxy,
  memoryLogger,
  reliabilityPolicyYaml,
  sleep,
  startGovernedProxy,
  until,
} from '../../bench/reliability/support.js';
import { allowAll } from '../../sidecar/decision-point.js';
import { startProxy } from '../../sidecar/proxy.js';
import { untilActive } from '../support/activity.js';

const server = inject('pg');
const schema = `rell_${process.pid}_${Math.random().toString(36).slice(2, 7)}`;
const policy = compilePolicy(reliabilityPolicyYaml({ schema, upstreamPort: server.port }));
const upstream = { host: server.host, port: server.port, sslmode: 'disable' as const };

type Client = pg.Client & { processID: number; secretKey: number };

async function client(port: number, errors?: Error[]): Promise<Client> {
  const c = new pg.Client({ host: '127.0.0.1', port, user: 'app', password: 'app', database: 'app' });
  c.on('error', (e) => errors?.push(e));
  await c.connect();
  return c as Client;
}

/** A raw CancelRequest with the key the proxy gave the client. */
async function sendCancel(port: number, pid: number, secret: number): Promise<void> {
  const b = Buffer.alloc(16);
  b.writeInt32BE(16, 0);
  b.writeInt32BE(80877102, 4);
  b.writeInt32BE(pid, 8);
  b.writeInt32BE(secret, 12);
  const s = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve) => {
    s.on('error', () => resolve());
    s.on('close', () => resolve());
    s.on('connect', () => s.end(b));
  });
}

describe('maximum connections', () => {
  let gp: GovernedProxy;
  const log = memoryLogger();
  beforeAll(async () => {
    gp = await startGovernedProxy({ policy, upstream, maxConnections: 3, logger: log });
  });
  afterAll(async () => gp.close());

  it('beyond the limit a clear 53300; CancelRequests still get through; a freed slot is reusable', async () => {
    const inside = await Promise.all([client(gp.proxy.port), client(gp.proxy.port), client(gp.proxy.port)]);
    const refused = await client(gp.proxy.port).catch((e: { code?: string; message: string }) => e);
    expect(refused).toMatchObject({
      code: '53300',
      message: expect.stringContaining('too many connections for dbguard proxy'),
    });
    // psql shows the same line to a person.
    expect(gp.proxy.activeSessions).toBe(3);
    expect(log.lines.filter((l) => l.msg === 'connection refused: too many connections')).toHaveLength(1);

    // The proxy is full, yet a runaway statement can still be cancelled.
    const first = inside[0]!;
    const sleeping = first.query('SELECT pg_sleep(20)').catch((e: { code?: string }) => e);
    await untilActive(server, 'SELECT pg_sleep(20)');
    const t0 = Date.now();
    await sendCancel(gp.proxy.port, first.processID, first.secretKey);
    expect(await sleeping).toMatchObject({ code: '57014' });
    expect(Date.now() - t0).toBeLessThan(5000);

    await inside[1]!.end();
    await until('slot freed', () => gp.proxy.activeSessions === 2, 3000);
    const again = await client(gp.proxy.port);
    expect((await again.query('SELECT 1 AS v')).rows[0].v).toBe(1);
    await Promise.all([again.end(), inside[0]!.end(), inside[2]!.end()]);
  });
});

describe('client idle timeout', () => {
  let gp: GovernedProxy;
  beforeAll(async () => {
    gp = await startGovernedProxy({ policy, upstream, idleTimeoutMs: 600, logger: memoryLogger() });
  });
  afterAll(async () => gp.close());

  it('an idle session ends with 57P05, an idle transaction with 25P03; a long statement is never cut', async () => {
    const idleErrors: Error[] = [];
    const idle = await client(gp.proxy.port, idleErrors);
    const txErrors: Error[] = [];
    const inTx = await client(gp.proxy.port, txErrors);
    await inTx.query('BEGIN');
    const busy = await client(gp.proxy.port);
    // 1.5 s of pg_sleep: no byte moves on the client socket, but the statement runs.
    const r = await busy.query('SELECT pg_sleep(1.5), 7 AS v');
    expect(r.rows[0].v).toBe(7);
    await until('idle sessions ended', () => idleErrors.length > 0 && txErrors.length > 0, 3000);
    expect(idleErrors[0]).toMatchObject({
      code: '57P05',
      message: expect.stringContaining('idle-session timeout'),
    });
    expect(txErrors[0]).toMatchObject({
      code: '25P03',
      message: expect.stringContaining('idle-in-transaction'),
    });
    // The busy client keeps working as long as it is not idle for 600 ms.
    expect((await busy.query('SELECT 8 AS v')).rows[0].v).toBe(8);
    await busy.end();
    await until('sessions closed', () => gp.proxy.activeSessions === 0, 3000);
    await Promise.all([idle.end().catch(() => {}), inTx.end().catch(() => {})]);
  });

  it('a statement held by a slow verdict (an approval wait) is not idle time', async () => {
    const held = await startProxy({
      upstream,
      idleTimeoutMs: 500,
      logger: memoryLogger(),
      decisionPoint: {
        ...allowAll,
        judge: async (sql) => {
          if (sql.includes('held')) await sleep(1500);
          return { action: 'forward', sql };
        },
      },
    });
    try {
      const errors: Error[] = [];
      const c = await client(held.port, errors);
      expect((await c.query("SELECT 'held' AS v")).rows[0].v).toBe('held');
      expect(errors).toEqual([]);
      await c.end();
    } finally {
      await held.close();
    }
  });
});

describe('maximum message size and settings', () => {
  it('a message over the limit ends that connection with 08P01; others keep working', async () => {
    const gp = await startGovernedProxy({
      policy,
      upstream,
      maxMessageSize: 64 * 1024,
      logger: memoryLogger(),
    });
    try {
      const witness = await client(gp.proxy.port);
      const errors: Error[] = [];
      const big = await client(gp.proxy.port, errors);
      const e = await big
        .query(`SELECT '${'x'.repeat(100_000)}'`)
        .catch((err: { code?: string; message: string }) => err);
      expect(e).toMatchObject({ message: expect.stringMatching(/too large|Connection terminated/) });
      expect((await witness.query('SELECT 1 AS v')).rows[0].v).toBe(1);
      await witness.end();
      await big.end().catch(() => {});
    } finally {
      await gp.close();
    }
  });

  it('nonsensical limits are refused at start with a clear error', async () => {
    await expect(startProxy({ upstream, maxConnections: -1 })).rejects.toThrow(
      /maxConnections must be an integer/,
    );
    await expect(startProxy({ upstream, idleTimeoutMs: 1.5 })).rejects.toThrow(
      /idleTimeoutMs must be an integer/,
    );
    await expect(startProxy({ upstream, upstreamConnectTimeoutMs: 0 })).rejects.toThrow(
      /upstreamConnectTimeoutMs must be an integer/,
    );
    await expect(startProxy({ upstream, maxMessageSize: 10 })).rejects.toThrow(/max message size/);
  });
});
