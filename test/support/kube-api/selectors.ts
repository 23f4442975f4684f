/** Label selectors (string form and LabelSelector objects) and field selectors, as list/watch and webhooks use them. */
import { badRequest } from './errors.js';
import type { KubeObject } from './types.js';

export type LabelRequirement =
  | { key: string; op: 'In' | 'NotIn'; values: string[] }
  | { key: string; op: 'Exists' | 'DoesNotExist' };

/** Parses `a=b,c!=d,e in (x,y),f notin (z),g,!h` (kubectl's syntax). */
export function parseLabelSelector(text: string | undefined): LabelRequirement[] {
  const out: LabelRequirement[] = [];
  if (!text?.trim()) return out;
  for (const part of splitTopLevel(text)) {
    const p = part.trim();
    if (!p) continue;
    let m = /^([^\s!=()]+)\s+(in|notin)\s+\(([^)]*)\)$/.exec(p);
    if (m) {
      const values = m[3]!
        .split(',')
        .map((v) => v.trim())
        .filter((v) => v !== '');
      out.push({ key: m[1]!, op: m[2] === 'in' ? 'In' : 'NotIn', values });
      continue;
    }
    m = /^([^\s!=()]+)\s*(==|=|!=)\s*([^\s!=(),]*)$/.exec(p);
    if (m) {
      out.push({ key: m[1]!, op: m[2] === '!=' ? 'NotIn' : 'In', values: [m[3]!] });
      continue;
    }
    m = /^(!?)([^\s!=()]+)$/.exec(p);
    if (m) {
      out.push({ key: m[2]!, op: m[1] ? 'DoesNotExist' : 'Exists' });
      continue;
    }
    throw badRequest(`unable to parse requirement: "${p}" in label selector "${text}"`);
  }
  return out;
}

function splitTopLevel(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of text) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      parts.push(cur);
      cur = '';
    } else cur += ch;
  }
  parts.push(cur);
  return parts;
}

export interface LabelSelectorObject {
  matchLabels?: Record<string, string>;
  matchExpressions?: { key: string; operator: string; values?: string[] }[];
}

/** A metav1.LabelSelector. An empty or missing selector matches everything, as in webhooks. */
export function selectorFromObject(sel: LabelSelectorObject | undefined | null): LabelRequirement[] {
  const out: LabelRequirement[] = [];
  for (const [key, value] of Object.entries(sel?.matchLabels ?? {}))
    out.push({ key, op: 'In', values: [value] });
  for (const e of sel?.matchExpressions ?? []) {
    if (e.operator === 'In' || e.operator === 'NotIn')
      out.push({ key: e.key, op: e.operator, values: e.values ?? [] });
    else if (e.operator === 'Exists' || e.operator === 'DoesNotExist')
      out.push({ key: e.key, op: e.operator });
    else throw badRequest(`"${e.operator}" is not a valid label selector operator`);
  }
  return out;
}

export function matchesLabels(reqs: LabelRequirement[], labels: Record<string, string> | undefined): boolean {
  const l = labels ?? {};
  return reqs.every((r) => {
    const has = Object.hasOwn(l, r.key);
    switch (r.op) {
      case 'In':
        return has && r.values.includes(l[r.key]!);
      case 'NotIn':
        return !has || !r.values.includes(l[r.key]!);
      case 'Exists':
        return has;
      case 'DoesNotExist':
        return !has;
    }
    return false;
  });
}

export interface FieldRequirement {
  path: string[];
  equal: boolean;
  value: string;
}

/**
 * `metadata.name=x,metadata.namespace!=y`. Any dotted path is accepted (kube-apiserver allows only a few per
 * type; being more permissive here cannot make a test pass that a cluster would fail, except for typos).
 */
export function parseFieldSelector(text: string | undefined): FieldRequirement[] {
  const out: FieldRequirement[] = [];
  if (!text?.trim()) return out;
  for (const part of text.split(',')) {
    const m = /^\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*$/.exec(part);
    if (!m) throw badRequest(`invalid field selector: "${part}"`);
    out.push({ path: m[1]!.split('.'), equal: m[2] !== '!=', value: m[3]! });
  }
  return out;
}

export function matchesFields(reqs: FieldRequirement[], obj: KubeObject): boolean {
  return reqs.every((r) => {
    let cur: unknown = obj;
    for (const seg of r.path)
      cur = cur && typeof cur === 'object' ? (cur as Record<string, unknown>)[seg] : undefined;
    const actual = cur === undefined || cur === null ? '' : String(cur);
    return (actual === r.value) === r.equal;
  });
}
