/** Paths of the repository the chart, example and docs tests read. */
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CHART = path.join(ROOT, 'charts/dbguard');
export const EXAMPLES = path.join(ROOT, 'examples');
export const DOCS = path.join(ROOT, 'docs');
export const CLI = path.join(ROOT, 'dist/cli/main.js');
export const rel = (p: string) => path.relative(ROOT, p);
