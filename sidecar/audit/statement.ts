/**
 * Statement text as the audit trail may show it: PostgreSQL's own normalizer (literals become `$n`),
 * then a second pass over the scanner's tokens, because the normalizer leaves some literals in place
 * (the body of `PREPARE ... AS`, `EXECUTE p('...')`, column DEFAULTs, `COMMENT ON ... IS '...'`) and
 * keeps comments verbatim (a comment can hold anything). Text that does not parse is never shown: it
 * becomes a fixed placeholder. Nothing here ever returns a literal from the input.
 *
 * Beware (libpg-query 18.1.5): for a scanner error (an unterminated quoted string, dollar quote or
 * comment, a bad Unicode escape) `normalizeSync` and `fingerprintSync` do not throw: they RETURN
 * the error message, e.g. `unterminated quoted string at or near "'123-45-6789"`, literal included.
 * Only `parseSync` throws reliably. Hence the parse check below and looksLikeParserError().
 */
import { loadModule, normalizeSync, parseSync, type ScanToken, scanSync } from 'libpg-query';

export const UNPARSEABLE_STATEMENT = '<unparseable statement>';

/** Audit lines stay bounded: a normalized 10 MB multi-row INSERT is still 10 MB of `$n`. */
export const MAX_NORMALIZED_BYTES = 64 * 1024;
export const TRUNCATION_MARK = ' /* truncated */';

/** Scanner token names of literal constants (string, unicode string, bit, hex, float, integer). */
const LITERAL_TOKENS = new Set(['SCONST', 'USCONST', 'BCONST', 'XCONST', 'FCONST', 'ICONST']);
/** The same by token number (libpg_query 18 reports some of them as `UNKNOWN` by name). */
const LITERAL_TOKEN_TYPES = new Set([260, 261, 262, 263, 264, 266]);
const COMMENT_TOKENS = new Set(['SQL_COMMENT', 'C_COMMENT']);
const COMMENT_TOKEN_TYPES = new Set([275, 276]);

let loaded: Promise<void> | undefined;
let ready = false;

/** Load the parser (WASM) once; every function below needs it. Safe to call many times. */
export function loadAuditParser(): Promise<void> {
  loaded ??= loadModule().then(() => {
    ready = true;
  });
  return loaded;
}

function assertLoaded(): void {
  if (!ready) throw new Error('audit statement helpers used before loadAuditParser() resolved');
}

function isLiteral(t: ScanToken): boolean {
  return LITERAL_TOKENS.has(t.tokenName) || LITERAL_TOKEN_TYPES.has(t.tokenType);
}

function isComment(t: ScanToken): boolean {
  return COMMENT_TOKENS.has(t.tokenName) || COMMENT_TOKEN_TYPES.has(t.tokenType);
}

/**
 * Replace every literal token still present with a fresh `$n` (numbered after the highest `$n`
 * already there) and drop comments. Idempotent on text that is already clean, so the sidecar may
 * run it over the policy engine's `normalized` text as a second line of defence.
 */
export function scrubNormalized(text: string): string {
  assertLoaded();
  if (looksLikeParserError(text)) return UNPARSEABLE_STATEMENT;
  if (obviouslyClean(text)) return truncate(text.replace(/\s+/g, ' ').trim());
  // Scan at most the bytes that will be kept: scanning is the costly part on huge statements.
  const cut = truncate(text);
  const truncated = cut !== text;
  if (truncated) text = cut.slice(0, -TRUNCATION_MARK.length);
  let tokens: ScanToken[];
  try {
    tokens = scanSync(text).tokens;
  } catch {
    return UNPARSEABLE_STATEMENT;
  }
  // Scanner offsets are byte offsets into the UTF-8 text.
  const bytes = Buffer.from(text, 'utf8');
  let maxParam = 0;
  for (const m of text.matchAll(/\$(\d+)/g)) maxParam = Math.max(maxParam, Number(m[1]));
  const out: string[] = [];
  let pos = 0;
  // White space between tokens and dropped comments collapse to one space: one line per statement.
  let pendingSpace = false;
  for (const t of tokens) {
    if (t.start < pos || t.end > bytes.length) return UNPARSEABLE_STATEMENT; // scanner and text disagree
    if (t.start > pos) {
      // Between tokens there is only white space; anything else means the scanner skipped text.
      if (bytes.subarray(pos, t.start).toString('utf8').trim() !== '') return UNPARSEABLE_STATEMENT;
      pendingSpace = true;
    }
    pos = t.end;
    if (isComment(t)) {
      pendingSpace = true;
      continue;
    }
    if (pendingSpace && out.length > 0) out.push(' ');
    pendingSpace = false;
    out.push(isLiteral(t) ? `$${++maxParam}` : bytes.subarray(t.start, t.end).toString('utf8'));
  }
  // Anything after the last token must be white space; anything else means the scanner gave up.
  if (bytes.subarray(pos).toString('utf8').trim() !== '') return UNPARSEABLE_STATEMENT;
  const result = out.join('');
  return truncated ? result + TRUNCATION_MARK : result;
}

/**
 * The common case needs no scan: no quote of any kind, no comment, no dollar quote, and no digit
 * that starts a number (digits in names like `t1` and in `$1` are fine). Anything else is scanned.
 */
function obviouslyClean(text: string): boolean {
  return !/['"]|\/\*|--|\$(?!\d)|(?:^|[^A-Za-z0-9_$])\.?\d/.test(text);
}

/**
 * PostgreSQL's scanner and parser errors end `at or near "<text>"` or `at end of input`; a
 * normalizer that returned one instead of throwing would put the offending text in the log.
 */
export function looksLikeParserError(text: string): boolean {
  return / at or near ".*"$/s.test(text) || / at end of input$/.test(text);
}

function truncate(text: string): string {
  if (Buffer.byteLength(text, 'utf8') <= MAX_NORMALIZED_BYTES) return text;
  // Cut on a character boundary; a half `$12` left at the end is harmless.
  const cut = Buffer.from(text, 'utf8')
    .subarray(0, MAX_NORMALIZED_BYTES)
    .toString('utf8')
    .replace(/\uFFFD$/, '');
  return cut + TRUNCATION_MARK;
}

/**
 * The only form of a statement that may enter an audit event: normalized by libpg-query, residual
 * literals and comments scrubbed, or `<unparseable statement>`. Bind parameter values are never an
 * input here: pass the statement text only.
 */
export function auditStatement(sql: string): string {
  assertLoaded();
  let normalized: string;
  try {
    parseSync(sql); // throws for every statement PostgreSQL would reject, unlike normalizeSync
    normalized = normalizeSync(sql);
  } catch {
    return UNPARSEABLE_STATEMENT;
  }
  return scrubNormalized(normalized);
}
