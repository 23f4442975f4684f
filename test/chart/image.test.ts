/**
 * The Dockerfile, checked without a Docker engine: the final stage is a distroless Node runtime that runs as
 * non-root with nothing but the build output and production dependencies; every file the TypeScript build
 * reaches is copied into the build stage and let through by .dockerignore.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { NODE_FLAGS } from '../../cli/node-flags.js';
import { ROOT } from './paths.js';

const dockerfile = fs.readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');
const stages = dockerfile.split(/^FROM /m).slice(1);
const finalStage = stages[stages.length - 1]!;
const dockerignore = fs
  .readFileSync(path.join(ROOT, '.dockerignore'), 'utf8')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'));

/** Sources the build stage copies (`COPY src dest`, not `--from=`). */
const copied = [...stages[0]!.matchAll(/^COPY (?!--from)(.+)$/gm)].flatMap((m) =>
  m[1]!.trim().split(/\s+/).slice(0, -1),
);

/** .dockerignore here is "ignore everything, then re-include": is a path re-included? */
function included(rel: string): boolean {
  let inc = false;
  for (const p of dockerignore) {
    const neg = p.startsWith('!');
    const pat = (neg ? p.slice(1) : p).replace(/\/$/, '');
    const re = new RegExp(
      `^${pat
        .replace(/[.+^${}()|[\]\\]/g, '\\$&')
        .replace(/\*\*\//g, '(?:.*/)?')
        .replace(/\*/g, '[^/]*')}(?:/.*)?$`,
    );
    if (re.test(rel)) inc = neg;
  }
  return inc;
}

/** Relative imports of a TypeScript file, as repository paths of .ts files. */
function imports(file: string): string[] {
  const text = fs.readFileSync(path.join(ROOT, file), 'utf8');
  return [...text.matchAll(/(?:from|import\()\s*'(\.{1,2}\/[^']+)\.js'/g)].map((m) =>
    path.relative(ROOT, path.resolve(path.dirname(path.join(ROOT, file)), `${m[1]}.ts`)),
  );
}

describe('Dockerfile', () => {
  it('has a build stage and a distroless, non-root final stage without build tools', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    expect(finalStage).toMatch(/^gcr\.io\/distroless\/nodejs\$\{NODE_VERSION\}-debian12:nonroot/);
    expect(finalStage).toMatch(/^USER 65532:65532$/m);
    expect(finalStage).not.toMatch(/^RUN /m);
    // node runs with the flags cli/node-flags.ts names (the benchmarks use the same)
    const entrypoint = JSON.stringify(['/nodejs/bin/node', ...NODE_FLAGS, '/app/dist/cli/main.js']).replace(
      /,/g,
      ', ',
    );
    expect(finalStage.split('\n')).toContain(`ENTRYPOINT ${entrypoint}`);
    expect(finalStage).not.toMatch(/COPY --from=build \/src\/node_modules/);
  });

  it('copies every file the TypeScript build reaches, and .dockerignore lets them through', () => {
    const include: string[] = JSON.parse(
      fs.readFileSync(path.join(ROOT, 'tsconfig.build.json'), 'utf8'),
    ).include;
    const seen = new Set<string>();
    const queue: string[] = [];
    const walk = (dir: string) => {
      for (const e of fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
        const rel = path.join(dir, e.name);
        if (e.isDirectory()) walk(rel);
        else if (rel.endsWith('.ts') && !rel.endsWith('.test.ts')) queue.push(rel);
      }
    };
    for (const d of include) walk(d);
    while (queue.length) {
      const f = queue.pop()!;
      if (seen.has(f)) continue;
      seen.add(f);
      for (const i of imports(f)) if (fs.existsSync(path.join(ROOT, i))) queue.push(i);
    }
    const isCopied = (f: string) => copied.some((c) => f === c || f.startsWith(`${c.replace(/\/$/, '')}/`));
    const missing = [...seen].filter((f) => !isCopied(f) || !included(f)).sort();
    expect(missing).toEqual([]);
    for (const f of ['package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json'])
      expect(included(f), f).toBe(true);
    expect(included('node_modules/x')).toBe(false);
    expect(included('test/chart/chart.test.ts')).toBe(false);
  });
});
