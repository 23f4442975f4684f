/**
 * Validation of Kubernetes objects against the Kubernetes OpenAPI schema (kubernetes-models), for the chart's
 * plain files, `examples/` and `dbguard inject` output. Custom resources of dbguard are validated by the
 * project's own schemas (policy/load.ts) instead; other custom kinds are reported, not silently passed.
 */
import { parseAllDocuments } from 'yaml';

export interface Doc {
  file: string;
  index: number;
  obj: Record<string, unknown>;
}

/** Every non-empty document of a multi-document YAML text; a syntax error throws naming the file. */
export function yamlDocs(file: string, text: string): Doc[] {
  const out: Doc[] = [];
  parseAllDocuments(text).forEach((d, index) => {
    if (d.errors.length) throw new Error(`${file}: document ${index + 1}: ${d.errors[0]!.message}`);
    const obj = d.toJS();
    if (obj !== null && obj !== undefined) out.push({ file, index, obj });
  });
  return out;
}

const DBGUARD_GROUP = 'dbguard.io';

export function isDbguardResource(obj: Record<string, unknown>): boolean {
  return typeof obj.apiVersion === 'string' && obj.apiVersion.startsWith(`${DBGUARD_GROUP}/`);
}

/** `apps/v1` → `kubernetes-models/apps/v1`; `v1` → `kubernetes-models/v1`. */
function modulePath(apiVersion: string): string {
  return `kubernetes-models/${apiVersion}`;
}

/**
 * Validate one built-in Kubernetes object; throws with the file, document and kind on a schema error or on a
 * kind kubernetes-models does not know.
 */
export async function validateK8s(doc: Doc): Promise<void> {
  const { apiVersion, kind } = doc.obj as { apiVersion?: unknown; kind?: unknown };
  const where = `${doc.file}: document ${doc.index + 1}`;
  if (typeof apiVersion !== 'string' || typeof kind !== 'string')
    throw new Error(`${where}: apiVersion and kind are required`);
  let mod: Record<string, unknown>;
  try {
    mod = (await import(modulePath(apiVersion))) as Record<string, unknown>;
  } catch {
    throw new Error(`${where}: ${apiVersion} is not a Kubernetes API version kubernetes-models knows`);
  }
  const Model = mod[kind] as (new (o: unknown) => { validate(): void }) | undefined;
  if (typeof Model !== 'function') throw new Error(`${where}: ${apiVersion} ${kind} is not a built-in kind`);
  try {
    new Model(doc.obj).validate();
  } catch (err) {
    throw new Error(`${where} (${kind}): ${(err as Error).message}`);
  }
}
