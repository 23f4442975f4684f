/**
 * examples/ (except demo/): every document parses; built-in kinds pass the Kubernetes schema; dbguard resources
 * pass the project's own validation and every policy file compiles; `dbguard inject` output of every example app
 * passes the Kubernetes schema; the `dbguard check` command in each policy file's header runs and decides as
 * the file says.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parsePolicyDocuments } from '../../policy/load.js';
import { isDbguardResource, validateK8s, yamlDocs } from '../chart/k8s-schema.js';
import { EXAMPLES, ROOT, rel } from '../chart/paths.js';
import { runDbguard, shellWords, withUpstream } from './cli.js';
import { createPaymentsDb } from './payments-db.js';
import { validateInjected } from './validate.js';

function yamlFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) {
      if (p !== path.join(EXAMPLES, 'demo') && p !== path.join(EXAMPLES, 'helm')) out.push(...yamlFiles(p));
    } else if (e.name.endsWith('.yaml')) out.push(p);
  }
  return out.sort();
}

/** `#   dbguard ...` lines in a file's header comment. */
const headerCommands = (text: string) =>
  [...text.matchAll(/^#\s+(dbguard (?:check|inject) .+)$/gm)].map((m) => m[1]!);

/** What each policy file's header command decides: the example's point. */
const EXPECTED_DECISION: Record<string, string> = {
  'examples/policies/card-number-masking.yaml': 'mask',
  'examples/policies/block-destructive-ddl.yaml': 'deny',
  'examples/policies/approve-bulk-deletes.yaml': 'approval',
  'examples/policies/analytics-readonly.yaml': 'deny',
  'examples/policies/allow-list.yaml': 'deny',
};

const files = yamlFiles(EXAMPLES);

describe('examples/', () => {
  let db: Awaited<ReturnType<typeof createPaymentsDb>>;
  beforeAll(async () => {
    db = await createPaymentsDb(inject('pg'));
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('has policies for the common needs and example apps', () => {
    const names = files.map(rel);
    for (const f of Object.keys(EXPECTED_DECISION)) expect(names).toContain(f);
    expect(names.filter((n) => n.startsWith('examples/app/')).length).toBeGreaterThanOrEqual(2);
  });

  for (const file of files) {
    describe(rel(file), () => {
      const text = fs.readFileSync(file, 'utf8');

      it('every built-in object passes the Kubernetes schema', async () => {
        for (const d of yamlDocs(rel(file), text)) if (!isDbguardResource(d.obj)) await validateK8s(d);
      });

      if (rel(file).startsWith('examples/policies/'))
        it('its dbguard resources are valid and the policy compiles; its check command decides as documented', async () => {
          const parsed = parsePolicyDocuments([{ name: rel(file), text }]);
          expect(parsed.ok ? [] : parsed.errors).toEqual([]);
          const [command] = headerCommands(text);
          expect(command, 'a `#   dbguard check ...` line in the header').toBeDefined();
          expect(command).toContain(`--policy-file ${rel(file)}`);
          const r = await runDbguard(withUpstream(shellWords(command!), db.url));
          expect(r.code, r.stderr).toBe(0);
          expect(JSON.parse(r.stdout).decision).toBe(EXPECTED_DECISION[rel(file)]);
        }, 180_000);

      if (rel(file).startsWith('examples/app/'))
        it('dbguard inject (the header command) prints objects that pass the Kubernetes schema', async () => {
          const [command] = headerCommands(text);
          expect(command).toContain(`-f ${rel(file)}`);
          const r = await runDbguard(shellWords(command!));
          expect(r.code, r.stderr).toBe(0);
          expect(r.stderr).toMatch(/injected/);
          await validateInjected(yamlDocs('stdout', r.stdout));
        }, 180_000);
    });
  }

  it('runs from the repository root (paths in the commands are relative to it)', () => {
    expect(fs.existsSync(path.join(ROOT, 'examples/policies'))).toBe(true);
  });
});
