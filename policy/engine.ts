/**
 * The policy engine's public surface (pure: no network, no files). Call `await initParser()` once;
 * everything else is synchronous.
 */
export { contextKey, DecisionCache, numericTemplate, subjectKey } from './cache.js';
export {
  type CatalogColumn,
  type CatalogSnapshot,
  catalogQuery,
  catalogVersionQuery,
  type MaskedRelation,
  maskedTablesOf,
  parseCatalog,
  parseSearchPath,
  SnapshotInterner,
  searchPathQuery,
} from './catalog.js';
export { commandTag } from './command-tag.js';
export type { Decision, DecisionKind, SessionEffect, StatementInfo } from './decision.js';
export { type Exercise, flattenExercises, hasHiddenExercises } from './exercises.js';
export type { Identity } from './identity.js';
export { DEFAULT_DENY_MESSAGE, DEFAULT_RULE_NAME, judge } from './judge.js';
export { maskExpression } from './mask-expr.js';
export { initParser, parserReady } from './parser.js';
export { predictSearchPath, type SessionContext } from './resolve.js';
export { type StatementVerdict, statementVerdict, type Uncovered } from './rule-verdict.js';
export { commandMatches, objectMatches, ruleMatches } from './rules.js';
export { type EffectiveMask, isMaskedSubject, maskedColumnsFor, subjectMatches } from './subjects.js';
