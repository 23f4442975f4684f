/**
 * No literal from a statement ever reaches the audit file: PII-bearing statements go through the
 * same path the proxy uses (auditStatement, or the engine's normalizeSync output scrubbed again by
 * queryEvent), are written by the real writer, and the file is searched for every secret.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { fingerprintSync, normalizeSync } from 'libpg-query';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { queryEvent } from '../../sidecar/audit/events.js';
import {
  auditStatement,
  loadAuditParser,
  MAX_NORMALIZED_BYTES,
  scrubNormalized,
  UNPARSEABLE_STATEMENT,
} from '../../sidecar/audit/statement.js';
import { openAuditLog } from '../../sidecar/audit/writer.js';
import { ctx, tempDir } from './helpers.js';

const EMAIL = 'alice.pii@example.com';
const SSN = '123-45-6789';
const CARD = '4111111111111111';
const CARD_DASHED = '4111-1111-1111-1111';
const SECRETS = [EMAIL, SSN, CARD, CARD_DASHED, '4111', '6789', 'alice.pii', 'hunter2'];

/** Each statement carries PII only as literals (or in comments); none uses bind parameters. */
const PII_STATEMENTS = [
  `SELECT * FROM customers WHERE email = '${EMAIL}'`,
  `SELECT * FROM customers WHERE ssn = '${SSN}' AND card_number = '${CARD}'`,
  `SELECT * FROM customers WHERE card_number = ${CARD}`,
  `INSERT INTO customers (email, ssn, card_number) VALUES ('${EMAIL}', '${SSN}', '${CARD_DASHED}')`,
  `INSERT INTO customers VALUES (1, E'${EMAIL}', $$${SSN}$$, $tag$${CARD}$tag$)`,
  `UPDATE customers SET email = '${EMAIL}' WHERE ssn = '${SSN}'`,
  `DELETE FROM customers WHERE card_number IN ('${CARD}', '${CARD_DASHED}')`,
  `SELECT * FROM customers WHERE email LIKE '%${EMAIL}%' OR ssn ~ '${SSN}'`,
  `SELECT * FROM customers WHERE card_number = ${CARD}::numeric AND x = U&'${SSN}'`,
  `SELECT * FROM customers WHERE email = '${EMAIL}' COLLATE "C"`,
  `WITH c AS (SELECT '${EMAIL}' AS e) SELECT * FROM c`,
  `SELECT 1 /* customer ${EMAIL} card ${CARD} */`,
  `SELECT 1 -- ssn ${SSN}\n`,
  `/*traceparent='00-${CARD}-01'*/ SELECT * FROM customers WHERE ssn = '${SSN}'`,
  `PREPARE q AS SELECT * FROM customers WHERE email = '${EMAIL}'`,
  `EXECUTE q('${EMAIL}', ${CARD})`,
  `COMMENT ON TABLE customers IS 'owner ${EMAIL}'`,
  `CREATE TABLE t_pii (email text DEFAULT '${EMAIL}', ssn text CHECK (ssn <> '${SSN}'))`,
  `ALTER ROLE app PASSWORD 'hunter2'`,
  `CREATE USER bob WITH PASSWORD 'hunter2'`,
  `NOTIFY customers, '${EMAIL}'`,
  `SELECT set_config('app.user', '${EMAIL}', false)`,
  `COPY (SELECT * FROM customers WHERE ssn = '${SSN}') TO STDOUT`,
  `SELECT * FROM customers WHERE email = '${EMAIL}'; SELECT '${CARD}'`,
  `DO $$ BEGIN PERFORM '${EMAIL}'; END $$`,
  `SELECT X'41', B'1010', 1.5e3, -42, '${SSN}'::text`,
  // does not parse: must become the placeholder, never the raw text
  `SELEC * FROM customers WHERE email = '${EMAIL}'`,
  `SELECT * FROM customers WHERE ssn = '${SSN}`,
  `${CARD}`,
];

beforeAll(() => loadAuditParser());

describe('auditStatement', () => {
  it('keeps the shape of the statement with literals as placeholders', () => {
    expect(auditStatement(`SELECT * FROM customers WHERE email = '${EMAIL}' AND id = 7`)).toBe(
      'SELECT * FROM customers WHERE email = $1 AND id = $2',
    );
    expect(auditStatement(`PREPARE q AS SELECT '${EMAIL}'`)).toBe('PREPARE q AS SELECT $1');
    expect(auditStatement('SELECT $1, $2')).toBe('SELECT $1, $2');
  });

  it('drops comments, keeping the statement on one line', () => {
    expect(auditStatement(`SELECT 1 /* ${EMAIL} */\n  FROM t -- ${SSN}\n`)).toBe('SELECT $1 FROM t');
  });

  it('turns text that does not parse into the placeholder', () => {
    expect(auditStatement(`SELEC '${EMAIL}'`)).toBe(UNPARSEABLE_STATEMENT);
    expect(auditStatement(`SELECT '${EMAIL}`)).toBe(UNPARSEABLE_STATEMENT);
    expect(auditStatement('')).toBe(UNPARSEABLE_STATEMENT); // an empty text has no statement to show
  });

  it('is idempotent: scrubbing clean text changes nothing', () => {
    for (const sql of PII_STATEMENTS) {
      const once = auditStatement(sql);
      expect(scrubNormalized(once)).toBe(once);
    }
  });

  it('bounds huge statements', () => {
    const sql = `INSERT INTO t VALUES ${Array.from({ length: 6_000 }, (_, i) => `(${i}, 'v${i}')`).join(', ')}`;
    const out = auditStatement(sql);
    expect(Buffer.byteLength(out)).toBeLessThanOrEqual(MAX_NORMALIZED_BYTES + 32);
    expect(out).toMatch(/truncated/);
    expect(out).not.toContain("'v1'");
  });

  it('never returns a literal it was given (property)', () => {
    // A secret that cannot occur by chance in SQL keywords or placeholders.
    const secret = fc.stringMatching(/^[a-z]{3}[0-9]{6}[a-z]{3}$/).map((s) => `Zq${s}`);
    const templates = [
      (s: string) => `SELECT * FROM t WHERE a = '${s}'`,
      (s: string) => `SELECT * FROM t WHERE a = E'${s}\\n'`,
      (s: string) => `SELECT $$${s}$$`,
      (s: string) => `SELECT 1 /* ${s} */`,
      (s: string) => `PREPARE p AS SELECT '${s}'`,
      (s: string) => `EXECUTE p('${s}')`,
      (s: string) => `COMMENT ON TABLE t IS '${s}'`,
      (s: string) => `CREATE TABLE t (a text DEFAULT '${s}')`,
      (s: string) => `SELECT * FROM t WHERE a = '${s}`,
      (s: string) => `INSERT INTO t VALUES ('${s}', '${s}')`,
    ];
    fc.assert(
      fc.property(secret, fc.integer({ min: 0, max: templates.length - 1 }), (s, t) => {
        expect(auditStatement(templates[t]!(s))).not.toContain(s);
      }),
      { numRuns: 300 },
    );
  });
});

describe('PII statements through the writer', () => {
  const tmp = tempDir('pii');
  afterAll(() => tmp.cleanup());

  it('leaves no literal in the audit file', async () => {
    const path = join(tmp.dir, 'audit.log');
    const log = await openAuditLog(path);
    for (const sql of PII_STATEMENTS) {
      // Path 1: the sidecar's own helper.
      await log.write(
        queryEvent(ctx, {
          decision: 'allow',
          statement: {
            command: 'SELECT',
            objects: ['public.customers'],
            fingerprint: 'f',
            normalized: auditStatement(sql),
          },
          durationMs: 1,
          enforced: true,
        }),
      );
      // Path 2: what the policy engine supplies (normalizeSync output, comments and all).
      let normalized: string;
      let fingerprint = '';
      try {
        normalized = normalizeSync(sql);
        fingerprint = fingerprintSync(sql);
      } catch {
        normalized = UNPARSEABLE_STATEMENT;
      }
      await log.write(
        queryEvent(ctx, {
          decision: 'deny',
          rule: 'r',
          statement: { command: 'SELECT', objects: [], fingerprint, normalized },
          durationMs: 1,
          sqlstate: '42501',
          enforced: true,
        }),
      );
    }
    await log.close();
    const text = readFileSync(path, 'utf8');
    expect(text.trim().split('\n')).toHaveLength(PII_STATEMENTS.length * 2);
    // Hashes (prev, fingerprint) and timestamps are hex or digits and can contain '4111' by chance: check
    // everything else.
    const scrubbed = text
      .trim()
      .split('\n')
      .map((l) => {
        const { prev: _p, time: _t, statement, ...rest } = JSON.parse(l);
        return JSON.stringify({ ...rest, statement: { ...statement, fingerprint: undefined } });
      })
      .join('\n');
    for (const secret of SECRETS) expect(scrubbed, `file contains ${secret}`).not.toContain(secret);
    expect(text).toContain(UNPARSEABLE_STATEMENT);
  });
});
