/**
 * The operator restarts while many sidecars long-poll it, and the policy changes while it is down: each
 * sidecar keeps enforcing its last-known-good version meanwhile, and every one of them gets the change
 * from the new operator process (same address) once it is up (issue 21, coverage hole).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CompiledPolicy } from '../../api/compiled.js';
import { crdObjects } from '../../api/crds.js';
import { type RunningOperator, runOperator } from '../../operator/operator.js';
import { PolicyClient } from '../../sidecar/policy-client.js';
import { type KubeApi, serviceAccountTokenReview, startKubeApi } from '../support/kube-api/index.js';
import { until } from '../support/until.js';

const NS = 'shop';
const SIDECARS = 200;
const quiet = () => {};

const policy = {
  apiVersion: 'dbguard.io/v1alpha1',
  kind: 'DatabasePolicy',
  metadata: { name: 'orders', namespace: NS },
  spec: { upstream: { host: 'orders-db' }, defaultAction: 'Allow' },
};
const maskingRule = (strategy: string) => ({
  apiVersion: 'dbguard.io/v1alpha1',
  kind: 'MaskingRule',
  metadata: { name: 'pii', namespace: NS },
  spec: { policyRef: { name: 'orders' }, columns: [{ table: 'customers', column: 'ssn', strategy }] },
});
const strategyOf = (p: CompiledPolicy | undefined) => p?.masking[0]?.columns[0]?.strategy;

describe('operator restart under long-polling sidecars', () => {
  let api: KubeApi;
  let tmp: string;
  let op: RunningOperator | undefined;
  const clients: PolicyClient[] = [];

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-restart-'));
    fs.writeFileSync(path.join(tmp, 'token'), `sa:${NS}:checkout\n`);
    api = await startKubeApi({ crds: crdObjects() as any, namespaces: [NS, 'dbguard-system'] });
    api.setTokenReview(
      serviceAccountTokenReview({ audience: 'dbguard', groups: ['system:serviceaccounts'] }),
    );
    await api.store.put(policy as any);
    await api.store.put(maskingRule('Redact') as any);
  });

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await op?.close();
    await api?.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  /** A new operator process on `port` (0: any); the port of the one before may take a moment to free. */
  async function startOperator(port: number): Promise<RunningOperator> {
    return until(
      'the operator listening',
      () =>
        runOperator({ kubeConfig: api.kubeConfig(), listen: `127.0.0.1:${port}`, log: quiet }).catch(
          (e: NodeJS.ErrnoException) => {
            if (e.code === 'EADDRINUSE') return undefined;
            throw e;
          },
        ),
      10_000,
      100,
    );
  }

  it('every sidecar keeps its last good policy while the operator is down, then gets the change', async () => {
    op = await startOperator(0);
    const port = op.port;
    const seen: (CompiledPolicy | undefined)[] = Array.from({ length: SIDECARS }, () => undefined);
    for (let i = 0; i < SIDECARS; i++) {
      const c = new PolicyClient({
        operatorUrl: `http://127.0.0.1:${port}`,
        policy: `${NS}/orders`,
        tokenFile: path.join(tmp, 'token'),
        cacheFile: path.join(tmp, `lkg-${i}`, 'policy.json'),
        waitSeconds: 30,
        onPolicy: (p) => {
          seen[i] = p;
        },
        log: quiet,
      });
      clients.push(c);
      c.start();
    }
    await until(
      'every sidecar has the Redact policy',
      () => seen.every((p) => strategyOf(p) === 'Redact'),
      30_000,
    );
    const first = seen[0]!.version;
    await until('every sidecar parked in its long-poll', () => op!.store.waiting() >= SIDECARS, 30_000);

    // the operator goes away (a rollout, a crash), and the policy changes while nobody serves it
    await op.close();
    op = undefined;
    await api.store.put(maskingRule('Nullify') as any);
    // meanwhile every sidecar enforces what it had
    expect(clients.every((c) => c.current()?.version === first)).toBe(true);

    const t0 = Date.now();
    op = await startOperator(port);
    await until(
      'every sidecar has the Nullify policy from the new operator',
      () => seen.every((p) => strategyOf(p) === 'Nullify'),
      60_000,
    );
    process.stdout.write(
      `restart: ${SIDECARS} sidecars converged ${Date.now() - t0} ms after the new operator started\n`,
    );
    expect(new Set(seen.map((p) => p!.version)).size).toBe(1);
    expect(seen[0]!.version).not.toBe(first);
  }, 120_000);
});
