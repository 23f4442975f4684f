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
 *
 * What a pass guarantees depends on the chain's mode (chain.ts), and the result says which:
 * - `keyed`: a key was given and every line is HMAC-chained with it: no line was edited, removed,
 *   inserted or reordered by anyone without the key. An unkeyed line fails here: whoever rewrote the
 *   log without the key could only have made an unkeyed chain.
 * - `unkeyed`: SHA-256 chain, no key: shows accidental edits only, since anyone can recompute it.
 * - `sequence-only`: keyed lines but no key given: their hashes cannot be checked, only seq is.
 */
import { createReadStream } from 'node:fs';
import { type AuditKey, type ChainMode, chainer, GENESIS, isHash } from './chain.js';

export interface VerifyOk {
  ok: true;
  files: number;
  lines: number;
  /** chains started (1 + restarts) */
  chains: number;
  firstSeq: number | null;
  lastSeq: number | null;
  lastHash: string | null;
  /** what the pass proves (see above) */
  guarantee: 'keyed' | 'unkeyed' | 'sequence-only';
  /** keyId of the keyed lines, when there were any */
  keyId: string | null;
}

export interface VerifyFailure {
  ok: false;
  file: string;
  /** 1-based line number in `file` */
  line: number;
  problem: 'unreadable' | 'malformed' | 'seq-gap' | 'seq-order' | 'hash-mismatch' | 'not-keyed' | 'wrong-key';
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
  chain: ChainMode;
  keyId?: string;
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
  // lines of versions before the keyed chain carry no `chain`: they are the SHA-256 chain
  const chain = obj.chain ?? 'sha256';
  if (chain !== 'sha256' && chain !== 'hmac-sha256') return `unknown "chain" ${JSON.stringify(chain)}`;
  if (chain === 'hmac-sha256' && !(typeof obj.keyId === 'string' && /^[0-9a-f]{16}$/.test(obj.keyId)))
    return 'missing or invalid "keyId" (16 hex digits) on a keyed line';
  return chain === 'sha256'
    ? { seq: obj.seq, prev: obj.prev, chain }
    : { seq: obj.seq, prev: obj.prev, chain, keyId: obj.keyId };
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
  /** the chain's key: every line must then be keyed with it */
  key?: AuditKey;
}

export async function verifyAuditFiles(files: string[], opts: VerifyOptions = {}): Promise<VerifyResult> {
  const sha = chainer();
  const hmac = opts.key ? chainer(opts.key) : undefined;
  /** the previous line: its bytes, hashed in the mode of the line that vouches for it */
  let last: { seq: number; bytes: Buffer } | undefined;
  let keyedUnchecked = 0;
  let lastMode: ChainMode = 'sha256';
  let keyId: string | null = null;
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
        if (p.chain === 'hmac-sha256') keyId ??= p.keyId!;
        if (hmac && p.chain !== 'hmac-sha256') {
          return {
            ok: false,
            file,
            line: n,
            problem: 'not-keyed',
            message: `line is not keyed (chain "${p.chain}"): with a key every line must carry its HMAC; an unkeyed chain can be recomputed by anyone who edited the log`,
          };
        }
        if (hmac && p.keyId !== hmac.keyId) {
          return {
            ok: false,
            file,
            line: n,
            problem: 'wrong-key',
            message: `line is keyed with key ${p.keyId}, not with the key given (${hmac.keyId})`,
          };
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
        } else if (p.chain === 'hmac-sha256' && !hmac) {
          keyedUnchecked++; // no key: only seq can be checked
        } else if (p.prev !== (p.chain === 'hmac-sha256' ? hmac! : sha).hash(last.bytes)) {
          const before = n > 1 ? `line ${n - 1}` : `the last line of ${files[fi - 1]}`;
          return {
            ok: false,
            file,
            line: n,
            problem: 'hash-mismatch',
            message: `hash mismatch: "prev" is not the ${p.chain === 'hmac-sha256' ? 'HMAC-SHA256 (with the key given)' : 'SHA-256'} of ${before} (that line was edited, or a line was inserted)`,
          };
        }
        last = { seq: p.seq, bytes: Buffer.from(bytes) };
        lastMode = p.chain;
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
    lastHash: last ? (lastMode === 'hmac-sha256' && hmac ? hmac : sha).hash(last.bytes) : null,
    guarantee: hmac ? 'keyed' : keyId !== null || keyedUnchecked > 0 ? 'sequence-only' : 'unkeyed',
    keyId,
  };
}
