/** Every shell script in hack/ is shellcheck-clean (hack/ensure-test-deps.sh installs shellcheck). */
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './paths.js';

function haveShellcheck(): boolean {
  try {
    execFileSync('shellcheck', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('shellcheck', () => {
  const scripts = fs
    .readdirSync(path.join(ROOT, 'hack'))
    .filter((f) => f.endsWith('.sh'))
    .map((f) => `hack/${f}`);

  it('finds the scripts, among them the kind end-to-end script', () => {
    expect(scripts).toContain('hack/kind-e2e.sh');
  });

  it('reports nothing on hack/*.sh', async () => {
    if (!haveShellcheck())
      throw new Error(
        'shellcheck is not installed: run `bash hack/ensure-test-deps.sh` (or apt-get install shellcheck)',
      );
    const result = await new Promise<{ code: number; out: string }>((resolve) =>
      execFile(
        'shellcheck',
        ['-x', '-f', 'gcc', ...scripts],
        { cwd: ROOT, timeout: 60_000 },
        (err, stdout, stderr) => resolve({ code: err ? 1 : 0, out: `${stdout}${stderr}` }),
      ),
    );
    expect(result.out).toBe('');
    expect(result.code).toBe(0);
  });
});
