/**
 * Where `dbguard proxy` gets its policy from files: read each `--policy-file`, then compile the
 * selected DatabasePolicy with the policy loader. The one function the CLI calls, so the source can
 * change (files, operator) without touching the proxy.
 */
import fs from 'node:fs';
import type { CompiledPolicy, UpstreamCredentials } from '../api/compiled.js';
import { loadPolicyFiles } from '../policy/load.js';

export type PolicySourceResult =
  | { ok: true; compiled: CompiledPolicy; credentials?: UpstreamCredentials }
  | { ok: false; error: string };

/** Reads and compiles the policy files; `error` is one printable line naming the file and the problem. */
export function loadPolicyFromFiles(paths: string[], policyName?: string): PolicySourceResult {
  if (paths.length === 0) return { ok: false, error: 'no policy file given (--policy-file)' };
  const files: { name: string; text: string }[] = [];
  for (const path of paths) {
    try {
      files.push({ name: path, text: fs.readFileSync(path, 'utf8') });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const why =
        code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (err as Error).message;
      return { ok: false, error: `policy file ${path}: ${why}` };
    }
  }
  let res: ReturnType<typeof loadPolicyFiles>;
  try {
    res = loadPolicyFiles(files, policyName);
  } catch (err) {
    return { ok: false, error: `policy file ${paths.join(', ')}: ${(err as Error).message}` };
  }
  if (!res.ok) {
    const first = res.errors[0] ?? 'invalid policy';
    const more = res.errors.length > 1 ? ` (and ${res.errors.length - 1} more)` : '';
    // The loader's lines name the file; make sure one is named even when it does not.
    const named = paths.some((p) => first.includes(p)) ? first : `${paths.join(', ')}: ${first}`;
    return { ok: false, error: `invalid policy: ${named}${more}` };
  }
  return { ok: true, compiled: res.compiled, ...(res.credentials ? { credentials: res.credentials } : {}) };
}
