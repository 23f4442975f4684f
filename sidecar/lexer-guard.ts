/**
 * One lexer truth, fail closed: a statement goes upstream only when the server will read it exactly
 * as the proxy judged it. The proxy parses as PostgreSQL does with standard_conforming_strings on and
 * a client encoding whose bytes it round-trips (UTF-8, or any other safe encoding byte for byte); the
 * session's real values come from the server's own ParameterStatus reports (start-up response and
 * after every change), never from reading SET statements, so SET, SET LOCAL, set_config(), RESET,
 * rollbacks, functions, start-up options and role or database defaults are all seen.
 *
 * A SET that the text shows would make the values ones the proxy refuses is refused before it runs
 * (LexerFacts.breaksSettings). Then three cases refuse (SQLSTATE 42501; the audit event is a deny
 * naming no command or object):
 * - standard_conforming_strings is off (or unreported): the server reads `\` in plain strings as an
 *   escape and the proxy cannot (also its own masking rewrite assumes on);
 * - client_encoding is one whose multibyte characters can contain ASCII bytes (SJIS, SHIFT_JIS_2004,
 *   BIG5, GBK, UHC, GB18030, JOHAB): a trail byte 0x5c (or another ASCII byte) is a backslash to the proxy;
 * - the values are not known yet: PostgreSQL (14 and later) reports a changed setting just before
 *   ReadyForQuery, so while an earlier message of the session is unanswered (a pipeline, several
 *   Query messages sent without waiting) any of them may have changed it. Then only a text that reads
 *   the same under every value passes: pure ASCII, no backslash in a plain string constant.
 * In the first two cases the statements that restore the settings (SET or RESET of them, `SET NAMES`,
 * RESET ALL, DISCARD ALL), alone in their text, still pass so the session can recover.
 *
 * A fourth case keeps names exact: with a client encoding other than UTF8 the proxy reads the bytes
 * as latin1, so a non-ASCII identifier would not be compared with the catalog's and the policy's
 * names as the server compares them; such a text is refused.
 */
import {
  type LexerFacts,
  UNKNOWN_LEXER_FACTS,
  UNSAFE_CLIENT_ENCODINGS,
  unsafeClientEncoding,
  utf8Encoding,
} from '../policy/lexer-safety.js';

export { UNSAFE_CLIENT_ENCODINGS, unsafeClientEncoding };

/** The session facts the guard needs (a SessionHandle has them). */
export interface LexerSession {
  readonly serverParams: ReadonlyMap<string, string>;
  /** see SessionHandle.serverParamsCurrent; undefined counts as not current */
  readonly serverParamsCurrent?: boolean;
}

export interface LexerRefusal {
  /** what is wrong, then how to fix it */
  message: string;
}

const FIX_SCS =
  "SET standard_conforming_strings = on (and remove 'off' from the role's, database's or connection's settings)";
const FIX_ENC =
  "SET client_encoding = 'UTF8' (and remove the encoding from the connection's, role's or database's settings)";

/** Why this text must not go upstream now, or undefined when the server reads it as the proxy did. */
export function lexerRefusal(facts: LexerFacts | undefined, s: LexerSession): LexerRefusal | undefined {
  const f = facts ?? UNKNOWN_LEXER_FACTS;
  const encoding = s.serverParams.get('client_encoding') ?? 'UTF8';
  const scs = s.serverParams.get('standard_conforming_strings');
  // The common case, per statement: nothing to look at further.
  if (
    encoding === 'UTF8' &&
    scs === 'on' &&
    !f.breaksSettings &&
    (s.serverParamsCurrent === true || (f.ascii && f.scsNeutral))
  )
    return undefined;
  if (f.breaksSettings) {
    // Told in advance from the text; other routes (set_config, functions, defaults) are caught by the
    // server's report afterwards.
    return {
      message:
        'dbguard: this statement would set standard_conforming_strings off or client_encoding to an encoding whose characters can contain ASCII bytes; the proxy could then not read statements as the server does, so it is refused.' +
        ` Keep standard_conforming_strings on and client_encoding UTF8 (or another encoding PostgreSQL accepts for a server).`,
    };
  }
  const recovery = f.restoresSettings && f.ascii && f.scsNeutral;
  if (unsafeClientEncoding(encoding) && !recovery) {
    return {
      message:
        `dbguard: client_encoding ${encoding} is not supported: its multibyte characters can contain ASCII bytes (a quote or a backslash), so the proxy cannot read statements as the server does; every statement is refused until it is changed.` +
        ` To fix it: ${FIX_ENC}.`,
    };
  }
  if (scs !== 'on' && !recovery) {
    return {
      message:
        `dbguard: standard_conforming_strings must be on (it is ${scs ?? 'not reported by the server'}): with it off the server reads a backslash in a string as an escape, which the proxy does not; every statement is refused until it is on.` +
        ` To fix it: ${FIX_SCS}.`,
    };
  }
  if (s.serverParamsCurrent !== true && !(f.ascii && f.scsNeutral)) {
    return {
      message:
        'dbguard: an earlier statement of this session is still running and may change standard_conforming_strings or client_encoding; a statement with non-ASCII characters or a backslash in a string constant is refused until the earlier ones are answered.' +
        " To fix it: wait for the earlier statements' results (send Sync and read to ReadyForQuery) before sending this one, or write the backslash in an E'' string.",
    };
  }
  if (!utf8Encoding(encoding) && !f.asciiNames) {
    return {
      message:
        `dbguard: names with non-ASCII characters need client_encoding UTF8 (it is ${encoding}); the proxy could not compare them with the policy's and the catalog's names as the server does.` +
        ` To fix it: ${FIX_ENC}, or use only ASCII outside string constants.`,
    };
  }
  return undefined;
}
