/**
 * Policy files: multi-document YAML holding DatabasePolicies, MaskingRules, ApprovalRequests and,
 * for standalone mode, Secrets (salts, CA certificates, upstream credentials). Pure: text in,
 * resources or precise errors out (file, document, resource, field path, problem).
 */
import { parseAllDocuments } from 'yaml';
import type { CompiledPolicy, UpstreamCredentials } from '../api/compiled.js';
import { DEFAULTS } from '../api/defaults.js';
import { PATTERNS } from '../api/patterns.js';
import { KINDS } from '../api/schemas.js';
import { API_VERSION, type PolicyFileResource, type SecretDoc } from '../api/types.js';
import { isDbguardKind, validateResource } from '../api/validate.js';
import { formatPolicyError, type PolicyError, resourceName, selectPolicy } from './compile.js';

export interface PolicyFile {
  /** shown in errors: usually the path */
  name: string;
  text: string;
}

/** Where a resource was defined, by `Kind namespace/name`. */
export type Origins = Record<string, { file: string; document: number }>;

export type LoadResult =
  | { ok: true; resources: PolicyFileResource[]; origins: Origins }
  | { ok: false; errors: PolicyError[] };

const SECRET_FIELDS = new Set(['apiVersion', 'kind', 'metadata', 'data', 'stringData', 'type', 'immutable']);
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkStringMap(
  v: unknown,
  field: string,
  base64: boolean,
  add: (path: string, message: string) => void,
) {
  if (v === undefined) return;
  if (!isRecord(v)) return add(field, 'must be a map of key to string');
  for (const [k, val] of Object.entries(v)) {
    if (!new RegExp(PATTERNS.secretKey.pattern).test(k))
      add(`${field}.${k}`, `must be ${PATTERNS.secretKey.describe}`);
    if (typeof val !== 'string')
      add(`${field}.${k}`, `must be a string (got ${val === null ? 'null' : typeof val})`);
    else if (base64 && !BASE64.test(val.replace(/\s+/g, '')))
      add(`${field}.${k}`, 'must be base64 (use stringData for plain text)');
  }
}

/** Check a Secret document; returns it with whitespace-free base64, or undefined after adding errors. */
function checkSecret(
  doc: Record<string, unknown>,
  add: (path: string, message: string) => void,
): SecretDoc | undefined {
  let bad = false;
  const addBad = (p: string, m: string) => {
    bad = true;
    add(p, m);
  };
  for (const k of Object.keys(doc)) if (!SECRET_FIELDS.has(k)) addBad(k, 'unknown field');
  const md = doc.metadata;
  if (!isRecord(md) || typeof md.name !== 'string') addBad('metadata.name', 'is required');
  else {
    if (!new RegExp(PATTERNS.dnsSubdomain.pattern).test(md.name))
      addBad('metadata.name', `must be ${PATTERNS.dnsSubdomain.describe}`);
    if (
      md.namespace !== undefined &&
      (typeof md.namespace !== 'string' || !new RegExp(PATTERNS.dnsLabel.pattern).test(md.namespace))
    )
      addBad('metadata.namespace', `must be ${PATTERNS.dnsLabel.describe}`);
  }
  checkStringMap(doc.data, 'data', true, addBad);
  checkStringMap(doc.stringData, 'stringData', false, addBad);
  if (bad) return undefined;
  const out = structuredClone(doc) as unknown as SecretDoc;
  if (out.data)
    out.data = Object.fromEntries(Object.entries(out.data).map(([k, v]) => [k, v.replace(/\s+/g, '')]));
  return out;
}

function withNamespace<T extends { metadata: { namespace?: string } }>(r: T): T {
  if (!r.metadata.namespace) r.metadata.namespace = DEFAULTS.namespace;
  return r;
}

/**
 * Parse policy files into resources: validated against their schemas, defaults applied,
 * `metadata.namespace` defaulted to `default`. Empty documents are skipped; a `v1` `List` is
 * unpacked. Every problem is reported, not only the first.
 */
export function parsePolicyDocuments(files: PolicyFile[]): LoadResult {
  const errors: PolicyError[] = [];
  const resources: PolicyFileResource[] = [];
  const origins: Origins = {};

  const accept = (
    r: PolicyFileResource,
    file: string,
    document: number,
    add: (path: string, message: string) => void,
  ) => {
    const id = resourceName(r);
    const before = origins[id];
    if (before)
      return add('metadata.name', `${id} is defined twice (also ${before.file} document ${before.document})`);
    origins[id] = { file, document };
    resources.push(r);
  };

  const handle = (file: string, document: number, value: unknown, item?: number) => {
    const prefix = item === undefined ? '' : `items[${item}].`;
    const name =
      isRecord(value) && isRecord(value.metadata) && typeof value.metadata.name === 'string'
        ? resourceName(value as { kind?: string; metadata: { name: string; namespace?: string } })
        : undefined;
    const add = (path: string, message: string) =>
      errors.push({ file, document, ...(name ? { resource: name } : {}), path: prefix + path, message });
    if (!isRecord(value))
      return add(
        '',
        `must be a Kubernetes object (a YAML map), not ${Array.isArray(value) ? 'a list' : typeof value}`,
      );
    const { apiVersion, kind } = value;
    if (kind === 'List' && apiVersion === 'v1' && item === undefined) {
      if (!Array.isArray(value.items)) return add('items', 'must be a list');
      for (const [i, it] of value.items.entries()) handle(file, document, it, i);
      return;
    }
    if (kind === 'Secret') {
      if (apiVersion !== 'v1')
        return add('apiVersion', `must be v1 for a Secret (got ${JSON.stringify(apiVersion)})`);
      const s = checkSecret(value, add);
      if (s) accept(withNamespace(s), file, document, add);
      return;
    }
    if (!isDbguardKind(kind)) {
      return add(
        'kind',
        kind === undefined
          ? 'is required'
          : `unknown kind ${JSON.stringify(kind)}${apiVersion ? ` (${apiVersion})` : ''}: policy files hold ${KINDS.join(', ')} and v1 Secret`,
      );
    }
    if (apiVersion !== API_VERSION) {
      return add('apiVersion', `must be ${API_VERSION} for ${kind} (got ${JSON.stringify(apiVersion)})`);
    }
    const v = validateResource(value);
    if (!v.ok) {
      for (const e of v.errors) add(e.path, e.message);
      return;
    }
    accept(withNamespace(v.resource), file, document, add);
  };

  for (const f of files) {
    let docs: ReturnType<typeof parseAllDocuments>;
    try {
      docs = parseAllDocuments(f.text, { prettyErrors: true, uniqueKeys: true });
    } catch (e) {
      errors.push({
        file: f.name,
        path: '',
        message: `not YAML: ${e instanceof Error ? e.message : String(e)}`,
      });
      continue;
    }
    const list = Array.isArray(docs) ? docs : [docs];
    list.forEach((doc, i) => {
      const document = i + 1;
      if (doc.errors.length) {
        for (const e of doc.errors)
          errors.push({ file: f.name, document, path: '', message: `YAML: ${e.message}` });
        return;
      }
      let value: unknown;
      try {
        value = doc.toJS({ maxAliasCount: 100 });
      } catch (e) {
        errors.push({
          file: f.name,
          document,
          path: '',
          message: `YAML: ${e instanceof Error ? e.message : String(e)}`,
        });
        return;
      }
      if (value === null || value === undefined) return; // an empty document: `---` with nothing, or only comments
      handle(f.name, document, value);
    });
  }
  if (errors.length) return { ok: false, errors };
  return { ok: true, resources, origins };
}

export type LoadPolicyResult =
  | {
      ok: true;
      compiled: CompiledPolicy;
      resources: PolicyFileResource[];
      /** standalone upstream credentials from a Secret document; never in `compiled` */
      credentials?: UpstreamCredentials;
    }
  | { ok: false; errors: string[] };

/**
 * Policy files → the compiled policy `namespace/name` (or the only one): what `dbguard proxy
 * --policy-file` and `dbguard check` need. Errors are ready-to-print lines.
 */
export function loadPolicyFiles(files: PolicyFile[], policy?: string): LoadPolicyResult {
  const parsed = parsePolicyDocuments(files);
  if (!parsed.ok) return { ok: false, errors: parsed.errors.map(formatPolicyError) };
  const selected = selectPolicy(parsed.resources, policy);
  if (!selected.ok) {
    const located = selected.errors.map((e) => ({
      ...(e.resource ? parsed.origins[e.resource] : undefined),
      ...e,
    }));
    return { ok: false, errors: located.map(formatPolicyError) };
  }
  return {
    ok: true,
    compiled: selected.compiled,
    resources: parsed.resources,
    ...(selected.credentials ? { credentials: selected.credentials } : {}),
  };
}
