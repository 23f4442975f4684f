/**
 * A Bind message rewritten to name another prepared statement, everything else (portal, formats,
 * parameter values) unchanged. The session uses it to make the server refuse a Bind it must not run.
 */
import { ProtocolViolation } from './codec.js';

export function rebindTo(raw: Buffer, statement: string): Buffer {
  // raw: 'B', int32 length, portal\0, statement\0, the rest
  const portalEnd = raw.indexOf(0, 5);
  const stmtEnd = portalEnd < 0 ? -1 : raw.indexOf(0, portalEnd + 1);
  if (stmtEnd < 0) throw new ProtocolViolation('Bind: unterminated name');
  const name = Buffer.from(`${statement}\0`, 'latin1');
  const out = Buffer.allocUnsafe(raw.length - (stmtEnd - portalEnd) + name.length - 1 + 1);
  raw.copy(out, 0, 0, portalEnd + 1);
  name.copy(out, portalEnd + 1);
  raw.copy(out, portalEnd + 1 + name.length, stmtEnd + 1);
  out.writeInt32BE(out.length - 1, 1);
  return out;
}
