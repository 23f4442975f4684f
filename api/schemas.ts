/**
 * The OpenAPI v3 structural schemas of dbguard's resources: the one source from which `crds/` is
 * generated (api/crds.ts), against which resources are validated (api/validate.ts), and from which
 * docs/reference.md is written (api/reference.ts). Every field has a description (`kubectl explain`).
 * Cross-field rules live in api/cel.ts and are attached here as `x-kubernetes-validations`.
 */
import { CEL, type CelRule, xValidation } from './cel.js';
import { DEFAULTS } from './defaults.js';
import { type NamedPattern, PATTERNS } from './patterns.js';
import { SSL_MODES } from './types.js';

/** The subset of apiextensions.k8s.io/v1 JSONSchemaProps that structural schemas use. */
export interface JSONSchemaProps {
  type?: 'object' | 'array' | 'string' | 'integer' | 'number' | 'boolean';
  description?: string;
  properties?: Record<string, JSONSchemaProps>;
  required?: string[];
  items?: JSONSchemaProps;
  additionalProperties?: JSONSchemaProps;
  enum?: (string | number)[];
  default?: unknown;
  pattern?: string;
  format?: string;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  maxItems?: number;
  'x-kubernetes-validations'?: Record<string, string>[];
  'x-kubernetes-preserve-unknown-fields'?: boolean;
  'x-kubernetes-list-type'?: 'atomic' | 'set' | 'map';
  'x-kubernetes-list-map-keys'?: string[];
}

type Extra = Omit<JSONSchemaProps, 'type' | 'description' | 'properties' | 'items'>;

function str(description: string, extra: Extra & { named?: NamedPattern } = {}): JSONSchemaProps {
  const { named, ...rest } = extra;
  return { type: 'string', description, ...(named ? { pattern: named.pattern } : {}), ...rest };
}

function int(description: string, extra: Extra = {}): JSONSchemaProps {
  return { type: 'integer', description, ...extra };
}

function bool(description: string): JSONSchemaProps {
  return { type: 'boolean', description };
}

function obj(
  description: string,
  properties: Record<string, JSONSchemaProps>,
  required: string[] = [],
  rules: CelRule[] = [],
  extra: Extra = {},
): JSONSchemaProps {
  return {
    type: 'object',
    description,
    properties,
    ...(required.length ? { required } : {}),
    ...(rules.length ? { 'x-kubernetes-validations': rules.map(xValidation) } : {}),
    ...extra,
  };
}

function arr(description: string, items: JSONSchemaProps, extra: Extra = {}): JSONSchemaProps {
  return { type: 'array', description, items, ...extra };
}

function enumOf(description: string, values: readonly string[], extra: Extra = {}): JSONSchemaProps {
  return str(description, { enum: [...values], ...extra });
}

function withRules(schema: JSONSchemaProps, rules: CelRule[]): JSONSchemaProps {
  return { ...schema, 'x-kubernetes-validations': rules.map(xValidation) };
}

// Limits: they keep objects far below etcd's 1.5 MiB and bound the cost of the CEL rules.
const MAX_RULES = 256;
const MAX_COLUMNS = 512;
const MAX_PATTERNS = 128;
const MAX_SUBJECTS = 128;

function secretKeyRef(description: string): JSONSchemaProps {
  return obj(
    description,
    {
      name: str('Name of the Secret, in the namespace of the resource.', {
        named: PATTERNS.dnsSubdomain,
        maxLength: 253,
      }),
      key: str("Key in the Secret's data.", { named: PATTERNS.secretKey, maxLength: 253 }),
    },
    ['name', 'key'],
  );
}

const SUBJECT_KINDS = ['ServiceAccount', 'User', 'Group', 'DatabaseUser'] as const;

function subject(description: string): JSONSchemaProps {
  return obj(
    description,
    {
      kind: enumOf(
        "What identity this is: ServiceAccount (the pod's Kubernetes ServiceAccount), User (a token's " +
          "subject or verified email), Group (one of a token's groups) or DatabaseUser (the database user " +
          "the session is proven to run as: the user of the client's startup message when its own " +
          "authentication is relayed to the server, the user of the proxy's credentials when the proxy logs " +
          'in with them).',
        SUBJECT_KINDS,
      ),
      name: str('Name of the identity. Exact match, case-sensitive.', { minLength: 1, maxLength: 253 }),
      namespace: str(
        'Namespace of a ServiceAccount; defaults to the namespace of the resource. Only for kind ServiceAccount.',
        { named: PATTERNS.dnsLabel, maxLength: 63 },
      ),
    },
    ['kind', 'name'],
    [CEL.namespaceOnlyForServiceAccount],
  );
}

function conditions(): JSONSchemaProps {
  return arr(
    'Standard Kubernetes conditions; `Ready` tells whether the resource is in effect.',
    obj(
      "One aspect of the resource's state.",
      {
        type: str('Type of the condition, e.g. Ready.', { maxLength: 316 }),
        status: enumOf('Whether the condition holds.', ['True', 'False', 'Unknown']),
        reason: str('Machine-readable CamelCase reason for the last transition.', { maxLength: 1024 }),
        message: str('Human-readable details.', { maxLength: 32768 }),
        lastTransitionTime: str('When the status last changed.', { format: 'date-time' }),
        observedGeneration: int('The metadata.generation the condition was computed from.', { minimum: 0 }),
      },
      ['type', 'status'],
    ),
    { 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['type'], maxItems: 16 },
  );
}

const RULE_ACTIONS = ['Allow', 'Deny', 'RequireApproval'] as const;

const policyRule = obj(
  'A rule. Rules are evaluated in order; the first whose match holds decides.',
  {
    name: str(
      'Name of the rule, unique in the policy. It appears in client errors, audit events and metrics.',
      { named: PATTERNS.dnsLabel, minLength: 1, maxLength: 63 },
    ),
    action: enumOf(
      'What happens to a statement the rule matches: Allow it, Deny it (SQLSTATE 42501), or ' +
        'RequireApproval (an ApprovalRequest is created and the statement runs only once approved).',
      RULE_ACTIONS,
    ),
    match: obj(
      'Which statements the rule applies to. Every field given must match (AND); a list matches when ' +
        'any of its entries does (OR). A rule without match applies to every statement.',
      {
        commands: arr(
          'Command tags as PostgreSQL reports them (SELECT, INSERT, TRUNCATE TABLE, ...). `DROP *` ' +
            'matches every tag starting with DROP; `*` matches every tag. Case-insensitive. SELECT, ' +
            'INSERT, UPDATE, DELETE and EXECUTE also match those privileges wherever a statement ' +
            'exercises them (a join, a sub-select, a MERGE action, COPY, a view). An Allow rule ' +
            'permits only the (command, object) pairs it names.',
          str('A command tag pattern.', { named: PATTERNS.command, maxLength: 64 }),
          { maxItems: MAX_PATTERNS },
        ),
        objects: arr(
          'Relations the statement touches anywhere (FROM, JOIN, subqueries, CTEs, DML targets, COPY, DDL ' +
            'targets), as `schema.relation` patterns with `*` per part: `public.*`, `*.audit_log`. A name ' +
            'without schema means schema public. Unquoted names are case-insensitive (folded to lower case).',
          str('A relation pattern.', { named: PATTERNS.objectPattern, maxLength: 256 }),
          { maxItems: MAX_PATTERNS },
        ),
        withoutWhere: bool('When true, only UPDATE and DELETE statements that have no WHERE clause match.'),
        subjects: arr('Identities the rule applies to; absent means everyone.', subject('An identity.'), {
          maxItems: MAX_SUBJECTS,
        }),
      },
    ),
    message: str('Message shown to the client when the rule denies a statement.', { maxLength: 1024 }),
    approval: obj('How approval works. Only for action RequireApproval.', {
      mode: enumOf(
        'Wait: hold the statement until it is decided or times out. Reject: fail the statement now and let ' +
          'the same statement through for validFor once approved.',
        ['Wait', 'Reject'],
        { default: DEFAULTS.approvalMode },
      ),
      timeout: str('Wait mode: how long to hold the statement (Go duration: 30s, 5m, 1h30m).', {
        named: PATTERNS.duration,
        maxLength: 32,
        default: DEFAULTS.approvalTimeout,
      }),
      validFor: str(
        'Reject mode: how long an approval lets the same statement through (Go duration: 30s, 5m, 1h30m).',
        { named: PATTERNS.duration, maxLength: 32, default: DEFAULTS.approvalValidFor },
      ),
      maxExecutions: int(
        'How many times a prepared statement approved with its placeholders (extended protocol) may be ' +
          'bound and run; each Bind beyond is refused (42501). Default 1: the approver saw no values.',
        { minimum: 1, maximum: 1000000 },
      ),
    }),
  },
  ['name', 'action'],
  [CEL.approvalOnlyWithRequireApproval],
);

const databasePolicySpec = obj(
  'How statements through a dbguard proxy bound to this policy are judged, audited and enforced.',
  {
    upstream: obj(
      'The PostgreSQL server the proxy forwards to.',
      {
        host: str('Host name or IP address of the PostgreSQL server.', {
          named: PATTERNS.host,
          minLength: 1,
          maxLength: 253,
        }),
        port: int('TCP port of the PostgreSQL server.', {
          minimum: 1,
          maximum: 65535,
          default: DEFAULTS.port,
        }),
        sslmode: enumOf(
          "TLS to the upstream, as libpq's sslmode: disable, allow, prefer, require, verify-ca or verify-full. " +
            'prefer and allow fall back to plain text when the server has no TLS.',
          SSL_MODES,
          { default: DEFAULTS.sslmode },
        ),
        caSecretRef: secretKeyRef(
          "Secret key holding the PEM of the CA that signed the upstream's certificate.",
        ),
        credentialsSecretRef: obj(
          'Secret with keys `username` and `password`. When set, the proxy logs in upstream with them and ' +
            'clients authenticate to the proxy instead; the application never holds database credentials. ' +
            "When absent, the client's own authentication is relayed unchanged. When set, every session " +
            "runs as this Secret's username: a sidecar refuses a client naming another user at start-up, " +
            'and DatabaseUser subjects match only this user. The credentials are never part of the ' +
            'compiled policy: the sidecar reads them from the Secret, mounted into its container only.',
          {
            name: str("Name of the Secret, in the policy's namespace.", {
              named: PATTERNS.dnsSubdomain,
              maxLength: 253,
            }),
          },
          ['name'],
        ),
      },
      ['host'],
    ),
    defaultAction: enumOf('What happens to a statement no rule matches.', ['Allow', 'Deny'], {
      default: DEFAULTS.defaultAction,
    }),
    rules: withRules(
      arr(
        'Rules in order; the first rule that matches decides, for each (command, object) pair a ' +
          'statement exercises: a statement runs only when no pair is denied.',
        policyRule,
        {
          maxItems: MAX_RULES,
        },
      ),
      [CEL.uniqueRuleNames],
    ),
    functions: obj('User-defined functions that need not be treated as opaque.', {
      allow: arr(
        'Functions (`schema.name`, schema public when omitted) that masked subjects may call and whose ' +
          'effects are considered visible; other user-defined functions are treated as possibly doing anything.',
        str('A function name.', { named: PATTERNS.qualifiedName, maxLength: 256 }),
        { maxItems: MAX_PATTERNS },
      ),
    }),
    audit: obj(
      'What goes to the audit log.',
      {
        statements: enumOf(
          'Which statements produce a query event: All, Writes (anything but reads), Denied, or None.',
          ['All', 'Writes', 'Denied', 'None'],
          { default: DEFAULTS.auditStatements },
        ),
      },
      [],
      [],
      { default: {} },
    ),
    enforcement: enumOf(
      'Enforce applies decisions. DryRun judges and audits every statement ("enforced": false) but blocks, ' +
        'masks and holds nothing: for safe roll-out.',
      ['Enforce', 'DryRun'],
      { default: DEFAULTS.enforcement },
    ),
  },
  ['upstream'],
);

const databasePolicyStatus = obj('Observed state, written by the operator.', {
  observedGeneration: int('The metadata.generation the operator last compiled.', { minimum: 0 }),
  conditions: conditions(),
  policyVersion: str('`sha256:<hex>` of the compiled policy that proxies enforce.', { maxLength: 128 }),
  rules: int('Number of rules in the compiled policy.', { minimum: 0 }),
  maskingRules: int('Number of MaskingRules bound to this policy.', { minimum: 0 }),
});

const MASKING_STRATEGIES = [
  'Redact',
  'Nullify',
  'Partial',
  'Email',
  'Hash',
  'Constant',
  'Generalize',
] as const;

const maskedColumn = obj(
  "A column to mask and how. A masked value always keeps the column's SQL type.",
  {
    table: str(
      'Table (or view) as `schema.table`; schema public when omitted. Unquoted names are folded to lower case.',
      {
        named: PATTERNS.qualifiedName,
        maxLength: 256,
      },
    ),
    column: str('Column name. Unquoted names are folded to lower case.', {
      named: PATTERNS.columnName,
      maxLength: 128,
    }),
    strategy: enumOf(
      'Redact: text becomes `****`, other types NULL. Nullify: NULL. Partial: keep keepFirst/keepLast ' +
        'characters, mask the rest. Email: `a***@domain`. Hash: keyed HMAC-SHA256 in hex, computed in the database by ' +
        '`dbguard.hash` (`dbguard db install`). Constant: a fixed ' +
        'value. Generalize: dates truncated to unit, numbers rounded down to a multiple of step.',
      MASKING_STRATEGIES,
    ),
    partial: obj('Parameters of strategy Partial.', {
      keepFirst: int('Characters kept at the start.', {
        minimum: 0,
        maximum: 1000,
        default: DEFAULTS.partialKeepFirst,
      }),
      keepLast: int('Characters kept at the end.', {
        minimum: 0,
        maximum: 1000,
        default: DEFAULTS.partialKeepLast,
      }),
      maskChar: str('The character that replaces every other character.', {
        minLength: 1,
        maxLength: 1,
        default: DEFAULTS.partialMaskChar,
      }),
    }),
    hash: obj(
      'Parameters of strategy Hash.',
      {
        saltSecretRef: secretKeyRef(
          'Secret key holding the Hash key. Never served to proxies: a DBA installs it in the database with ' +
            '`dbguard db install --key-id NAMESPACE/NAME/KEY`, and the proxy names it by that id.',
        ),
      },
      ['saltSecretRef'],
    ),
    constant: obj(
      'Parameters of strategy Constant.',
      { value: str("The value every row shows, cast to the column's type.", { maxLength: 1024 }) },
      ['value'],
    ),
    generalize: obj(
      'Parameters of strategy Generalize: exactly one of unit or step.',
      {
        unit: enumOf('For dates and timestamps: truncate to this unit.', ['year', 'month', 'day']),
        step: int('For numbers: round down to a multiple of this step.', { minimum: 1 }),
      },
      [],
      [CEL.generalizeUnitXorStep],
    ),
  },
  ['table', 'column', 'strategy'],
  [
    CEL.partialOnlyWithPartial,
    CEL.hashOnlyWithHash,
    CEL.constantOnlyWithConstant,
    CEL.generalizeOnlyWithGeneralize,
    CEL.constantRequired,
    CEL.hashRequired,
    CEL.generalizeRequired,
  ],
);

const maskingRuleSpec = obj(
  'Columns masked for every subject of the bound policy except the exempt ones.',
  {
    policyRef: obj(
      'The DatabasePolicy this rule belongs to.',
      {
        name: str('Name of a DatabasePolicy in the same namespace.', {
          named: PATTERNS.dnsSubdomain,
          maxLength: 253,
        }),
      },
      ['name'],
    ),
    columns: arr('Columns to mask.', maskedColumn, { minItems: 1, maxItems: MAX_COLUMNS }),
    exemptSubjects: arr('Identities that see real values.', subject('An identity.'), {
      maxItems: MAX_SUBJECTS,
    }),
  },
  ['policyRef', 'columns'],
);

const maskingRuleStatus = obj('Observed state, written by the operator.', {
  observedGeneration: int('The metadata.generation the operator last processed.', { minimum: 0 }),
  conditions: conditions(),
  columns: int('Number of columns this rule masks.', { minimum: 0 }),
});

const immutable = [CEL.immutable];

function immutableField(schema: JSONSchemaProps): JSONSchemaProps {
  return withRules(schema, immutable);
}

const approvalRequestSpec = obj(
  'A statement held or rejected by a RequireApproval rule, waiting for a decision. Created by the operator; ' +
    'an approver sets decision (and reason). Who may approve is RBAC on approvalrequests.',
  {
    policyRef: immutableField(
      obj(
        'The DatabasePolicy whose rule asked for approval.',
        { name: str('Name of the DatabasePolicy in the same namespace.', { maxLength: 253 }) },
        ['name'],
      ),
    ),
    rule: immutableField(str('Name of the rule that asked for approval.', { maxLength: 63 })),
    subject: immutableField(
      obj('Who ran the statement. The requester can never approve its own request.', {
        serviceAccount: str("`namespace/name` of the pod's ServiceAccount.", { maxLength: 317 }),
        pod: str('Name of the pod.', { maxLength: 253 }),
        user: str("A verified token's subject or verified email.", { maxLength: 1024 }),
        groups: arr("A verified token's groups.", str('A group.', { maxLength: 1024 }), { maxItems: 256 }),
        databaseUser: str(
          'The database user the session was proven to run as (see DatabaseUser subjects), never a name ' +
            'the client only claimed.',
          { maxLength: 1024 },
        ),
      }),
    ),
    database: immutableField(str('The database the statement ran against.', { maxLength: 1024 })),
    statement: immutableField(
      str('The statement, normalized: literals replaced by placeholders.', { maxLength: 1048576 }),
    ),
    fingerprint: immutableField(
      str('Fingerprint of the statement (what an approval lets through).', { maxLength: 256 }),
    ),
    expiresAt: immutableField(str('When the request expires undecided.', { format: 'date-time' })),
    decision: enumOf('Set by an approver, once: Approved or Denied.', ['Approved', 'Denied']),
    reason: str('Why the approver decided so (a ticket, a sentence).', { maxLength: 4096 }),
  },
  ['policyRef', 'rule', 'subject', 'database', 'statement', 'fingerprint', 'expiresAt'],
  [CEL.decisionIsFinal],
);

const approvalRequestStatus = obj('Observed state, written by the operator.', {
  phase: enumOf('Pending, Approved, Denied or Expired.', ['Pending', 'Approved', 'Denied', 'Expired']),
  decidedBy: str('The user who set the decision, from the admission request.', { maxLength: 1024 }),
  decidedAt: str('When the decision was recorded.', { format: 'date-time' }),
  conditions: conditions(),
});

function resource(description: string, spec: JSONSchemaProps, status: JSONSchemaProps): JSONSchemaProps {
  return obj(
    description,
    {
      apiVersion: str('Versioned schema of this representation of an object: dbguard.io/v1alpha1.'),
      kind: str('REST resource this object represents.'),
      // `type: object` and nothing else: kube-apiserver refuses a CRD whose root metadata schema says more
      // ("must not specify anything other than name and generateName"), a description included
      metadata: { type: 'object' },
      spec,
      status,
    },
    ['spec'],
  );
}

export type Kind = 'DatabasePolicy' | 'MaskingRule' | 'ApprovalRequest';

export const KINDS: readonly Kind[] = ['DatabasePolicy', 'MaskingRule', 'ApprovalRequest'];

/** The openAPIV3Schema of each kind, exactly as the CRDs carry it. */
export const SCHEMAS: Record<Kind, JSONSchemaProps> = {
  DatabasePolicy: resource(
    'DatabasePolicy governs every connection through a dbguard proxy bound to it: which statements run, ' +
      'which need approval, what is audited.',
    databasePolicySpec,
    databasePolicyStatus,
  ),
  MaskingRule: resource(
    'MaskingRule masks columns for the subjects of a DatabasePolicy.',
    maskingRuleSpec,
    maskingRuleStatus,
  ),
  ApprovalRequest: resource(
    'ApprovalRequest asks a human to approve or deny one statement a RequireApproval rule held. Created by ' +
      'the operator.',
    approvalRequestSpec,
    approvalRequestStatus,
  ),
};
