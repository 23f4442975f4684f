/**
 * The CustomResourceDefinitions of dbguard's resources, built from api/schemas.ts. `crds/` holds
 * their YAML (scripts/generate-crds.ts writes it; a test keeps it fresh) and `dbguard crds` prints it.
 */
import { stringify } from 'yaml';
import { KINDS, type Kind, SCHEMAS } from './schemas.js';
import { GROUP, VERSION } from './types.js';

interface PrinterColumn {
  name: string;
  type: 'string' | 'integer' | 'date' | 'boolean' | 'number';
  jsonPath: string;
  description: string;
  priority?: number;
}

interface Names {
  kind: Kind;
  plural: string;
  singular: string;
  shortNames: string[];
}

const NAMES: Record<Kind, Names> = {
  DatabasePolicy: {
    kind: 'DatabasePolicy',
    plural: 'databasepolicies',
    singular: 'databasepolicy',
    shortNames: ['dbp'],
  },
  MaskingRule: { kind: 'MaskingRule', plural: 'maskingrules', singular: 'maskingrule', shortNames: ['mr'] },
  ApprovalRequest: {
    kind: 'ApprovalRequest',
    plural: 'approvalrequests',
    singular: 'approvalrequest',
    shortNames: ['ar'],
  },
};

const READY: PrinterColumn = {
  name: 'Ready',
  type: 'string',
  jsonPath: '.status.conditions[?(@.type=="Ready")].status',
  description: 'Whether the resource is in effect.',
};
const AGE: PrinterColumn = {
  name: 'Age',
  type: 'date',
  jsonPath: '.metadata.creationTimestamp',
  description: 'Time since creation.',
};

// Printer columns show the first value a JSONPath yields, so counts come from status fields
// the operator writes (status.rules, status.columns), not from the spec's lists.
const COLUMNS: Record<Kind, PrinterColumn[]> = {
  DatabasePolicy: [
    READY,
    { name: 'Rules', type: 'integer', jsonPath: '.status.rules', description: 'Number of rules.' },
    {
      name: 'Version',
      type: 'string',
      jsonPath: '.status.policyVersion',
      description: 'Compiled policy version.',
    },
    AGE,
    {
      name: 'Masking',
      type: 'integer',
      jsonPath: '.status.maskingRules',
      description: 'MaskingRules bound to the policy.',
      priority: 1,
    },
    {
      name: 'Enforcement',
      type: 'string',
      jsonPath: '.spec.enforcement',
      description: 'Enforce or DryRun.',
      priority: 1,
    },
    {
      name: 'Upstream',
      type: 'string',
      jsonPath: '.spec.upstream.host',
      description: 'Upstream host.',
      priority: 1,
    },
  ],
  MaskingRule: [
    {
      name: 'Policy',
      type: 'string',
      jsonPath: '.spec.policyRef.name',
      description: 'The bound DatabasePolicy.',
    },
    {
      name: 'Columns',
      type: 'integer',
      jsonPath: '.status.columns',
      description: 'Number of masked columns.',
    },
    READY,
    AGE,
  ],
  ApprovalRequest: [
    {
      name: 'Phase',
      type: 'string',
      jsonPath: '.status.phase',
      description: 'Pending, Approved, Denied or Expired.',
    },
    {
      name: 'Subject',
      type: 'string',
      jsonPath: '.spec.subject.serviceAccount',
      description: 'ServiceAccount that ran the statement.',
    },
    {
      name: 'Rule',
      type: 'string',
      jsonPath: '.spec.rule',
      description: 'The rule that asked for approval.',
    },
    AGE,
    {
      name: 'User',
      type: 'string',
      jsonPath: '.spec.subject.user',
      description: 'Token subject.',
      priority: 1,
    },
    {
      name: 'DB-User',
      type: 'string',
      jsonPath: '.spec.subject.databaseUser',
      description: 'Database user.',
      priority: 1,
    },
    {
      name: 'Expires',
      type: 'date',
      jsonPath: '.spec.expiresAt',
      description: 'When it expires.',
      priority: 1,
    },
    {
      name: 'Statement',
      type: 'string',
      jsonPath: '.spec.statement',
      description: 'The statement.',
      priority: 1,
    },
  ],
};

export function plural(kind: Kind): string {
  return NAMES[kind].plural;
}

/** The CRD of one kind, as an apiextensions.k8s.io/v1 object. */
export function crdObject(kind: Kind): Record<string, unknown> {
  const n = NAMES[kind];
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: {
      name: `${n.plural}.${GROUP}`,
      labels: { 'app.kubernetes.io/name': 'dbguard', 'app.kubernetes.io/part-of': 'dbguard' },
    },
    spec: {
      group: GROUP,
      names: {
        kind: n.kind,
        listKind: `${n.kind}List`,
        plural: n.plural,
        singular: n.singular,
        shortNames: n.shortNames,
        categories: ['dbguard'],
      },
      scope: 'Namespaced',
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          schema: { openAPIV3Schema: structuredClone(SCHEMAS[kind]) },
          subresources: { status: {} },
          additionalPrinterColumns: COLUMNS[kind],
        },
      ],
    },
  };
}

/** All CRDs, in a stable order. */
export function crdObjects(): Record<string, unknown>[] {
  return KINDS.map(crdObject);
}

const HEADER =
  '# Generated from api/schemas.ts by scripts/generate-crds.ts (npm run generate). Do not edit.\n';

function toYaml(o: unknown): string {
  return stringify(o, { lineWidth: 0, aliasDuplicateObjects: false });
}

/** The files of `crds/`: name → content. */
export function crdFiles(): { name: string; content: string }[] {
  return KINDS.map((kind) => ({
    name: `${GROUP}_${plural(kind)}.yaml`,
    content: HEADER + toYaml(crdObject(kind)),
  }));
}

/** All CRDs as one multi-document YAML stream (what `dbguard crds` prints). */
export function crdsYaml(): string {
  return (
    HEADER +
    crdObjects()
      .map((o) => `---\n${toYaml(o)}`)
      .join('')
  );
}
