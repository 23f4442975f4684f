/**
 * The chart through a real helm (built from helm.sh/helm/v4 by hack/kube-testenv/build.sh): `helm lint`
 * and `helm template` for the default values and for every values file in examples/helm/. The rendered
 * objects are then sent to a real kube-apiserver with `dryRun=All`, so the API server's own validation
 * (schemas, CEL, defaulting) judges every object the chart makes.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import {
  applyCrds,
  helmTemplate,
  type KubeTestenv,
  kubeTestenvBins,
  startKubeTestenv,
} from '../support/kube-testenv.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const EXAMPLES = fs
  .readdirSync(path.join(ROOT, 'examples/helm'))
  .filter((f) => f.endsWith('.yaml'))
  .map((f) => `examples/helm/${f}`);
const VALUES: { name: string; args: string[] }[] = [
  { name: 'default values', args: [] },
  ...EXAMPLES.map((f) => ({ name: f, args: ['-f', f] })),
];

function helmLint(helm: string, args: string[]): string {
  return execFileSync(helm, ['lint', 'charts/dbguard', '--strict', ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    stdio: 'pipe',
  });
}

describe('helm lint and helm template', () => {
  const helm = kubeTestenvBins().helm;
  let env: KubeTestenv;

  beforeAll(async () => {
    env = await startKubeTestenv();
    await applyCrds(env);
    await env.apply([{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'dbguard-system' } }]);
  }, 180_000);

  afterAll(async () => {
    await env?.close();
  });

  for (const v of VALUES) {
    it(`lints and renders with ${v.name}; the API server accepts every object (dry run)`, async () => {
      const lint = helmLint(helm, v.args);
      expect(lint).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
      const objects = YAML.parseAllDocuments(helmTemplate(helm, v.args))
        .map((d) => d.toJSON())
        .filter((o) => o?.kind);
      expect(objects.some((o) => o.kind === 'Deployment')).toBe(true);
      const refused: string[] = [];
      for (const o of objects) {
        // kinds of optional integrations whose CRDs (cert-manager, Gateway API, Prometheus Operator) a
        // bare API server does not have
        const group = String(o.apiVersion).split('/')[0];
        if (['cert-manager.io', 'gateway.networking.k8s.io', 'monitoring.coreos.com'].includes(group))
          continue;
        let p: string;
        try {
          p = env.pathOf(o.apiVersion, o.kind, o.metadata.namespace ?? 'dbguard-system');
        } catch {
          refused.push(`${o.kind}: no resource mapping in kube-testenv`);
          continue;
        }
        const r = await env.request('POST', `${p}?dryRun=All&fieldValidation=Strict`, o);
        if (r.status !== 201)
          refused.push(`${o.kind} ${o.metadata.name}: ${r.status} ${r.body?.message ?? r.body}`);
      }
      expect(refused).toEqual([]);
    });
  }

  it('accepts sidecar.nativeSidecar as a boolean (--set sidecar.nativeSidecar=true), as a string, or auto', () => {
    for (const [v, want] of [
      ['true', 'true'],
      ['false', 'false'],
      ['auto', 'auto'],
    ]) {
      const docs = YAML.parseAllDocuments(helmTemplate(helm, ['--set', `sidecar.nativeSidecar=${v}`]))
        .map((d) => d.toJSON())
        .filter((o) => o?.kind === 'Deployment' && o.metadata.name === 'dbguard-operator');
      expect(docs[0].spec.template.spec.containers[0].args).toContain(`--native-sidecar=${want}`);
    }
    const quoted = helmTemplate(helm, ['--set-string', 'sidecar.nativeSidecar=true']);
    expect(quoted).toContain('--native-sidecar=true');
  });

  it('declares the Kubernetes versions it needs: 1.28 renders, 1.27 is refused', () => {
    expect(helmTemplate(helm, ['--kube-version', '1.28.0'])).toContain('kind: Deployment');
    expect(() => helmTemplate(helm, ['--kube-version', '1.27.9'])).toThrow(/kubeVersion|incompatible/i);
  });
});
