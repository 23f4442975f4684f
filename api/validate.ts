/**
 * Validation of dbguard resources against api/schemas.ts: structural checks and defaults by ajv,
 * then the cross-field rules of api/cel.ts (the TypeScript twins of the CRDs' CEL rules), found by
 * walking the schema and the object together. Errors name the field (`spec.rules[2].approval`).
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { celRuleByText, isTransitionRule } from './cel.js';
import { describePattern, PATTERNS } from './patterns.js';
import { type JSONSchemaProps, KINDS, type Kind, SCHEMAS } from './schemas.js';
import { API_VERSION, type ApprovalRequest, type DatabasePolicy, type MaskingRule } from './types.js';

export interface FieldError {
  /** `spec.rules[2].approval`; empty for the object as a whole */
  path: string;
  message: string;
}

export type ValidateResult<T> = { ok: true; resource: T } | { ok: false; errors: FieldError[] };

export interface ValidateOptions {
  /** the stored object, on an update: enables the transition rules (ApprovalRequest.spec.decision) */
  oldObject?: unknown;
  /** fill in schema defaults in the returned resource (default true) */
  applyDefaults?: boolean;
}

interface KindOf {
  DatabasePolicy: DatabasePolicy;
  MaskingRule: MaskingRule;
  ApprovalRequest: ApprovalRequest;
}

// Kubernetes accepts RFC 3339 date-times; ajv needs the format given (no ajv-formats here).
const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

/** The ajv form of a structural schema: unknown fields are errors, not silently pruned. */
function toAjvSchema(s: JSONSchemaProps): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(s)) {
    if (k.startsWith('x-kubernetes-') || k === 'description') continue;
    if (k === 'properties') {
      out.properties = Object.fromEntries(
        Object.entries(v as Record<string, JSONSchemaProps>).map(([p, ps]) => [p, toAjvSchema(ps)]),
      );
    } else if (k === 'items' || k === 'additionalProperties') {
      out[k] = toAjvSchema(v as JSONSchemaProps);
    } else {
      out[k] = v;
    }
  }
  if (
    s.type === 'object' &&
    s.properties &&
    !s['x-kubernetes-preserve-unknown-fields'] &&
    !s.additionalProperties
  ) {
    out.additionalProperties = false;
  }
  return out;
}

/** The API server checks these on metadata; policy files get the same checks. */
const METADATA_SCHEMA = {
  type: 'object',
  required: ['name'],
  properties: {
    name: { type: 'string', pattern: PATTERNS.dnsSubdomain.pattern, maxLength: 253 },
    namespace: { type: 'string', pattern: PATTERNS.dnsLabel.pattern, maxLength: 63 },
    labels: { type: 'object', additionalProperties: { type: 'string' } },
    annotations: { type: 'object', additionalProperties: { type: 'string' } },
  },
};

function resourceAjvSchema(kind: Kind): Record<string, unknown> {
  const s = toAjvSchema(SCHEMAS[kind]);
  const props = s.properties as Record<string, unknown>;
  props.metadata = METADATA_SCHEMA;
  props.apiVersion = { type: 'string', const: API_VERSION };
  props.kind = { type: 'string', const: kind };
  s.required = ['apiVersion', 'kind', 'metadata', ...((s.required as string[]) ?? [])];
  return s;
}

let ajv: Ajv | undefined;
const validators = new Map<Kind, ValidateFunction>();

function validatorFor(kind: Kind): ValidateFunction {
  let v = validators.get(kind);
  if (!v) {
    ajv ??= new Ajv({ allErrors: true, useDefaults: true, strict: true, strictRequired: false });
    ajv.addFormat('date-time', RFC3339);
    v = ajv.compile(resourceAjvSchema(kind));
    validators.set(kind, v);
  }
  return v;
}

/** `/spec/rules/2/approval` → `spec.rules[2].approval` */
export function jsonPointerToPath(pointer: string): string {
  let out = '';
  for (const raw of pointer.split('/').slice(1)) {
    const seg = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    out += /^\d+$/.test(seg) ? `[${seg}]` : out ? `.${seg}` : seg;
  }
  return out;
}

function join(path: string, suffix: string): string {
  if (!suffix) return path;
  if (suffix.startsWith('[')) return path + suffix;
  const s = suffix.startsWith('.') ? suffix.slice(1) : suffix;
  return path ? `${path}.${s}` : s;
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${JSON.stringify(v)}`;
}

function valueAt(root: unknown, pointer: string): unknown {
  let cur: any = root;
  for (const raw of pointer.split('/').slice(1)) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = cur[raw.replace(/~1/g, '/').replace(/~0/g, '~')];
  }
  return cur;
}

function ajvErrorToField(e: ErrorObject, root: unknown): FieldError {
  const path = jsonPointerToPath(e.instancePath);
  const value = valueAt(root, e.instancePath);
  const shown = JSON.stringify(value);
  switch (e.keyword) {
    case 'required':
      return { path: join(path, e.params.missingProperty), message: 'is required' };
    case 'additionalProperties':
      return { path: join(path, e.params.additionalProperty), message: 'unknown field' };
    case 'enum':
      return {
        path,
        message: `must be one of ${(e.params.allowedValues as unknown[]).join(', ')} (got ${shown})`,
      };
    case 'const':
      return { path, message: `must be ${JSON.stringify(e.params.allowedValue)} (got ${shown})` };
    case 'type':
      return {
        path,
        message: `must be ${e.params.type === 'integer' ? 'an integer' : `of type ${e.params.type}`} (got ${typeName(value)})`,
      };
    case 'pattern': {
      const what = describePattern(e.params.pattern) ?? `matching ${e.params.pattern}`;
      return { path, message: `must be ${what} (got ${shown})` };
    }
    case 'format':
      return { path, message: `must be an RFC 3339 date-time such as 2026-11-29T10:05:00Z (got ${shown})` };
    default:
      return { path, message: e.message ?? `fails ${e.keyword}` };
  }
}

/** Walk schema and object together and run the TypeScript twin of every CEL rule on the way. */
function checkCelRules(
  schema: JSONSchemaProps,
  value: unknown,
  old: unknown,
  path: string,
  out: FieldError[],
) {
  if (value === undefined || value === null) return;
  for (const xv of schema['x-kubernetes-validations'] ?? []) {
    const rule = celRuleByText(xv.rule!);
    if (!rule) throw new Error(`internal: CEL rule without a TypeScript twin: ${xv.rule}`);
    if (isTransitionRule(rule) && old === undefined) continue;
    let result: boolean | { path: string; message: string }[];
    try {
      result = rule.check(value, old);
    } catch {
      continue; // a malformed value: the structural errors already name it
    }
    if (result === false) out.push({ path: join(path, rule.fieldPath ?? ''), message: rule.message });
    else if (Array.isArray(result))
      for (const v of result) out.push({ path: join(path, v.path), message: v.message });
  }
  if (schema.properties && typeof value === 'object' && !Array.isArray(value)) {
    for (const [k, ps] of Object.entries(schema.properties)) {
      const child = (value as Record<string, unknown>)[k];
      const oldChild = old && typeof old === 'object' ? (old as Record<string, unknown>)[k] : undefined;
      checkCelRules(ps, child, oldChild, join(path, k), out);
    }
  }
  // List items are not correlated with old items (atomic lists), as in Kubernetes.
  if (schema.items && Array.isArray(value)) {
    for (const [i, item] of value.entries())
      checkCelRules(schema.items!, item, undefined, `${path}[${i}]`, out);
  }
}

function dedupe(errors: FieldError[]): FieldError[] {
  const seen = new Set<string>();
  return errors.filter((e) => {
    const k = `${e.path}\0${e.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/** Whether `kind` names one of dbguard's resource kinds. */
export function isDbguardKind(kind: unknown): kind is Kind {
  return typeof kind === 'string' && (KINDS as readonly string[]).includes(kind);
}

/**
 * Validate a DatabasePolicy, MaskingRule or ApprovalRequest (chosen by its `kind`). The input is not
 * modified; on success the result is a copy with the schema's defaults applied.
 */
export function validateResource(obj: unknown, opts?: ValidateOptions): ValidateResult<KindOf[Kind]>;
export function validateResource<K extends Kind>(
  obj: unknown,
  opts: ValidateOptions & { kind: K },
): ValidateResult<KindOf[K]>;
export function validateResource(
  obj: unknown,
  opts: ValidateOptions & { kind?: Kind } = {},
): ValidateResult<any> {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    return { ok: false, errors: [{ path: '', message: `must be an object (got ${typeName(obj)})` }] };
  }
  const declared = (obj as Record<string, unknown>).kind;
  const kind = opts.kind ?? declared;
  if (!isDbguardKind(kind)) {
    return {
      ok: false,
      errors: [
        { path: 'kind', message: `must be one of ${KINDS.join(', ')} (got ${JSON.stringify(declared)})` },
      ],
    };
  }
  const copy = structuredClone(obj) as Record<string, unknown>;
  const validate = validatorFor(kind);
  const errors: FieldError[] = [];
  if (!validate(copy)) errors.push(...(validate.errors ?? []).map((e) => ajvErrorToField(e, copy)));
  checkCelRules(SCHEMAS[kind], copy, opts.oldObject, '', errors);
  if (errors.length) return { ok: false, errors: dedupe(errors) };
  return { ok: true, resource: opts.applyDefaults === false ? structuredClone(obj) : copy };
}

/** `path: message` lines, for logs and CLI output. */
export function formatFieldErrors(errors: FieldError[]): string {
  return errors.map((e) => (e.path ? `${e.path}: ${e.message}` : e.message)).join('\n');
}
