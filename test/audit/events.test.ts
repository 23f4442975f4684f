/** Event builders (contract §5 shape) and the audit.statements filter. */
import { beforeAll, describe, expect, it } from 'vitest';
import { AUDIT_EVENT_NAMES, queryEvent, sessionStartEvent } from '../../sidecar/audit/events.js';
import { shouldAuditQuery } from '../../sidecar/audit/filter.js';
import { loadAuditParser, UNPARSEABLE_STATEMENT } from '../../sidecar/audit/statement.js';
import { ctx, oneOfEach } from './helpers.js';

const RFC3339_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

beforeAll(() => loadAuditParser());

describe('audit events', () => {
  it('every kind carries time, event, session, policy and all identity fields', () => {
    const events = oneOfEach();
    expect(events.map((e) => e.event).sort()).toEqual([...AUDIT_EVENT_NAMES].sort());
    for (const e of events) {
      expect(e.time).toMatch(RFC3339_MS);
      expect(e.policy).toBe('shop/orders');
      expect(e.policyVersion).toBe('sha256:abc');
      expect(Object.keys(e.identity).sort()).toEqual(
        ['applicationName', 'clientAddr', 'databaseUser', 'groups', 'pod', 'serviceAccount', 'user'].sort(),
      );
      if (e.event === 'policy.loaded') {
        expect(e.sessionId).toBeNull();
      } else {
        expect(e.sessionId).toBe('s-1');
        expect(e.identity).toEqual({
          serviceAccount: 'shop/checkout',
          pod: 'checkout-5d9f',
          user: 'alice@example.org',
          groups: ['developers'],
          databaseUser: 'app',
          applicationName: 'checkout',
          clientAddr: '127.0.0.1:50000',
        });
      }
    }
  });

  it('unknown identity fields are null, never missing', () => {
    const e = sessionStartEvent({
      sessionId: 'x',
      policy: null,
      policyVersion: null,
      identity: { databaseUser: 'app' },
    });
    expect(e.identity).toEqual({
      serviceAccount: null,
      pod: null,
      user: null,
      groups: [],
      databaseUser: 'app',
      applicationName: null,
      clientAddr: null,
    });
    expect(JSON.parse(JSON.stringify(e)).identity.pod).toBeNull();
  });

  it('query events carry the decision fields, declared tags, and only scrubbed statements', () => {
    const e = queryEvent(ctx, {
      decision: 'approval_pending',
      rule: 'bulk-deletes',
      statement: {
        command: 'DELETE',
        objects: ['public.orders'],
        fingerprint: 'a1b2c3d4e5f60718',
        // what a careless normalizer could hand over: a comment and a leftover literal
        normalized: "/* user bob@example.org */ DELETE FROM orders WHERE note = 'x' AND id = $1",
      },
      batch: { index: 1, count: 2 },
      durationMs: 1.23456,
      enforced: false,
      tags: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', route: '/orders' },
    });
    expect(e).toMatchObject({
      event: 'query',
      decision: 'approval_pending',
      rule: 'bulk-deletes',
      statement: {
        command: 'DELETE',
        objects: ['public.orders'],
        fingerprint: 'a1b2c3d4e5f60718',
        normalized: 'DELETE FROM orders WHERE note = $2 AND id = $1',
      },
      batch: { index: 1, count: 2 },
      maskedColumns: [],
      rowCount: null,
      durationMs: 1.235,
      sqlstate: null,
      enforced: false,
      tags: { declared: true, values: { route: '/orders' } },
    });
    expect(e.tags?.values.traceparent).toMatch(/^00-/);
  });

  it('a parser error passed off as normalized text (libpg-query does that) never reaches the event', () => {
    const e = queryEvent(ctx, {
      decision: 'deny',
      statement: {
        command: 'SELECT',
        objects: [],
        fingerprint: 'unterminated quoted string at or near "\'123-45-6789"',
        normalized: 'unterminated quoted string at or near "\'123-45-6789"',
      },
      durationMs: 0,
      sqlstate: '42601',
      enforced: true,
    });
    expect(e.statement.normalized).toBe(UNPARSEABLE_STATEMENT);
    expect(e.statement.fingerprint).toBe('');
    expect(JSON.stringify(e)).not.toContain('6789');
  });

  it('bounds client-declared tags', () => {
    const tags = Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`k${i}`, 'v'.repeat(1000)]));
    const e = queryEvent(ctx, {
      decision: 'allow',
      statement: { command: 'SELECT', objects: [], fingerprint: 'ab', normalized: 'SELECT $1' },
      durationMs: 0,
      enforced: true,
      tags,
    });
    expect(Object.keys(e.tags!.values)).toHaveLength(16);
    expect(e.tags!.values.k0).toHaveLength(256);
  });
});

describe('audit.statements filter', () => {
  const q = (
    decision: Parameters<typeof shouldAuditQuery>[1]['decision'],
    command: string,
    opaque = false,
  ) => ({
    decision,
    statement: { command, opaque },
  });

  it('All and None', () => {
    expect(shouldAuditQuery('All', q('allow', 'SELECT'))).toBe(true);
    expect(shouldAuditQuery('None', q('deny', 'DROP TABLE'))).toBe(false);
  });

  it('Writes: not SELECT/SHOW/..., plus opaque statements and everything not simply let through', () => {
    expect(shouldAuditQuery('Writes', q('allow', 'SELECT'))).toBe(false);
    expect(shouldAuditQuery('Writes', q('mask', 'SELECT'))).toBe(false);
    expect(shouldAuditQuery('Writes', q('allow', 'SHOW'))).toBe(false);
    expect(shouldAuditQuery('Writes', q('allow', 'BEGIN'))).toBe(false);
    expect(shouldAuditQuery('Writes', q('allow', 'INSERT'))).toBe(true);
    expect(shouldAuditQuery('Writes', q('allow', 'DROP TABLE'))).toBe(true);
    expect(shouldAuditQuery('Writes', q('allow', 'SET'))).toBe(true);
    expect(shouldAuditQuery('Writes', q('allow', 'SELECT', true))).toBe(true);
    expect(shouldAuditQuery('Writes', q('deny', 'SELECT'))).toBe(true);
    expect(shouldAuditQuery('Writes', q('approval_pending', 'SELECT'))).toBe(true);
  });

  it('Denied: deny, approval_denied, approval_expired only', () => {
    expect(shouldAuditQuery('Denied', q('deny', 'SELECT'))).toBe(true);
    expect(shouldAuditQuery('Denied', q('approval_denied', 'DELETE'))).toBe(true);
    expect(shouldAuditQuery('Denied', q('approval_expired', 'DELETE'))).toBe(true);
    expect(shouldAuditQuery('Denied', q('approved', 'DELETE'))).toBe(false);
    expect(shouldAuditQuery('Denied', q('allow', 'DROP TABLE'))).toBe(false);
  });
});
