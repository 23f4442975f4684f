import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { crdFiles, crdObjects, crdsYaml } from '../../api/crds.js';
import { run } from '../../cli/crds.js';
import { fullReference, generateCrds, generateReference } from '../../scripts/generate-crds.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const REGENERATE = 'run `npm run generate` and commit crds/ and docs/reference.md';

describe('generated files are fresh', () => {
  it(`crds/ is what generation yields (${REGENERATE})`, () => {
    const committed = readdirSync(join(ROOT, 'crds')).sort();
    expect(committed).toEqual(
      crdFiles()
        .map((f) => f.name)
        .sort(),
    );
    for (const f of crdFiles())
      expect(readFileSync(join(ROOT, 'crds', f.name), 'utf8'), f.name).toBe(f.content);
  });

  it(`docs/reference.md is what generation yields (${REGENERATE})`, () => {
    expect(readFileSync(join(ROOT, 'docs/reference.md'), 'utf8')).toBe(fullReference());
  });
});

describe('generation and dbguard crds', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dbguard-crds-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('generateCrds writes the files and removes stale ones; generateReference writes the doc', () => {
    const stale = join(dir, 'old.yaml');
    execFileSync('touch', [stale]);
    const written = generateCrds(dir);
    expect(readdirSync(dir).sort()).toEqual(
      crdFiles()
        .map((f) => f.name)
        .sort(),
    );
    expect(written).toHaveLength(3);
    const doc = generateReference(join(dir, 'docs', 'reference.md'));
    expect(readFileSync(doc, 'utf8')).toContain('- `spec.upstream.host` (string; **required**;');
  });

  it('dbguard crds prints every CRD as multi-document YAML that reads back to the objects', async () => {
    let out = '';
    expect(await run([], { write: (s: string) => (out += s) })).toBe(0);
    expect(out).toBe(crdsYaml());
    const docs = parseAllDocuments(out).map((d) => (d as any).toJS());
    expect(docs).toEqual(crdObjects());
  });

  it('kubectl parses the CRDs (offline: `kubectl label --local`; create --dry-run needs a server)', () => {
    const probe = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' });
    if (probe.error)
      throw new Error('kubectl is not on PATH: install it (Debian: the kubectl package) to run this test');
    const r = spawnSync(
      'kubectl',
      ['label', '--local', '-f', join(ROOT, 'crds'), 'dbguard.io/checked=true', '-o', 'name'],
      { encoding: 'utf8', timeout: 30_000, env: { ...process.env, KUBECONFIG: '/dev/null' } },
    );
    expect(r.stderr).toBe('');
    expect(r.stdout.trim().split('\n').sort()).toEqual([
      'customresourcedefinition.apiextensions.k8s.io/approvalrequests.dbguard.io',
      'customresourcedefinition.apiextensions.k8s.io/databasepolicies.dbguard.io',
      'customresourcedefinition.apiextensions.k8s.io/maskingrules.dbguard.io',
    ]);
  });
});
