/** The resource types the server knows: built-ins, and those that CustomResourceDefinitions add. */
import { ApiError, invalid, type StatusCause } from './errors.js';
import type { KubeObject, PrinterColumn, ResourceType } from './types.js';

const CRUD = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];

interface BuiltinSpec {
  group: string;
  version: string;
  kind: string;
  plural: string;
  namespaced: boolean;
  shortNames?: string[];
  status?: boolean;
  generation?: boolean;
  returnDeleted?: boolean;
  createOnly?: boolean;
  categories?: string[];
}

const BUILTINS: BuiltinSpec[] = [
  {
    group: '',
    version: 'v1',
    kind: 'Namespace',
    plural: 'namespaces',
    namespaced: false,
    shortNames: ['ns'],
    status: true,
    returnDeleted: true,
  },
  {
    group: '',
    version: 'v1',
    kind: 'Pod',
    plural: 'pods',
    namespaced: true,
    shortNames: ['po'],
    status: true,
    generation: true,
    returnDeleted: true,
    categories: ['all'],
  },
  { group: '', version: 'v1', kind: 'Secret', plural: 'secrets', namespaced: true },
  { group: '', version: 'v1', kind: 'ConfigMap', plural: 'configmaps', namespaced: true, shortNames: ['cm'] },
  { group: '', version: 'v1', kind: 'Event', plural: 'events', namespaced: true, shortNames: ['ev'] },
  {
    group: '',
    version: 'v1',
    kind: 'ServiceAccount',
    plural: 'serviceaccounts',
    namespaced: true,
    shortNames: ['sa'],
  },
  {
    group: '',
    version: 'v1',
    kind: 'Service',
    plural: 'services',
    namespaced: true,
    shortNames: ['svc'],
    status: true,
    categories: ['all'],
  },
  { group: '', version: 'v1', kind: 'Endpoints', plural: 'endpoints', namespaced: true, shortNames: ['ep'] },
  {
    group: 'apps',
    version: 'v1',
    kind: 'Deployment',
    plural: 'deployments',
    namespaced: true,
    shortNames: ['deploy'],
    status: true,
    generation: true,
    categories: ['all'],
  },
  {
    group: 'apps',
    version: 'v1',
    kind: 'ReplicaSet',
    plural: 'replicasets',
    namespaced: true,
    shortNames: ['rs'],
    status: true,
    generation: true,
    categories: ['all'],
  },
  {
    group: 'apps',
    version: 'v1',
    kind: 'StatefulSet',
    plural: 'statefulsets',
    namespaced: true,
    shortNames: ['sts'],
    status: true,
    generation: true,
    categories: ['all'],
  },
  {
    group: 'apps',
    version: 'v1',
    kind: 'DaemonSet',
    plural: 'daemonsets',
    namespaced: true,
    shortNames: ['ds'],
    status: true,
    generation: true,
    categories: ['all'],
  },
  { group: 'coordination.k8s.io', version: 'v1', kind: 'Lease', plural: 'leases', namespaced: true },
  {
    group: 'events.k8s.io',
    version: 'v1',
    kind: 'Event',
    plural: 'events',
    namespaced: true,
    shortNames: ['ev'],
  },
  {
    group: 'admissionregistration.k8s.io',
    version: 'v1',
    kind: 'MutatingWebhookConfiguration',
    plural: 'mutatingwebhookconfigurations',
    namespaced: false,
    generation: true,
  },
  {
    group: 'admissionregistration.k8s.io',
    version: 'v1',
    kind: 'ValidatingWebhookConfiguration',
    plural: 'validatingwebhookconfigurations',
    namespaced: false,
    generation: true,
  },
  {
    group: 'apiextensions.k8s.io',
    version: 'v1',
    kind: 'CustomResourceDefinition',
    plural: 'customresourcedefinitions',
    namespaced: false,
    shortNames: ['crd', 'crds'],
    status: true,
    generation: true,
  },
  {
    group: 'authentication.k8s.io',
    version: 'v1',
    kind: 'TokenReview',
    plural: 'tokenreviews',
    namespaced: false,
    createOnly: true,
  },
  { group: 'rbac.authorization.k8s.io', version: 'v1', kind: 'Role', plural: 'roles', namespaced: true },
  {
    group: 'rbac.authorization.k8s.io',
    version: 'v1',
    kind: 'RoleBinding',
    plural: 'rolebindings',
    namespaced: true,
  },
  {
    group: 'rbac.authorization.k8s.io',
    version: 'v1',
    kind: 'ClusterRole',
    plural: 'clusterroles',
    namespaced: false,
  },
  {
    group: 'rbac.authorization.k8s.io',
    version: 'v1',
    kind: 'ClusterRoleBinding',
    plural: 'clusterrolebindings',
    namespaced: false,
  },
];

export const typeKey = (group: string, plural: string) => `${group}/${plural}`;

function builtin(b: BuiltinSpec): ResourceType {
  return {
    group: b.group,
    versions: [b.version],
    kind: b.kind,
    listKind: `${b.kind}List`,
    plural: b.plural,
    singular: b.kind.toLowerCase(),
    namespaced: b.namespaced,
    shortNames: b.shortNames ?? [],
    categories: b.categories ?? [],
    statusSubresource: b.status ?? false,
    generation: b.generation ?? false,
    returnDeletedObject: b.returnDeleted ?? false,
    requireResourceVersionOnUpdate: false,
    createOnly: b.createOnly ?? false,
    verbs: b.createOnly ? ['create'] : CRUD,
  };
}

/** Where a group/version/plural is served and how; kept in step with the stored CRDs. */
export class ResourceRegistry {
  private readonly types = new Map<string, ResourceType>();

  constructor() {
    for (const b of BUILTINS) this.types.set(typeKey(b.group, b.plural), builtin(b));
  }

  byPlural(group: string, version: string, plural: string): ResourceType | undefined {
    const t = this.types.get(typeKey(group, plural));
    return t?.versions.includes(version) ? t : undefined;
  }

  byKind(apiVersion: string, kind: string): ResourceType | undefined {
    const [group, version] = splitApiVersion(apiVersion);
    for (const t of this.types.values())
      if (t.group === group && t.kind === kind && t.versions.includes(version)) return t;
    return undefined;
  }

  all(): ResourceType[] {
    return [...this.types.values()];
  }

  /** group → versions, in registration order (core group '' included). */
  groups(): Map<string, string[]> {
    const out = new Map<string, string[]>();
    for (const t of this.types.values()) {
      const vs = out.get(t.group) ?? [];
      for (const v of t.versions) if (!vs.includes(v)) vs.push(v);
      out.set(t.group, vs);
    }
    return out;
  }

  isCustom(group: string, plural: string): boolean {
    return this.types.get(typeKey(group, plural))?.crd !== undefined;
  }

  /** Serves (or re-serves after an update) the resource a CRD defines. */
  applyCrd(crd: KubeObject): ResourceType {
    const t = resourceTypeFromCrd(crd);
    const existing = this.types.get(typeKey(t.group, t.plural));
    if (existing && !existing.crd)
      throw new ApiError(409, 'Conflict', `${t.plural}.${t.group} is a built-in resource`);
    this.types.set(typeKey(t.group, t.plural), t);
    return t;
  }

  removeCrd(crd: KubeObject): void {
    const spec = (crd.spec ?? {}) as Record<string, any>;
    const key = typeKey(spec.group, spec.names?.plural);
    if (this.types.get(key)?.crd) this.types.delete(key);
  }
}

export function splitApiVersion(apiVersion: string): [group: string, version: string] {
  const i = apiVersion.indexOf('/');
  return i < 0 ? ['', apiVersion] : [apiVersion.slice(0, i), apiVersion.slice(i + 1)];
}

/** Checks a CRD the way kube-apiserver does for the fields this server relies on, then derives its type. */
export function resourceTypeFromCrd(crd: KubeObject): ResourceType {
  const name = crd.metadata?.name ?? '';
  const spec = (crd.spec ?? {}) as Record<string, any>;
  const causes: StatusCause[] = [];
  const names = spec.names ?? {};
  if (!spec.group)
    causes.push({ reason: 'FieldValueRequired', message: 'Required value', field: 'spec.group' });
  if (!names.plural)
    causes.push({ reason: 'FieldValueRequired', message: 'Required value', field: 'spec.names.plural' });
  if (!names.kind)
    causes.push({ reason: 'FieldValueRequired', message: 'Required value', field: 'spec.names.kind' });
  if (spec.scope !== 'Namespaced' && spec.scope !== 'Cluster')
    causes.push({
      reason: 'FieldValueNotSupported',
      message: `Unsupported value: "${spec.scope}": supported values: "Cluster", "Namespaced"`,
      field: 'spec.scope',
    });
  if (spec.group && names.plural && name !== `${names.plural}.${spec.group}`)
    causes.push({
      reason: 'FieldValueInvalid',
      message: `Invalid value: "${name}": must be spec.names.plural+"."+spec.group`,
      field: 'metadata.name',
    });
  const versions: any[] = Array.isArray(spec.versions) ? spec.versions : [];
  if (versions.length === 0)
    causes.push({ reason: 'FieldValueRequired', message: 'Required value', field: 'spec.versions' });
  if (versions.length > 0 && versions.filter((v) => v.storage).length !== 1)
    causes.push({
      reason: 'FieldValueInvalid',
      message: 'Invalid value: must have exactly one version marked as storage version',
      field: 'spec.versions',
    });
  if (causes.length) throw invalid('CustomResourceDefinition', 'apiextensions.k8s.io', name, causes);

  const served = versions.filter((v) => v.served !== false);
  // the storage version first: it is the preferred version in discovery
  served.sort((a, b) => Number(Boolean(b.storage)) - Number(Boolean(a.storage)));
  const schemas: Record<string, unknown> = {};
  const printerColumns: Record<string, PrinterColumn[]> = {};
  for (const v of served) {
    schemas[v.name] = v.schema?.openAPIV3Schema;
    printerColumns[v.name] = v.additionalPrinterColumns ?? [];
  }
  const status = served.some((v) => v.subresources?.status !== undefined);
  return {
    group: spec.group,
    versions: served.map((v) => v.name),
    kind: names.kind,
    listKind: names.listKind ?? `${names.kind}List`,
    plural: names.plural,
    singular: names.singular ?? String(names.kind).toLowerCase(),
    namespaced: spec.scope === 'Namespaced',
    shortNames: names.shortNames ?? [],
    categories: names.categories ?? [],
    statusSubresource: status,
    generation: true,
    returnDeletedObject: true,
    requireResourceVersionOnUpdate: true,
    createOnly: false,
    verbs: CRUD,
    crd: { name, schemas, printerColumns },
  };
}
