/**
 * sqlcommenter tags (`/*key='value',key2='value2'*\/`, keys and values URL-encoded) from a comment
 * at the start or the end of the text. Declared by the client, never verified: audit only.
 */
import type { ScanToken } from './parser.js';

const MAX_TAGS = 32;
const MAX_LEN = 512;

function decode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

export function parseSqlcommenterComment(comment: string): Record<string, string> | undefined {
  if (!comment.startsWith('/*') || !comment.endsWith('*/')) return undefined;
  const body = comment.slice(2, -2).trim();
  if (!body) return undefined;
  const out: Record<string, string> = {};
  let i = 0;
  let n = 0;
  while (i < body.length && n < MAX_TAGS) {
    const eq = body.indexOf('=', i);
    if (eq < 0) return undefined;
    const key = body.slice(i, eq).trim();
    if (!/^[A-Za-z0-9_.%-]+$/.test(key)) return undefined;
    if (body[eq + 1] !== "'") return undefined;
    let j = eq + 2;
    let value = '';
    while (j < body.length && body[j] !== "'") {
      if (body[j] === '\\' && j + 1 < body.length) j++;
      value += body[j++];
    }
    if (j >= body.length) return undefined;
    out[decode(key).slice(0, MAX_LEN)] = decode(value).slice(0, MAX_LEN);
    n++;
    i = j + 1;
    while (i < body.length && (body[i] === ',' || body[i] === ' ')) i++;
  }
  return n ? out : undefined;
}

/** Tags from the first comment before any other token or the last comment after all others. */
export function sqlcommenterTags(tokens: ScanToken[]): Record<string, string> | undefined {
  const isComment = (t: ScanToken) => t.tokenName === 'C_COMMENT';
  const significant = tokens.filter((t) => t.text !== ';' && t.tokenName !== 'SQL_COMMENT');
  const lastT = significant[significant.length - 1];
  if (lastT && isComment(lastT)) {
    const tags = parseSqlcommenterComment(lastT.text);
    if (tags) return tags;
  }
  const firstT = significant[0];
  if (firstT && isComment(firstT)) return parseSqlcommenterComment(firstT.text);
  return undefined;
}
