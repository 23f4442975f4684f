import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pgClient, startTestProxy, type TestProxy, via } from './helpers.js';

describe('smoke', () => {
  let proxy: TestProxy;
  beforeAll(async () => {
    proxy = await startTestProxy();
  });
  afterAll(async () => {
    await proxy.close();
  });
  it('runs a query through the proxy', async () => {
    const c = await pgClient(via(proxy));
    const r = await c.query('select 40 + $1::int as v', [2]);
    expect(r.rows[0].v).toBe(42);
    const r2 = await c.query('select 1 as a; select 2 as b');
    expect(r2).toHaveLength(2);
    await c.end();
  });
});
