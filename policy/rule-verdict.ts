/**
 * Rules over what a statement exercises (exercises.ts), with quantifiers by action (issue 25):
 *
 * - each (privilege, object) pair is decided by the first rule, in order, that matches it;
 * - a Deny or RequireApproval rule matches a pair it names (any pair exercised is enough);
 * - an Allow rule permits only the pairs it names; a pair no rule matches falls to defaultAction;
 * - the statement is denied if any pair is denied (by a rule or by `defaultAction: Deny`), else held
 *   for approval if any pair needs one, else allowed: a statement runs only when every pair it
 *   exercises is permitted.
 *
 * Views: a pair on a view that an Allow rule permits covers what the view reads (the admin chose the
 * view as the interface); otherwise the relations under the view are judged too, so a Deny on a table
 * matches reads through any view over it. An opaque statement (DO, CALL, a function not allowed) may
 * do anything: every Deny or approval rule matches it, and only an Allow rule whose `commands` and
 * `objects` are absent or contain `*` covers it.
 */
import type { CompiledPolicy, CompiledRule } from '../api/compiled.js';
import type { Exercise } from './exercises.js';
import type { Identity } from './identity.js';
import { commandMatches, objectMatches } from './rules.js';
import { anySubjectMatches } from './subjects.js';

export interface StatementFacts {
  withoutWhere: boolean;
  opaque: boolean;
}

/** A pair no rule permitted under `defaultAction: Deny`, as `dbguard check` shows it. */
export interface Uncovered {
  privilege: string;
  object: string | null;
  /** the view it is read through */
  through?: string;
  /** why an opaque statement may do anything */
  opaque?: string;
}

export interface StatementVerdict {
  action: 'Allow' | 'Deny' | 'RequireApproval';
  /** the deciding Deny or approval rule; absent when defaultAction Deny decided */
  rule?: CompiledRule;
  /** the first Allow rule (in rule order) that permitted a pair */
  allowedBy?: CompiledRule;
  /** pairs defaultAction Deny refused (empty unless it decided) */
  uncovered: Uncovered[];
  /** the deny (or approval) rests only on relations the catalog snapshot does not know: re-read it */
  hiddenOnly: boolean;
}

const wide = (patterns: string[] | undefined) => !patterns || patterns.some((p) => p.trim() === '*');

/** Does this rule (subjects already checked) match this pair? */
export function rulePairMatches(rule: CompiledRule, e: Exercise, facts: StatementFacts): boolean {
  const m = rule.match ?? {};
  if (m.withoutWhere === true && !facts.withoutWhere && !facts.opaque) return false;
  if (e.opaque) return rule.action !== 'Allow' || (wide(m.commands) && wide(m.objects));
  if (m.commands && !m.commands.some((p) => commandMatches(p, e.privilege))) return false;
  if (m.objects) {
    // behind an unknown relation may be any relation: refusing rules match it, permitting ones cannot
    if (e.hidden) return rule.action !== 'Allow';
    // `SELECT 1` reads no relation: a rule permitting reads of some relations permits reading none
    if (e.object === null) return !!e.constant && rule.action === 'Allow';
    if (!m.objects.some((p) => objectMatches(p, e.object!))) return false;
  }
  return true;
}

export function statementVerdict(
  policy: CompiledPolicy,
  exercises: Exercise[],
  facts: StatementFacts,
  identity: Identity,
): StatementVerdict {
  const rules = (policy.rules ?? [])
    .map((rule, index) => ({ rule, index }))
    .filter(({ rule }) => !rule.match?.subjects || anySubjectMatches(rule.match.subjects, identity));
  const defaultDeny = policy.defaultAction === 'Deny';
  let deny: { index: number; rule: CompiledRule } | undefined;
  /** a Deny rule matched a pair the statement names (not only something hidden behind one) */
  let seenDeny = false;
  let approval: { index: number; rule: CompiledRule } | undefined;
  let seenApproval = false;
  let allowed: { index: number; rule: CompiledRule } | undefined;
  const uncovered: Uncovered[] = [];

  const visit = (e: Exercise, through: string | undefined, underUncovered: boolean): void => {
    const hit = rules.find(({ rule }) => rulePairMatches(rule, e, facts));
    if (hit) {
      const { rule, index } = hit;
      if (rule.action === 'Allow') {
        if (!allowed || index < allowed.index) allowed = hit;
        return; // what a permitted view reads is permitted with it
      }
      if (rule.action === 'Deny') {
        if (!e.hidden) seenDeny = true;
        if (!deny || index < deny.index) deny = hit;
      } else {
        if (!e.hidden) seenApproval = true;
        if (!approval || index < approval.index) approval = hit;
      }
      return;
    }
    let nowUncovered = underUncovered;
    if (defaultDeny && !underUncovered && !e.hidden) {
      uncovered.push({
        privilege: e.privilege,
        object: e.object,
        ...(through ? { through } : {}),
        ...(e.opaque ? { opaque: e.opaque } : {}),
      });
      nowUncovered = true;
    }
    // not decided here: the relations under a view are judged on their own (a Deny on them matches)
    for (const v of e.via ?? []) visit(v, e.object ?? through, nowUncovered);
  };
  for (const e of exercises) visit(e, undefined, false);

  const base = { ...(allowed ? { allowedBy: allowed.rule } : {}), uncovered: [] as Uncovered[] };
  // a definite reason (a pair a Deny rule names, or pairs nothing allows) is reported before a
  // Deny that matched only what an unknown relation might hide
  if (deny && (seenDeny || !uncovered.length))
    return { ...base, action: 'Deny', rule: deny.rule, hiddenOnly: !seenDeny };
  if (uncovered.length) return { ...base, action: 'Deny', uncovered, hiddenOnly: false };
  if (approval) return { ...base, action: 'RequireApproval', rule: approval.rule, hiddenOnly: !seenApproval };
  return { ...base, action: 'Allow', hiddenOnly: false };
}

/** `SELECT on public.customers`, `SET`, `what function evil_fn may do`: for the client's message. */
export function describeUncovered(list: Uncovered[], max = 3): string {
  const one = (u: Uncovered) =>
    u.opaque
      ? `what ${u.opaque} may do`
      : `${u.privilege}${u.object ? ` on ${u.object}` : ''}${u.through ? ` (through ${u.through})` : ''}`;
  const shown = list.slice(0, max).map(one);
  if (list.length > max) shown.push(`${list.length - max} more`);
  return shown.join(', ');
}
