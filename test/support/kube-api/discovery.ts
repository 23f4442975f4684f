/** Discovery documents (/api, /apis, /api/v1, /apis/<g>[/<v>], /version) as client-node and kubectl read them. */
import type { ResourceRegistry } from './resources.js';
import type { ResourceType } from './types.js';

export function apiVersions(serverAddress: string) {
  return {
    kind: 'APIVersions',
    versions: ['v1'],
    serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress }],
  };
}

function groupEntry(name: string, versions: string[]) {
  return {
    name,
    versions: versions.map((v) => ({ groupVersion: `${name}/${v}`, version: v })),
    preferredVersion: { groupVersion: `${name}/${versions[0]}`, version: versions[0] },
  };
}

export function apiGroupList(registry: ResourceRegistry) {
  const groups = [...registry.groups()].filter(([g]) => g !== '').map(([g, vs]) => groupEntry(g, vs));
  return { kind: 'APIGroupList', apiVersion: 'v1', groups };
}

export function apiGroup(registry: ResourceRegistry, group: string) {
  const vs = registry.groups().get(group);
  return vs ? { kind: 'APIGroup', apiVersion: 'v1', ...groupEntry(group, vs) } : undefined;
}

export function apiResourceList(registry: ResourceRegistry, group: string, version: string) {
  const types = registry.all().filter((t) => t.group === group && t.versions.includes(version));
  if (types.length === 0) return undefined;
  const resources: Record<string, unknown>[] = [];
  for (const t of types) {
    resources.push(resourceEntry(t));
    if (t.statusSubresource)
      resources.push({
        name: `${t.plural}/status`,
        singularName: '',
        namespaced: t.namespaced,
        kind: t.kind,
        verbs: ['get', 'patch', 'update'],
      });
  }
  return {
    kind: 'APIResourceList',
    apiVersion: 'v1',
    groupVersion: group ? `${group}/${version}` : version,
    resources,
  };
}

function resourceEntry(t: ResourceType) {
  const e: Record<string, unknown> = {
    name: t.plural,
    singularName: t.singular,
    namespaced: t.namespaced,
    kind: t.kind,
    verbs: t.verbs,
  };
  if (t.shortNames.length) e.shortNames = t.shortNames;
  if (t.categories.length) e.categories = t.categories;
  return e;
}

export const versionInfo = {
  major: '1',
  minor: '31',
  gitVersion: 'v1.31.0-dbguard-test',
  gitCommit: '0000000000000000000000000000000000000000',
  gitTreeState: 'clean',
  buildDate: '2026-01-01T00:00:00Z',
  goVersion: 'go1.22.0',
  compiler: 'gc',
  platform: 'linux/amd64',
};
