/**
 * No test may pass against a stale build: tests that run the CLI (`dist/cli/main.js`) would otherwise
 * exercise yesterday's code. The global setup calls this once per run; it rebuilds when any source
 * file is newer than the build (tsc rewrites every output, so main.js's time is the build's time).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const ROOT = path.resolve(import.meta.dirname, '../..');
const SOURCES = [
  'api',
  'policy',
  'sidecar',
  'operator',
  'cli',
  'scripts',
  'bench',
  'tsconfig.json',
  'tsconfig.build.json',
];

function newestSource(p: string): number {
  const st = fs.statSync(p);
  if (!st.isDirectory()) return p.endsWith('.ts') || p.endsWith('.json') ? st.mtimeMs : 0;
  let newest = 0;
  for (const e of fs.readdirSync(p)) newest = Math.max(newest, newestSource(path.join(p, e)));
  return newest;
}

export function ensureFreshBuild(): void {
  const built = path.join(ROOT, 'dist/cli/main.js');
  const builtAt = fs.existsSync(built) ? fs.statSync(built).mtimeMs : 0;
  const changedAt = Math.max(...SOURCES.map((s) => newestSource(path.join(ROOT, s))));
  if (changedAt <= builtAt) return;
  process.stderr.write('test setup: sources are newer than dist/, running `npm run build`\n');
  execFileSync('npm', ['run', 'build', '--silent'], { cwd: ROOT, stdio: 'inherit' });
}
