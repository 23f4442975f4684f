/**
 * The writer's serializer: the fast path for query events must give exactly JSON.stringify's text,
 * and the sub-objects it caches by identity must be impossible to change behind its back.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { type QueryEvent, queryEvent, sessionEndEvent } from '../../sidecar/audit/events.js';
import { eventBody } from '../../sidecar/audit/serialize.js';
import { loadAuditParser } from '../../sidecar/audit/statement.js';
import { ctx } from './helpers.js';

beforeAll(() => loadAuditParser());

const statements = [
  {
    command: 'SELECT',
    objects: ['public.t'],
    fingerprint: 'abc123',
    normalized: 'SELECT * FROM t WHERE id = $1',
  },
  // Names that JSON must escape: quotes, backslashes, control characters, non-ASCII, a lone surrogate.
  {
    command: 'SELECT',
    objects: ['public."we""ird\\name"', 'sch\u00e9ma.t\u4e2d'],
    fingerprint: 'not hex!',
    normalized: 'SELECT "a\tb", "\u2028x\ud800" FROM "we""ird\\name"',
  },
  { command: 'INSERT', objects: [], fingerprint: '', normalized: '' },
];

function variants(): QueryEvent[] {
  const out: QueryEvent[] = [];
  for (const statement of statements) {
    out.push(
      queryEvent(ctx, { decision: 'allow', statement, durationMs: 0.1234, enforced: true }),
      queryEvent(
        { sessionId: null, policy: null, policyVersion: null },
        {
          decision: 'mask',
          rule: 'pii "rule"',
          statement,
          batch: { index: 1, count: 3 },
          maskedColumns: ['public.customers.email', 'x"y'],
          rowCount: 42,
          durationMs: Number.NaN,
          sqlstate: '42501',
          enforced: false,
          tags: { route: '/orders/"1"', controller: '\u00fc\n' },
        },
        new Date('2026-01-02T03:04:05.678Z'),
      ),
    );
  }
  return out;
}

describe('audit event serialization', () => {
  it('query events serialize to exactly the text JSON.stringify gives', () => {
    for (const e of variants()) expect(`${eventBody(e)}}`).toBe(JSON.stringify(e));
  });

  it('so do other events and hand-made query events (the general path)', () => {
    const handMade = { ...variants()[0]!, extra: 'kept' } as QueryEvent;
    const end = sessionEndEvent(ctx, { reason: 'client', durationMs: 5, queries: 2 });
    for (const e of [handMade, end]) expect(`${eventBody(e)}}`).toBe(JSON.stringify(e));
    expect(eventBody(handMade)).toContain('"extra":"kept"');
  });

  it('a second event of the same statement and session shares the cached parts, which cannot change', () => {
    const statement = statements[0]!;
    const a = queryEvent(ctx, { decision: 'allow', statement, durationMs: 1, enforced: true });
    const b = queryEvent(ctx, { decision: 'allow', statement, durationMs: 2, enforced: true });
    expect(b.statement).toBe(a.statement);
    expect(b.identity).toBe(a.identity);
    expect(() => {
      (a.statement as { normalized: string }).normalized = 'SELECT leaked';
    }).toThrow(TypeError);
    expect(() => a.identity.groups.push('admins')).toThrow(TypeError);
    expect(() => a.maskedColumns.push('x')).toThrow(TypeError);
    expect(`${eventBody(b)}}`).toBe(JSON.stringify(b));
    expect(eventBody(b)).not.toContain('leaked');
  });

  it('a statement whose text needs scrubbing is scrubbed once and stays scrubbed in every event', () => {
    const statement = {
      command: 'SELECT',
      objects: [],
      fingerprint: 'ab',
      normalized: "SELECT '123-45-6789'",
    };
    for (let i = 0; i < 3; i++) {
      const e = queryEvent(ctx, { decision: 'allow', statement, durationMs: 1, enforced: true });
      expect(eventBody(e)).not.toContain('6789');
    }
  });
});
