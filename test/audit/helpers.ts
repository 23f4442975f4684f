/** Shared bits for the audit tests: a session context, events of each kind, line reading. */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fingerprintSync, normalizeSync } from 'libpg-query';
import {
  type AuditContext,
  type AuditEvent,
  authFailureEvent,
  policyLoadedEvent,
  queryEvent,
  sessionEndEvent,
  sessionStartEvent,
} from '../../sidecar/audit/events.js';

export const ctx: AuditContext = {
  sessionId: 's-1',
  policy: 'shop/orders',
  policyVersion: 'sha256:abc',
  identity: {
    serviceAccount: 'shop/checkout',
    pod: 'checkout-5d9f',
    user: 'alice@example.org',
    groups: ['developers'],
    databaseUser: 'app',
    applicationName: 'checkout',
    clientAddr: '127.0.0.1:50000',
  },
};

/** A query event as the proxy would build it from the engine's StatementInfo (after loadAuditParser). */
export function sampleQuery(i: number): AuditEvent {
  const sql = `SELECT id, email FROM public.customers WHERE id = ${i} AND note = 'row ${i}'`;
  return queryEvent(ctx, {
    decision: i % 7 === 0 ? 'deny' : i % 3 === 0 ? 'mask' : 'allow',
    rule: i % 7 === 0 ? 'no-pii' : null,
    statement: {
      command: 'SELECT',
      objects: ['public.customers'],
      fingerprint: fingerprintSync(sql),
      normalized: normalizeSync(sql),
    },
    maskedColumns: i % 3 === 0 ? ['public.customers.email'] : [],
    rowCount: i % 7 === 0 ? null : 1,
    durationMs: 0.25 + i / 1000,
    sqlstate: i % 7 === 0 ? '42501' : null,
    enforced: true,
  });
}

/** One event of each kind. */
export function oneOfEach(): AuditEvent[] {
  return [
    policyLoadedEvent(
      { policy: 'shop/orders', policyVersion: 'sha256:abc' },
      { source: 'file', rules: 3, maskedColumns: 2, enforcement: 'Enforce' },
    ),
    sessionStartEvent(ctx, { database: 'orders', tls: false }),
    authFailureEvent(ctx, { reason: 'expired', method: 'token', message: 'token has expired' }),
    sampleQuery(1),
    sessionEndEvent(ctx, { reason: 'client', durationMs: 12.5, queries: 1 }),
  ];
}

export function tempDir(prefix: string): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), `dbguard-${prefix}-`));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function readLines(path: string): string[] {
  const text = readFileSync(path, 'utf8');
  return text === '' ? [] : text.replace(/\n$/, '').split('\n');
}

/** Captures what `cli/audit.ts` prints. */
export function captureIo() {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (l: string) => out.push(l), err: (l: string) => err.push(l) }, out, err };
}
