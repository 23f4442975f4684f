/**
 * Write the generated files: `crds/*.yaml` from api/schemas.ts and `docs/reference.md`.
 * `npm run generate`; a test fails when the committed files differ from what this writes.
 * Usage: generate-crds [CRDS_DIR] [REFERENCE_MD]   (defaults: crds docs/reference.md, from the cwd)
 */
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { crdFiles } from '../api/crds.js';
import { referenceMarkdown } from '../api/reference.js';

/** Write crds/ afresh (stale generated files are removed); returns the paths written. */
export function generateCrds(dir: string): string[] {
  mkdirSync(dir, { recursive: true });
  const files = crdFiles();
  const keep = new Set(files.map((f) => f.name));
  for (const old of readdirSync(dir)) {
    if (old.endsWith('.yaml') && !keep.has(old)) rmSync(join(dir, old));
  }
  return files.map((f) => {
    const path = join(dir, f.name);
    writeFileSync(path, f.content);
    return path;
  });
}

export function generateReference(path: string): string {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, referenceMarkdown());
  return path;
}

function main(argv: string[]): void {
  const [crds = 'crds', reference = 'docs/reference.md'] = argv;
  for (const p of [...generateCrds(resolve(crds)), generateReference(resolve(reference))]) {
    process.stdout.write(`wrote ${p}\n`);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href)
  main(process.argv.slice(2));
