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
import { envName } from '../cli/flags.js';
import { FLAGS as PROXY_FLAGS } from '../cli/proxy.js';

/**
 * docs/reference.md: the resources, then the flags of `dbguard proxy` (from cli/proxy.ts, so the page
 * cannot drift from --help) and of `dbguard audit verify`.
 */
export function fullReference(): string {
  const cell = (t: string) => t.replace(/\|/g, '\\|');
  const rows = PROXY_FLAGS.filter((f) => f.name !== 'help').map(
    (f) =>
      `| \`--${f.name}\` | \`${envName(f.name)}\` | ${f.default !== undefined ? `\`${f.default}\`` : ''} | ${cell(f.help)}${f.repeatable && !f.help.includes('repeatable') ? ' (repeatable)' : ''} |`,
  );
  return `${referenceMarkdown()}
## dbguard proxy flags

<!-- Generated from cli/proxy.ts. -->

Every flag can also be given as its environment variable (a flag on the command line wins). Limits and
timeouts are explained in [reliability.md](reliability.md#limits-and-timeouts-all-configurable); what
the authentication, size and audit-key flags guarantee in [security.md](security.md). In short: with
\`--upstream-credentials-file\` (and \`--token-auth\`) no database connection is opened for a client
before it has proven itself; \`--max-connections\` and \`--login-failure-limit\` are on by default; a
statement over \`--max-statement-size\` is refused with 54000 without being read into memory, and its
session goes on; \`--audit-key-file\` makes the audit chain an HMAC that nobody without the key can
recompute.

| flag | environment | default | what it does |
| --- | --- | --- | --- |
${rows.join('\n')}

## dbguard audit verify

\`dbguard audit verify [--allow-restarts] [--key-file F] FILE...\` checks the audit chain of the files
(oldest first). With \`--key-file\` (the proxy's \`--audit-key-file\`) every line must carry its HMAC-SHA256
under that key. The summary names the guarantee that holds: \`keyed\`, \`unkeyed\` (SHA-256: shows
accidental edits only) or \`sequence only\` (keyed lines, no key given). Exit 0 intact, 1 a bad line
(named), 2 usage. See [observability.md](observability.md#integrity-the-hash-chain-and-dbguard-audit-verify).
`;
}

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
  writeFileSync(path, fullReference());
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
