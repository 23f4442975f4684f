// Not re-exported by the package's entry point; the package has no exports map, so the deep path is stable per version.
import { ObjectSerializer } from '@kubernetes/client-node/dist/gen/models/ObjectSerializer.js';
import { describe, expect, it } from 'vitest';
import { CEL, celRuleByText } from '../../api/cel.js';
import { crdObjects } from '../../api/crds.js';
import { describePattern, PATTERNS } from '../../api/patterns.js';
import { type JSONSchemaProps, KINDS, SCHEMAS } from '../../api/schemas.js';

/** Every schema node with its path. */
function* nodes(s: JSONSchemaProps, path = ''): Generator<[string, JSONSchemaProps]> {
  yield [path || '(root)', s];
  for (const [k, p] of Object.entries(s.properties ?? {})) yield* nodes(p, path ? `${path}.${k}` : k);
  if (s.items) yield* nodes(s.items, `${path}[]`);
  if (s.additionalProperties) yield* nodes(s.additionalProperties, `${path}{}`);
}

const all = KINDS.flatMap((kind) => [...nodes(SCHEMAS[kind])].map(([p, s]) => [`${kind} ${p}`, s] as const));

describe('schemas', () => {
  it('are structural: every node has a type; every object has properties or says it keeps unknown fields', () => {
    const bad = all.filter(
      ([path, s]) =>
        !s.type ||
        (s.type === 'object' &&
          !s.properties &&
          !s.additionalProperties &&
          !s['x-kubernetes-preserve-unknown-fields'] &&
          !path.endsWith(' metadata')),
    );
    expect(bad.map(([p]) => p)).toEqual([]);
    // structural schemas forbid properties and additionalProperties together
    expect(all.filter(([, s]) => s.properties && s.additionalProperties).map(([p]) => p)).toEqual([]);
  });

  it('describe every field (kubectl explain)', () => {
    // the root metadata schema must be a bare `type: object`: kube-apiserver refuses a description there
    const fields = all.filter(([p]) => !p.endsWith('[]') && !/^\w+ metadata$/.test(p));
    expect(fields.filter(([, s]) => !s.description?.trim()).map(([p]) => p)).toEqual([]);
  });

  it('bound every string and list a CEL rule reads (the API server refuses unbounded rule cost)', () => {
    for (const [path, s] of all) {
      if (s.type === 'array') expect(s.maxItems, `${path} maxItems`).toBeGreaterThan(0);
    }
    const specRules = SCHEMAS.DatabasePolicy.properties!.spec!.properties!.rules!;
    expect(specRules.maxItems).toBeLessThanOrEqual(256);
    expect(specRules.items!.properties!.name!.maxLength).toBeLessThanOrEqual(63);
  });

  it('declare the contract defaults', () => {
    const spec = SCHEMAS.DatabasePolicy.properties!.spec!.properties!;
    const approval = spec.rules!.items!.properties!.approval!.properties!;
    expect({
      port: spec.upstream!.properties!.port!.default,
      sslmode: spec.upstream!.properties!.sslmode!.default,
      defaultAction: spec.defaultAction!.default,
      audit: spec.audit!.properties!.statements!.default,
      enforcement: spec.enforcement!.default,
      mode: approval.mode!.default,
      timeout: approval.timeout!.default,
      validFor: approval.validFor!.default,
    }).toEqual({
      port: 5432,
      sslmode: 'prefer',
      defaultAction: 'Allow',
      audit: 'All',
      enforcement: 'Enforce',
      mode: 'Wait',
      timeout: '5m',
      validFor: '1h',
    });
  });

  it('carry only CEL rules that have a TypeScript twin, and use every twin', () => {
    const used = new Set<string>();
    for (const [path, s] of all) {
      for (const v of s['x-kubernetes-validations'] ?? []) {
        expect(celRuleByText(v.rule!), `${path}: ${v.rule}`).toBeDefined();
        used.add(v.rule!);
      }
    }
    expect(
      Object.values(CEL)
        .map((r) => r.rule)
        .filter((r) => !used.has(r)),
    ).toEqual([]);
    // rule texts are the lookup key, so they must be unique
    expect(new Set(Object.values(CEL).map((r) => r.rule)).size).toBe(Object.keys(CEL).length);
  });

  it('use only patterns that have a human description, one per pattern', () => {
    const patterns = Object.values(PATTERNS).map((p) => p.pattern);
    expect(new Set(patterns).size).toBe(patterns.length);
    expect(all.filter(([, s]) => s.pattern && !describePattern(s.pattern)).map(([p]) => p)).toEqual([]);
  });
});

describe('CRDs', () => {
  const crds = crdObjects() as any[];

  it('name, short names, category, status subresource and printer columns', () => {
    expect(
      crds.map((c) => ({
        name: c.metadata.name,
        short: c.spec.names.shortNames,
        categories: c.spec.names.categories,
        scope: c.spec.scope,
        status: c.spec.versions[0].subresources,
        columns: c.spec.versions[0].additionalPrinterColumns
          .filter((x: any) => !x.priority)
          .map((x: any) => x.name),
      })),
    ).toEqual([
      {
        name: 'databasepolicies.dbguard.io',
        short: ['dbp'],
        categories: ['dbguard'],
        scope: 'Namespaced',
        status: { status: {} },
        columns: ['Ready', 'Rules', 'Version', 'Age'],
      },
      {
        name: 'maskingrules.dbguard.io',
        short: ['mr'],
        categories: ['dbguard'],
        scope: 'Namespaced',
        status: { status: {} },
        columns: ['Policy', 'Columns', 'Ready', 'Age'],
      },
      {
        name: 'approvalrequests.dbguard.io',
        short: ['ar'],
        categories: ['dbguard'],
        scope: 'Namespaced',
        status: { status: {} },
        columns: ['Phase', 'Subject', 'Rule', 'Age'],
      },
    ]);
  });

  it('point printer columns at fields the schema has', () => {
    for (const crd of crds) {
      const schema = crd.spec.versions[0].schema.openAPIV3Schema as JSONSchemaProps;
      for (const col of crd.spec.versions[0].additionalPrinterColumns) {
        const path = (col.jsonPath as string)
          .replace(/\[\?\(.*?\)\]/, '[]')
          .split('.')
          .slice(1);
        let s: JSONSchemaProps | undefined = schema;
        for (const part of path) {
          if (part === 'creationTimestamp' && s === schema.properties!.metadata) break;
          const [name, arr] = part.endsWith('[]') ? [part.slice(0, -2), true] : [part, false];
          s = s?.properties?.[name];
          if (arr) s = s?.items;
        }
        expect(s, `${crd.metadata.name} ${col.jsonPath}`).toBeDefined();
      }
    }
  });

  it("survive a round trip through client-node's typed model (every key is a known CRD field)", () => {
    for (const crd of crds) {
      const typed = ObjectSerializer.deserialize(crd, 'V1CustomResourceDefinition', '');
      expect(ObjectSerializer.serialize(typed, 'V1CustomResourceDefinition', '')).toEqual(crd);
    }
  });
});
