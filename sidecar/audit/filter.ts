/**
 * `spec.audit.statements`: which `query` events are written. Session, auth and policy events are
 * always written; this filter only thins out query events.
 *
 * - All: every query event.
 * - Writes: statements that may change something, plus every statement that was not simply let
 *   through (denied or held for approval). A statement counts as read-only only when its command
 *   is in READ_ONLY_COMMANDS and its effects are visible from its text (not `opaque`: `SELECT f()`
 *   with a function that may write is a write).
 * - Denied: decisions deny, approval_denied and approval_expired (DryRun "would deny" included,
 *   since the decision is still `deny` with `enforced: false`).
 * - None: no query events.
 */
import type { QueryDecision } from './events.js';

export type AuditStatementsMode = 'All' | 'Writes' | 'Denied' | 'None';

/**
 * Command tags that change neither data, schema, roles nor privileges. SET and RESET are not here:
 * `SET ROLE` and `SET session_replication_role` change what later statements may do.
 */
export const READ_ONLY_COMMANDS: ReadonlySet<string> = new Set([
  'SELECT',
  'SHOW',
  'FETCH',
  'MOVE',
  'DECLARE CURSOR',
  'CLOSE CURSOR',
  'CLOSE CURSOR ALL',
  'BEGIN',
  'START TRANSACTION',
  'COMMIT',
  'ROLLBACK',
  'SAVEPOINT',
  'RELEASE',
  'LISTEN',
  'UNLISTEN',
  'DEALLOCATE',
  'DEALLOCATE ALL',
  'DISCARD ALL',
]);

const DENIED: ReadonlySet<QueryDecision> = new Set(['deny', 'approval_denied', 'approval_expired']);

export interface AuditFilterInput {
  decision: QueryDecision;
  statement: { command: string; opaque?: boolean };
}

export function isWrite(statement: AuditFilterInput['statement']): boolean {
  return statement.opaque === true || !READ_ONLY_COMMANDS.has(statement.command.toUpperCase());
}

export function shouldAuditQuery(mode: AuditStatementsMode, q: AuditFilterInput): boolean {
  switch (mode) {
    case 'All':
      return true;
    case 'None':
      return false;
    case 'Denied':
      return DENIED.has(q.decision);
    case 'Writes':
      return q.decision !== 'allow' && q.decision !== 'mask' ? true : isWrite(q.statement);
    default:
      // An unknown mode (a newer operator?) must not silence the trail: write everything.
      return true;
  }
}
