/**
 * Default values of the resources' optional fields. The schemas declare them (so the API server
 * and the policy-file loader apply them) and the compiler falls back to them (so an object that
 * skipped defaulting compiles the same): one table, so the two cannot disagree.
 */
export const DEFAULTS = {
  port: 5432,
  sslmode: 'prefer',
  defaultAction: 'Allow',
  auditStatements: 'All',
  enforcement: 'Enforce',
  approvalMode: 'Wait',
  approvalTimeout: '5m',
  approvalValidFor: '1h',
  partialKeepFirst: 0,
  partialKeepLast: 0,
  partialMaskChar: '*',
  /** a resource without metadata.namespace (in a policy file) lives here, as with kubectl */
  namespace: 'default',
} as const;
