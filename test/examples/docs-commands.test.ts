/**
 * The commands the getting-started pages show are the commands this test runs:
 * - every `dbguard ...` line in a ```sh block of app-team.md runs with the built CLI; the ```json block after
 *   it lists fields its output must have (with those values); a ```text block lists standard-error lines;
 *   a documented `--upstream` is pointed at a test database with the same schema;
 * - every line of a ```sh e2e block (cluster-admin.md, sre.md) appears verbatim in hack/kind-e2e.sh, the
 *   script that runs them on a real cluster.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { yamlDocs } from '../chart/k8s-schema.js';
import { DOCS, ROOT } from '../chart/paths.js';
import { runDbguard, shellWords, withUpstream } from './cli.js';
import { createPaymentsDb } from './payments-db.js';
import { validateInjected } from './validate.js';

interface Block {
  lang: string;
  text: string;
}

function blocks(markdown: string): Block[] {
  return [...markdown.matchAll(/^```([^\n]*)\n([\s\S]*?)^```$/gm)].map((m) => ({
    lang: m[1]!.trim(),
    text: m[2]!,
  }));
}

interface Documented {
  command: string;
  json?: Record<string, unknown>;
  stderr?: string[];
}

function documentedCommands(file: string): Documented[] {
  const list = blocks(fs.readFileSync(path.join(DOCS, file), 'utf8'));
  const out: Documented[] = [];
  list.forEach((b, i) => {
    if (b.lang !== 'sh') return;
    const lines = b.text.split('\n').filter((l) => l.startsWith('dbguard '));
    for (const command of lines) {
      const next = list[i + 1];
      out.push({
        command,
        ...(next?.lang === 'json' ? { json: JSON.parse(next.text) } : {}),
        ...(next?.lang === 'text' ? { stderr: next.text.split('\n').filter(Boolean) } : {}),
      });
    }
  });
  return out;
}

describe('app-team.md commands', () => {
  const commands = documentedCommands('getting-started/app-team.md');
  let db: Awaited<ReturnType<typeof createPaymentsDb>>;

  beforeAll(async () => {
    db = await createPaymentsDb(inject('pg'));
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('shows dbguard check and dbguard inject with their outputs', () => {
    expect(commands.filter((c) => c.command.startsWith('dbguard check')).length).toBeGreaterThanOrEqual(5);
    expect(commands.some((c) => c.command.startsWith('dbguard inject'))).toBe(true);
    for (const c of commands) expect(c.json ?? c.stderr, `no output shown for: ${c.command}`).toBeDefined();
  });

  for (const c of commands) {
    it(c.command.slice(0, 110), async () => {
      const r = await runDbguard(withUpstream(shellWords(c.command), db.url));
      expect(r.code, r.stderr).toBe(0);
      if (c.json) expect(JSON.parse(r.stdout)).toMatchObject(c.json);
      if (c.stderr) for (const line of c.stderr) expect(r.stderr).toContain(line);
      if (c.command.startsWith('dbguard inject')) await validateInjected(yamlDocs('stdout', r.stdout));
    }, 180_000);
  }

  it('masks for real: the rewritten SQL returns the last four digits only', async () => {
    const masked = commands.find((c) => c.json?.decision === 'mask');
    expect(masked).toBeDefined();
    const r = await runDbguard(withUpstream(shellWords(masked!.command), db.url));
    const sql = JSON.parse(r.stdout).rewrittenSql as string;
    const pg = (await import('pg')).default;
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      const rows = (await client.query(sql)).rows;
      expect(rows).toEqual([{ id: 1, card_number: '************1111' }]);
    } finally {
      await client.end();
    }
  }, 180_000);
});

describe('commands the kind end-to-end script runs', () => {
  const script = fs.readFileSync(path.join(ROOT, 'hack/kind-e2e.sh'), 'utf8');
  const pages = ['getting-started/cluster-admin.md', 'getting-started/sre.md', 'getting-started/app-team.md'];
  const e2eLines = pages.flatMap((p) =>
    blocks(fs.readFileSync(path.join(DOCS, p), 'utf8'))
      .filter((b) => b.lang === 'sh e2e')
      .flatMap((b) => b.text.split('\n').filter((l) => l.trim() && !l.trim().startsWith('#')))
      .map((line) => ({ page: p, line })),
  );

  it('the install commands are marked for the check', () => {
    expect(e2eLines.some((l) => l.line.startsWith('helm upgrade --install dbguard charts/dbguard'))).toBe(
      true,
    );
  });

  for (const { page, line } of e2eLines)
    it(`${page}: ${line.slice(0, 90)}`, () => {
      expect(script).toContain(line);
    });
});
