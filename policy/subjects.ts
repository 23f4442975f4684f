/** Matching rule subjects and masking exemptions against a connection's identity (contract §1). */
import type { CompiledMaskedColumn, CompiledPolicy } from '../api/compiled.js';
import type { Subject } from '../api/types.js';
import { qkey } from './ast.js';
import type { Identity } from './identity.js';

export function subjectMatches(s: Subject, id: Identity): boolean {
  switch (s.kind) {
    case 'ServiceAccount':
      return !!id.serviceAccount && id.serviceAccount === `${s.namespace ?? ''}/${s.name}`;
    case 'User':
      return !!id.user && id.user === s.name;
    case 'Group':
      return (id.groups ?? []).includes(s.name);
    case 'DatabaseUser':
      return id.databaseUser === s.name;
    default:
      return false;
  }
}

export function anySubjectMatches(list: Subject[] | undefined, id: Identity): boolean {
  return (list ?? []).some((s) => subjectMatches(s, id));
}

/** A masked column with the MaskingRule it comes from. */
export interface EffectiveMask extends CompiledMaskedColumn {
  rule: string;
}

/**
 * The masking that applies to this identity: every column of every MaskingRule that does not
 * exempt it. Keyed by qkey(schema, table) of the table named in the rule, then by column name.
 * Two rules masking the same column: the first (in policy order) wins.
 */
export function effectiveMasking(
  policy: CompiledPolicy,
  id: Identity,
): Map<string, Map<string, EffectiveMask>> {
  const out = new Map<string, Map<string, EffectiveMask>>();
  for (const rule of policy.masking ?? []) {
    if (anySubjectMatches(rule.exemptSubjects, id)) continue;
    for (const c of rule.columns) {
      const key = qkey(c.schema, c.table);
      let cols = out.get(key);
      if (!cols) {
        cols = new Map();
        out.set(key, cols);
      }
      if (!cols.has(c.column)) cols.set(c.column, { ...c, rule: rule.name });
    }
  }
  return out;
}

/** Does any masking apply to this identity? */
export function isMaskedSubject(policy: CompiledPolicy, identity: Identity): boolean {
  return effectiveMasking(policy, identity).size > 0;
}

/** The masked columns (schema, table, column, strategy) this identity sees masked. */
export function maskedColumnsFor(policy: CompiledPolicy, identity: Identity): EffectiveMask[] {
  return [...effectiveMasking(policy, identity).values()].flatMap((m) => [...m.values()]);
}
