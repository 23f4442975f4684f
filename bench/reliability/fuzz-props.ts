/**
 * Property-based fuzzing of the two places where hostile input meets dbguard (issue #10):
 *
 * 1. The frontend protocol: the framer and every decoder get random, truncated, oversized and
 *    reordered messages; the only failure allowed is a ProtocolViolation (08P01, that connection
 *    closes). Through a live proxy, any sequence of messages in any order ends with either a
 *    working session or a FATAL error, never a hang or an internal proxy error.
 * 2. The policy path: generated SQL (statements of every kind, comments, quoting, multi-statement
 *    strings, truncated and garbled text, random Unicode) always gets a defined decision; nothing
 *    throws past the decision point, and no literal ever reaches the normalized text the audit logs.
 *
 * Used by `test/reliability/fuzz.test.ts` (short runs) and `bench/reliability/fuzz.ts` (`npm run fuzz`,
 * long runs with fresh seeds).
 */
import fc from 'fast-check';
import type { CompiledPolicy } from '../../api/compiled.js';
import type { Decision } from '../../policy/decision.js';
import { judge, type SessionContext } from '../../policy/engine.js';
import {
  decodeBind,
  decodeCopyFail,
  decodeExecute,
  decodeFields,
  decodeFunctionCall,
  decodeParse,
  decodeQuery,
  decodeTarget,
  expectEmpty,
  FRONTEND_TYPES,
  ProtocolViolation,
} from '../../sidecar/protocol/codec.js';
import { type Frame, Framer } from '../../sidecar/protocol/framer.js';
import { cstring, errorFields, int16, int32, msg, RawConn } from '../../test/support/wire.js';

// ------------------------------------------------------------------ wire helpers

/** A frontend message with a type byte given as a number: the fuzzer draws any byte, not only letters. */
export function wireMessage(type: number, body: Uint8Array | Buffer): Buffer {
  return msg(String.fromCharCode(type), Buffer.from(body));
}

// ------------------------------------------------------------------ frontend message arbitraries

const names = fc.constantFrom('', 's1', 's2', 'p1');
/** Statements the protocol fuzzer sends: harmless, denied, failing and unparsable ones. */
const fuzzSql = fc.constantFrom(
  'SELECT 1',
  'SELECT $1::int',
  'SELECT generate_series(1, 50)',
  'DROP TABLE nothing_here',
  'SELECT * FROM no_such_table',
  'SELEC broken',
  'BEGIN',
  'COMMIT',
  'ROLLBACK',
  'COPY (SELECT 1) TO STDOUT',
  'SELECT 1; SELECT 2',
  '',
);

/** One well-formed frontend message of any kind, in any order with the others. */
export const arbFrontendMessage: fc.Arbitrary<Buffer> = fc.oneof(
  fuzzSql.map((sql) => wireMessage(0x51, cstring(sql))),
  fc
    .tuple(names, fuzzSql, fc.array(fc.constantFrom(0, 23, 25), { maxLength: 2 }))
    .map(([n, sql, types]) =>
      wireMessage(0x50, Buffer.concat([cstring(n), cstring(sql), int16(types.length), ...types.map(int32)])),
    ),
  fc
    .tuple(
      names,
      names,
      fc.array(fc.option(fc.constantFrom('1', 'abc', ''), { nil: null }), { maxLength: 2 }),
    )
    .map(([portal, stmt, params]) =>
      wireMessage(
        0x42,
        Buffer.concat([
          cstring(portal),
          cstring(stmt),
          int16(0),
          int16(params.length),
          ...params.map((p) =>
            p === null ? int32(-1) : Buffer.concat([int32(Buffer.byteLength(p)), Buffer.from(p)]),
          ),
          int16(0),
        ]),
      ),
    ),
  fc
    .tuple(fc.constantFrom('S', 'P'), names)
    .map(([k, n]) => wireMessage(0x44, Buffer.concat([Buffer.from(k), cstring(n)]))),
  fc
    .tuple(names, fc.constantFrom(0, 1, 10))
    .map(([p, max]) => wireMessage(0x45, Buffer.concat([cstring(p), int32(max)]))),
  fc
    .tuple(fc.constantFrom('S', 'P'), names)
    .map(([k, n]) => wireMessage(0x43, Buffer.concat([Buffer.from(k), cstring(n)]))),
  fc.constant(wireMessage(0x53, Buffer.alloc(0))), // Sync
  fc.constant(wireMessage(0x48, Buffer.alloc(0))), // Flush
  fc.uint8Array({ maxLength: 40 }).map((b) => wireMessage(0x64, b)), // CopyData outside COPY
  fc.constant(wireMessage(0x63, Buffer.alloc(0))), // CopyDone
  fc.constant(wireMessage(0x66, cstring('fuzz'))), // CopyFail
  // FunctionCall of a random function OID with no arguments: opaque, judged by the decision point
  fc
    .integer({ min: 1, max: 20_000 })
    .map((oid) => wireMessage(0x46, Buffer.concat([int32(oid), int16(0), int16(0), int16(0)]))),
);

/** A message damaged on purpose: truncated body, wrong length, unknown type, or random bytes. */
export const arbDamagedMessage: fc.Arbitrary<Buffer> = fc.oneof(
  fc.tuple(arbFrontendMessage, fc.nat()).map(([m, cut]) => {
    // keep the header's claimed length but drop trailing body bytes, then fix the length to match
    const bodyLen = m.length - 5;
    const keep = bodyLen === 0 ? 0 : cut % bodyLen;
    return wireMessage(m[0]!, m.subarray(5, 5 + keep));
  }),
  fc.tuple(arbFrontendMessage, fc.integer({ min: -5, max: 3 })).map(([m, d]) => {
    const out = Buffer.from(m);
    out.writeInt32BE(Math.max(0, out.readInt32BE(1) + d), 1);
    return out;
  }),
  fc
    .tuple(fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 30 }))
    .map(([t, b]) => wireMessage(t, b)),
  fc.uint8Array({ minLength: 1, maxLength: 60 }).map((b) => Buffer.from(b)),
);

/**
 * Damage that keeps the stream's framing decidable, for the live proxy: a bad body behind a correct
 * length, an unknown type, a length below 4, or a length beyond any limit. (A length that merely
 * claims more bytes than follow makes any PostgreSQL server wait for them too; the pure properties
 * cover those.)
 */
export const arbFramedDamage: fc.Arbitrary<Buffer> = fc.oneof(
  fc.tuple(arbFrontendMessage, fc.nat()).map(([m, cut]) => {
    const bodyLen = m.length - 5;
    return wireMessage(m[0]!, m.subarray(5, 5 + (bodyLen === 0 ? 0 : cut % bodyLen)));
  }),
  fc
    .tuple(arbFrontendMessage, fc.uint8Array({ minLength: 1, maxLength: 4 }))
    .map(([m, extra]) => wireMessage(m[0]!, Buffer.concat([m.subarray(5), extra]))),
  fc
    .tuple(fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 30 }))
    .map(([t, b]) => wireMessage(t, b)),
  fc.tuple(arbFrontendMessage, fc.integer({ min: 0, max: 3 })).map(([m, len]) => {
    const out = Buffer.from(m.subarray(0, 5));
    out.writeInt32BE(len, 1);
    return out;
  }),
  arbFrontendMessage.map((m) => {
    const out = Buffer.from(m.subarray(0, 5));
    out.writeInt32BE(0x7fffffff, 1);
    return out;
  }),
);

// ------------------------------------------------------------------ pure protocol properties

/** Any message sequence cut at any points yields the same messages (streamed ones as fragments). */
export const propFramerReassembles = fc.property(
  fc.array(fc.tuple(fc.constantFrom(...FRONTEND_TYPES), fc.uint8Array({ maxLength: 3000 })), {
    maxLength: 25,
  }),
  fc.array(fc.nat(), { maxLength: 30 }),
  (msgs, cuts) => {
    const whole = Buffer.concat(msgs.map(([t, b]) => wireMessage(t, b)));
    const points = [...new Set(cuts.map((c) => (whole.length ? c % whole.length : 0)))].sort((a, b) => a - b);
    const framer = new Framer({ side: 'frontend', streamed: (t) => t === 0x64, maxBodyLength: 1 << 20 });
    const frames: Frame[] = [];
    let prev = 0;
    for (const p of [...points, whole.length]) {
      framer.push(whole.subarray(prev, p), frames);
      prev = p;
    }
    const rebuilt: Buffer[] = [];
    let streamed: Buffer[] = [];
    for (const f of frames) {
      if (f.kind === 'msg') rebuilt.push(Buffer.from(f.raw));
      else if (f.kind === 'part') {
        streamed.push(Buffer.from(f.bytes));
        if (f.last) {
          rebuilt.push(Buffer.concat(streamed));
          streamed = [];
        }
      }
    }
    if (!framer.atBoundary) throw new Error('framer not at a boundary after whole messages');
    if (!Buffer.concat(rebuilt).equals(whole)) throw new Error('reassembled bytes differ');
    if (rebuilt.length !== msgs.length)
      throw new Error(`expected ${msgs.length} messages, got ${rebuilt.length}`);
  },
);

/** Decoders for the frontend messages the proxy looks into, by type. */
const DECODERS: Record<number, (b: Buffer) => unknown> = {
  81: decodeQuery,
  80: decodeParse,
  66: decodeBind,
  68: (b) => decodeTarget(b, 'Describe'),
  67: (b) => decodeTarget(b, 'Close'),
  69: decodeExecute,
  70: decodeFunctionCall,
  102: decodeCopyFail,
  83: (b) => expectEmpty(b, 'Sync'),
  72: (b) => expectEmpty(b, 'Flush'),
  78: (b) => decodeFields(b, 'NoticeResponse'),
};

function onlyProtocolViolations(fn: () => void): void {
  try {
    fn();
  } catch (err) {
    if (!(err instanceof ProtocolViolation)) {
      throw new Error(
        `threw ${(err as Error)?.constructor?.name}: ${(err as Error)?.message} instead of a ProtocolViolation`,
      );
    }
    if (err.sqlstate !== '08P01' && err.sqlstate !== '0A000')
      throw new Error(`unexpected SQLSTATE ${err.sqlstate}`);
  }
}

/**
 * Random, truncated, oversized and reordered byte streams: the framer (with the proxy's limits) and
 * every decoder fail only with ProtocolViolation, never with another exception.
 */
export const propDecodersFailCleanly = fc.property(
  fc.array(fc.oneof(arbFrontendMessage, arbDamagedMessage), { minLength: 1, maxLength: 12 }),
  fc.array(fc.nat(), { maxLength: 8 }),
  (msgs, cuts) => {
    const whole = Buffer.concat(msgs);
    const framer = new Framer({
      side: 'frontend',
      streamed: (t) => t === 0x64,
      maxBodyLength: 4096,
      validType: (t) => FRONTEND_TYPES.has(t),
    });
    const points = [...new Set(cuts.map((c) => c % whole.length))].sort((a, b) => a - b);
    onlyProtocolViolations(() => {
      const frames: Frame[] = [];
      let prev = 0;
      for (const p of [...points, whole.length]) {
        framer.push(whole.subarray(prev, p), frames);
        prev = p;
      }
      for (const f of frames) if (f.kind === 'msg') DECODERS[f.type]?.(f.body);
    });
    // Each decoder also meets each body directly, whatever its type byte said.
    for (const m of msgs) {
      const body = m.subarray(Math.min(5, m.length));
      for (const d of Object.values(DECODERS)) onlyProtocolViolations(() => d(body));
    }
  },
);

// ------------------------------------------------------------------ generated SQL

/** Literal values carry this marker: none may ever appear in a normalized (audited) statement. */
export const LITERAL_MARK = 'lit9q';

export interface GeneratedSql {
  sql: string;
  /** literal markers in the text (must never reach the normalized statement) */
  literals: string[];
  /** true when the text, if it parses, must be denied (a DROP/TRUNCATE, or DELETE/UPDATE without WHERE) */
  mustDeny: boolean;
}

export function arbSql(schema: string): fc.Arbitrary<GeneratedSql> {
  const table = fc.constantFrom(
    `${schema}.customers`,
    `${schema}.events`,
    'customers',
    `"${schema}"."customers"`,
    'pg_catalog.pg_class',
    'no_such_table',
    `${schema}.v_customers`,
  );
  const column = fc.constantFrom(
    'id',
    'email',
    'ssn',
    'customer_ref',
    'name',
    'c.email',
    'upper(ssn)',
    '*',
    'c.*',
  );
  const lit = fc
    .tuple(
      fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: 4, maxLength: 8 }),
      fc.constantFrom('plain', 'quote', 'dollar', 'escape', 'number'),
    )
    .map(([h, style]) => {
      const v = `${LITERAL_MARK}${h}`;
      switch (style) {
        case 'quote':
          return { text: `'${v}''s'`, v };
        case 'dollar':
          return { text: `$q$${v}$q$`, v };
        case 'escape':
          return { text: `E'${v}\\n'`, v };
        case 'number':
          return { text: `${Number.parseInt(h, 16) + 1000003}`, v: `${Number.parseInt(h, 16) + 1000003}` };
        default:
          return { text: `'${v}'`, v };
      }
    });
  type Stmt = { text: string; lits: string[]; deny: boolean };
  const fixed = (text: string, deny = false): Stmt => ({ text, lits: [], deny });
  const where = fc.option(
    fc.tuple(column, fc.constantFrom('=', '<>', 'LIKE', '>'), lit).map(([c, op, l]) => ({
      text: ` WHERE ${c === '*' || c === 'c.*' ? 'id' : c} ${op} ${l.text}`,
      lits: [l.v],
    })),
    { nil: undefined },
  );
  const select: fc.Arbitrary<Stmt> = fc
    .tuple(fc.array(column, { minLength: 1, maxLength: 3 }), table, where, fc.boolean())
    .map(([cols, t, w, order]) => ({
      text: `SELECT ${cols.join(', ')} FROM ${t} c${w?.text ?? ''}${order ? ' ORDER BY 1' : ''} LIMIT 5`,
      lits: w?.lits ?? [],
      deny: false,
    }));
  const insert: fc.Arbitrary<Stmt> = fc.tuple(lit, lit).map(([a, b]) => ({
    text: `INSERT INTO ${schema}.events (client, payload) VALUES (1, ${a.text} || ${b.text}) RETURNING id`,
    lits: [a.v, b.v],
    deny: false,
  }));
  const update: fc.Arbitrary<Stmt> = fc.tuple(lit, where).map(([l, w]) => ({
    text: `UPDATE ${schema}.events SET payload = ${l.text}${w?.text.replace(/email|ssn|customer_ref|name|c\.email|upper\(ssn\)/, 'payload') ?? ''}`,
    lits: [l.v, ...(w?.lits ?? [])],
    deny: !w,
  }));
  const del: fc.Arbitrary<Stmt> = where.map((w) => ({
    text: `DELETE FROM ${schema}.events${w?.text.replace(/email|ssn|customer_ref|name|c\.email|upper\(ssn\)/, 'payload') ?? ''}`,
    lits: w?.lits ?? [],
    deny: !w,
  }));
  const ddl: fc.Arbitrary<Stmt> = fc.constantFrom(
    fixed(`DROP TABLE ${schema}.customers`, true),
    fixed(`DROP SCHEMA ${schema} CASCADE`, true),
    fixed(`TRUNCATE ${schema}.events`, true),
    fixed(`CREATE TEMP TABLE IF NOT EXISTS fz (a int)`),
    fixed(`ALTER TABLE ${schema}.events ADD COLUMN IF NOT EXISTS x int`),
  );
  const other: fc.Arbitrary<Stmt> = fc.oneof(
    fc.constantFrom(
      fixed('BEGIN'),
      fixed('COMMIT'),
      fixed('ROLLBACK'),
      fixed(`SET search_path = ${schema}, public`),
      fixed('RESET search_path'),
      fixed(`COPY ${schema}.customers TO STDOUT`),
      fixed(`COPY (SELECT email FROM ${schema}.customers) TO STDOUT`),
      fixed(`EXPLAIN SELECT ssn FROM ${schema}.customers`),
      fixed(`DO $$ BEGIN PERFORM 1; END $$`),
      fixed('CALL no_such_procedure()'),
      fixed(`SELECT row_to_json(c) FROM ${schema}.customers c`),
      fixed(`PREPARE fzp AS SELECT ssn FROM ${schema}.customers`),
      fixed('VALUES (1), (2)'),
    ),
    lit.map((l) => ({ text: `SELECT ${l.text} AS v`, lits: [l.v], deny: false })),
    lit.map((l) => ({
      text: `WITH x AS (SELECT ${l.text} AS v) SELECT email FROM ${schema}.customers, x WHERE email = x.v`,
      lits: [l.v],
      deny: false,
    })),
  );
  const stmt = fc.oneof(
    { arbitrary: select, weight: 4 },
    { arbitrary: insert, weight: 2 },
    { arbitrary: update, weight: 2 },
    { arbitrary: del, weight: 2 },
    { arbitrary: ddl, weight: 1 },
    { arbitrary: other, weight: 3 },
  );
  const comment = fc.constantFrom('', ' /* c */ ', ' -- trailing\n', '/*nested /* x */ y*/ ');
  const wellFormed = fc
    .tuple(fc.array(stmt, { minLength: 1, maxLength: 3 }), comment, fc.boolean())
    .map(([ss, c, lower]) => {
      let text = ss.map((s) => s.text).join(`;${c}`);
      if (lower)
        text = text.replace(/\b(SELECT|FROM|WHERE|INSERT|DELETE|UPDATE|DROP)\b/g, (k) => k.toLowerCase());
      return { sql: `${c}${text}`, literals: ss.flatMap((s) => s.lits), mustDeny: ss.some((s) => s.deny) };
    });
  // Damage: cut the text anywhere, or splice random characters in (mostly parse errors).
  const damaged = fc.tuple(wellFormed, fc.nat(), fc.string({ maxLength: 6 })).map(([g, at, junk]) => {
    const p = g.sql.length ? at % g.sql.length : 0;
    return { sql: g.sql.slice(0, p) + junk, literals: [], mustDeny: false };
  });
  const random = fc
    .oneof(
      fc.string({ maxLength: 80 }),
      fc.string({ unit: 'grapheme', maxLength: 40 }),
      fc.string({ unit: 'binary', maxLength: 40 }),
    )
    .map((s) => ({ sql: s, literals: [], mustDeny: false }));
  return fc.oneof(
    { arbitrary: wellFormed, weight: 6 },
    { arbitrary: damaged, weight: 2 },
    { arbitrary: random, weight: 1 },
  );
}

/** The invariants every decision must satisfy, whatever the text. Returns a problem or undefined. */
export function checkDecision(d: Decision, g: GeneratedSql): string | undefined {
  if (!d || !['allow', 'mask', 'deny', 'approval'].includes(d.kind))
    return `undefined decision kind ${d?.kind}`;
  if (typeof d.enforced !== 'boolean') return 'enforced is not a boolean';
  if (d.kind === 'deny') {
    if (!/^[0-9A-Z]{5}$/.test(d.sqlstate ?? '')) return `deny without a valid SQLSTATE: ${d.sqlstate}`;
    if (!d.message?.startsWith('dbguard: ')) return `deny message not prefixed: ${d.message}`;
  } else {
    if (typeof d.sql !== 'string' || d.sql.includes('\0')) return 'forwarded SQL is not a NUL-free string';
    if (g.mustDeny && d.enforced) return `allowed a statement that must be denied: ${g.sql}`;
  }
  for (const st of d.statements) {
    for (const v of g.literals) {
      if (st.normalized.includes(v))
        return `literal ${v} leaked into the normalized statement: ${st.normalized}`;
    }
  }
  return undefined;
}

/**
 * judge() never throws and always answers a well-formed decision, also for texts the wire cannot
 * carry (a NUL inside: the fuzzer found such a text allowed by what preceded the NUL; it is denied
 * with 42601 since, and generated here with every other text).
 */
export function propJudgeDefined(schema: string, policy: CompiledPolicy, ctx: SessionContext) {
  const texts = arbSql(schema);
  return fc.property(texts, (g) => {
    let d: Decision;
    try {
      d = judge(g.sql, ctx, policy);
    } catch (err) {
      throw new Error(`judge threw ${(err as Error).message} for ${JSON.stringify(g.sql)}`);
    }
    const problem = checkDecision(d, g);
    if (problem) throw new Error(problem);
  });
}

// ------------------------------------------------------------------ the live proxy

/**
 * Sends `messages` (cut at `cuts`) to a fresh session, then Sync + a probe query. Outcome: 'usable'
 * (the probe answered), 'fatal' (the proxy or server ended the session with a FATAL error) or
 * 'terminated' (the sequence held a Terminate). A
 * hang, a close without a FATAL, or an XX000 (internal proxy error) throws.
 */
export async function probeSequence(
  port: number,
  messages: Buffer[],
  cuts: number[],
  timeoutMs = 8000,
): Promise<'usable' | 'fatal' | 'terminated'> {
  const { conn: c } = await RawConn.login({ host: '127.0.0.1', port });
  try {
    const whole = Buffer.concat([...messages, wireMessage(0x53, Buffer.alloc(0))]);
    const points = [...new Set(cuts.map((x) => x % whole.length))].sort((a, b) => a - b);
    let prev = 0;
    for (const p of [...points, whole.length]) {
      if (p > prev) c.send(whole.subarray(prev, p));
      prev = p;
    }
    // COPY FROM STDIN cannot be generated; a CopyFail ends any copy-in the sequence could leave open.
    c.send(wireMessage(0x66, cstring('fuzz end')));
    // A BEGIN in the sequence may have left a (failed) transaction block: end it before probing.
    c.send(wireMessage(0x51, cstring('ROLLBACK')));
    c.send(wireMessage(0x51, cstring('SELECT 4242 AS probe')));
    let sawProbe = false;
    for (;;) {
      const m = await c.next(timeoutMs);
      if (!m) {
        // A Terminate in the sequence ends the session without an answer, as it does on a server.
        if (messages.some((x) => x[0] === 0x58)) return 'terminated';
        throw new Error('connection closed without a FATAL error');
      }
      if (m.type === 'E') {
        const f = errorFields(m.body);
        const sev = f.V ?? f.S;
        if (f.C === 'XX000') throw new Error(`internal proxy error: ${f.M}`);
        if (sev === 'FATAL') {
          const rest = await c.next(timeoutMs).catch(() => null);
          if (rest !== null) throw new Error(`messages after a FATAL error: ${rest.type}`);
          return 'fatal';
        }
      }
      if (m.type === 'D' && m.body.toString('latin1').endsWith('4242')) sawProbe = true;
      if (m.type === 'Z' && sawProbe) return 'usable';
    }
  } finally {
    c.close();
  }
}

/**
 * Any sequence of frontend messages, well-formed or damaged, in any order, through the live proxy;
 * also orders no driver sends (a simple Query after unsynced extended messages, which once deadlocked
 * a session: docs/reliability.md).
 */
export function propProxySurvives(
  port: number,
  outcomes?: { usable: number; fatal: number; terminated?: number },
  opts: { timeoutMs?: number } = {},
) {
  return fc.asyncProperty(
    fc.array(
      fc.oneof({ arbitrary: arbFrontendMessage, weight: 5 }, { arbitrary: arbFramedDamage, weight: 1 }),
      {
        minLength: 1,
        maxLength: 15,
      },
    ),
    fc.array(fc.nat(), { maxLength: 6 }),
    async (msgs, cuts) => {
      const r = await probeSequence(port, msgs, cuts, opts.timeoutMs);
      if (outcomes) outcomes[r] = (outcomes[r] ?? 0) + 1;
    },
  );
}
