/**
 * Approvals end to end: a real proxy (Governor + ApprovalClient) in front of real PostgreSQL, the
 * operator with its webhooks on the in-process Kubernetes API, and approvers using `kubectl dbguard`.
 * Held statements run only after approval; denial, timeout, cancel and disconnect never run them.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { initParser } from '../../policy/engine.js';
import { ApprovalClient } from '../../sidecar/approvals.js';
import {
  type AuditEvent,
  type AuditLog,
  loadAuditParser,
  type QueryEvent,
} from '../../sidecar/audit/index.js';
import { Governor } from '../../sidecar/governor.js';
import { jsonLogger, silentLogger } from '../../sidecar/log.js';
import { SidecarMetrics } from '../../sidecar/metrics.js';
import { type ProxyHandle, startProxy } from '../../sidecar/proxy.js';
import {
  ALICE,
  type ApprovalCluster,
  BOB,
  CHECKOUT_AS_USER,
  NS,
  quiet,
  SERVER_NAME,
  startApprovalCluster,
  until,
} from './helpers.js';

const server = inject('pg');
/** DBGUARD_TEST_DEBUG=1 shows the proxy's and governor's log */
const debug = (f: Record<string, unknown>) => {
  if (process.env.DBGUARD_TEST_DEBUG) process.stderr.write(`${JSON.stringify(f)}\n`);
};
let c: ApprovalCluster;
let proxy: ProxyHandle;
let metrics: SidecarMetrics;
const events: AuditEvent[] = [];
const clients: pg.Client[] = [];

/** An in-memory audit log: every event the governor writes, in order. */
const audit: AuditLog = {
  write: async (e: AuditEvent) => {
    events.push(e);
  },
  tryWrite: (e: AuditEvent) => {
    events.push(e);
    return true;
  },
  reopen: async () => {},
  flush: async () => {},
  close: async () => {},
  status: () => ({}) as ReturnType<AuditLog['status']>,
  health: () => null,
};

const direct = () => ({
  host: server.host,
  port: server.port,
  user: 'app',
  password: 'app',
  database: 'app',
});

async function viaProxy(notices: string[] = []): Promise<pg.Client> {
  const cl = new pg.Client({ ...direct(), host: proxy.host, port: proxy.port });
  cl.on('notice', (n) => notices.push(`${n.message}\n${(n as any).hint ?? ''}`));
  cl.on('error', () => {});
  await cl.connect();
  clients.push(cl);
  return cl;
}

async function sql(text: string): Promise<pg.QueryResult> {
  const cl = new pg.Client(direct());
  await cl.connect();
  try {
    return await cl.query(text);
  } finally {
    await cl.end();
  }
}

async function table(schema: string, name: string, rows = 10): Promise<string> {
  const t = `${schema}.${name}_${Math.random().toString(36).slice(2, 8)}`;
  await sql(
    `CREATE TABLE ${t} (id int primary key); INSERT INTO ${t} SELECT g FROM generate_series(1, ${rows}) g`,
  );
  return t;
}

const count = async (t: string) => Number((await sql(`SELECT count(*) AS n FROM ${t}`)).rows[0].n);
const requestIn = (text: string) => /request shop\/(orders-[0-9a-f]{6})/.exec(text)?.[1];
const stored = (name: string) => c.api.store.get<any>('dbguard.io/v1alpha1', 'ApprovalRequest', NS, name);
const approvals = async (outcome: string) =>
  (await (metrics as any).registry.getSingleMetric('dbguard_approvals_total').get()).values.find(
    (v: any) => v.labels.outcome === outcome && v.labels.policy === `${NS}/orders`,
  )?.value ?? 0;
const queryEvents = (fingerprintOf: string) =>
  events.filter(
    (e): e is QueryEvent => e.event === 'query' && e.statement.normalized.includes(fingerprintOf),
  );

async function settle<T>(p: Promise<T>): Promise<{ ok: T } | { err: any }> {
  try {
    return { ok: await p };
  } catch (err) {
    return { err };
  }
}

beforeAll(async () => {
  await initParser();
  await loadAuditParser();
  c = await startApprovalCluster();
  for (const s of ['appr_wait', 'appr_short', 'appr_rej', 'appr_twice'])
    await sql(`CREATE SCHEMA IF NOT EXISTS ${s}`);
  metrics = new SidecarMetrics({ defaultMetrics: false });
  const client = new ApprovalClient({
    operatorUrl: c.url,
    caPem: c.caPem,
    serverName: SERVER_NAME,
    token: () => c.sidecarToken,
    pollSeconds: 5,
    log: quiet,
  });
  const governor = new Governor({
    policy: () => c.op.store.get(`${NS}/orders`),
    workload: { serviceAccount: `${NS}/checkout`, pod: 'checkout-5d9f' },
    audit,
    metrics,
    approvals: client,
    log: debug,
  });
  proxy = await startProxy({
    upstream: { host: server.host, port: server.port, sslmode: 'disable' },
    decisionPoint: governor,
    logger: process.env.DBGUARD_TEST_DEBUG ? jsonLogger() : silentLogger,
  });
});

afterAll(async () => {
  for (const cl of clients) await cl.end().catch(() => {});
  await proxy?.close();
  await c?.close();
});

describe('approvals through the proxy', () => {
  it('Wait: a held bulk DELETE runs after approval and not before', async () => {
    const t = await table('appr_wait', 'w');
    const notices: string[] = [];
    const cl = await viaProxy(notices);
    const pending = settle(cl.query(`DELETE FROM ${t}`));
    const notice = await until('approval notice', () => notices.find((n) => requestIn(n)));
    const name = requestIn(notice)!;
    expect(notice).toContain('held for approval');
    expect(notice).toContain(`kubectl dbguard approve ${name} -n ${NS}`);
    expect(stored(name).spec.statement).toBe(`DELETE FROM ${t}`);
    await new Promise((r) => setTimeout(r, 700));
    expect(await count(t)).toBe(10); // held: nothing ran yet
    expect((await c.kubectl(ALICE, 'approve', name, '--reason', 'cleanup OPS-1')).code).toBe(0);
    const r = await pending;
    expect('ok' in r && r.ok.rowCount).toBe(10);
    expect(await count(t)).toBe(0);
    // the session carries on normally
    expect((await cl.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    const ev = queryEvents(t);
    expect(ev.map((e) => e.decision)).toEqual(['approval_pending', 'approved']);
    expect(ev[1]).toMatchObject({ rule: 'held-deletes', rowCount: 10, sqlstate: null, enforced: true });
    expect(await approvals('pending')).toBeGreaterThanOrEqual(1);
    expect(await approvals('approved')).toBeGreaterThanOrEqual(1);
  });

  it('Wait: a held Parse (extended protocol) runs after approval with its parameters', async () => {
    const t = await table('appr_wait', 'w');
    const notices: string[] = [];
    const cl = await viaProxy(notices);
    const pending = settle(cl.query(`DELETE FROM ${t} WHERE id > $1`, [7]));
    const name = requestIn(await until('notice', () => notices.find((n) => requestIn(n))))!;
    expect(stored(name).spec.statement).toBe(`DELETE FROM ${t} WHERE id > $1`);
    expect(await count(t)).toBe(10);
    expect((await c.kubectl(BOB, 'approve', name)).code).toBe(0);
    const r = await pending;
    expect('ok' in r && r.ok.rowCount).toBe(3);
    expect(await count(t)).toBe(7);
  });

  it('Wait: an approved named Parse runs once; 19 more Bind/Execute with other ids delete nothing (issue #18)', async () => {
    const t = await table('appr_wait', 'w', 20);
    const notices: string[] = [];
    const cl = await viaProxy(notices);
    const text = `DELETE FROM ${t} WHERE id = $1`;
    const pending = settle(cl.query({ name: 'del_one', text, values: [1] }));
    const name = requestIn(await until('notice', () => notices.find((n) => requestIn(n))))!;
    expect((await c.kubectl(BOB, 'approve', name)).code).toBe(0);
    const r = await pending;
    expect('ok' in r && r.ok.rowCount).toBe(1);
    // the attack: the same prepared statement, bound again with the ids nobody approved
    for (let id = 2; id <= 20; id++) {
      const again = await settle(cl.query({ name: 'del_one', text, values: [id] }));
      expect((again as { err: any }).err?.code).toBe('42501');
      expect((again as { err: any }).err?.message).toMatch(/approved for one execution/);
    }
    expect(await count(t)).toBe(19);
    // the session goes on
    expect((await cl.query('SELECT 1 AS one')).rows[0].one).toBe(1);
  });

  it('Wait: approval.maxExecutions 2 lets an approved prepared statement run twice, not a third time', async () => {
    const t = await table('appr_twice', 'w');
    const notices: string[] = [];
    const cl = await viaProxy(notices);
    const text = `DELETE FROM ${t} WHERE id = $1`;
    const pending = settle(cl.query({ name: 'del_twice', text, values: [1] }));
    const name = requestIn(await until('notice', () => notices.find((n) => requestIn(n))))!;
    expect((await c.kubectl(BOB, 'approve', name)).code).toBe(0);
    expect('ok' in (await pending)).toBe(true);
    expect((await cl.query({ name: 'del_twice', text, values: [2] })).rowCount).toBe(1);
    const third = await settle(cl.query({ name: 'del_twice', text, values: [3] }));
    expect((third as { err: any }).err?.code).toBe('42501');
    expect(await count(t)).toBe(8);
  });

  it('Wait: the requester cannot approve its own request; a denial gives 42501 and the rows survive', async () => {
    const t = await table('appr_wait', 'w');
    const notices: string[] = [];
    const cl = await viaProxy(notices);
    const pending = settle(cl.query(`DELETE FROM ${t} WHERE id > 2`));
    const name = requestIn(await until('notice', () => notices.find((n) => requestIn(n))))!;
    const self = await c.kubectl(CHECKOUT_AS_USER, 'approve', name);
    expect(self.code).toBe(1);
    expect(self.err).toContain('cannot decide its own request');
    expect(stored(name).status.phase).toBe('Pending');
    expect((await c.kubectl(BOB, 'deny', name, '--reason', 'not today')).code).toBe(0);
    const r = await pending;
    expect('err' in r).toBe(true);
    const err = (r as { err: any }).err;
    expect(err.code).toBe('42501');
    expect(err.message).toContain(`approval request ${NS}/${name} was denied by bob@example.com`);
    expect(await count(t)).toBe(10);
    expect(queryEvents(t).map((e) => e.decision)).toEqual(['approval_pending', 'approval_denied']);
    expect(await approvals('denied')).toBeGreaterThanOrEqual(1);
  });

  it('Wait: a timeout gives 42501 and phase Expired', async () => {
    const t = await table('appr_short', 't');
    const notices: string[] = [];
    const cl = await viaProxy(notices);
    const started = Date.now();
    const r = await settle(cl.query(`DELETE FROM ${t}`));
    expect(Date.now() - started).toBeGreaterThan(1500);
    const err = (r as { err: any }).err;
    expect(err.code).toBe('42501');
    const name = requestIn(err.message)!;
    expect(err.message).toContain('expired undecided');
    await until('phase Expired', () => stored(name)?.status?.phase === 'Expired');
    expect(await count(t)).toBe(10);
    expect(queryEvents(t).map((e) => e.decision)).toEqual(['approval_pending', 'approval_expired']);
  });

  it('Reject: fails at once naming the request; the retry passes within validFor and fails after it', async () => {
    const t = await table('appr_rej', 'r');
    const cl = await viaProxy();
    const first = await settle(cl.query(`DELETE FROM ${t} WHERE id <= 3`));
    const err = (first as { err: any }).err;
    expect(err.code).toBe('42501');
    const name = requestIn(err.message)!;
    expect(name).toBeTruthy();
    expect(err.hint).toContain(`kubectl dbguard approve ${name} -n ${NS}`);
    expect(await count(t)).toBe(10);
    expect((await c.kubectl(ALICE, 'approve', name)).code).toBe(0);
    // The attack of issue #18: the same shape (libpg_query fingerprint) with other values is another
    // statement. It opens its own request and deletes nothing.
    const wider = await settle(cl.query(`DELETE FROM ${t} WHERE id <= 9`));
    expect((wider as { err: any }).err?.code).toBe('42501');
    expect(requestIn((wider as { err: any }).err.message)).not.toBe(name);
    const inList = await settle(cl.query(`DELETE FROM ${t} WHERE id IN (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)`));
    expect((inList as { err: any }).err?.code).toBe('42501');
    expect(await count(t)).toBe(10);
    // the exact statement approved, by the same subject: let through
    const retry = await cl.query(`DELETE FROM ${t} WHERE id <= 3`);
    expect(retry.rowCount).toBe(3);
    await new Promise((r) => setTimeout(r, 3500)); // validFor is 3s
    const late = await settle(cl.query(`DELETE FROM ${t} WHERE id <= 3`));
    expect((late as { err: any }).err?.code).toBe('42501');
    expect(requestIn((late as { err: any }).err.message)).not.toBe(name);
    expect(await count(t)).toBe(7);
    expect(queryEvents(t).map((e) => [e.decision, e.sqlstate, e.rowCount])).toEqual([
      ['approval_pending', '42501', null],
      ['approval_pending', '42501', null],
      ['approval_pending', '42501', null],
      ['approved', null, 3],
      ['approval_pending', '42501', null],
    ]);
  });

  it('Wait: a client that disconnects leaves a withdrawn request and no running statement', async () => {
    const t = await table('appr_wait', 'w');
    const notices: string[] = [];
    const cl = await viaProxy(notices);
    void settle(cl.query(`DELETE FROM ${t}`));
    const name = requestIn(await until('notice', () => notices.find((n) => requestIn(n))))!;
    const sessions = proxy.activeSessions;
    (cl as any).connection.stream.destroy();
    // seen at once, not at some later timeout: the proxy keeps reading a client whose statement it holds
    await until('session closed', () => proxy.activeSessions < sessions, 1500);
    const ar = await until('withdrawn', () =>
      stored(name)?.status?.conditions?.find((x: any) => x.type === 'Withdrawn') ? stored(name) : undefined,
    );
    expect(ar.status.phase).toBe('Expired');
    expect(ar.status.conditions.find((x: any) => x.type === 'Withdrawn').reason).toBe('ClientDisconnected');
    const late = await c.kubectl(ALICE, 'approve', name);
    expect(late.code).toBe(1);
    await new Promise((r) => setTimeout(r, 300));
    expect(await count(t)).toBe(10);
    const running = await sql(
      `SELECT count(*) AS n FROM pg_stat_activity WHERE query LIKE 'DELETE FROM ${t}%'`,
    );
    expect(Number(running.rows[0].n)).toBe(0);
    expect(queryEvents(t).map((e) => [e.decision, e.sqlstate])).toEqual([
      ['approval_pending', null],
      ['approval_expired', '08006'],
    ]);
  });

  it('Wait: a cancel request withdraws the request and fails the statement with 57014', async () => {
    const t = await table('appr_wait', 'w');
    const notices: string[] = [];
    const cl = await viaProxy(notices);
    const pending = settle(cl.query(`DELETE FROM ${t}`));
    const name = requestIn(await until('notice', () => notices.find((n) => requestIn(n))))!;
    const canceller = new pg.Client({ ...direct(), host: proxy.host, port: proxy.port });
    (canceller as any).cancel(cl, (cl as any).activeQuery);
    const r = await pending;
    expect((r as { err: any }).err?.code).toBe('57014');
    const ar = await until('withdrawn', () =>
      stored(name)?.status?.conditions?.find((x: any) => x.type === 'Withdrawn') ? stored(name) : undefined,
    );
    expect(ar.status.conditions.find((x: any) => x.type === 'Withdrawn').reason).toBe('ClientCancelled');
    expect(await count(t)).toBe(10);
    expect((await cl.query('SELECT 2 AS two')).rows[0].two).toBe(2);
    await until('final audit event', () => queryEvents(t).length === 2);
    expect(queryEvents(t).map((e) => [e.decision, e.sqlstate])).toEqual([
      ['approval_pending', null],
      ['approval_expired', '57014'],
    ]);
  });
});
