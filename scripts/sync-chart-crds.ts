/**
 * Keep the Helm chart's CRDs (`charts/dbguard/crds/`) equal to what `api/` generates. Helm installs the files
 * of a chart's `crds/` directory verbatim before the templates, so they are copies, not templates.
 *
 * Usage: sync-chart-crds [--check] [DIR]   (DIR defaults to charts/dbguard/crds, from the cwd)
 *   --check  write nothing; list what differs and exit 1 (what the chart test runs)
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { crdFiles } from '../api/crds.js';

export const CHART_CRDS_DIR = 'charts/dbguard/crds';

/** What differs between DIR and the generated CRDs: `missing X`, `stale X`, `extra X` (an old kind's file). */
export function chartCrdDifferences(dir: string): string[] {
  const files = crdFiles();
  const present = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.yaml')) : [];
  const out: string[] = [];
  for (const f of files) {
    const path = join(dir, f.name);
    if (!existsSync(path)) out.push(`missing ${f.name}`);
    else if (readFileSync(path, 'utf8') !== f.content) out.push(`stale ${f.name}`);
  }
  const wanted = new Set(files.map((f) => f.name));
  for (const f of present) if (!wanted.has(f)) out.push(`extra ${f}`);
  return out;
}

/** Write DIR afresh: the generated files, and no YAML file besides them. Returns the paths written. */
export function syncChartCrds(dir: string): string[] {
  mkdirSync(dir, { recursive: true });
  const files = crdFiles();
  const wanted = new Set(files.map((f) => f.name));
  for (const old of readdirSync(dir)) if (old.endsWith('.yaml') && !wanted.has(old)) rmSync(join(dir, old));
  return files.map((f) => {
    const path = join(dir, f.name);
    writeFileSync(path, f.content);
    return path;
  });
}

function main(argv: string[]): number {
  const check = argv.includes('--check');
  const rest = argv.filter((a) => a !== '--check');
  if (rest.some((a) => a.startsWith('-'))) {
    process.stderr.write('usage: sync-chart-crds [--check] [DIR]\n');
    return 2;
  }
  const dir = resolve(rest[0] ?? CHART_CRDS_DIR);
  if (check) {
    const diff = chartCrdDifferences(dir);
    for (const d of diff) process.stderr.write(`${dir}: ${d}\n`);
    if (diff.length) process.stderr.write('run: npm run build && node dist/scripts/sync-chart-crds.js\n');
    return diff.length ? 1 : 0;
  }
  for (const p of syncChartCrds(dir)) process.stdout.write(`wrote ${p}\n`);
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href)
  process.exitCode = main(process.argv.slice(2));
