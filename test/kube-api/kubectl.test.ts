import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type KubeApi, startKubeApi } from '../support/kube-api/index.js';
import { DBP_CRD, dbp } from './fixtures.js';

const run = promisify(execFile);
/** kubectl is an optional tool: without it on PATH these tests are skipped (and say so). */
const hasKubectl = await run('kubectl', ['version', '--client'], { timeout: 20_000 }).then(
  () => true,
  () => false,
);
let api: KubeApi;
let dir: string;
let kubeconfig: string;

async function kubectl(...args: string[]): Promise<string> {
  const { stdout } = await run('kubectl', ['--kubeconfig', kubeconfig, ...args], {
    timeout: 30_000,
    env: { ...process.env, KUBECACHEDIR: join(dir, 'cache'), HOME: dir },
  });
  return stdout;
}

beforeAll(async () => {
  api = await startKubeApi({ crds: [DBP_CRD], namespaces: ['default', 'shop'] });
  dir = mkdtempSync(join(tmpdir(), 'kube-api-kubectl-'));
  kubeconfig = api.writeKubeconfig(join(dir, 'kubeconfig'));
  await api.store.put(dbp('shop', 'orders'));
  await api.store.put({
    ...dbp('default', 'billing', 'billing-db'),
    status: { conditions: [{ type: 'Ready', status: 'True' }] },
  });
});
afterAll(async () => {
  await api.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('kubectl against the test API server (needs kubectl on PATH)', () => {
  beforeAll(() => {
    // fail loudly, never skip silently: the tier is part of `make test`
    if (!hasKubectl)
      throw new Error('kubectl is not on PATH: install it (Debian: the kubectl package) to run these tests');
  });

  it('kubectl get dbp -A resolves the short name and prints the printer columns', async () => {
    const out = await kubectl('get', 'dbp', '-A');
    const lines = out.trim().split('\n');
    expect(lines[0]).toMatch(/^NAMESPACE\s+NAME\s+UPSTREAM\s+READY\s+AGE$/);
    expect(lines.slice(1).map((l) => l.split(/\s+/).slice(0, 4))).toEqual([
      ['default', 'billing', 'billing-db', 'True'],
      ['shop', 'orders', 'orders-db.shop.svc', '<none>'],
    ]);
  });

  it('kubectl get -o json returns the stored object', async () => {
    const obj = JSON.parse(
      await kubectl('get', 'databasepolicies.dbguard.io', '-n', 'shop', 'orders', '-o', 'json'),
    );
    expect(
      api.requests.some((r) => r.verb === 'get' && r.resource === 'databasepolicies' && r.name === 'orders'),
    ).toBe(true);
    expect(obj).toMatchObject({
      kind: 'DatabasePolicy',
      spec: { upstream: { host: 'orders-db.shop.svc', port: 5432 } },
    });
  });
});
