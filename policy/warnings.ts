/**
 * Warnings about a policy that compiles but does not do what it reads as. Pure: the operator shows them
 * as a `Warning` condition on the DatabasePolicy, the proxy writes them to its log.
 */
import type { CompiledPolicy } from '../api/compiled.js';

export interface PolicyWarning {
  /** a stable CamelCase code (condition reason) */
  reason: string;
  message: string;
}

export const DATABASE_USER_WITH_CREDENTIALS = 'DatabaseUserSubjectWithCredentials';

/** The names of `DatabaseUser` subjects in rules and masking exemptions, once each, sorted. */
export function databaseUserSubjects(p: CompiledPolicy): string[] {
  const names = new Set<string>();
  const add = (subjects: CompiledPolicy['rules'][number]['match']['subjects']) => {
    for (const s of subjects ?? []) if (s.kind === 'DatabaseUser') names.add(s.name);
  };
  for (const r of p.rules) add(r.match.subjects);
  for (const m of p.masking) add(m.exemptSubjects);
  return [...names].sort();
}

/**
 * A proxy that logs in with its own credentials proves no client's database user: every session runs as
 * the credentials' user, so a `DatabaseUser` subject matches every client or none (docs/security.md,
 * "Identity is what was proven"). `holder` says where the credentials come from.
 */
export function databaseUserWithCredentials(p: CompiledPolicy, holder: string): PolicyWarning | undefined {
  const names = databaseUserSubjects(p);
  if (!names.length) return undefined;
  return {
    reason: DATABASE_USER_WITH_CREDENTIALS,
    message:
      `DatabaseUser subjects (${names.join(', ')}) match only the user the proxy logs in as with ${holder}, ` +
      'the same for every client; the user a client names at start-up is never used. ' +
      'Tell clients apart with ServiceAccount, User or Group subjects.',
  };
}
