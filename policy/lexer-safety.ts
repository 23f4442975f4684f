/**
 * Facts about how a statement text would be read under other values of the server settings that
 * change lexing. The proxy parses with libpg-query, whose lexer always runs with
 * standard_conforming_strings on and reads the text as UTF-8 (the session decodes other client
 * encodings byte for byte, as latin1). The server reads the text with the session's own values. These
 * facts tell the sidecar (sidecar/lexer-guard.ts) whether the proxy's reading is also the server's
 * when the session's values are unknown (a pipeline window) or not the parser's.
 *
 * Why these facts are enough (PostgreSQL's scan.l):
 * - standard_conforming_strings changes one thing: inside a plain `'...'` or `N'...'` string, a
 *   backslash escapes the next character when it is off. E'' strings, dollar quotes, quoted
 *   identifiers, comments and every other token lex the same either way; `U&'...'` with the setting
 *   off is an ERROR. So a text without a backslash in any string constant other than E'' or a dollar
 *   quote has the same tokens under both values (the lexers agree up to the first difference, and
 *   there is none).
 * - backslash_quote never changes a reading: `\'` where it is not allowed is an ERROR.
 * - Every encoding PostgreSQL accepts as a server encoding, and every client encoding but SJIS,
 *   SHIFT_JIS_2004, BIG5, GBK, UHC, GB18030 and JOHAB, encodes ASCII as itself and uses only bytes
 *   with the high bit set in multibyte characters; the lexer treats every high-bit byte as part of an
 *   identifier or string. So a pure-ASCII text reads the same under every client encoding, and any
 *   text reads with the same token boundaries under every safe one.
 */
import type { ScanToken } from './parser.js';

export interface LexerFacts {
  /** every character is ASCII: read the same under every client encoding */
  ascii: boolean;
  /**
   * no backslash in a string constant other than E'' or a dollar quote (a comment may hold one):
   * read the same under standard_conforming_strings on and off
   */
  scsNeutral: boolean;
  /**
   * no non-ASCII character outside string constants and comments (identifiers, quoted identifiers):
   * names are compared with the catalog exactly only in UTF-8 (see sidecar/lexer-guard.ts)
   */
  asciiNames: boolean;
  /**
   * every statement only sets or resets standard_conforming_strings or client_encoding (`SET NAMES`),
   * or is `RESET ALL` / `DISCARD ALL`: what a session needs to get back to values the proxy reads
   */
  restoresSettings: boolean;
  /**
   * a statement sets standard_conforming_strings to a value other than on, or client_encoding to an
   * encoding the proxy refuses (UNSAFE_CLIENT_ENCODINGS): the change is refused before it runs
   */
  breaksSettings: boolean;
}

/** Nothing known (a text that did not parse): every property is assumed false. */
export const UNKNOWN_LEXER_FACTS: LexerFacts = Object.freeze({
  ascii: false,
  scsNeutral: false,
  asciiNames: false,
  restoresSettings: false,
  breaksSettings: false,
});

/**
 * PostgreSQL's client-only encodings, by the canonical names ParameterStatus reports: their multibyte
 * characters can contain ASCII bytes (a trail byte 0x5c is a backslash to any other reader).
 */
export const UNSAFE_CLIENT_ENCODINGS: ReadonlySet<string> = new Set([
  'SJIS',
  'SHIFT_JIS_2004',
  'BIG5',
  'GBK',
  'UHC',
  'GB18030',
  'JOHAB',
]);

const canonical = (enc: string) => enc.toUpperCase().replace(/[^A-Z0-9]/g, '');
/** With PostgreSQL's aliases for them (its encoding name table), compared without punctuation. */
const UNSAFE_CANONICAL = new Set(
  [
    ...UNSAFE_CLIENT_ENCODINGS,
    'SHIFTJIS',
    'MSKANJI',
    'WIN932',
    'WIN950',
    'WIN936',
    'CP936',
    'WIN949',
    'WIN1361',
  ].map(canonical),
);

/** Is this client_encoding value one the proxy refuses? Aliases count too (the server reports canonical names). */
export function unsafeClientEncoding(enc: string): boolean {
  return UNSAFE_CANONICAL.has(canonical(enc));
}

/** Is this client_encoding value UTF8 (or its alias UNICODE)? */
export function utf8Encoding(enc: string): boolean {
  const c = canonical(enc);
  return c === 'UTF8' || c === 'UNICODE';
}

/** The values PostgreSQL's boolean parser reads as true (prefixes of true/yes, on, 1). */
const ON = new Set(['t', 'tr', 'tru', 'true', 'y', 'ye', 'yes', 'on', '1']);

function constantText(arg: any): string | undefined {
  const c = arg?.A_Const;
  if (!c) return undefined;
  if (c.sval) return String(c.sval.sval ?? '');
  if (c.ival) return String(c.ival.ival ?? 0);
  if (c.boolval) return c.boolval.boolval ? 'true' : 'false';
  return undefined;
}

/** A `SET` that makes the session's values ones the proxy refuses, told from the text alone. */
function breaksSetting(stmt: Record<string, any>): boolean {
  const set = stmt.VariableSetStmt;
  if (set?.kind !== 'VAR_SET_VALUE' || typeof set.name !== 'string') return false;
  const name = set.name.toLowerCase();
  const values = (set.args ?? []).map(constantText);
  if (name === 'standard_conforming_strings')
    return values.some((v: string | undefined) => v === undefined || !ON.has(v.trim().toLowerCase()));
  if (name === 'client_encoding')
    return values.some((v: string | undefined) => v !== undefined && unsafeClientEncoding(v));
  return false;
}

const LEXER_SETTINGS = new Set(['standard_conforming_strings', 'client_encoding']);

/** Does this raw statement (a `{ VariableSetStmt: ... }` wrapper) only set or reset a lexer setting? */
function restoresSetting(stmt: Record<string, any>): boolean {
  const set = stmt.VariableSetStmt;
  if (set) {
    if (set.kind === 'VAR_RESET_ALL') return true;
    return typeof set.name === 'string' && LEXER_SETTINGS.has(set.name.toLowerCase());
  }
  return stmt.DiscardStmt?.target === 'DISCARD_ALL';
}

const NON_ASCII = /[^\u0000-\u007f]/;

/** A string constant token that reads the same whatever standard_conforming_strings is. */
function escapeOrDollar(text: string): boolean {
  const c = text.charCodeAt(0);
  return c === 0x24 /* $ */ || ((c === 0x45 || c === 0x65) /* E e */ && text.charCodeAt(1) === 0x27);
}

const isComment = (t: ScanToken) => t.tokenName === 'C_COMMENT' || t.tokenName === 'SQL_COMMENT';

/**
 * The facts of one text. `tokens` are libpg-query's scan of `sql` (byte offsets in its UTF-8 form),
 * `statements` the parse tree's raw statements; both come from judge(), which has them anyway.
 */
export function lexerFacts(
  sql: string,
  tokens: readonly ScanToken[] | undefined,
  statements: readonly { stmt: Record<string, any> }[],
): LexerFacts {
  const ascii = !NON_ASCII.test(sql);
  const backslash = sql.includes('\\');
  const restoresSettings = statements.length > 0 && statements.every((s) => restoresSetting(s.stmt));
  const breaksSettings = statements.some((s) => breaksSetting(s.stmt));
  if (!backslash && ascii)
    return { ascii, scsNeutral: true, asciiNames: true, restoresSettings, breaksSettings };
  if (!tokens || tokens.length === 0) {
    // No scan: judge by the raw characters alone (stricter, never wrong).
    return { ascii, scsNeutral: !backslash, asciiNames: ascii, restoresSettings, breaksSettings };
  }
  const bytes = Buffer.from(sql, 'utf8');
  let scsNeutral = true;
  let asciiNames = true;
  // Non-ASCII bytes may sit only inside string constants and comments; count them token by token.
  let highBytes = 0;
  for (const b of bytes) if (b >= 0x80) highBytes++;
  let highInside = 0;
  for (const t of tokens) {
    const text = bytes.subarray(t.start, t.end).toString('utf8');
    const comment = isComment(t);
    if (scsNeutral && !comment && text.includes('\\') && !(t.tokenName === 'SCONST' && escapeOrDollar(text)))
      scsNeutral = false;
    if (highBytes > 0 && (comment || t.tokenName === 'SCONST')) {
      for (let i = t.start; i < t.end; i++) if (bytes[i]! >= 0x80) highInside++;
    }
  }
  if (highInside < highBytes) asciiNames = false;
  // A backslash outside every token (the scanner skipped it): not expected, but never call it neutral.
  if (scsNeutral && backslash) {
    let inTokens = 0;
    for (const t of tokens) for (let i = t.start; i < t.end; i++) if (bytes[i] === 0x5c) inTokens++;
    let all = 0;
    for (const b of bytes) if (b === 0x5c) all++;
    if (inTokens < all) scsNeutral = false;
  }
  return { ascii, scsNeutral, asciiNames, restoresSettings, breaksSettings };
}

/** Both texts' facts at once (a masking rewrite's output must read the same as well). */
export function combineLexerFacts(a: LexerFacts, b: LexerFacts): LexerFacts {
  return {
    ascii: a.ascii && b.ascii,
    scsNeutral: a.scsNeutral && b.scsNeutral,
    asciiNames: a.asciiNames && b.asciiNames,
    restoresSettings: a.restoresSettings,
    breaksSettings: a.breaksSettings,
  };
}
