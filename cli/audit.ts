/**
 * `dbguard audit verify FILE...`: check an audit log's seq continuity and hash chain. Rotated files
 * are given oldest first (`audit.log.2 audit.log.1 audit.log`) so the seams are checked too.
 * Exit 0 with a one-line summary; 1 naming the first bad line; 2 for a usage error.
 */
import fs from 'node:fs';
import { type AuditKey, auditKeyFrom } from '../sidecar/audit/chain.js';
import { verifyAuditFiles } from '../sidecar/audit/verify.js';

const USAGE = [
  'usage: dbguard audit verify [--allow-restarts] [--key-file F] FILE...',
  '',
  'Checks that every line of the audit log follows the one before it: seq continues by one and',
  '"prev" is the hash of the previous line. Give rotated files oldest first.',
  '--key-file F: the key the proxy was given (--audit-key-file); every line must then carry its',
  'HMAC-SHA256 under it, which nobody without the key can recompute. Without a key, an unkeyed',
  '(SHA-256) chain shows accidental edits only, and a keyed one can only be checked for its seq.',
  'The summary says which of these holds: keyed, unkeyed, or sequence only.',
  '--allow-restarts accepts new chains (seq 1) mid-log: a log captured from standard output',
  'across sidecar restarts. A log file continues its chain across restarts and rotation.',
  'Exit status: 0 intact, 1 a line was edited, removed, reordered or is malformed, 2 usage.',
].join('\n');

export interface Io {
  out(line: string): void;
  err(line: string): void;
}

const processIo: Io = {
  out: (l) => process.stdout.write(`${l}\n`),
  err: (l) => process.stderr.write(`${l}\n`),
};

export async function run(argv: string[], io: Io = processIo): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === '--help' || sub === '-h' || sub === 'help') {
    io.out(USAGE);
    return 0;
  }
  if (sub !== 'verify') {
    io.err(sub ? `dbguard audit: unknown subcommand '${sub}'\n\n${USAGE}` : USAGE);
    return 2;
  }
  const allowRestarts = rest.includes('--allow-restarts');
  let keyFile: string | undefined;
  const files: string[] = [];
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!;
    if (a === '--' || a === '--allow-restarts') continue;
    if (a === '--key-file') {
      keyFile = rest[++i];
      if (!keyFile) {
        io.err(`dbguard audit verify: --key-file needs a file\n\n${USAGE}`);
        return 2;
      }
    } else if (a.startsWith('--key-file=')) keyFile = a.slice('--key-file='.length);
    else files.push(a);
  }
  let key: AuditKey | undefined;
  if (keyFile) {
    try {
      key = auditKeyFrom(fs.readFileSync(keyFile));
    } catch (err) {
      io.err(`dbguard audit verify: --key-file ${keyFile}: ${(err as Error).message}`);
      return 2;
    }
  }
  const flag = files.find((a) => a.startsWith('-'));
  if (flag) {
    io.err(`dbguard audit verify: unknown flag ${flag}\n\n${USAGE}`);
    return 2;
  }
  if (files.length === 0) {
    io.err(`dbguard audit verify: no FILE given\n\n${USAGE}`);
    return 2;
  }
  const result = await verifyAuditFiles(files, { allowRestarts, ...(key ? { key } : {}) });
  if (!result.ok) {
    io.err(`${result.file}:${result.line}: ${result.message}`);
    return 1;
  }
  if (result.lines === 0) {
    io.out(`ok: ${files.join(', ')}: empty, nothing to verify`);
    return 0;
  }
  const chains = result.chains === 1 ? '1 chain' : `${result.chains} chains (restarts)`;
  const guarantee =
    result.guarantee === 'keyed'
      ? `keyed chain (HMAC-SHA256, key ${result.keyId}): no line was edited, removed, inserted or reordered by anyone without the key; lines cut off the end are not detected`
      : result.guarantee === 'unkeyed'
        ? 'unkeyed chain (SHA-256): shows accidental edits only; whoever edits or removes lines can recompute the hashes after them'
        : `sequence only: the lines are keyed (key ${result.keyId}) and no --key-file was given, so their hashes were not checked`;
  io.out(
    `ok: ${result.lines} lines in ${result.files} file${result.files === 1 ? '' : 's'}, seq ${result.firstSeq}..${result.lastSeq}, ${chains}, last hash ${result.lastHash}; ${guarantee}`,
  );
  return 0;
}
