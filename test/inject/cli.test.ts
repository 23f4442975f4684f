/**
 * `dbguard inject` golden tests over Deployments, StatefulSets, Jobs, CronJobs and bare Pods: the output
 * is compared with files under test/inject/golden/ (UPDATE_GOLDEN=1 rewrites them after a deliberate
 * change; review the diff), every injected template passes the Kubernetes schema, untouched documents are
 * byte for byte the input, injecting the output again changes nothing, and the CLI injects what the
 * webhook injects.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { run } from '../../cli/inject.js';
import { reviewPod } from '../../operator/inject/webhook.js';
import { applyResponse, review, sidecarOf, validatePod } from './helpers.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const golden = (name: string) => path.join(here, 'golden', name);
const BASE = ['--sidecar-image', 'ghcr.io/dbguard/dbguard:golden'];

async function inject(args: string[], stdin = ''): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await run([...BASE, ...args], {
    stdin: () => stdin,
    stdout: (s) => (out += s),
    stderr: (s) => (err += s),
  });
  return { code, out, err };
}

function expectGolden(name: string, actual: string) {
  const file = golden(name);
  if (process.env.UPDATE_GOLDEN === '1') fs.writeFileSync(file, actual);
  if (!fs.existsSync(file)) throw new Error(`golden file ${file} is missing: run with UPDATE_GOLDEN=1 once`);
  expect(actual).toBe(fs.readFileSync(file, 'utf8'));
}

/** every pod template in a manifest, as a Pod */
function podsOf(text: string): { kind: string; name: string; pod: any }[] {
  const out: { kind: string; name: string; pod: any }[] = [];
  for (const d of parseAllDocuments(text)) {
    const o = d.toJS() as any;
    if (!o) continue;
    const t =
      o.kind === 'Pod' ? o : o.kind === 'CronJob' ? o.spec.jobTemplate.spec.template : o.spec?.template;
    if (t)
      out.push({
        kind: o.kind,
        name: o.metadata.name,
        pod: { apiVersion: 'v1', kind: 'Pod', metadata: t.metadata ?? {}, spec: t.spec },
      });
  }
  return out;
}

const splitDocs = (text: string) => text.split(/^---\n/m);

describe('dbguard inject', () => {
  const input = fs.readFileSync(golden('workloads.input.yaml.txt'), 'utf8');

  it('injects every labelled template (native sidecars) and matches the golden file', async () => {
    const r = await inject(['-f', golden('workloads.input.yaml.txt')]);
    expect(r.code, r.err).toBe(0);
    expectGolden('workloads.native.output.yaml.txt', r.out);
    expect(
      r.err
        .split('\n')
        .filter((l) => l.endsWith(' injected'))
        .sort(),
    ).toEqual([
      'cronjob "cleanup" injected',
      'deployment "checkout" injected',
      'job "nightly-report" injected',
      'pod "debug" injected',
      'statefulset "ledger" injected',
    ]);
    // the CronJob names a policy that is not among the documents
    expect(r.err).toContain(
      'warning: cronjob "cleanup": dbguard: DatabasePolicy "reports" does not exist in namespace "shop"',
    );

    const pods = podsOf(r.out);
    for (const p of pods) validatePod(p.pod);
    const byName = Object.fromEntries(pods.map((p) => [p.name, p.pod]));
    expect(sidecarOf(byName.legacy)).toBeUndefined();
    for (const n of ['checkout', 'ledger', 'nightly-report', 'cleanup', 'debug']) {
      expect(byName[n].spec.initContainers[0]).toMatchObject({
        name: 'dbguard-proxy',
        restartPolicy: 'Always',
      });
      expect(byName[n].metadata.annotations['dbguard.io/status']).toBe('injected');
    }
    // the policy document names a credentials Secret: mounted for pods that use that policy only
    expect(byName.checkout.spec.volumes.map((v: any) => v.name)).toContain('dbguard-credentials');
    expect(byName.cleanup.spec.volumes.map((v: any) => v.name)).not.toContain('dbguard-credentials');
    expect(byName.ledger.spec.initContainers.map((c: any) => c.name)).toEqual(['dbguard-proxy', 'migrate']);
    expect(byName.ledger.spec.containers[0].env).toEqual([
      { name: 'PGHOST', value: 'orders-db.shop.svc' },
      { name: 'PGPORT', value: '6432' },
    ]);
    expect(byName.debug.spec.containers[0].env).toBeUndefined();
  });

  it('leaves every other document byte for byte as it was', async () => {
    const r = await inject(['-f', golden('workloads.input.yaml.txt')]);
    const inDocs = splitDocs(input);
    const outDocs = splitDocs(r.out);
    expect(outDocs).toHaveLength(inDocs.length);
    const untouched = [0, 1, 7, 8]; // DatabasePolicy, ConfigMap (comments, odd spacing), unlabelled Deployment, Service
    for (const i of untouched) expect(outDocs[i]).toBe(inDocs[i]);
    for (const i of [2, 3, 4, 5, 6]) expect(outDocs[i]).not.toBe(inDocs[i]);
  });

  it('changes nothing when run on its own output (injecting twice = once)', async () => {
    const once = await inject(['-f', golden('workloads.input.yaml.txt')]);
    const twice = await inject(['-f', '-'], once.out);
    expect(twice.code).toBe(0);
    expect(twice.out).toBe(once.out);
    expect(twice.err).toContain('deployment "checkout" skipped: container dbguard-proxy is already present');
  });

  it('injects a regular container where native sidecars are off, and warns for Jobs', async () => {
    const r = await inject([
      '-f',
      golden('bare-pod.input.yaml.txt'),
      '--native-sidecar',
      'false',
      '--operator-namespace',
      'governance',
    ]);
    expect(r.code, r.err).toBe(0);
    expectGolden('bare-pod.container.output.yaml.txt', r.out);
    const [p] = podsOf(r.out);
    validatePod(p!.pod);
    expect(p!.pod.spec.containers.map((c: any) => c.name)).toEqual(['worker', 'dbguard-proxy']);
    expect(sidecarOf(p!.pod).args).toContain('--operator-url=https://dbguard-operator.governance.svc:8443');

    const job = await inject(['-f', golden('workloads.input.yaml.txt'), '--native-sidecar', 'false']);
    expect(job.err).toMatch(/warning: job "nightly-report": .*keeps this Job's pod running/);
    expect(job.err).toMatch(/warning: cronjob "cleanup": .*keeps this Job's pod running/);
    expect(job.err).not.toMatch(/warning: deployment .*Job/);
  });

  it('prints exactly what the webhook patches in', async () => {
    const cli = await inject(['-f', golden('bare-pod.input.yaml.txt'), '--native-sidecar', 'true']);
    const pod = parseAllDocuments(fs.readFileSync(golden('bare-pod.input.yaml.txt'), 'utf8'))[0]!.toJS();
    const response = await reviewPod(review({ ...pod, metadata: { ...pod.metadata } }).request as any, {
      injectOptions: () => ({
        image: 'ghcr.io/dbguard/dbguard:golden',
        nativeSidecar: true,
        operatorUrl: 'https://dbguard-operator.dbguard-system.svc:8443',
      }),
      operatorNamespace: 'dbguard-system',
    });
    expect(podsOf(cli.out)[0]!.pod).toEqual(applyResponse(pod, response));
  });

  it('embeds the operator CA when given, so pods work without the webhook', async () => {
    const ca = golden('bare-pod.input.yaml.txt'); // any file: the content is copied verbatim
    const r = await inject(['-f', golden('bare-pod.input.yaml.txt'), '--operator-ca-file', ca]);
    expect(podsOf(r.out)[0]!.pod.metadata.annotations['dbguard.io/operator-ca']).toBe(
      fs.readFileSync(ca, 'utf8'),
    );
  });

  it('prints nothing and exits 1 when a labelled template cannot be injected', async () => {
    const bad = input.replace('containerPort: 8080', 'containerPort: 5432');
    const r = await inject(['-f', '-'], bad);
    expect(r.code).toBe(1);
    expect(r.out).toBe('');
    expect(r.err).toContain('error: Deployment checkout: container "app" declares containerPort 5432');
    const noPolicy = await inject(
      ['-f', '-'],
      fs
        .readFileSync(golden('bare-pod.input.yaml.txt'), 'utf8')
        .replace('dbguard.io/policy: orders', 'other: x'),
    );
    expect(noPolicy.code).toBe(1);
    expect(noPolicy.err).toContain('has no annotation dbguard.io/policy');
  });

  it('reports broken YAML and bad flags clearly', async () => {
    const r = await inject(['-f', '-'], 'a: [unclosed\n');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/document 0: not valid YAML/);
    await expect(inject([])).rejects.toThrow(/needs -f FILE/);
    await expect(inject(['-f', '/nonexistent/file.yaml'])).rejects.toThrow(
      /cannot read \/nonexistent\/file.yaml/,
    );
    await expect(inject(['-f', '-', '--native-sidecar', 'auto'])).rejects.toThrow(/true or false/);
  });
});
