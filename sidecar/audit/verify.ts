/**
 * Checks an audit log (or its rotated files, oldest first) against the hash chain: each line's
 * `seq` is the previous one's plus one and its `prev` is the SHA-256 of the previous line's bytes.
 * The first line of the first file is the anchor. A line with `seq: 1` and `prev` of 64 zeros
 * later on starts a new chain: a sidecar restart writing to standard output does that (a file
 * target continues its chain instead), so it is accepted only with `allowRestarts`, and counted.
 *
 * What a failure means: an edited line shows as a hash mismatch on the line AFTER it; a removed
 * line as a seq gap on the line that followed it; swapped lines as a seq out of order, naming where
 * the expected seq is. The last line of a log has nothing after it to vouch for it: an edit there
 * shows only once the log grows.
 */
import { createReadStream } from 'node:fs';
import { GENESIS, isHash, lineHash } from './chain.js';

export interface VerifyOk {
  ok: true;
  files: number;
  lines: number;
  /** chains started (1 + restarts) */
  chains: number;
  firstSeq: number | null;
  lastSeq: number | null;
  lastHash: string | null;
}

export interface VerifyFailure {
  ok: false;
  file: string;
  /** 1-based line number in `file` */
  line: number;
  problem: 'unreadable' | 'malformed' | 'seq-gap' | 'seq-order' | 'hash-mismatch';
  message: string;
}

export type VerifyResult = VerifyOk | VerifyFailure;

/** Raw lines of a file (bytes, without the newline), so hashes are over exactly what is stored. */
async function* fileLines(path: string): AsyncGenerator<Buffer> {
  let rest: Buffer = Buffer.alloc(0);
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    let buf = rest.length > 0 ? Buffer.concat([rest, chunk as Buffer]) : (chunk as Buffer);
    let nl = buf.indexOf(0x0a);
    while (nl >= 0) {
      yield buf.subarray(0, nl);
      buf = buf.subarray(nl + 1);
      nl = buf.indexOf(0x0a);
    }
    rest = Buffer.from(buf);
  }
  if (rest.length > 0) yield rest;
}

interface Parsed {
  seq: number;
  prev: string;
}

function parseLine(bytes: Buffer): Parsed | string {
  let obj: any;
  try {
    obj = JSON.parse(bytes.toString('utf8'));
  } catch {
    return 'not a JSON object';
  }
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) return 'not a JSON object';
  if (!Number.isSafeInteger(obj.seq) || obj.seq < 1) return 'missing or invalid "seq"';
  if (!isHash(obj.prev)) return 'missing or invalid "prev" (64 hex digits)';
  if (typeof obj.time !== 'string' || typeof obj.event !== 'string') return 'missing "time" or "event"';
  return { seq: obj.seq, prev: obj.prev };
}

/** After a seq mismatch: where is the seq we expected? Tells a reorder from a removal. */
async function findSeq(
  files: string[],
  fileIndex: number,
  afterLine: number,
  seq: number,
): Promise<{ file: string; line: number } | undefined> {
  for (let f = fileIndex; f < files.length; f++) {
    let n = 0;
    for await (const bytes of fileLines(files[f]!)) {
      n++;
      if (f === fileIndex && n <= afterLine) continue;
      // Cheap pre-check before parsing: most lines do not mention this seq at all.
      if (!bytes.includes(`"seq":${seq}`)) continue;
      const p = parseLine(bytes);
      if (typeof p !== 'string' && p.seq === seq) return { file: files[f]!, line: n };
    }
  }
  return undefined;
}

export interface VerifyOptions {
  /** accept a new chain (seq 1, prev zeros) after the first line: logs captured from stdout */
  allowRestarts?: boolean;
}

export async function verifyAuditFiles(files: string[], opts: VerifyOptions = {}): Promise<VerifyResult> {
  let last: { seq: number; hash: string } | undefined;
  let lines = 0;
  let chains = 0;
  let firstSeq: number | null = null;
  for (let fi = 0; fi < files.length; fi++) {
    const file = files[fi]!;
    let n = 0;
    try {
      for await (const bytes of fileLines(file)) {
        n++;
        const p = parseLine(bytes);
        if (typeof p === 'string') {
          return { ok: false, file, line: n, problem: 'malformed', message: p };
        }
        if (last === undefined || (opts.allowRestarts && p.seq === 1 && p.prev === GENESIS)) {
          // The anchor, or a new chain (restart): nothing before it to check against.
          chains++;
          firstSeq ??= p.seq;
        } else if (p.seq === 1 && p.prev === GENESIS) {
          return {
            ok: false,
            file,
            line: n,
            problem: 'seq-order',
            message: `a new chain starts here (seq 1 after seq ${last.seq}): files out of order, or a restart logging to standard output (then use --allow-restarts)`,
          };
        } else if (p.seq < last.seq + 1) {
          return {
            ok: false,
            file,
            line: n,
            problem: 'seq-order',
            message: `seq goes backwards: expected ${last.seq + 1}, found ${p.seq} (a line repeated or moved)`,
          };
        } else if (p.seq !== last.seq + 1) {
          const expected = last.seq + 1;
          const found = await findSeq(files, fi, n, expected);
          if (found) {
            const where = found.file === file ? `line ${found.line}` : `${found.file} line ${found.line}`;
            return {
              ok: false,
              file,
              line: n,
              problem: 'seq-order',
              message: `seq out of order: expected ${expected}, found ${p.seq}; seq ${expected} is at ${where} (lines reordered)`,
            };
          }
          const missing = p.seq - expected;
          return {
            ok: false,
            file,
            line: n,
            problem: 'seq-gap',
            message: `seq gap: expected ${expected}, found ${p.seq} (${missing} line${missing === 1 ? '' : 's'} removed before this line)`,
          };
        } else if (p.prev !== last.hash) {
          const before = n > 1 ? `line ${n - 1}` : `the last line of ${files[fi - 1]}`;
          return {
            ok: false,
            file,
            line: n,
            problem: 'hash-mismatch',
            message: `hash mismatch: "prev" is not the SHA-256 of ${before} (that line was edited, or a line was inserted)`,
          };
        }
        last = { seq: p.seq, hash: lineHash(bytes) };
        lines++;
      }
    } catch (err) {
      return {
        ok: false,
        file,
        line: n,
        problem: 'unreadable',
        message: `cannot read: ${(err as Error).message}`,
      };
    }
  }
  return {
    ok: true,
    files: files.length,
    lines,
    chains,
    firstSeq,
    lastSeq: last?.seq ?? null,
    lastHash: last?.hash ?? null,
  };
}
