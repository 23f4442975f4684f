/**
 * The policies the benchmark enforces: a realistic one (rules a team would write, masking on the
 * `customers` table, which pgbench does not touch) and a synthetic one with many rules for the
 * compile-time figure.
 */

export type AuditStatements = 'All' | 'Writes' | 'Denied' | 'None';

/**
 * Rules and masking in force while pgbench runs. The pgbench user (`app`) is a masked subject, so
 * every statement takes the full path: parse, resolve names against the catalog snapshot, match
 * the rules, check for masked columns. `md5user` is exempt (the relay-only figure).
 */
export function realisticPolicy(upstreamPort: number, audit: AuditStatements): string {
  return `apiVersion: dbguard.io/v1alpha1
kind: DatabasePolicy
metadata: {name: app, namespace: bench}
spec:
  upstream: {host: 127.0.0.1, port: ${upstreamPort}, sslmode: disable}
  defaultAction: Allow
  rules:
    - name: no-destructive-ddl
      action: Deny
      match: {commands: ["DROP *", "TRUNCATE TABLE", "ALTER *"]}
      message: "Schema changes go through migrations."
    - name: no-privilege-changes
      action: Deny
      match: {commands: ["GRANT", "REVOKE", "ALTER ROLE", "CREATE ROLE"]}
    - name: audit-tables-read-only
      action: Deny
      match: {commands: [INSERT, UPDATE, DELETE, MERGE, COPY], objects: ["audit.*", "*.audit_log"]}
    - name: bulk-writes
      action: RequireApproval
      match: {commands: [DELETE, UPDATE], withoutWhere: true}
      approval: {mode: Reject, validFor: 1h}
    - name: reporting-is-read-only
      action: Deny
      match:
        commands: [INSERT, UPDATE, DELETE, MERGE, "CREATE *"]
        subjects: [{kind: Group, name: reporting}]
    - name: no-server-files
      action: Deny
      match: {commands: [COPY], objects: ["pg_catalog.*"]}
  functions:
    allow: ["public.order_total"]
  audit: {statements: ${audit}}
  enforcement: Enforce
---
apiVersion: dbguard.io/v1alpha1
kind: MaskingRule
metadata: {name: customer-pii, namespace: bench}
spec:
  policyRef: {name: app}
  columns:
    - {table: public.customers, column: email, strategy: Email}
    - {table: public.customers, column: ssn, strategy: Redact}
    - {table: public.customers, column: card_number, strategy: Partial, partial: {keepFirst: 0, keepLast: 4, maskChar: "*"}}
    - {table: public.customers, column: salary, strategy: Nullify}
    - {table: public.customers, column: birth_date, strategy: Generalize, generalize: {unit: year}}
  exemptSubjects:
    - {kind: Group, name: pii-readers}
    - {kind: DatabaseUser, name: md5user}
`;
}

/** A DatabasePolicy with `n` (≤ 256, the schema's limit) rules of varied shapes (commands, objects, subjects, withoutWhere). */
export function manyRulesPolicy(n: number, name = 'big'): string {
  const rules: string[] = [];
  for (let i = 0; i < n; i++) {
    switch (i % 4) {
      case 0:
        rules.push(
          `    - {name: r${i}, action: Deny, match: {commands: ["DROP *", "ALTER TABLE"], objects: ["s${i}.*"]}}`,
        );
        break;
      case 1:
        rules.push(
          `    - {name: r${i}, action: Deny, match: {commands: [INSERT, UPDATE], objects: ["public.t${i}", "*.log_${i}"], subjects: [{kind: Group, name: g${i}}]}}`,
        );
        break;
      case 2:
        rules.push(
          `    - {name: r${i}, action: RequireApproval, match: {commands: [DELETE], objects: ["public.t${i}"], withoutWhere: true}, approval: {mode: Reject}}`,
        );
        break;
      default:
        rules.push(
          `    - {name: r${i}, action: Allow, match: {commands: [SELECT], objects: ["reports.v${i}"], subjects: [{kind: ServiceAccount, name: sa${i}, namespace: bench}]}}`,
        );
    }
  }
  return `apiVersion: dbguard.io/v1alpha1
kind: DatabasePolicy
metadata: {name: ${name}, namespace: bench}
spec:
  upstream: {host: 127.0.0.1, port: 5432}
  defaultAction: Allow
  rules:
${rules.join('\n')}
  audit: {statements: All}
`;
}
