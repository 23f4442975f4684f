/**
 * The operator's watches against a real kube-apiserver, as its ServiceAccount with the chart's RBAC:
 *
 * - Defect 3 of issue 22: a list that RBAC refuses (one verb removed from the chart's ClusterRole) leaves
 *   /readyz at 503 and says 403 in the logs, instead of reporting ready while every policy answers 404;
 *   once the verb is back, the retry lists and /readyz turns 200. The operator neither hangs nor crashes.
 * - Defect 2: the watchdog's restart of a silent watch (a real server sends nothing on a quiet resource)
 *   must not turn into an endless AbortError/restart loop; events keep arriving after restarts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { type RunningOperator, runOperator } from '../../operator/operator.js';
import { applyCrds, helmTemplate, type KubeTestenv, startKubeTestenv } from '../support/kube-testenv.js';
import { until } from '../support/until.js';

const SYSTEM = 'dbguard-system';
const NS = 'shop';
const GV = 'dbguard.io/v1alpha1';

describe('operator watches on a real kube-apiserver', () => {
  let env: KubeTestenv;
  const running: RunningOperator[] = [];
  let clusterRole: Record<string, any>;

  beforeAll(async () => {
    env = await startKubeTestenv();
    await applyCrds(env);
    await env.apply(
      [SYSTEM, NS].map((name) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } })),
    );
    const rendered = helmTemplate(env.bins.helm, [
      '--show-only',
      'templates/serviceaccount.yaml',
      '--show-only',
      'templates/rbac.yaml',
    ]);
    await env.apply(rendered);
    clusterRole = YAML.parseAllDocuments(rendered)
      .map((d) => d.toJSON())
      .find((o) => o?.kind === 'ClusterRole' && o.metadata.name === 'dbguard-operator');
  }, 180_000);

  afterAll(async () => {
    for (const op of running) await op.close().catch(() => {});
    await env?.close();
  });

  const operator = async (log: Record<string, unknown>[], watchdogSeconds = 30) => {
    const token = await env.serviceAccountToken(SYSTEM, 'dbguard-operator');
    const op = await runOperator({
      kubeConfig: env.tokenKubeConfig(token),
      listen: '127.0.0.1:0',
      metricsListen: '127.0.0.1:0',
      namespace: SYSTEM,
      watchdogSeconds,
      log: (f) => log.push(f),
    });
    running.push(op);
    return op;
  };
  const readyz = async (op: RunningOperator) =>
    (await fetch(`http://127.0.0.1:${op.metricsPort}/readyz`)).status;

  it('without list on maskingrules: /readyz 503 and a 403 in the logs; ready once RBAC allows it again', async () => {
    const without = structuredClone(clusterRole);
    for (const r of without.rules)
      if (r.resources.includes('maskingrules')) r.verbs = r.verbs.filter((v: string) => v !== 'list');
    await env.apply([without]);
    const log: Record<string, unknown>[] = [];
    const op = await operator(log);
    await until('the refused list is logged', () =>
      log.find((l) => l.plural === 'maskingrules' && l.status === 403),
    );
    expect(op.controller.maskingRules.synced).toBe(false);
    expect(await readyz(op)).toBe(503);
    // still 503 a while later: nothing flips it without a successful list
    await new Promise((r) => setTimeout(r, 2500));
    expect(await readyz(op)).toBe(503);

    await env.apply([clusterRole]);
    await until('ready after RBAC is fixed', async () => (await readyz(op)) === 200, 20_000, 200);
    await op.close();
    running.splice(running.indexOf(op), 1);
  }, 60_000);

  it('restarts silent watches without an AbortError loop, and still sees changes', async () => {
    const log: Record<string, unknown>[] = [];
    const op = await operator(log, 1);
    // quiet resources: the watchdog restarts both watches about every second
    await until('a few watchdog restarts', () => op.controller.policies.restarts >= 3, 15_000, 100);
    const errors = log.filter((l) => l.msg === 'watch error; restarting');
    expect(errors).toEqual([]);

    const created = await env.request('POST', env.pathOf(GV, 'DatabasePolicy', NS), {
      apiVersion: GV,
      kind: 'DatabasePolicy',
      metadata: { name: 'quiet', namespace: NS },
      spec: { upstream: { host: 'db.shop.svc' }, defaultAction: 'Deny', rules: [] },
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    await until(
      'the policy seen and Ready after restarts',
      async () => {
        const r = await env.request('GET', env.pathOf(GV, 'DatabasePolicy', NS, 'quiet'));
        return r.body?.status?.conditions?.find((c: any) => c.type === 'Ready')?.status === 'True';
      },
      20_000,
      200,
    );
    expect(log.filter((l) => l.msg === 'watch error; restarting')).toEqual([]);
  }, 60_000);
});
