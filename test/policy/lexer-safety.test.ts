/**
 * The text half of the lexer rule (policy/lexer-safety.ts), computed by judge() and cached with the
 * decision, and the session half (sidecar/lexer-guard.ts). Pure: the attacks through a live proxy are in
 * test/sidecar/lexer-attacks.test.ts, the differential fuzz in test/reliability/lexer-differential.test.ts.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { CompiledPolicy } from '../../api/compiled.js';
import { catalogQuery, DecisionCache, initParser, judge, searchPathQuery } from '../../policy/engine.js';
import { type LexerFacts, lexerFacts } from '../../policy/lexer-safety.js';
import { loadPolicyFiles } from '../../policy/load.js';
import { parseText, scanText } from '../../policy/parser.js';
import { lexerRefusal, UNSAFE_CLIENT_ENCODINGS, unsafeClientEncoding } from '../../sidecar/lexer-guard.js';

let policy: CompiledPolicy;
const ctx = { identity: { groups: [], databaseUser: 'app' }, database: 'app', searchPath: ['public'] };

beforeAll(async () => {
  await initParser();
  const r = loadPolicyFiles([
    {
      name: 'p.yaml',
      text: `
apiVersion: dbguard.io/v1alpha1
kind: DatabasePolicy
metadata: {name: p, namespace: n}
spec:
  upstream: {host: 127.0.0.1, port: 5432, sslmode: disable}
  defaultAction: Allow
`,
    },
  ]);
  if (!r.ok) throw new Error(r.errors.join('\n'));
  policy = r.compiled;
});

const facts = (sql: string): LexerFacts | undefined => judge(sql, ctx, policy).lexer;

describe('lexer facts of a text', () => {
  it.each([
    // text, ascii, scsNeutral, asciiNames, restoresSettings (breaksSettings: below)
    ['SELECT 1', true, true, true, false],
    ["SELECT 'a\\' || ' , ssn FROM t -- '", true, false, true, false],
    ["SELECT N'a\\'", true, false, true, false],
    ["SELECT 'a'\n'b\\'", true, false, true, false],
    ["SELECT U&'d\\0061t'", true, false, true, false],
    ["SELECT E'a\\'b', e'\\\\'", true, true, true, false],
    ['SELECT $$a\\$$, $q$\\$q$', true, true, true, false],
    ['SELECT 1 /* \\ */ -- \\', true, true, true, false],
    ["SELECT 'é'", false, true, true, false],
    ['SELECT 1 -- é', false, true, true, false],
    ['SELECT 1 AS "é"', false, true, false, false],
    ['SELECT 1 AS é', false, true, false, false],
    ["SELECT E'é\\\\' AS x", false, true, true, false],
    ['SET standard_conforming_strings = on', true, true, true, true],
    ['set STANDARD_CONFORMING_STRINGS to default; RESET client_encoding', true, true, true, true],
    ["SET NAMES 'UTF8'", true, true, true, true],
    ['RESET ALL', true, true, true, true],
    ['DISCARD ALL', true, true, true, true],
    ['SET standard_conforming_strings = on; SELECT 1', true, true, true, false],
    ['SET search_path = public', true, true, true, false],
    ['DISCARD PLANS', true, true, true, false],
  ])('%j', (sql, ascii, scsNeutral, asciiNames, restoresSettings) => {
    expect(facts(sql)).toEqual({ ascii, scsNeutral, asciiNames, restoresSettings, breaksSettings: false });
  });

  it.each([
    ['SET standard_conforming_strings = off', true],
    ['SET standard_conforming_strings = false', true],
    ['SET standard_conforming_strings = 0', true],
    ["SET standard_conforming_strings TO 'of'", true],
    ['SET LOCAL standard_conforming_strings = n', true],
    ['SET standard_conforming_strings = on', false],
    ['SET standard_conforming_strings = true', false],
    ['SET standard_conforming_strings = 1', false],
    ['SET standard_conforming_strings TO DEFAULT', false],
    ['RESET standard_conforming_strings', false],
    ["SET client_encoding = 'SJIS'", true],
    ["SET client_encoding = 'shift_jis_2004'", true],
    ["SET NAMES 'BIG5'", true],
    ['SET client_encoding = gbk', true],
    ["SET client_encoding = 'UTF8'", false],
    ["SET NAMES 'LATIN1'", false],
    ["SELECT set_config('standard_conforming_strings', 'off', false)", false],
    ["SELECT 1; SET client_encoding = 'UHC'", true],
  ])('%j breaks the settings: %s', (sql, breaks) => {
    expect(facts(sql)?.breaksSettings).toBe(breaks);
  });

  it('a text that does not parse has no facts (the guard assumes the worst)', () => {
    expect(facts("SELECT 'unterminated")).toBeUndefined();
  });

  it('texts sharing a cached numeric template keep their own facts', () => {
    const cache = new DecisionCache(100);
    const a = cache.judge('SET standard_conforming_strings = 1', ctx, policy, 'k');
    const b = cache.judge('SET standard_conforming_strings = 0', ctx, policy, 'k');
    expect(a.lexer).toMatchObject({ restoresSettings: true, breaksSettings: false });
    expect(b.lexer).toMatchObject({ restoresSettings: true, breaksSettings: true });
    const c = cache.judge('SELECT 1 FROM t WHERE id = 5', ctx, policy, 'k');
    const d = cache.judge('SELECT 1 FROM t WHERE id = 6', ctx, policy, 'k');
    expect(d.lexer).toEqual(c.lexer);
    expect(d.lexer).toBeDefined();
  });
});

describe("the proxy's own queries", () => {
  it('the catalog and search_path queries read the same under every setting (they run at safe points whatever the session set)', () => {
    for (const sql of [catalogQuery(policy), searchPathQuery]) {
      const f = lexerFacts(sql, scanText(sql), parseText(sql).statements);
      expect(f).toMatchObject({ ascii: true, scsNeutral: true });
    }
  });
});

describe('the session half', () => {
  const neutral = {
    ascii: true,
    scsNeutral: true,
    asciiNames: true,
    restoresSettings: false,
    breaksSettings: false,
  };
  const breaks = { ...neutral, restoresSettings: true, breaksSettings: true };
  const fix = { ...neutral, restoresSettings: true };
  const backslash = { ...neutral, scsNeutral: false };
  const nonAscii = { ...neutral, ascii: false };
  const nonAsciiName = { ...neutral, ascii: false, asciiNames: false };
  const session = (p: Record<string, string>, current = true) => ({
    serverParams: new Map(
      Object.entries({ standard_conforming_strings: 'on', client_encoding: 'UTF8', ...p }),
    ),
    serverParamsCurrent: current,
  });

  it.each([
    ['known on, UTF8, settled: everything the parser read', neutral, {}, true, 'ok'],
    ['a SET that breaks the settings, settled', breaks, {}, true, 'this statement'],
    [
      'a SET that breaks the settings, while off',
      breaks,
      { standard_conforming_strings: 'off' },
      true,
      'this statement',
    ],
    ['backslash text, settled on', backslash, {}, true, 'ok'],
    ['non-ASCII, settled UTF8', nonAsciiName, {}, true, 'ok'],
    ['no facts (did not parse), settled', undefined, {}, true, 'ok'],
    ['scs off', neutral, { standard_conforming_strings: 'off' }, true, 'standard_conforming_strings must'],
    ['scs off, the fix', fix, { standard_conforming_strings: 'off' }, true, 'ok'],
    [
      'scs not reported',
      neutral,
      { standard_conforming_strings: '' },
      true,
      'standard_conforming_strings must',
    ],
    ['SJIS', neutral, { client_encoding: 'SJIS' }, true, 'client_encoding SJIS'],
    ['SJIS, the fix', fix, { client_encoding: 'SJIS' }, true, 'ok'],
    [
      'SJIS, a fix with non-ASCII bytes',
      { ...fix, ascii: false },
      { client_encoding: 'SJIS' },
      true,
      'client_encoding SJIS',
    ],
    ['window: neutral', neutral, {}, false, 'ok'],
    ['window: backslash', backslash, {}, false, 'an earlier'],
    ['window: non-ASCII literal', nonAscii, {}, false, 'an earlier'],
    ['window: no facts', undefined, {}, false, 'an earlier'],
    ['window: host without the flag', neutral, {}, undefined, 'ok'],
    ['LATIN1: non-ASCII literal', nonAscii, { client_encoding: 'LATIN1' }, true, 'ok'],
    ['LATIN1: non-ASCII name', nonAsciiName, { client_encoding: 'LATIN1' }, true, 'names with'],
    ['EUC_JP: non-ASCII name', nonAsciiName, { client_encoding: 'EUC_JP' }, true, 'names with'],
  ])('%s', (_name, f, p, current, expected) => {
    const params = Object.fromEntries(Object.entries(p).filter(([, v]) => v !== ''));
    const s = session(params as Record<string, string>, current as boolean);
    if ((p as Record<string, string>).standard_conforming_strings === '')
      s.serverParams.delete('standard_conforming_strings');
    if (current === undefined) delete (s as { serverParamsCurrent?: boolean }).serverParamsCurrent;
    const got =
      lexerRefusal(f as LexerFacts | undefined, s)?.message.replace(/^dbguard: (\S+ \S+).*/s, '$1') ?? 'ok';
    expect(got).toBe(expected);
  });

  it('every unsafe encoding by its canonical name and its aliases; the safe ones pass', () => {
    for (const e of UNSAFE_CLIENT_ENCODINGS) expect(unsafeClientEncoding(e)).toBe(true);
    for (const e of [
      'Shift_JIS',
      'shiftjis',
      'WIN932',
      'ms_kanji',
      'big5',
      'WIN950',
      'cp936',
      'WIN949',
      'WIN1361',
      'gb18030',
      'uhc',
      'johab',
    ])
      expect(unsafeClientEncoding(e), e).toBe(true);
    for (const e of [
      'UTF8',
      'LATIN1',
      'EUC_JP',
      'EUC_KR',
      'EUC_CN',
      'EUC_TW',
      'WIN1252',
      'SQL_ASCII',
      'KOI8R',
      'MULE_INTERNAL',
    ])
      expect(unsafeClientEncoding(e), e).toBe(false);
  });
});
