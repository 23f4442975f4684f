/**
 * What the policy engine answers for one statement text (a Query message's whole string, or one
 * Parse). Pure data: the sidecar turns it into protocol messages, audit events and metrics.
 */
import type { CompiledRule } from '../api/compiled.js';
import type { Exercise } from './exercises.js';
import type { LexerFacts } from './lexer-safety.js';
import type { Uncovered } from './rule-verdict.js';

export type DecisionKind = 'allow' | 'mask' | 'deny' | 'approval';

/**
 * Why a statement was refused (contract §7 `reason`): a stable code for alerts and the audit event.
 * `rule`: a Deny rule or `defaultAction: Deny`; `cannot_prove_masked`: masking could not be proven;
 * `masked_write`: it would store a masked value; `unparseable`: PostgreSQL's parser refused it;
 * `no_policy`, `lexer`, `audit` (the audit log is down), `masking_rule_broken` (a MaskingRule names
 * a missing column), `internal` (the engine failed).
 */
export type DenialReason =
  | 'rule'
  | 'cannot_prove_masked'
  | 'masked_write'
  | 'unparseable'
  | 'no_policy'
  | 'lexer'
  | 'audit'
  | 'masking_rule_broken'
  | 'internal';

/** One statement of the text, as the audit trail and the rules see it (contract §5 `statement`). */
export interface StatementInfo {
  /** PostgreSQL command tag as the server reports it: `SELECT`, `DROP TABLE`, `TRUNCATE TABLE` ... */
  command: string;
  /** schema-qualified relations touched anywhere in the statement, resolved through search_path */
  objects: string[];
  /** libpg_query fingerprint (hex) */
  fingerprint: string;
  /** statement with literals replaced by $n placeholders (PostgreSQL's own normalizer) */
  normalized: string;
  /** UPDATE/DELETE without a WHERE clause (also inside CTEs) */
  withoutWhere: boolean;
  /** effects cannot be seen from the text: DO, CALL, user-defined functions not allowed */
  opaque: boolean;
  /**
   * tags of statements nested in this one: data-modifying CTEs (`WITH d AS (DELETE ...) SELECT`),
   * EXPLAIN/PREPARE/DECLARE/COPY/CREATE TABLE AS bodies. Command patterns match these too.
   */
  innerCommands?: string[];
  /**
   * the (privilege, object) pairs the statement exercises (exercises.ts), with what views read under
   * them: what rules match. Not part of the audit event.
   */
  exercises?: Exercise[];
}

/** How a statement changes session state the engine depends on. */
export type SessionEffect =
  | { kind: 'search_path'; value: string[] | 'reset'; local: boolean }
  /** something changed session state in a way the text does not show: re-read search_path */
  | { kind: 'unknown-state' }
  | { kind: 'catalog-changed' }
  | { kind: 'transaction'; op: 'begin' | 'commit' | 'rollback' | 'savepoint' | 'rollback-to' | 'release' };

export interface Decision {
  kind: DecisionKind;
  /** the rule that decided; absent when defaultAction decided */
  rule?: string;
  /** complete client-facing message: `dbguard: <rule message or default> (rule <name>)` */
  message?: string;
  /** SQLSTATE for deny: 42501 (policy) or 42601 (does not parse) */
  sqlstate?: string;
  /** for deny: why, as a stable code */
  reason?: DenialReason;
  statements: StatementInfo[];
  /** SQL to send upstream: the original text, or its masked rewrite */
  sql: string;
  /** `schema.table.column` of every masked column the rewrite applied */
  maskedColumns: string[];
  approval?: CompiledRule['approval'];
  /** false under enforcement DryRun: the decision is audited but not applied */
  enforced: boolean;
  effects: SessionEffect[];
  /** sqlcommenter tags found in the text (`traceparent`, ...), declared by the client, not verified */
  tags?: Record<string, string>;
  /**
   * deny because the catalog snapshot looks stale (a relation or function it does not know, a masked
   * table the policy names but the snapshot lacks): re-read the catalog and judge once more.
   */
  refreshCatalog?: boolean;
  /**
   * how the text (and its rewrite) would read under other lexer settings; absent when it did not
   * parse. The sidecar checks it against the session's settings (sidecar/lexer-guard.ts).
   */
  lexer?: LexerFacts;
  /** a refusal by `defaultAction: Deny`: the pairs no Allow rule permits */
  uncovered?: Uncovered[];
}
