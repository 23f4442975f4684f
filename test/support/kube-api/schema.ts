/**
 * Custom resources against their CRD's openAPIV3Schema, in kube-apiserver's order: prune unknown fields,
 * apply defaults, validate. ajv does the validating; the schema is first translated from Kubernetes'
 * structural-schema dialect (nullable, x-kubernetes-int-or-string, ...) to plain JSON Schema.
 *
 * Not evaluated: CEL rules (`x-kubernetes-validations`) — there is no CEL interpreter here; the operator
 * re-checks those rules in TypeScript. Formats other than the few below are accepted unchecked.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import type { StatusCause } from './errors.js';

type Schema = Record<string, any>;
type JsonObject = Record<string, unknown>;

const isObject = (v: unknown): v is Record<string, any> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

const FORMATS: Record<string, RegExp | ((s: string) => boolean)> = {
  'date-time': (s) =>
    /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/.test(s) &&
    !Number.isNaN(Date.parse(s)),
  date: /^\d{4}-\d{2}-\d{2}$/,
  byte: /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/,
  int32: () => true,
  int64: () => true,
  uri: (s) => URL.canParse(s),
  hostname: /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/,
  ipv4: /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/,
  uuid: /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i,
  duration: /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/,
};

const KEEP = new Set([
  'type',
  'enum',
  'minimum',
  'maximum',
  'exclusiveMinimum',
  'exclusiveMaximum',
  'multipleOf',
  'minLength',
  'maxLength',
  'pattern',
  'minItems',
  'maxItems',
  'uniqueItems',
  'minProperties',
  'maxProperties',
  'required',
  'default',
  'description',
  'format',
]);

/** Kubernetes structural schema → JSON Schema that ajv understands (draft-07, OpenAPI 3.0 booleans). */
export function toJsonSchema(s: Schema | undefined): Schema {
  if (!isObject(s)) return {};
  const out: Schema = {};
  for (const [k, v] of Object.entries(s)) {
    if (!KEEP.has(k)) continue;
    if (k === 'format' && !(typeof v === 'string' && v in FORMATS)) continue;
    // OpenAPI 3.0: exclusiveMinimum is a boolean modifier of minimum
    if ((k === 'exclusiveMinimum' || k === 'exclusiveMaximum') && typeof v === 'boolean') continue;
    out[k] = v;
  }
  if (s.exclusiveMinimum === true && typeof s.minimum === 'number') {
    out.exclusiveMinimum = s.minimum;
    delete out.minimum;
  }
  if (s.exclusiveMaximum === true && typeof s.maximum === 'number') {
    out.exclusiveMaximum = s.maximum;
    delete out.maximum;
  }
  if (isObject(s.properties)) {
    out.properties = {};
    for (const [k, v] of Object.entries(s.properties)) out.properties[k] = toJsonSchema(v as Schema);
  }
  if (isObject(s.additionalProperties)) out.additionalProperties = toJsonSchema(s.additionalProperties);
  if (isObject(s.items)) out.items = toJsonSchema(s.items);
  for (const j of ['allOf', 'anyOf', 'oneOf'] as const)
    if (Array.isArray(s[j])) out[j] = s[j].map((x: Schema) => toJsonSchema(x));
  if (isObject(s.not)) out.not = toJsonSchema(s.not);
  if (s['x-kubernetes-int-or-string'] === true) {
    delete out.type;
    out.anyOf = [...(out.anyOf ?? []), { type: 'integer' }, { type: 'string' }];
  }
  if (s.nullable === true) {
    if (typeof out.type === 'string') out.type = [out.type, 'null'];
    if (Array.isArray(out.enum) && !out.enum.includes(null)) out.enum = [...out.enum, null];
  }
  return out;
}

/**
 * Drops fields the schema does not declare, unless `x-kubernetes-preserve-unknown-fields` keeps them.
 * Returns the dropped paths (kube-apiserver warns `unknown field "spec.x"`, or fails with fieldValidation=Strict).
 */
export function prune(value: unknown, s: Schema | undefined, path: string, dropped: string[]): void {
  if (!isObject(s) || s['x-kubernetes-preserve-unknown-fields'] === true) return;
  if (Array.isArray(value)) {
    if (isObject(s.items)) for (const [i, v] of value.entries()) prune(v, s.items, `${path}[${i}]`, dropped);
    return;
  }
  if (!isObject(value)) return;
  const props = isObject(s.properties) ? s.properties : undefined;
  const extra = s.additionalProperties;
  for (const key of Object.keys(value)) {
    const sub = path ? `${path}.${key}` : key;
    if (props && key in props) prune(value[key], props[key] as Schema, sub, dropped);
    else if (isObject(extra)) prune(value[key], extra, sub, dropped);
    else if (extra === true) continue;
    else if (s['x-kubernetes-embedded-resource'] === true && ['apiVersion', 'kind', 'metadata'].includes(key))
      continue;
    else {
      delete value[key];
      dropped.push(sub);
    }
  }
}

/** kube-apiserver prunes `null` in fields that are not nullable before defaulting. */
function dropNulls(value: unknown, s: Schema | undefined): void {
  if (!isObject(s)) return;
  if (Array.isArray(value) && isObject(s.items)) for (const v of value) dropNulls(v, s.items);
  if (!isObject(value)) return;
  for (const [k, v] of Object.entries(value)) {
    const sub = isObject(s.properties) && k in s.properties ? s.properties[k] : s.additionalProperties;
    if (v === null && !(isObject(sub) && sub.nullable === true) && isObject(sub)) delete value[k];
    else dropNulls(v, sub as Schema);
  }
}

function fieldPath(instancePath: string, root: unknown): string {
  let out = '';
  let cur: unknown = root;
  for (const raw of instancePath.split('/').slice(1)) {
    const seg = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (Array.isArray(cur)) out += `[${seg}]`;
    else out += out ? `.${seg}` : seg;
    cur = isObject(cur) || Array.isArray(cur) ? (cur as any)[seg] : undefined;
  }
  return out;
}

const show = (v: unknown) => (typeof v === 'string' ? `"${v}"` : JSON.stringify(v));

function valueAt(root: unknown, instancePath: string): unknown {
  let cur: unknown = root;
  for (const raw of instancePath.split('/').slice(1)) {
    const seg = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    cur = isObject(cur) || Array.isArray(cur) ? (cur as any)[seg] : undefined;
  }
  return cur;
}

/** One ajv error → one Status cause worded like kube-apiserver's. */
function toCause(e: ErrorObject, root: unknown): StatusCause {
  const field = fieldPath(e.instancePath, root);
  const value = valueAt(root, e.instancePath);
  const p = e.params as Record<string, any>;
  switch (e.keyword) {
    case 'required': {
      const f = field ? `${field}.${p.missingProperty}` : String(p.missingProperty);
      return { reason: 'FieldValueRequired', message: 'Required value', field: f };
    }
    case 'enum':
      return {
        reason: 'FieldValueNotSupported',
        message: `Unsupported value: ${show(value)}: supported values: ${(p.allowedValues as unknown[]).map(show).join(', ')}`,
        field,
      };
    case 'type':
      return {
        reason: 'FieldValueTypeInvalid',
        message: `Invalid value: ${show(value)}: ${field} in body must be of type ${p.type}: ${show(typeName(value))}`,
        field,
      };
    case 'maxLength':
      return {
        reason: 'FieldValueTooLong',
        message: `Too long: may not be more than ${p.limit} bytes`,
        field,
      };
    case 'maxItems':
      return {
        reason: 'FieldValueTooMany',
        message: `Too many: ${(value as unknown[]).length}: must have at most ${p.limit} items`,
        field,
      };
    default:
      return {
        reason: 'FieldValueInvalid',
        message: `Invalid value: ${show(value)}: ${field} in body ${e.message}`,
        field,
      };
  }
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

/** x-kubernetes-list-type set/map: duplicates are invalid (FieldValueDuplicate). */
function listTypeCauses(value: unknown, s: Schema | undefined, path: string, out: StatusCause[]): void {
  if (!isObject(s)) return;
  if (Array.isArray(value)) {
    const lt = s['x-kubernetes-list-type'];
    const keys: string[] = s['x-kubernetes-list-map-keys'] ?? [];
    const seen = new Set<string>();
    value.forEach((item, i) => {
      if (lt === 'set' || (lt === 'map' && keys.length > 0 && isObject(item))) {
        const id =
          lt === 'set' ? JSON.stringify(item) : JSON.stringify(keys.map((k) => (item as JsonObject)[k]));
        if (seen.has(id))
          out.push({
            reason: 'FieldValueDuplicate',
            message: `Duplicate value: ${lt === 'set' ? show(item) : id}`,
            field: `${path}[${i}]`,
          });
        seen.add(id);
      }
      listTypeCauses(item, s.items, `${path}[${i}]`, out);
    });
    return;
  }
  if (!isObject(value)) return;
  for (const [k, v] of Object.entries(value)) {
    const sub = isObject(s.properties) && k in s.properties ? s.properties[k] : s.additionalProperties;
    listTypeCauses(v, sub as Schema, path ? `${path}.${k}` : k, out);
  }
}

/** Compiles and caches one validator per CRD schema version; not shared across servers. */
export class SchemaValidator {
  private readonly ajv: Ajv;
  private readonly cache = new Map<string, { schema: Schema; fn: ValidateFunction }>();

  constructor() {
    this.ajv = new Ajv({ strict: false, allErrors: true, useDefaults: true, validateFormats: true });
    for (const [name, f] of Object.entries(FORMATS))
      this.ajv.addFormat(name, typeof f === 'function' ? { validate: f } : f);
  }

  private compiled(cacheKey: string, openApi: Schema) {
    const hit = this.cache.get(cacheKey);
    if (hit && hit.schema === openApi) return hit.fn;
    const json = toJsonSchema(openApi);
    // metadata is validated by the server itself; the schema may not constrain it beyond "object"
    if (json.properties) delete json.properties.metadata;
    if (Array.isArray(json.required)) json.required = json.required.filter((r: string) => r !== 'metadata');
    const fn = this.ajv.compile(json);
    this.cache.set(cacheKey, { schema: openApi, fn });
    return fn;
  }

  /**
   * Prunes, defaults and validates `obj` in place (metadata untouched).
   * Returns the pruned field paths and the validation causes (empty when valid).
   */
  check(
    cacheKey: string,
    openApi: Schema | undefined,
    obj: JsonObject,
  ): { pruned: string[]; causes: StatusCause[] } {
    if (!isObject(openApi)) return { pruned: [], causes: [] };
    const { metadata, ...rest } = obj;
    const pruned: string[] = [];
    const rootSchema: Schema = { ...openApi, properties: { ...(openApi.properties ?? {}) } };
    for (const k of ['apiVersion', 'kind']) rootSchema.properties[k] ??= { type: 'string' };
    rootSchema.properties.metadata = { type: 'object', 'x-kubernetes-preserve-unknown-fields': true };
    prune(rest, rootSchema, '', pruned);
    dropNulls(rest, openApi);
    const fn = this.compiled(cacheKey, openApi);
    const causes: StatusCause[] = [];
    if (!fn(rest)) for (const e of fn.errors ?? []) causes.push(toCause(e, rest));
    listTypeCauses(rest, openApi, '', causes);
    // write back in place, keeping the usual key order: apiVersion, kind, metadata, the rest
    const { apiVersion, kind, ...body } = rest;
    for (const k of Object.keys(obj)) delete obj[k];
    Object.assign(obj, { apiVersion, kind }, metadata !== undefined ? { metadata } : {}, body);
    return { pruned, causes: dedupe(causes) };
  }
}

function dedupe(causes: StatusCause[]): StatusCause[] {
  const seen = new Set<string>();
  return causes.filter((c) => {
    const k = `${c.field}|${c.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}
