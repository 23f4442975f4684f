/**
 * The three patch formats of PATCH requests: JSON Patch (RFC 6902), JSON Merge Patch (RFC 7386) and a
 * strategic merge patch reduced to what built-in objects need (lists of named things merged by key).
 */
import { ApiError } from './errors.js';

type Json = unknown;
type JsonObject = Record<string, Json>;

const isObject = (v: Json): v is JsonObject => typeof v === 'object' && v !== null && !Array.isArray(v);
const clone = <T>(v: T): T => (v === undefined ? v : structuredClone(v));

export interface JsonPatchOp {
  op: string;
  path: string;
  value?: Json;
  from?: string;
}

const patchError = (message: string) => new ApiError(422, 'Invalid', message);

function parsePointer(pointer: string): string[] {
  if (pointer === '') return [];
  if (!pointer.startsWith('/')) throw patchError(`invalid JSON pointer "${pointer}": must start with "/"`);
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function arrayIndex(arr: Json[], token: string, forAdd: boolean, pointer: string): number {
  if (forAdd && token === '-') return arr.length;
  if (!/^(0|[1-9][0-9]*)$/.test(token)) throw patchError(`invalid array index "${token}" in "${pointer}"`);
  const i = Number(token);
  if (i > arr.length || (!forAdd && i === arr.length))
    throw patchError(`array index ${i} out of range in "${pointer}"`);
  return i;
}

/** The parent container and last token of a pointer; fails when the parent does not exist. */
function locate(doc: Json, pointer: string): { parent: Json; token: string } {
  const tokens = parsePointer(pointer);
  if (tokens.length === 0) throw patchError('the root cannot be the target of this operation');
  let cur = doc;
  for (const t of tokens.slice(0, -1)) {
    if (Array.isArray(cur)) cur = cur[arrayIndex(cur, t, false, pointer)];
    else if (isObject(cur) && Object.hasOwn(cur, t)) cur = cur[t];
    else throw patchError(`path "${pointer}" does not exist`);
  }
  return { parent: cur, token: tokens[tokens.length - 1]! };
}

function getAt(doc: Json, pointer: string): Json {
  let cur = doc;
  for (const t of parsePointer(pointer)) {
    if (Array.isArray(cur)) cur = cur[arrayIndex(cur, t, false, pointer)];
    else if (isObject(cur) && Object.hasOwn(cur, t)) cur = cur[t];
    else throw patchError(`path "${pointer}" does not exist`);
  }
  return cur;
}

function addAt(doc: Json, pointer: string, value: Json): Json {
  if (pointer === '') return value;
  const { parent, token } = locate(doc, pointer);
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, token, true, pointer), 0, value);
  else if (isObject(parent)) parent[token] = value;
  else throw patchError(`cannot add at "${pointer}": parent is not an object or array`);
  return doc;
}

function removeAt(doc: Json, pointer: string): Json {
  const { parent, token } = locate(doc, pointer);
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, token, false, pointer), 1);
  else if (isObject(parent) && Object.hasOwn(parent, token)) delete parent[token];
  else throw patchError(`cannot remove "${pointer}": it does not exist`);
  return doc;
}

function deepEqual(a: Json, b: Json): boolean {
  if (a === b) return true;
  if (Array.isArray(a) && Array.isArray(b))
    return a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a);
    return (
      ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && deepEqual(a[k], b[k]))
    );
  }
  return false;
}

/** Applies RFC 6902 operations to a copy of `doc`; any failing operation fails the whole patch. */
export function applyJsonPatch(doc: Json, ops: unknown): Json {
  if (!Array.isArray(ops))
    throw new ApiError(400, 'BadRequest', 'a JSON patch must be an array of operations');
  let out = clone(doc);
  for (const raw of ops) {
    if (!isObject(raw) || typeof raw.op !== 'string' || typeof raw.path !== 'string')
      throw new ApiError(400, 'BadRequest', `invalid JSON patch operation: ${JSON.stringify(raw)}`);
    const op = raw as unknown as JsonPatchOp;
    switch (op.op) {
      case 'add':
        if (!('value' in op)) throw patchError(`"add" at "${op.path}" has no value`);
        out = addAt(out, op.path, clone(op.value));
        break;
      case 'remove':
        out = removeAt(out, op.path);
        break;
      case 'replace':
        if (!('value' in op)) throw patchError(`"replace" at "${op.path}" has no value`);
        if (op.path === '') out = clone(op.value);
        else {
          getAt(out, op.path); // must exist
          out = addAt(removeAt(out, op.path), op.path, clone(op.value));
        }
        break;
      case 'test':
        if (!deepEqual(getAt(out, op.path), op.value)) throw patchError(`testing value ${op.path} failed`);
        break;
      case 'move': {
        if (typeof op.from !== 'string') throw patchError('"move" needs "from"');
        if (op.path.startsWith(`${op.from}/`))
          throw patchError('cannot move a value into one of its children');
        const v = getAt(out, op.from);
        out = addAt(removeAt(out, op.from), op.path, v);
        break;
      }
      case 'copy': {
        if (typeof op.from !== 'string') throw patchError('"copy" needs "from"');
        out = addAt(out, op.path, clone(getAt(out, op.from)));
        break;
      }
      default:
        throw new ApiError(400, 'BadRequest', `unknown JSON patch operation "${op.op}"`);
    }
  }
  return out;
}

/** RFC 7386: objects merge recursively, null deletes, anything else (arrays too) replaces. */
export function applyMergePatch(target: Json, patch: Json): Json {
  if (!isObject(patch)) return clone(patch);
  const out: JsonObject = isObject(target) ? clone(target) : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = applyMergePatch(out[k], v);
  }
  return out;
}

/**
 * List fields of built-in types that a strategic merge patch merges by key instead of replacing
 * (the `patchMergeKey`s of the Kubernetes Go types that operators and webhooks touch).
 */
const MERGE_KEYS: Record<string, string> = {
  containers: 'name',
  initContainers: 'name',
  ephemeralContainers: 'name',
  volumes: 'name',
  env: 'name',
  volumeMounts: 'mountPath',
  volumeDevices: 'devicePath',
  ports: 'containerPort',
  imagePullSecrets: 'name',
  conditions: 'type',
  hostAliases: 'ip',
  ownerReferences: 'uid',
  tolerations: 'key',
  topologySpreadConstraints: 'topologyKey',
  secrets: 'name',
  webhooks: 'name',
};
const MERGED_SCALAR_LISTS = new Set(['finalizers']);

/**
 * Strategic merge patch, reduced: the list fields above merge by their key (with `$patch: delete` and
 * `$patch: replace`), `finalizers` merges as a set, directives such as `$setElementOrder/...` and
 * `$retainKeys` are dropped. Custom resources use plain merge patch semantics (see server.ts).
 */
export function applyStrategicMergePatch(target: Json, patch: Json, field?: string): Json {
  if (Array.isArray(patch)) {
    const key = field ? MERGE_KEYS[field] : undefined;
    if (key && Array.isArray(target)) return mergeList(target, patch, key);
    if (field && MERGED_SCALAR_LISTS.has(field) && Array.isArray(target))
      return [...target, ...patch.filter((v) => !target.includes(v))];
    return clone(patch.filter((v) => !(isObject(v) && v.$patch === 'replace')));
  }
  if (!isObject(patch)) return clone(patch);
  if (patch.$patch === 'replace') return stripDirectives(patch);
  if (patch.$patch === 'delete') return undefined;
  const out: JsonObject = isObject(target) ? clone(target) : {};
  for (const [k, v] of Object.entries(patch)) {
    if (k.startsWith('$')) continue;
    if (v === null) delete out[k];
    else {
      const merged = applyStrategicMergePatch(out[k], v, k);
      if (merged === undefined) delete out[k];
      else out[k] = merged;
    }
  }
  return out;
}

function mergeList(target: Json[], patch: Json[], key: string): Json[] {
  if (patch.some((p) => isObject(p) && p.$patch === 'replace'))
    return patch.filter((p) => !(isObject(p) && p.$patch === 'replace')).map(stripDirectives);
  const out = clone(target);
  for (const item of patch) {
    if (!isObject(item) || !(key in item)) {
      out.push(clone(item));
      continue;
    }
    const idx = out.findIndex((t) => isObject(t) && deepEqual(t[key], item[key]));
    if (item.$patch === 'delete') {
      if (idx >= 0) out.splice(idx, 1);
    } else if (idx >= 0) out[idx] = applyStrategicMergePatch(out[idx], item);
    else out.push(stripDirectives(item));
  }
  return out;
}

function stripDirectives(v: Json): Json {
  if (Array.isArray(v)) return v.map(stripDirectives);
  if (!isObject(v)) return v;
  const out: JsonObject = {};
  for (const [k, x] of Object.entries(v)) if (!k.startsWith('$')) out[k] = stripDirectives(x);
  return out;
}

export { deepEqual };
