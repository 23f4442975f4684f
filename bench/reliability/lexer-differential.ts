/**
 * Differential fuzzing of the lexer (issue 17 item 2): the proxy must read every statement as the
 * server does, under every value of the settings that change lexing, or refuse it.
 *
 * A generated text mixes quotes, doubled quotes, backslashes, E'', U&'', dollar quotes with tags,
 * nested comments, semicolons, multibyte characters and payloads built to be read two ways (`'a\' ||
 * ' , secret FROM t -- '`). It is rendered to bytes in a client encoding and sent through a governed
 * proxy with standard_conforming_strings and client_encoding set beforehand (`settled`: answered
 * before the text is sent) or in the same pipeline (`pipelined`: the proxy judges the text before the
 * server has reported the change). The proxy's view is judge() of the text as the session decodes
 * it; the server's view is what it answers: a CommandComplete per statement (its tag) and, for a
 * SELECT, the table OIDs in its RowDescription. The property: the proxy refused the text (a
 * `dbguard:` error and nothing else), or the server ran a prefix of the proxy's statements with the
 * same command tags and read only relations the proxy saw (a server-side error ends the prefix; a
 * parse error at the server means nothing ran).
 *
 * Used by test/reliability/lexer-differential.test.ts (fixed budget in `make test`, regression cases
 * from test/reliability/lexer-regressions.json) and `npm run fuzz`.
 */
import fc from 'fast-check';
import type { CompiledPolicy } from '../../api/compiled.js';
import { judge } from '../../policy/engine.js';
import {
  cstring,
  errorFields,
  int16,
  int32,
  msg,
  type RawConn,
  type RawMessage,
} from '../../test/support/wire.js';

/** An ASCII fragment, or a multibyte character (index into the encoding's list). */
export type Piece = string | { mb: number };

export type Encoding = 'UTF8' | 'LATIN1' | 'EUC_JP' | 'SJIS';
export const ENCODINGS: readonly Encoding[] = ['UTF8', 'LATIN1', 'EUC_JP', 'SJIS'];

/** Characters per encoding; SJIS ones have trail byte 0x5c (a backslash in ASCII) on purpose. */
const MB: Record<Encoding, number[][]> = {
  UTF8: [
    [0xc3, 0xa9],
    [0xe8, 0xa1, 0xa8],
    [0xf0, 0x9f, 0x98, 0x80],
  ],
  LATIN1: [[0xe9], [0xfc], [0xa7]],
  EUC_JP: [
    [0xb4, 0xc1],
    [0xa4, 0xa2],
    [0x8e, 0xb1],
  ],
  SJIS: [
    [0x95, 0x5c],
    [0x83, 0x5c],
    [0x82, 0xa0],
  ],
};

/** How the session decodes the bytes (sidecar/session.ts): UTF-8, or byte for byte. */
const DECODE: Record<Encoding, BufferEncoding> = {
  UTF8: 'utf8',
  LATIN1: 'latin1',
  EUC_JP: 'latin1',
  SJIS: 'latin1',
};

export interface Combo {
  scs: 'on' | 'off';
  encoding: Encoding;
  /**
   * settled: the change is answered (ReadyForQuery) before the text is sent; pipelined: both in one
   * write; flushed: the change runs by Parse/Bind/Execute + Flush and has completed, but without Sync
   * the server has not reported it yet when the text arrives
   */
  mode: 'settled' | 'pipelined' | 'flushed';
}

export const COMBOS: readonly Combo[] = ENCODINGS.flatMap((encoding) =>
  (['on', 'off'] as const).flatMap((scs) =>
    (['settled', 'pipelined', 'flushed'] as const).map((mode) => ({ scs, encoding, mode })),
  ),
);

export function render(pieces: readonly Piece[], enc: Encoding): Buffer {
  return Buffer.concat(
    pieces.map((p) =>
      typeof p === 'string' ? Buffer.from(p, 'latin1') : Buffer.from(MB[enc][p.mb % MB[enc].length]!),
    ),
  );
}

/** The text for humans and failure messages: multibyte characters as «n». */
export function show(pieces: readonly Piece[]): string {
  return pieces.map((p) => (typeof p === 'string' ? p : `«${p.mb}»`)).join('');
}

// ------------------------------------------------------------------ generator

export function arbText(schema: string): fc.Arbitrary<Piece[]> {
  const table = fc.constantFrom(`${schema}.t`, `${schema}.u`);
  const mb: fc.Arbitrary<Piece> = fc.nat(5).map((i) => ({ mb: i }));
  const payload = fc.constantFrom(
    ` , secret FROM ${schema}.t -- `,
    ` , (SELECT secret FROM ${schema}.t LIMIT 1) -- `,
    `; SELECT secret FROM ${schema}.t; -- `,
    ` FROM ${schema}.t -- `,
    ` , secret FROM ${schema}.t /* `,
    ` */ , secret FROM ${schema}.t -- `,
  );
  // Mostly fragments that read the same under every setting, so texts also run inside the pipeline window.
  const inner: fc.Arbitrary<Piece> = fc.oneof(
    {
      weight: 6,
      arbitrary: fc.constantFrom('a', 'x y', "''", ';', '--', '/*', '*/', '$', '$$', '$a$', '"', '\n'),
    },
    { weight: 2, arbitrary: fc.constantFrom('\\', '\\\\', "\\'", '\\x41', '\\0061') },
    { weight: 1, arbitrary: mb },
    { weight: 2, arbitrary: payload },
  );
  const content = fc.array(inner, { maxLength: 5 });
  const tag = fc.constantFrom('', 'a', 'q1', 'a$');
  const literal: fc.Arbitrary<Piece[]> = fc.oneof(
    content.map((c) => ["'", ...c, "'"]),
    content.map((c) => ["E'", ...c, "'"]),
    content.map((c) => ["U&'", ...c, "'"]),
    content.map((c) => ["N'", ...c, "'"]),
    fc.tuple(tag, content).map(([t, c]) => [`$${t}$`, ...c, `$${t}$`]),
    content.map((c) => ['"', ...c, '"']),
    fc.constantFrom<Piece[]>(['1'], ['42'], ['secret'], ['c1'], ['NULL']),
  );
  const comment: fc.Arbitrary<Piece[]> = fc.oneof(
    fc.tuple(content, content, content).map(([a, b, c]) => ['/*', ...a, '/*', ...b, '*/', ...c, '*/']),
    content.map((c) => ['--', ...c, '\n']),
  );
  const item: fc.Arbitrary<Piece[]> = fc.oneof(
    { weight: 3, arbitrary: literal },
    { weight: 2, arbitrary: fc.tuple(literal, literal).map(([a, b]) => [...a, ' || ', ...b]) },
    { weight: 1, arbitrary: fc.tuple(comment, literal).map(([c, l]) => [...c, ' ', ...l]) },
    { weight: 1, arbitrary: fc.tuple(literal, mb).map(([l, m]) => [...l, ' AS "', m, '"']) },
  );
  const statement: fc.Arbitrary<Piece[]> = fc
    .tuple(fc.array(item, { minLength: 1, maxLength: 3 }), fc.option(table, { nil: undefined }))
    .map(([items, from]) => {
      const out: Piece[] = ['SELECT '];
      items.forEach((it, i) => {
        out.push(...(i ? [', '] : []), ...it);
      });
      if (from) out.push(` FROM ${from}`);
      return out;
    });
  // The shapes, with their variations, are drawn often.
  const twoReadings: fc.Arbitrary<Piece[]> = fc
    .tuple(
      fc.constantFrom("'a\\'", "'\\\\'", "N'a\\'", "'a'\n'b\\'"),
      payload,
      fc.constantFrom("'", "'; SELECT 1 --"),
    )
    .map(([open, p, close]) => ['SELECT ', open, ' || ', "'", p, close]);
  const multibyteQuote: fc.Arbitrary<Piece[]> = fc
    .tuple(fc.constantFrom("E'", "'"), mb, payload)
    .map(([open, m, p]) => ['SELECT ', open, m, "'", p, "'"]);
  return fc.oneof(
    {
      weight: 4,
      arbitrary: fc
        .array(fc.tuple(statement, fc.constantFrom(';', '; ', ';\n', ' ; /* x */ ')), {
          minLength: 1,
          maxLength: 3,
        })
        .map((xs) => xs.flatMap(([s, sep], i) => (i === xs.length - 1 ? s : [...s, sep]))),
    },
    { weight: 1, arbitrary: twoReadings },
    { weight: 1, arbitrary: multibyteQuote },
  );
}

// ------------------------------------------------------------------ one case against the live proxy

const query = (b: Buffer) => msg('Q', Buffer.concat([b, Buffer.from([0])]));

// set_config, not SET: a SET to a value the proxy refuses is refused before it runs.
const settingsText = (c: Combo) =>
  `SELECT set_config('standard_conforming_strings', '${c.scs}', false), set_config('client_encoding', '${c.encoding}', false)`;
const RESET = "SET standard_conforming_strings = on; SET client_encoding = 'UTF8'";

/** The proxy's view and the server's differ (not a harness failure: a connection lost, a timeout). */
export class DifferentialMismatch extends Error {
  override name = 'DifferentialMismatch';
}

export interface Outcome {
  kind: 'refused' | 'ran' | 'server-error';
  detail?: string;
}

export interface DifferentialEnv {
  conn: RawConn;
  /** a new connection through the proxy, after a case left `conn` in an unknown state */
  reconnect(): Promise<RawConn>;
  policy: CompiledPolicy;
  /** relation name (`schema.table`) → OID */
  oids: Map<string, number>;
  database: string;
  user: string;
}

function tableOids(body: Buffer): number[] {
  const n = body.readInt16BE(0);
  const out: number[] = [];
  let pos = 2;
  for (let i = 0; i < n; i++) {
    pos = body.indexOf(0, pos) + 1;
    const oid = body.readUInt32BE(pos);
    if (oid !== 0) out.push(oid);
    pos += 18;
  }
  return out;
}

async function readUntilReady(conn: RawConn): Promise<RawMessage[]> {
  return conn.readUntil('Z', 10_000);
}

/** Sends the text under the combination; throws (with what differed) when the proxy's view is not the server's. */
export async function runCase(
  env: DifferentialEnv,
  pieces: readonly Piece[],
  combo: Combo,
): Promise<Outcome> {
  const { conn } = env;
  const bytes = render(pieces, combo.encoding);
  const set = query(Buffer.from(settingsText(combo)));
  // The reset rides behind the text (it reads the same under every setting, so the proxy lets it through).
  const reset = query(Buffer.from(RESET));
  if (combo.mode === 'settled') {
    conn.send(set);
    const s = await readUntilReady(conn);
    const e = s.find((m) => m.type === 'E');
    if (e) throw new Error(`setting ${settingsText(combo)} failed: ${JSON.stringify(errorFields(e.body))}`);
    conn.send(Buffer.concat([query(bytes), reset]));
  } else if (combo.mode === 'pipelined') {
    conn.send(Buffer.concat([set, query(bytes), reset]));
    await readUntilReady(conn);
  } else {
    const sql = `SELECT set_config('standard_conforming_strings', '${combo.scs}', false), set_config('client_encoding', '${combo.encoding}', false)`;
    conn.send(
      Buffer.concat([
        msg('P', Buffer.concat([cstring(''), cstring(sql), int16(0)])),
        msg('B', Buffer.concat([cstring(''), cstring(''), int16(0), int16(0), int16(0)])),
        msg('E', Buffer.concat([cstring(''), int32(0)])),
        msg('H'),
      ]),
    );
    for (;;) {
      const m = await conn.next(10_000);
      if (!m) throw new Error('connection closed');
      if (m.type === 'E') throw new Error(`set_config failed: ${JSON.stringify(errorFields(m.body))}`);
      if (m.type === 'C') break;
    }
    conn.send(Buffer.concat([query(bytes), reset]));
  }
  const answer = await readUntilReady(conn);
  const r = await readUntilReady(conn);
  const resetError = r.find((m) => m.type === 'E');
  if (resetError) throw new Error(`reset failed: ${JSON.stringify(errorFields(resetError.body))}`);
  return compare(env, bytes.toString(DECODE[combo.encoding]), answer);
}

const SERVER_PARSE_ERRORS = /^(42601|22P06|22025|22021|22P05|0A000|42P22|54001)$/;

function compare(env: DifferentialEnv, text: string, answer: RawMessage[]): Outcome {
  const errors = answer.filter((m) => m.type === 'E').map((m) => errorFields(m.body));
  const ran = answer.filter((m) => m.type === 'C' || m.type === 'T' || m.type === 'D' || m.type === 'I');
  const first = errors[0];
  if (first?.M?.startsWith('dbguard:')) {
    if (ran.length)
      throw new DifferentialMismatch(
        `refused but the server answered: ${answer.map((m) => m.type).join('')}`,
      );
    return { kind: 'refused', detail: first.M };
  }
  // Forwarded: the proxy's view is judge() of the text as the session decoded it.
  const d = judge(
    text,
    { identity: { groups: [], databaseUser: env.user }, database: env.database, searchPath: [] },
    env.policy,
  );
  if (d.kind === 'deny')
    throw new DifferentialMismatch(`the proxy forwarded a text judge() denies: ${d.message}`);
  const expected = d.statements;
  let i = 0;
  for (const m of answer) {
    if (m.type === 'T') {
      const st = expected[i];
      if (!st)
        throw new DifferentialMismatch(
          `the server returned rows for statement ${i + 1}; the proxy saw ${expected.length}`,
        );
      const allowed = new Set(st.objects.map((o) => env.oids.get(o)).filter((x) => x !== undefined));
      for (const oid of tableOids(m.body)) {
        if (!allowed.has(oid)) {
          throw new DifferentialMismatch(
            `statement ${i + 1} read relation oid ${oid}; the proxy saw objects ${JSON.stringify(st.objects)}`,
          );
        }
      }
    } else if (m.type === 'C') {
      const tag = m.body
        .subarray(0, m.body.length - 1)
        .toString('latin1')
        .replace(/( \d+)+$/, '');
      const st = expected[i];
      if (!st)
        throw new DifferentialMismatch(
          `the server completed statement ${i + 1} (${tag}); the proxy saw ${expected.length}`,
        );
      if (st.command !== tag)
        throw new DifferentialMismatch(
          `statement ${i + 1}: the server ran ${tag}, the proxy saw ${st.command}`,
        );
      i++;
    } else if (m.type === 'I') {
      if (expected.length !== 0)
        throw new DifferentialMismatch(`the server saw an empty query; the proxy saw ${expected.length}`);
    }
  }
  if (first) {
    // The server parses the whole string before running any of it: a parse error means nothing ran.
    if (SERVER_PARSE_ERRORS.test(first.C ?? '') && i > 0)
      throw new DifferentialMismatch(`a parse error (${first.C}) after ${i} statements ran`);
    return { kind: 'server-error', detail: `${first.C} ${first.M}` };
  }
  if (i !== expected.length)
    throw new DifferentialMismatch(`the server ran ${i} statements; the proxy saw ${expected.length}`);
  return { kind: 'ran' };
}

/** Every combination for one text; a broken connection is replaced so the next case starts clean. */
export async function runAllCombos(
  env: DifferentialEnv,
  pieces: readonly Piece[],
  tally?: Map<string, number>,
): Promise<void> {
  for (const combo of COMBOS) {
    let out: Outcome;
    try {
      out = await runCase(env, pieces, combo);
    } catch (e) {
      env.conn.close();
      env.conn = await env.reconnect();
      const Kind = e instanceof DifferentialMismatch ? DifferentialMismatch : Error;
      throw new Kind(`${(e as Error).message}\n  under ${JSON.stringify(combo)}\n  text: ${show(pieces)}`);
    }
    if (tally) {
      const k = `${combo.mode}/${combo.scs}/${out.kind}`;
      tally.set(k, (tally.get(k) ?? 0) + 1);
    }
  }
}

/** The property `npm run fuzz` and the test check: every generated text, every combination. */
export function propLexerDifferential(env: DifferentialEnv, schema: string, tally?: Map<string, number>) {
  return fc.asyncProperty(arbText(schema), (pieces) => runAllCombos(env, pieces, tally));
}

/** SQL (as a superuser, database `app`) for the fuzz schema: two small tables any login may read. */
export function differentialSchemaSql(schema: string): string {
  return `
    DROP SCHEMA IF EXISTS ${schema} CASCADE;
    CREATE SCHEMA ${schema};
    CREATE TABLE ${schema}.t (c1 int, secret text);
    INSERT INTO ${schema}.t VALUES (1, 'real-secret-1'), (2, 'real-secret-2');
    CREATE TABLE ${schema}.u (c1 int, secret text);
    GRANT USAGE ON SCHEMA ${schema} TO PUBLIC;
    GRANT SELECT ON ALL TABLES IN SCHEMA ${schema} TO PUBLIC;`;
}

/** A policy that lets every statement it can read through unchanged: only the lexer guard refuses. */
export function differentialPolicyYaml(port: number): string {
  return `
apiVersion: dbguard.io/v1alpha1
kind: DatabasePolicy
metadata: {name: orders, namespace: shop}
spec:
  upstream: {host: 127.0.0.1, port: ${port}, sslmode: disable}
  defaultAction: Allow
`;
}
