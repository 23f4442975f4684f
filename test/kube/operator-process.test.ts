/**
 * The operator as local processes configured as the chart's rendered Deployment configures it (same args,
 * POD_NAME from the env, 2 replicas, leader election on), running `dbguard operator` (dist/cli/main.js)
 * against a real kube-apiserver with a TokenRequest token of its ServiceAccount and the chart's RBAC.
 * Only the listen addresses change (free ports here). Issue 22 defect 6: what the certificate code does
 * (the caBundle it writes) shows in the process's log.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import {
  applyCrds,
  helmTemplate,
  type KubeTestenv,
  localAddress,
  startKubeTestenv,
} from '../support/kube-testenv.js';
import { until } from '../support/until.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const SYSTEM = 'dbguard-system';

interface Replica {
  child: ChildProcess;
  lines: Record<string, any>[];
}

describe('dbguard operator processes with the rendered Deployment args on a real kube-apiserver', () => {
  let env: KubeTestenv;
  let args: string[];
  const replicas: Replica[] = [];
  const ip = localAddress() ?? '127.0.0.1';

  beforeAll(async () => {
    env = await startKubeTestenv();
    await applyCrds(env);
    await env.apply([{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: SYSTEM } }]);
    const rendered = helmTemplate(env.bins.helm, []);
    const objects = YAML.parseAllDocuments(rendered)
      .map((d) => d.toJSON())
      .filter((o) => o?.kind);
    await env.apply(
      objects.filter((o) =>
        [
          'ServiceAccount',
          'ClusterRole',
          'ClusterRoleBinding',
          'Role',
          'RoleBinding',
          'MutatingWebhookConfiguration',
          'ValidatingWebhookConfiguration',
        ].includes(o.kind),
      ),
    );
    const deployment = objects.find((o) => o.kind === 'Deployment' && o.metadata.name === 'dbguard-operator');
    const container = deployment.spec.template.spec.containers[0];
    expect(deployment.spec.replicas).toBe(2);
    expect(container.env.find((e: any) => e.name === 'POD_NAME')?.valueFrom?.fieldRef?.fieldPath).toBe(
      'metadata.name',
    );
    args = (container.args as string[]).map((a) =>
      a.startsWith('--webhook-listen=')
        ? `--webhook-listen=${ip}:0`
        : a.startsWith('--metrics-listen=')
          ? '--metrics-listen=127.0.0.1:0'
          : a,
    );
    expect(args[0]).toBe('operator');
    expect(args).toContain('--leader-elect');
    const token = await env.serviceAccountToken(SYSTEM, 'dbguard-operator');
    const kubeconfig = path.join(env.dir, 'operator.kubeconfig');
    fs.writeFileSync(kubeconfig, env.tokenKubeConfig(token).exportConfig());
    for (const pod of ['dbguard-operator-7f9c-a', 'dbguard-operator-7f9c-b']) {
      const child = spawn(
        process.execPath,
        [path.join(ROOT, 'dist/cli/main.js'), ...args, `--kubeconfig=${kubeconfig}`],
        {
          env: { ...process.env, POD_NAME: pod },
          stdio: ['ignore', 'ignore', 'pipe'],
        },
      );
      const r: Replica = { child, lines: [] };
      let buf = '';
      child.stderr!.on('data', (c) => {
        buf += c;
        for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          try {
            r.lines.push(JSON.parse(line));
          } catch {
            r.lines.push({ raw: line });
          }
        }
      });
      replicas.push(r);
    }
  }, 180_000);

  afterAll(async () => {
    for (const r of replicas) {
      if (r.child.exitCode === null) {
        const exited = new Promise((res) => r.child.once('exit', res));
        r.child.kill('SIGTERM');
        await exited;
      }
    }
    await env?.close();
  });

  it('both replicas start; one leads and writes the caBundles, and says so in its log', async () => {
    for (const r of replicas)
      await until('operator started', () => r.lines.find((l) => l.msg === 'operator started'), 60_000, 100);
    const updated = await until(
      'a caBundle update logged',
      () => {
        const names = replicas
          .flatMap((r) => r.lines)
          .filter((l) => l.msg === 'webhook caBundle updated')
          .map((l) => l.name);
        return names.includes('dbguard-sidecar-injector') && names.includes('dbguard-approvals')
          ? names
          : undefined;
      },
      60_000,
      200,
    );
    expect(updated).toEqual(expect.arrayContaining(['dbguard-sidecar-injector', 'dbguard-approvals']));
    const cfg = await env.request(
      'GET',
      '/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/dbguard-sidecar-injector',
    );
    expect(cfg.body.webhooks[0].clientConfig.caBundle).toBeTruthy();
    const lease = await env.request(
      'GET',
      '/apis/coordination.k8s.io/v1/namespaces/dbguard-system/leases/dbguard-operator-leader',
    );
    expect(['dbguard-operator-7f9c-a', 'dbguard-operator-7f9c-b']).toContain(lease.body.spec.holderIdentity);
    const problems = replicas
      .flatMap((r) => r.lines)
      .filter((l) => /forbidden|failed/i.test(JSON.stringify(l)));
    expect(problems).toEqual([]);
  }, 90_000);

  it('SIGTERM stops each replica cleanly', async () => {
    for (const r of replicas) {
      const exited = new Promise<number | null>((res) => r.child.once('exit', (code) => res(code)));
      r.child.kill('SIGTERM');
      expect(await exited).toBe(0);
    }
  }, 60_000);
});
