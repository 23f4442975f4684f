/**
 * `Accept: application/json;as=Table;g=meta.k8s.io;v=v1`, which kubectl get asks for: rows with the
 * CRD's additionalPrinterColumns (simple `.a.b[0].c` JSONPaths), or NAME and AGE.
 */
import type { KubeObject, PrinterColumn, ResourceType } from './types.js';

export function wantsTable(accept: string | undefined): boolean {
  return /as=Table/.test(accept ?? '');
}

function lookup(obj: unknown, jsonPath: string): unknown {
  const path = jsonPath.replace(/^\{?\.?/, '').replace(/\}$/, '');
  let cur: unknown = obj;
  for (const part of path.split('.').filter(Boolean)) {
    const m = /^([^[\]]*)((\[\d+\])*)$/.exec(part);
    if (!m) return undefined;
    if (m[1]) cur = cur && typeof cur === 'object' ? (cur as Record<string, unknown>)[m[1]] : undefined;
    for (const idx of m[2]!.match(/\d+/g) ?? []) cur = Array.isArray(cur) ? cur[Number(idx)] : undefined;
  }
  return cur;
}

function age(ts: string | undefined): string {
  if (!ts) return '<unknown>';
  const s = Math.max(0, Math.floor((Date.now() - Date.parse(ts)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

export function toTable(
  type: ResourceType,
  version: string,
  objects: KubeObject[],
  listMeta?: Record<string, unknown>,
) {
  const extra: PrinterColumn[] = type.crd?.printerColumns[version] ?? [];
  const hasAge = extra.some((c) => c.jsonPath === '.metadata.creationTimestamp');
  const columnDefinitions = [
    {
      name: 'Name',
      type: 'string',
      format: 'name',
      description: 'Name must be unique within a namespace.',
      priority: 0,
    },
    ...extra.map((c) => ({
      name: c.name,
      type: c.type,
      format: c.format ?? '',
      description: c.description ?? '',
      priority: c.priority ?? 0,
    })),
    ...(hasAge
      ? []
      : [{ name: 'Age', type: 'date', format: '', description: 'CreationTimestamp', priority: 0 }]),
  ];
  const rows = objects.map((o) => ({
    cells: [
      o.metadata?.name,
      ...extra.map((c) => {
        const v = lookup(o, c.jsonPath);
        if (c.type === 'date') return age(v as string | undefined);
        return v === undefined ? '<none>' : typeof v === 'object' ? JSON.stringify(v) : v;
      }),
      ...(hasAge ? [] : [age(o.metadata?.creationTimestamp)]),
    ],
    object: {
      kind: 'PartialObjectMetadata',
      apiVersion: 'meta.k8s.io/v1',
      metadata: o.metadata,
    },
  }));
  return { kind: 'Table', apiVersion: 'meta.k8s.io/v1', metadata: listMeta ?? {}, columnDefinitions, rows };
}
