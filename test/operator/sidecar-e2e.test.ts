/**
 * Operator → sidecar → PostgreSQL: a real proxy pulls its compiled policy from the operator (over the
 * in-process Kubernetes API) and masks with it; a change applies to the next statement; with the
 * operator gone it keeps enforcing; a sidecar that never had a policy refuses everything.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { crdObjects } from '../../api/crds.js';
import { type RunningOperator, runOperator } from '../../operator/operator.js';
import { type Sidecar, startSidecar } from '../../sidecar/runtime.js';
import { adminQuery, queryOnce } from '../support/admin.js';
import { type KubeApi, serviceAccountTokenReview, startKubeApi } from '../support/kube-api/index.js';
import { until } from '../support/until.js';

const NS = 'shop';
const silent = { log: () => {} };

describe('operator to sidecar', () => {
  const server = inject('pg');
  let api: KubeApi;
  let op: RunningOperator | undefined;
  let tmp: string;
  const sidecars: Sidecar[] = [];

  const sidecar = async (operatorUrl: string, cacheFile: string) => {
    const s = await startSidecar({
      listen: { host: '127.0.0.1', port: 0 },
      upstream: { host: server.host, port: server.port, sslmode: 'disable' },
      policyName: `${NS}/orders`,
      operator: { url: operatorUrl, tokenFile: path.join(tmp, 'token'), cacheFile, waitSeconds: 20 },
      logger: silent,
    });
    sidecars.push(s);
    return s;
  };
  const query = (s: Sidecar, sql: string) =>
    queryOnce({ host: s.proxy.host, port: s.proxy.port, user: 'app', password: 'app', database: 'app' }, sql);

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-e2e-'));
    fs.writeFileSync(path.join(tmp, 'token'), `sa:${NS}:checkout`);
    api = await startKubeApi({ crds: crdObjects() as any, namespaces: ['default', NS] });
    api.setTokenReview(serviceAccountTokenReview());
    await adminQuery(
      server,
      `DROP TABLE IF EXISTS e2e_customers;
      CREATE TABLE e2e_customers (id int PRIMARY KEY, ssn text, card text);
      INSERT INTO e2e_customers VALUES (1, '123-45-6789', '4111111111111111');
      GRANT ALL ON e2e_customers TO app;`,
    );
    op = await runOperator({ kubeConfig: api.kubeConfig(), listen: '127.0.0.1:0', log: () => {} });
  });

  afterAll(async () => {
    for (const s of sidecars) await s.close().catch(() => {});
    await op?.close().catch(() => {});
    await api?.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('a sidecar with no policy refuses every statement with a clear error', async () => {
    const s = await sidecar('http://127.0.0.1:9', path.join(tmp, 'none.json'));
    await expect(query(s, 'SELECT 1')).rejects.toMatchObject({
      code: '42501',
      message: expect.stringContaining('no policy is loaded'),
    });
  });

  it('applies, masks, follows a change to the next statement, and survives the operator going away', async () => {
    await api.store.put({
      apiVersion: 'dbguard.io/v1alpha1',
      kind: 'DatabasePolicy',
      metadata: { name: 'orders', namespace: NS },
      spec: { upstream: { host: server.host, port: server.port, sslmode: 'disable' } },
    } as any);
    await api.store.put({
      apiVersion: 'dbguard.io/v1alpha1',
      kind: 'MaskingRule',
      metadata: { name: 'pii', namespace: NS },
      spec: {
        policyRef: { name: 'orders' },
        columns: [{ table: 'e2e_customers', column: 'ssn', strategy: 'Redact' }],
      },
    } as any);
    await until(
      'Ready',
      () => api.store.get<any>('dbguard.io/v1alpha1', 'DatabasePolicy', NS, 'orders')?.status?.policyVersion,
    );
    const cache = path.join(tmp, 'lkg.json');
    const s = await sidecar(`http://127.0.0.1:${op!.port}`, cache);
    await until('policy in sidecar', () => s.policy());
    expect((await query(s, 'SELECT ssn, card FROM e2e_customers')).rows[0]).toEqual({
      ssn: '****',
      card: '4111111111111111',
    });

    // mask the card too: the running sidecar gets it within 2 s and the next statement sees it
    const mr = api.store.get<any>('dbguard.io/v1alpha1', 'MaskingRule', NS, 'pii');
    const t0 = Date.now();
    await api.store.put({
      ...mr,
      spec: {
        ...mr.spec,
        columns: [
          ...mr.spec.columns,
          { table: 'e2e_customers', column: 'card', strategy: 'Partial', partial: { keepLast: 4 } },
        ],
      },
    });
    await until(
      'card masked',
      async () => (await query(s, 'SELECT card FROM e2e_customers')).rows[0].card === '************1111',
      20_000,
    );
    // pushed by the long-poll, not found by a later pull (a bound, not a benchmark)
    expect(Date.now() - t0).toBeLessThan(15_000);

    // the operator goes away: the sidecar keeps enforcing
    await op!.close();
    op = undefined;
    expect((await query(s, 'SELECT ssn, card FROM e2e_customers')).rows[0]).toEqual({
      ssn: '****',
      card: '************1111',
    });
    // a restarted sidecar enforces its last-known-good policy from disk
    await s.close();
    const restarted = await sidecar('http://127.0.0.1:9', cache);
    expect((await query(restarted, 'SELECT ssn, card FROM e2e_customers')).rows[0]).toEqual({
      ssn: '****',
      card: '************1111',
    });
  });
  it('a MaskingRule naming a missing column: the sidecar refuses, the operator marks it ColumnNotFound with an Event', async () => {
    op = await runOperator({ kubeConfig: api.kubeConfig(), listen: '127.0.0.1:0', log: () => {} });
    await api.store.put({
      apiVersion: 'dbguard.io/v1alpha1',
      kind: 'DatabasePolicy',
      metadata: { name: 'typo', namespace: NS },
      spec: { upstream: { host: server.host, port: server.port, sslmode: 'disable' } },
    } as any);
    await api.store.put({
      apiVersion: 'dbguard.io/v1alpha1',
      kind: 'MaskingRule',
      metadata: { name: 'typo-pii', namespace: NS },
      spec: {
        policyRef: { name: 'typo' },
        columns: [
          { table: 'e2e_customers', column: 'card', strategy: 'Redact' },
          { table: 'e2e_customers', column: 'ssnn', strategy: 'Redact' },
        ],
      },
    } as any);
    await until(
      'typo compiled',
      () => api.store.get<any>('dbguard.io/v1alpha1', 'DatabasePolicy', NS, 'typo')?.status?.policyVersion,
    );
    const s = await startSidecar({
      listen: { host: '127.0.0.1', port: 0 },
      upstream: { host: server.host, port: server.port, sslmode: 'disable' },
      policyName: `${NS}/typo`,
      operator: {
        url: `http://127.0.0.1:${op.port}`,
        tokenFile: path.join(tmp, 'token'),
        cacheFile: path.join(tmp, 'typo.json'),
        waitSeconds: 20,
      },
      logger: silent,
    });
    sidecars.push(s);
    await until('policy in sidecar', () => s.policy());
    await expect(query(s, 'SELECT ssn FROM e2e_customers')).rejects.toMatchObject({
      code: '42501',
      message: expect.stringContaining(
        'masks column ssnn of public.e2e_customers, which does not exist (did you mean ssn?)',
      ),
    });
    const ready = await until('MaskingRule marked', () => {
      const c = api.store
        .get<any>('dbguard.io/v1alpha1', 'MaskingRule', NS, 'typo-pii')
        ?.status?.conditions?.find((x: any) => x.type === 'Ready');
      return c?.reason === 'ColumnNotFound' ? c : undefined;
    });
    expect(ready).toMatchObject({
      status: 'False',
      message: expect.stringMatching(
        /^spec\.columns\[1\]\.column: column ssnn of public\.e2e_customers does not exist in database app \(did you mean ssn\?\)/,
      ),
    });
    const events = api.store.list<any>('v1', 'Event', NS);
    expect(
      events.some(
        (e) => e.reason === 'ColumnNotFound' && e.type === 'Warning' && e.involvedObject.name === 'typo-pii',
      ),
    ).toBe(true);
  });
});
