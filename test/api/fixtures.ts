/** Test helpers: the contract's examples as objects, and a way to derive broken variants. */
import { readFileSync } from 'node:fs';
import { parseAllDocuments, stringify } from 'yaml';

export const CONTRACT_YAML = readFileSync(new URL('./fixtures/contract.yaml', import.meta.url), 'utf8');

/** The contract's documents as plain objects, by kind (fresh copies on every call). */
export function contract(): { policy: any; maskingRule: any; approvalRequest: any; secrets: any[] } {
  const docs = parseAllDocuments(CONTRACT_YAML).map((d) => (d as any).toJS());
  return {
    policy: docs.find((d) => d.kind === 'DatabasePolicy'),
    maskingRule: docs.find((d) => d.kind === 'MaskingRule'),
    approvalRequest: docs.find((d) => d.kind === 'ApprovalRequest'),
    secrets: docs.filter((d) => d.kind === 'Secret'),
  };
}

/** A copy of `o` changed by `edit`. */
export function variant<T>(o: T, edit: (copy: any) => void): T {
  const copy = structuredClone(o);
  edit(copy);
  return copy;
}

/** The contract's YAML with its documents (in order) changed by `edit`. */
export function contractYamlWith(edit: (docs: any[]) => void): string {
  const docs = parseAllDocuments(CONTRACT_YAML).map((d) => (d as any).toJS());
  edit(docs);
  return docs.map((d) => `---\n${stringify(d)}`).join('');
}
