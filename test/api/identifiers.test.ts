import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseDottedName, qualify } from '../../api/identifiers.js';
import { columnName } from '../../policy/compile.js';

describe('parseDottedName', () => {
  it.each([
    ['customers', ['customers']],
    ['Public.Customers', ['public', 'customers']],
    ['"Sales"."Q1"', ['Sales', 'Q1']],
    ['"a""b".c', ['a"b', 'c']],
    ['"with.dot".t', ['with.dot', 't']],
  ])('%s → %j', (text, parts) => {
    expect(parseDottedName(text)).toEqual({ ok: true, parts });
  });

  it.each([
    ['a.b.c', /3 parts; at most 2/],
    ['"unterminated', /unterminated quoted name/],
    ['""', /empty quoted name/],
    ['a..b', /empty name/],
    ['my table', /is not a name: quote names/],
    ['"a"b', /unexpected "b"/],
    ['*', /is not a name/],
  ])('refuses %s', (text, message) => {
    const r = parseDottedName(text);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.message).toMatch(message);
  });

  it('allows * only in patterns', () => {
    expect(parseDottedName('*.audit_log', { wildcard: true })).toEqual({
      ok: true,
      parts: ['*', 'audit_log'],
    });
  });

  it('reads back every name it prints (any characters, any case)', () => {
    const name = fc.string({ minLength: 1, maxLength: 12, unit: 'grapheme' });
    fc.assert(
      fc.property(name, name, name, (schema, table, column) => {
        const printed = columnName({ schema, table, column });
        const parsed = parseDottedName(printed, { maxParts: 3 });
        expect(parsed).toEqual({ ok: true, parts: [schema, table, column] });
      }),
      { numRuns: 300 },
    );
  });

  it('qualifies with schema public', () => {
    expect(qualify(['t'])).toEqual(['public', 't']);
    expect(qualify(['s', 't'])).toEqual(['s', 't']);
  });
});
