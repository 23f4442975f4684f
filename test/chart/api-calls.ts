/**
 * Which Kubernetes API permissions a set of source files needs, read from the sources themselves: a call is a
 * method of a @kubernetes/client-node API class (`readNamespacedSecret(`, `patchNamespacedCustomObjectStatus(`)
 * or an informer (`makeInformer(kc, '/apis/...')` or `new k8s.ListWatch('/apis/...', ...)`). Deliberately simple and over-approximating:
 * - the verb comes from the method's prefix (read/get → get, replace → update, ...);
 * - the resource from the rest of the name (`NamespacedSecret` → secrets), the API group from the API class;
 * - custom objects: every dbguard plural the file names (a literal, `PLURAL` of approvals, `PLURALS`).
 * A method this cannot map fails the test that uses it, so a new kind of call is never silently ignored.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as k8s from '@kubernetes/client-node';

export interface Permission {
  group: string;
  resource: string;
  verb: string;
}

export interface ApiCall extends Permission {
  file: string;
  method: string;
}

export const key = (p: Permission) => `${p.group || 'core'}/${p.resource}:${p.verb}`;

/** API class name → group (CoreV1Api → '', CoordinationV1Api → coordination.k8s.io, ...). */
function groupOf(apiClass: string): string | undefined {
  if (apiClass === 'CustomObjectsApi') return 'dbguard.io';
  const m = /^(\w+?)V\d+(?:(?:alpha|beta)\d+)?Api$/.exec(apiClass);
  if (!m) return undefined;
  const g = m[1]!;
  if (g === 'Core') return '';
  if (g === 'Apps' || g === 'Batch' || g === 'Policy' || g === 'Autoscaling') return g.toLowerCase();
  return `${g.toLowerCase()}.k8s.io`;
}

/** Methods of every API class of the client, by name → the classes that have it. */
function apiMethods(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const [name, value] of Object.entries(k8s)) {
    if (!/Api$/.test(name) || typeof value !== 'function') continue;
    for (const m of Object.getOwnPropertyNames((value as { prototype: object }).prototype)) {
      if (m === 'constructor' || !/^(get|list|read|create|replace|patch|delete)[A-Z]/.test(m)) continue;
      out.set(m, [...(out.get(m) ?? []), name]);
    }
  }
  return out;
}

const VERBS: Record<string, string> = {
  get: 'get',
  read: 'get',
  list: 'list',
  create: 'create',
  replace: 'update',
  patch: 'patch',
  delete: 'delete',
};

function plural(kind: string): string {
  const lower = kind.toLowerCase();
  if (/[^aeiou]y$/.test(lower)) return `${lower.slice(0, -1)}ies`;
  if (/(s|x|ch|sh)$/.test(lower)) return `${lower}es`;
  return `${lower}s`;
}

const CRD_PLURALS = ['databasepolicies', 'maskingrules', 'approvalrequests'];

/** dbguard resources a file refers to, for its custom-object calls and informers. */
function crdPluralsIn(text: string): string[] {
  const found = new Set(CRD_PLURALS.filter((p) => text.includes(`'${p}'`)));
  if (/\bPLURALS\b/.test(text)) {
    found.add('databasepolicies');
    found.add('maskingrules');
  }
  if (/\bPLURAL\b/.test(text) && /approvals\/model\.js|from '\.\/model\.js'/.test(text))
    found.add('approvalrequests');
  return [...found];
}

export interface Extraction {
  calls: ApiCall[];
  /** methods that look like API calls but could not be mapped to a permission */
  unmapped: { file: string; method: string }[];
}

/** Calls of one source file. `versionApi.getCode()` (the public /version endpoint) needs no RBAC. */
export function extractCalls(file: string, text: string, methods = apiMethods()): Extraction {
  const calls: ApiCall[] = [];
  const unmapped: { file: string; method: string }[] = [];
  // a file that does not import the client cannot call it (yaml's `doc.createNode(` is not CoreV1Api's)
  if (!text.includes("'@kubernetes/client-node'")) return { calls, unmapped };
  const classesUsed = new Set([...text.matchAll(/makeApiClient\(\s*k8s\.(\w+)\s*\)/g)].map((m) => m[1]!));
  for (const m of text.matchAll(/\.([a-z]+[A-Z]\w*)\s*\(/g)) {
    const method = m[1]!;
    const owners = methods.get(method);
    if (!owners) continue;
    if (method === 'getCode') continue;
    // the API class this file makes a client of; a client handed in from elsewhere is reported as unmapped
    const owner = owners.find((o) => classesUsed.has(o));
    const prefix = /^(get|list|read|create|replace|patch|delete)/.exec(method)![1]!;
    const group = owner ? groupOf(owner) : undefined;
    if (!owner || group === undefined) {
      unmapped.push({ file, method });
      continue;
    }
    const verb = VERBS[prefix]!;
    let rest = method.slice(prefix.length).replace(/^(Namespaced|Cluster)/, '');
    let sub = '';
    if (rest.endsWith('Status')) {
      sub = '/status';
      rest = rest.slice(0, -'Status'.length);
    }
    rest = rest.replace(/ForAllNamespaces$/, '');
    if (owner === 'CustomObjectsApi') {
      const plurals = crdPluralsIn(text);
      if (!plurals.length) unmapped.push({ file, method: `${method} (which resource?)` });
      for (const p of plurals) calls.push({ file, method, group, resource: `${p}${sub}`, verb });
    } else {
      calls.push({ file, method, group, resource: `${plural(rest)}${sub}`, verb });
    }
  }
  // informers (makeInformer, or a ListWatch built directly) list and then watch
  for (const _ of text.matchAll(/(?:makeInformer|new\s+k8s\.ListWatch)\s*(?:<[^>]*>)?\s*\(/g)) {
    const plurals = crdPluralsIn(text);
    if (!plurals.length) unmapped.push({ file, method: 'makeInformer (which resource?)' });
    for (const p of plurals)
      for (const verb of ['list', 'watch'])
        calls.push({ file, method: 'makeInformer', group: 'dbguard.io', resource: p, verb });
  }
  return { calls, unmapped };
}

/** Every .ts file under the given paths (files or directories), tests excluded. */
export function sourceFiles(root: string, paths: string[]): string[] {
  const out: string[] = [];
  const walk = (p: string) => {
    const st = fs.statSync(p);
    if (st.isDirectory()) for (const e of fs.readdirSync(p)) walk(path.join(p, e));
    else if (p.endsWith('.ts') && !p.endsWith('.test.ts')) out.push(p);
  };
  for (const p of paths) walk(path.join(root, p));
  return out.sort();
}

export function extractAll(root: string, paths: string[]): Extraction {
  const methods = apiMethods();
  const all: Extraction = { calls: [], unmapped: [] };
  for (const f of sourceFiles(root, paths)) {
    const e = extractCalls(path.relative(root, f), fs.readFileSync(f, 'utf8'), methods);
    all.calls.push(...e.calls);
    all.unmapped.push(...e.unmapped);
  }
  return all;
}

export interface PolicyRule {
  apiGroups?: string[];
  resources?: string[];
  verbs?: string[];
  resourceNames?: string[];
}

/** Every permission a list of RBAC rules grants (no wildcards are used or accepted by the chart). */
export function granted(rules: PolicyRule[]): Set<string> {
  const out = new Set<string>();
  for (const r of rules)
    for (const group of r.apiGroups ?? [])
      for (const resource of r.resources ?? [])
        for (const verb of r.verbs ?? []) out.add(key({ group, resource, verb }));
  return out;
}
