/** Sidecar metrics: a known sequence gives known counts in the text exposition; /readyz follows ready(). */
import { afterEach, describe, expect, it } from 'vitest';
import { commandLabel, type Readiness, SidecarMetrics, startHealthServer } from '../../sidecar/metrics.js';

/** Parse the Prometheus text format into `name{sorted labels}` → value. */
function parseExposition(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unparseable exposition line: ${line}`);
    const labels = [...(m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)]
      .map(([, k, v]) => `${k}=${v}`)
      .sort()
      .join(',');
    out.set(labels ? `${m[1]}{${labels}}` : m[1]!, Number(m[3]));
  }
  return out;
}

describe('SidecarMetrics', () => {
  it('statement counts kept between scrapes are added once, and every scrape sees all of them', async () => {
    const m = new SidecarMetrics({ defaultMetrics: false });
    const p = 'shop/orders';
    const key = 'dbguard_queries_total{command=SELECT,decision=allow,policy=shop/orders}';
    const masked = 'dbguard_masked_queries_total{policy=shop/orders}';
    for (let i = 0; i < 3; i++)
      m.recordQuery({ policy: p, decision: 'allow', command: 'SELECT', durationSeconds: 0 });
    m.recordQuery({ policy: p, decision: 'mask', command: 'select ', durationSeconds: 0 });
    let text = parseExposition(await m.text());
    expect(text.get(key)).toBe(3);
    expect(text.get(masked)).toBe(1);
    // Read again with nothing new: nothing is added twice.
    text = parseExposition(await m.text());
    expect(text.get(key)).toBe(3);
    expect(text.get(masked)).toBe(1);
    m.recordQuery({ policy: p, decision: 'allow', command: 'SELECT', durationSeconds: 0 });
    m.recordQuery({ policy: p, decision: 'mask', command: 'SELECT', durationSeconds: 0 });
    text = parseExposition(await m.text());
    expect(text.get(key)).toBe(4);
    expect(text.get(masked)).toBe(2);
    expect(text.get('dbguard_queries_total{command=SELECT,decision=mask,policy=shop/orders}')).toBe(2);
    expect(text.get('dbguard_query_duration_seconds_count{decision=allow,policy=shop/orders}')).toBe(4);
  });

  it('counts a known sequence', async () => {
    const m = new SidecarMetrics();
    const p = 'shop/orders';
    m.policyLoaded(p, 'sha256:v1', new Date(1_700_000_000_000));
    m.policyLoaded(p, 'sha256:v2', new Date(1_700_000_100_000));
    m.policySyncFailed();
    m.connectionOpened();
    m.connectionOpened();
    m.connectionOpened();
    m.connectionClosed();
    m.recordQuery({ policy: p, decision: 'allow', command: 'SELECT', durationSeconds: 0.0004 });
    m.recordQuery({ policy: p, decision: 'allow', command: 'SELECT', durationSeconds: 0.002 });
    m.recordQuery({ policy: p, decision: 'mask', command: 'SELECT', durationSeconds: 0.003 });
    m.recordQuery({
      policy: p,
      decision: 'deny',
      command: 'DROP TABLE',
      rule: 'no-ddl',
      durationSeconds: 0.0001,
    });
    m.recordQuery({ policy: p, decision: 'deny', command: 'DELETE', durationSeconds: 0.0001 });
    m.recordQuery({ policy: p, decision: 'allow', command: 'select', durationSeconds: 20 });
    m.recordQuery({ policy: p, decision: 'allow', command: "WEIRD 'x'", durationSeconds: 0.001 });
    m.approval(p, 'pending');
    m.approval(p, 'approved');
    m.authFailure('expired');
    m.authFailure('something made up');
    const obs = m.auditObserver();
    obs.written?.([
      { event: 'query' } as never,
      { event: 'query' } as never,
      { event: 'session.start' } as never,
    ]);

    const text = await m.text();
    const v = parseExposition(text);
    expect(v.get('dbguard_queries_total{command=SELECT,decision=allow,policy=shop/orders}')).toBe(3);
    expect(v.get('dbguard_queries_total{command=SELECT,decision=mask,policy=shop/orders}')).toBe(1);
    expect(v.get('dbguard_queries_total{command=DROP TABLE,decision=deny,policy=shop/orders}')).toBe(1);
    expect(v.get('dbguard_queries_total{command=OTHER,decision=allow,policy=shop/orders}')).toBe(1);
    expect(v.get('dbguard_denied_queries_total{policy=shop/orders,reason=rule,rule=no-ddl}')).toBe(1);
    expect(v.get('dbguard_denied_queries_total{policy=shop/orders,reason=rule,rule=(defaultAction)}')).toBe(
      1,
    );
    expect(v.get('dbguard_masked_queries_total{policy=shop/orders}')).toBe(1);
    expect(v.get('dbguard_query_duration_seconds_count{decision=allow,policy=shop/orders}')).toBe(4);
    expect(v.get('dbguard_query_duration_seconds_bucket{decision=allow,le=0.0005,policy=shop/orders}')).toBe(
      1,
    );
    expect(v.get('dbguard_query_duration_seconds_bucket{decision=allow,le=10,policy=shop/orders}')).toBe(3);
    expect(v.get('dbguard_query_duration_seconds_bucket{decision=allow,le=+Inf,policy=shop/orders}')).toBe(4);
    expect(v.get('dbguard_connections_active')).toBe(2);
    expect(v.get('dbguard_connections_total')).toBe(3);
    // Only the current version has an info series.
    expect(v.get('dbguard_policy_info{policy=shop/orders,version=sha256:v2}')).toBe(1);
    expect(v.has('dbguard_policy_info{policy=shop/orders,version=sha256:v1}')).toBe(false);
    expect(v.get('dbguard_policy_last_sync_timestamp_seconds')).toBe(1_700_000_100);
    expect(v.get('dbguard_policy_sync_errors_total')).toBe(1);
    expect(v.get('dbguard_approvals_total{outcome=pending,policy=shop/orders}')).toBe(1);
    expect(v.get('dbguard_approvals_total{outcome=approved,policy=shop/orders}')).toBe(1);
    expect(v.get('dbguard_auth_failures_total{reason=expired}')).toBe(1);
    expect(v.get('dbguard_auth_failures_total{reason=other}')).toBe(1);
    expect(v.get('dbguard_audit_events_total{event=query}')).toBe(2);
    expect(v.get('dbguard_audit_events_total{event=session.start}')).toBe(1);
    // default process metrics are there too
    expect(v.has('process_cpu_user_seconds_total')).toBe(true);
    // the raw command text never becomes a label
    expect(text).not.toContain('WEIRD');
  });

  it('instances do not share counters', async () => {
    const a = new SidecarMetrics({ defaultMetrics: false });
    const b = new SidecarMetrics({ defaultMetrics: false });
    a.connectionOpened();
    expect(parseExposition(await a.text()).get('dbguard_connections_total')).toBe(1);
    expect(parseExposition(await b.text()).get('dbguard_connections_total')).toBe(0);
  });

  it('maps command tags onto a bounded set', () => {
    expect(commandLabel('select')).toBe('SELECT');
    expect(commandLabel('TRUNCATE TABLE')).toBe('TRUNCATE TABLE');
    expect(commandLabel('DROP SOMETHING NEW')).toBe('OTHER');
  });
});

describe('health server', () => {
  let close: (() => Promise<void>) | undefined;
  afterEach(async () => {
    await close?.();
    close = undefined;
  });

  it('serves /metrics, /healthz, and a /readyz that flips with ready()', async () => {
    const metrics = new SidecarMetrics({ defaultMetrics: false });
    metrics.connectionOpened();
    let state: Readiness | Error = { ok: false, reasons: ['no policy loaded'] };
    const server = await startHealthServer('127.0.0.1:0', {
      metrics,
      ready: async () => {
        if (state instanceof Error) throw state;
        return state;
      },
    });
    close = server.close;

    const metricsRes = await fetch(`${server.url}/metrics`);
    expect(metricsRes.status).toBe(200);
    expect(metricsRes.headers.get('content-type')).toMatch(/^text\/plain/);
    expect(parseExposition(await metricsRes.text()).get('dbguard_connections_total')).toBe(1);

    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);

    let ready = await fetch(`${server.url}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.json()).toEqual({ ok: false, reasons: ['no policy loaded'] });

    state = { ok: true, reasons: [] };
    ready = await fetch(`${server.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ ok: true, reasons: [] });

    state = new Error('audit log failing: ENOSPC');
    ready = await fetch(`${server.url}/readyz`);
    expect(ready.status).toBe(503);
    expect(((await ready.json()) as Readiness).reasons[0]).toMatch(/ENOSPC/);

    expect((await fetch(`${server.url}/nope`)).status).toBe(404);
    expect((await fetch(`${server.url}/metrics`, { method: 'POST' })).status).toBe(405);
  });

  it('a ready() that hangs counts as not ready', async () => {
    const server = await startHealthServer('127.0.0.1:0', {
      metrics: new SidecarMetrics({ defaultMetrics: false }),
      ready: () => new Promise(() => {}),
      readyTimeoutMs: 50,
    });
    close = server.close;
    const res = await fetch(`${server.url}/readyz`);
    expect(res.status).toBe(503);
    expect(((await res.json()) as Readiness).reasons).toEqual(['readiness check timed out']);
  });

  it('rejects a bad listen address clearly', async () => {
    const metrics = new SidecarMetrics({ defaultMetrics: false });
    await expect(
      startHealthServer('localhost', { metrics, ready: async () => ({ ok: true, reasons: [] }) }),
    ).rejects.toThrow(/invalid listen address 'localhost'/);
    await expect(
      startHealthServer('127.0.0.1:99999', { metrics, ready: async () => ({ ok: true, reasons: [] }) }),
    ).rejects.toThrow(/invalid listen address/);
  });
});
