/**
 * `dbguard audit verify FILE...`: check an audit log's seq continuity and hash chain. Rotated files
 * are given oldest first (`audit.log.2 audit.log.1 audit.log`) so the seams are checked too.
 * Exit 0 with a one-line summary; 1 naming the first bad line; 2 for a usage error.
 */
import { verifyAuditFiles } from '../sidecar/audit/verify.js';

const USAGE = [
  'usage: dbguard audit verify [--allow-restarts] FILE...',
  '',
  'Checks that every line of the audit log follows the one before it: seq continues by one and',
  '"prev" is the SHA-256 of the previous line. Give rotated files oldest first.',
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
  const files = rest.filter((a) => a !== '--' && a !== '--allow-restarts');
  const flag = files.find((a) => a.startsWith('-'));
  if (flag) {
    io.err(`dbguard audit verify: unknown flag ${flag}\n\n${USAGE}`);
    return 2;
  }
  if (files.length === 0) {
    io.err(`dbguard audit verify: no FILE given\n\n${USAGE}`);
    return 2;
  }
  const result = await verifyAuditFiles(files, { allowRestarts });
  if (!result.ok) {
    io.err(`${result.file}:${result.line}: ${result.message}`);
    return 1;
  }
  if (result.lines === 0) {
    io.out(`ok: ${files.join(', ')}: empty, nothing to verify`);
    return 0;
  }
  const chains = result.chains === 1 ? '1 chain' : `${result.chains} chains (restarts)`;
  io.out(
    `ok: ${result.lines} lines in ${result.files} file${result.files === 1 ? '' : 's'}, seq ${result.firstSeq}..${result.lastSeq}, ${chains}, last hash ${result.lastHash}`,
  );
  return 0;
}
