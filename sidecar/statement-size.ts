/**
 * The limit on a statement the proxy judges (issue #18, "one client cannot stall or kill the rest").
 * Judging parses the statement on the proxy's one event loop, and parse trees of a large statement take
 * many times its size: a 20 MB IN-list stalled every other session for seconds and grew the proxy past
 * its container's memory limit. So a Query or Parse message over `maxStatementSize` is never assembled:
 * the framer drops its bytes as they arrive (SkippedFrame), and the session answers it with an error
 * and carries on. Bind values and COPY data are not judged and keep the general `maxMessageSize`.
 *
 * SQLSTATE 54000 (program_limit_exceeded), not 42501: nothing about the statement was judged, no rule
 * refused it; it exceeds a size limit, which is what PostgreSQL reports its own limits with, and a
 * client or operator reading it knows that a smaller statement (or a raised limit) is the way out,
 * not a permission.
 */
import { ProtocolViolation, T } from './protocol/codec.js';
import type { SkippedFrame } from './protocol/framer.js';

/** `dbguard proxy` and startProxy's default: 1 MiB, far above hand-written or ORM-generated SQL. */
export const DEFAULT_MAX_STATEMENT_SIZE = 1024 * 1024;
export const STATEMENT_TOO_LARGE_SQLSTATE = '54000';

/** The framer's skipOver for a statement limit of `max` bytes (whole message, header included). */
export function skipOverStatementLimit(max: number): (type: number) => number | undefined {
  const body = max - 4;
  return (type) => (type === T.Query || type === T.Parse ? body : undefined);
}

export interface OversizedStatement {
  reject: { action: 'reject'; sqlstate: string; message: string; hint: string };
  /** for a Parse: the statement name it named (the refusal is a failed Parse of the same name) */
  parseName?: Buffer;
}

export function oversizedStatement(f: SkippedFrame, max: number): OversizedStatement {
  const reject = {
    action: 'reject' as const,
    sqlstate: STATEMENT_TOO_LARGE_SQLSTATE,
    message: `dbguard: statement too large to judge (${f.length + 1} bytes, limit ${max}); it was not run`,
    hint: 'pass large values as bind parameters or with COPY, or raise --max-statement-size',
  };
  if (f.type !== T.Parse) return { reject };
  const end = f.prefix.indexOf(0);
  if (end < 0) throw new ProtocolViolation('Parse: statement name too long');
  return { reject, parseName: f.prefix.subarray(0, end) };
}
