/**
 * The JSONPatch (RFC 6902) subset the injector emits: `add` and `replace`. The webhook returns these
 * operations to the API server; `dbguard inject` applies the very same operations to pod templates with
 * `applyPatch`, so both paths produce identical pods.
 */
export type JsonPatchOp = { op: 'add' | 'replace'; path: string; value: unknown };

/** One reference token of a JSON pointer: `dbguard.io/status` → `dbguard.io~1status`. */
export function escapePointer(token: string): string {
  return token.replace(/~/g, '~0').replace(/\//g, '~1');
}

function unescapePointer(token: string): string {
  return token.replace(/~1/g, '/').replace(/~0/g, '~');
}

/** Applies operations to a deep copy of `doc`; throws a clear error on a path that does not resolve. */
export function applyPatch<T>(doc: T, ops: readonly JsonPatchOp[]): T {
  const root: { v: unknown } = { v: structuredClone(doc) };
  for (const op of ops) {
    if (!op.path.startsWith('/')) throw new Error(`patch path ${JSON.stringify(op.path)} must start with /`);
    const tokens = op.path.slice(1).split('/').map(unescapePointer);
    let parent: any = root;
    let key: string | number = 'v';
    for (const t of tokens) {
      parent = parent[key];
      if (parent === null || typeof parent !== 'object')
        throw new Error(`patch path ${op.path}: ${JSON.stringify(t)} has no parent object`);
      key = t;
    }
    const value = structuredClone(op.value);
    if (Array.isArray(parent)) {
      const i = key === '-' ? parent.length : Number(key);
      if (!Number.isInteger(i) || i < 0 || i > parent.length)
        throw new Error(`patch path ${op.path}: bad index`);
      if (op.op === 'add') parent.splice(i, 0, value);
      else if (i < parent.length) parent[i] = value;
      else throw new Error(`patch path ${op.path}: nothing to replace`);
    } else {
      if (op.op === 'replace' && !(key in parent))
        throw new Error(`patch path ${op.path}: nothing to replace`);
      parent[key] = value;
    }
  }
  return root.v as T;
}
