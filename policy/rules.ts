/**
 * Pattern matching for rules (contract §1): command-tag and relation patterns. judge() matches rules
 * against the (privilege, object) pairs a statement exercises (rule-verdict.ts). `ruleMatches` is the
 * statement-level form (any tag against any object), kept for callers of the engine's API: it is the
 * right quantifier for Deny rules only, never for deciding what an Allow rule permits.
 */
import type { CompiledRule } from '../api/compiled.js';
import type { Identity } from './identity.js';
import { anySubjectMatches } from './subjects.js';

export interface RuleFacts {
  command: string;
  innerCommands: string[];
  objects: string[];
  withoutWhere: boolean;
  opaque: boolean;
}

/** Patterns come from the policy (a bounded set); each pair of a statement is matched against them. */
const compiled = new Map<string, RegExp>();

function globToRegExp(pattern: string, flags = ''): RegExp {
  const key = `${flags}\u0000${pattern}`;
  const known = compiled.get(key);
  if (known) return known;
  const body = pattern
    .split('*')
    .map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
    .join('.*');
  const re = new RegExp(`^${body}$`, flags);
  if (compiled.size >= 10_000) compiled.clear();
  compiled.set(key, re);
  return re;
}

/** `DROP *` matches every tag starting with `DROP `; `*` matches every tag; case-insensitive. */
export function commandMatches(pattern: string, tag: string): boolean {
  return globToRegExp(pattern.trim().toUpperCase()).test(tag.toUpperCase());
}

function splitQualified(s: string): [string, string] {
  const i = s.indexOf('.');
  return i < 0 ? ['*', s] : [s.slice(0, i), s.slice(i + 1)];
}

/**
 * `public.*`, `*.audit_log`, `*`, `public.orders_*`. A pattern without a schema matches that name in
 * any schema. An object `schema.*` (DROP SCHEMA, GRANT ... IN SCHEMA) stands for every relation of
 * the schema, so it matches any pattern whose schema part matches.
 */
export function objectMatches(pattern: string, object: string): boolean {
  if (pattern.trim() === '*') return true;
  const [ps, pn] = splitQualified(pattern.trim());
  const [os, on] = splitQualified(object);
  if (!globToRegExp(ps).test(os)) return false;
  return on === '*' || globToRegExp(pn).test(on);
}

export function ruleMatches(rule: CompiledRule, facts: RuleFacts, identity: Identity): boolean {
  const m = rule.match ?? {};
  if (m.subjects && !anySubjectMatches(m.subjects, identity)) return false;
  if (m.commands) {
    const tags = [facts.command, ...facts.innerCommands];
    if (!facts.opaque && !m.commands.some((p) => tags.some((t) => commandMatches(p, t)))) return false;
  }
  if (m.objects) {
    if (!facts.opaque && !m.objects.some((p) => facts.objects.some((o) => objectMatches(p, o)))) return false;
  }
  if (m.withoutWhere === true && !facts.withoutWhere && !facts.opaque) return false;
  return true;
}
